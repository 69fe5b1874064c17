"""Images as the clients and the server exchange them.

A request carries encoded images zero-padded to the longest: uint8 [N, bytes] (`pad_batch`).
Labeled image sets use torchvision's ImageFolder layout, `<root>/<label>/<image>.jpg`, one
sub-folder per class, labels in sorted order (`load_image_folder`); the repository bundles its
validation images that way.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp"}


def pad_batch(encoded: Sequence[bytes]) -> np.ndarray:
    """Zero-pad encoded images to the longest, giving the uint8 [N, L] tensor Triton takes.

    JPEG decoders stop at the end-of-image marker, so trailing zeros change nothing.
    """
    if not encoded:
        raise ValueError("no images to pad: the batch is empty")
    longest = max(len(e) for e in encoded)
    out = np.zeros((len(encoded), longest), dtype=np.uint8)
    for i, e in enumerate(encoded):
        out[i, : len(e)] = np.frombuffer(e, dtype=np.uint8)
    return out



def request_pool(encoded: Sequence[bytes], batch_size: int) -> list[np.ndarray]:
    """Padded requests of `batch_size` different images each, cycling through `encoded`: the pool
    every load generator sends round robin (at least one request, covering every image once)."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    return [pad_batch([encoded[(i + j) % len(encoded)] for j in range(batch_size)])
            for i in range(0, max(len(encoded), batch_size), batch_size)]

@dataclass(frozen=True)
class ImageSet:
    """A labeled image folder: file paths with class indices, and the class names."""

    root: Path
    files: tuple[Path, ...]
    targets: tuple[int, ...]
    classes: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.files)

    def encoded(self, limit: int | None = None) -> list[bytes]:
        return [p.read_bytes() for p in self.files[:limit]]


def load_image_folder(root: Path) -> ImageSet:
    """Read an ImageFolder directory; errors name the folder and what is wrong with it."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"image folder {root} does not exist")
    classes = tuple(sorted(p.name for p in root.iterdir() if p.is_dir()))
    if not classes:
        raise ValueError(f"image folder {root} has no class sub-folders (expected <root>/<label>/<image>)")
    files, targets = [], []
    for idx, cls in enumerate(classes):
        for f in sorted((root / cls).iterdir()):
            if f.suffix.lower() in IMAGE_SUFFIXES:
                files.append(f)
                targets.append(idx)
    if not files:
        raise ValueError(f"image folder {root} holds no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
    return ImageSet(root, tuple(files), tuple(targets), classes)

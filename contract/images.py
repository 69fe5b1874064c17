"""Images as the clients and the server exchange them.

A request carries its encoded images as one uint8 [N, bytes] tensor, one row per image
(`pack_batch`): the 8-byte length prefix `LEN:` + the image's byte count (uint32, little endian),
the file's bytes, then zeros up to the longest row. The DALI pipeline reads the prefix and decodes
exactly the bytes the client sent (contract/dali_pipeline.py, `exact_bytes`), so the padding that
a longer neighbour causes never reaches the decoder: a truncated file stays truncated whatever
else is in the request. A row without the prefix is decoded whole: a request of ONE bare file,
what generic Triton clients and the dali_backend examples send, needs nothing more. Only the
prefix makes a row of a multi-image request unambiguous; the local server answers 400 to a
multi-image request with a bare row (the real DALI backend sees samples, not requests, and
decodes such a row with its padding: docs/local_server.md).
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

# The length prefix of a row: 4 marker bytes no image format starts with, then the byte count.
# contract/dali_pipeline.py and serving/backends/dali/model.py spell the same bytes (they import
# nothing of ours); tests/test_serving.py checks that all three agree.
LENGTH_MARKER = b"LEN:"
PREFIX_BYTES = 8
MAX_IMAGE_BYTES = 2**31 - 1     # DALI's slice takes int32 bounds


def pack_batch(encoded: Sequence[bytes]) -> np.ndarray:
    """The uint8 [N, 8 + longest] tensor Triton takes for `encoded` (the files' bytes, one per
    image): per row the length prefix, the bytes, zeros. The pipeline trims each row to its length."""
    if not encoded:
        raise ValueError("no images to pack: the batch is empty")
    for i, e in enumerate(encoded):
        if not 0 < len(e) <= MAX_IMAGE_BYTES:
            raise ValueError(f"image {i} has {len(e)} bytes; an image has 1 to {MAX_IMAGE_BYTES} bytes")
    longest = max(len(e) for e in encoded)
    out = np.zeros((len(encoded), PREFIX_BYTES + longest), dtype=np.uint8)
    for i, e in enumerate(encoded):
        out[i, :PREFIX_BYTES] = np.frombuffer(LENGTH_MARKER + len(e).to_bytes(4, "little"), dtype=np.uint8)
        out[i, PREFIX_BYTES: PREFIX_BYTES + len(e)] = np.frombuffer(e, dtype=np.uint8)
    return out


def unpack_row(row: np.ndarray) -> bytes:
    """The image bytes a row of a request stands for: the prefixed length, or the whole row."""
    head = bytes(row[:PREFIX_BYTES])
    if len(head) == PREFIX_BYTES and head.startswith(LENGTH_MARKER):
        return bytes(row[PREFIX_BYTES: PREFIX_BYTES + int.from_bytes(head[4:], "little")])
    return bytes(row)



def request_pool(encoded: Sequence[bytes], batch_size: int) -> list[np.ndarray]:
    """Packed requests (`pack_batch`) of `batch_size` different images each, cycling through `encoded`: the pool
    every load generator sends round robin (at least one request, covering every image once)."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    return [pack_batch([encoded[(i + j) % len(encoded)] for j in range(batch_size)])
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

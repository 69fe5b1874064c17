"""Image sets in the ImageFolder layout, and the built-in demo set written as one.

ImageFolder: `<root>/<label>/<image>.jpg`, one sub-folder per class; labels are the folder names
in sorted order, as torchvision's ImageFolder does it.
"""
from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image

DEMO_LABELS = tuple(str(d) for d in range(10))
DEMO_IMAGE_SIZE = 48       # stored JPEG side: larger than the 32 px model input, so resize is real
DEMO_SPLITS = {"train": 0.6, "val": 0.2, "calibration": 0.2}


def write_demo_dataset(out: Path, seed: int = 0) -> dict[str, Path]:
    """Write scikit-learn's digits (1,797 labeled 8x8 scans) as RGB JPEGs in train/val/calibration
    ImageFolder splits, stratified and seeded. Returns split name -> folder."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    idx = np.arange(len(digits.target))
    train, rest = train_test_split(idx, train_size=DEMO_SPLITS["train"], random_state=seed,
                                   stratify=digits.target)
    val, calib = train_test_split(rest, train_size=0.5, random_state=seed, stratify=digits.target[rest])
    splits = {"train": train, "val": val, "calibration": calib}
    paths = {}
    for split, ids in splits.items():
        for i in ids:
            label = DEMO_LABELS[digits.target[i]]
            folder = out / split / label
            folder.mkdir(parents=True, exist_ok=True)
            (folder / f"digit_{i:04d}.jpg").write_bytes(_digit_jpeg(digits.images[i]))
        paths[split] = out / split
    return paths


def _digit_jpeg(img8x8: np.ndarray) -> bytes:
    # 0..16 intensities, white ink on black like the originals; bicubic upscaling gives the
    # smooth strokes of a real scan rather than 6x6-pixel blocks.
    gray = Image.fromarray((img8x8 / 16.0 * 255.0).astype(np.uint8))
    rgb = gray.resize((DEMO_IMAGE_SIZE, DEMO_IMAGE_SIZE), Image.BICUBIC).convert("RGB")
    buf = io.BytesIO()
    rgb.save(buf, format="JPEG", quality=92)
    return buf.getvalue()

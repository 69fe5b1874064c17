"""A labeled set of real photos for preprocessing parity: varied sizes, aspect ratios and JPEG
encodings, made from the photos that ship inside scikit-learn (no download).

The demo's digits are all 48x48 squares, which hides every rounding question of resize and crop;
this set does not: portrait, landscape, square, smaller than the resize target (upscaling), large
(downscaling by 5x), odd sides (crop anchors at .5), grayscale, and 4:2:0, 4:2:2 and 4:4:4 chroma
subsampling. Written as an ImageFolder (`<out>/<label>/<file>.jpg`, labels = source photo), so it
serves as the val/calibration folder of a spec too.
"""
from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image

# (width, height, mode, subsampling) per image; subsampling is PIL's: 0 = 4:4:4, 1 = 4:2:2, 2 = 4:2:0.
SHAPES: tuple[tuple[int, int, str, int], ...] = (
    (640, 427, "RGB", 2),     # the source's own landscape size
    (427, 640, "RGB", 0),     # portrait, 4:4:4
    (400, 400, "RGB", 2),     # square
    (180, 240, "RGB", 2),     # small portrait: upscaled to the resize target
    (240, 180, "L", 0),       # small grayscale landscape
    (1280, 854, "RGB", 0),    # large: 5x downscale at resize 256
    (333, 501, "RGB", 1),     # odd sides, 4:2:2
    (501, 333, "L", 0),       # odd sides, grayscale
    (257, 256, "RGB", 0),     # one pixel from square
    (225, 300, "RGB", 2),
    (500, 375, "RGB", 1),
    (375, 500, "RGB", 2),
    (261, 999, "RGB", 2),     # extreme portrait
    (999, 261, "RGB", 0),     # extreme landscape
    (299, 299, "L", 0),
    (1023, 767, "RGB", 2),
    (35, 47, "RGB", 0),       # tiny (below the demo's resize 36 on one side)
    (64, 48, "RGB", 2),
    (319, 213, "RGB", 2),
    (213, 319, "RGB", 0),
)


def _sources() -> dict[str, np.ndarray]:
    from sklearn.datasets import load_sample_images

    photos = load_sample_images()
    return {Path(f).stem: img for f, img in zip(photos.filenames, photos.images)}


def photo_jpeg(source: np.ndarray, width: int, height: int, mode: str, subsampling: int,
               rng: np.random.Generator, quality: int = 90) -> bytes:
    """A random window of `source` with the target's aspect ratio, resized to width x height."""
    sh, sw = source.shape[:2]
    aspect = width / height
    # The largest window of this aspect ratio that fits, scaled by 0.6..1.0, at a random place.
    win_w = min(sw, sh * aspect) * rng.uniform(0.6, 1.0)
    win_h = win_w / aspect
    x0 = rng.uniform(0, sw - win_w)
    y0 = rng.uniform(0, sh - win_h)
    img = Image.fromarray(source).resize((width, height), Image.LANCZOS,
                                         box=(x0, y0, x0 + win_w, y0 + win_h))
    if mode == "L":
        img = img.convert("L")
    buf = io.BytesIO()
    kwargs = {"subsampling": subsampling} if mode == "RGB" else {}
    img.save(buf, format="JPEG", quality=quality, **kwargs)
    return buf.getvalue()


def write_photo_set(out: Path, seed: int = 0, shapes=SHAPES) -> Path:
    """Write every shape once per source photo (40 images by default) to `out/<photo>/`; returns out."""
    out = Path(out)
    rng = np.random.default_rng(seed)
    for label, source in sorted(_sources().items()):
        folder = out / label
        folder.mkdir(parents=True, exist_ok=True)
        for i, (w, h, mode, sub) in enumerate(shapes):
            tag = "gray" if mode == "L" else ("444", "422", "420")[sub]
            (folder / f"{label}_{i:02d}_{w}x{h}_{tag}.jpg").write_bytes(photo_jpeg(source, w, h, mode, sub, rng))
    return out

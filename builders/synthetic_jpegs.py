"""Synthetic but real JPEGs for GPU parity tests and preprocessing benchmarks.

The images look like photographs to a JPEG codec: a smooth colour field, gradients, mid-scale
texture, a few sharp-edged coloured shapes (chroma edges are where decoders differ most) and
sensor-like grain. They are encoded by PIL (libjpeg-turbo), baseline 4:2:0 by default, as most
camera and web JPEGs are; other subsamplings and progressive encoding are available.
"""
from __future__ import annotations

import io
from concurrent.futures import ProcessPoolExecutor

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

# PIL's subsampling codes: 0 = 4:4:4, 1 = 4:2:2, 2 = 4:2:0.
SUBSAMPLING = {"4:4:4": 0, "4:2:2": 1, "4:2:0": 2}


def natural_image(seed: int, width: int = 640, height: int = 480) -> Image.Image:
    rng = np.random.default_rng(seed)

    def field(cells_y: int, cells_x: int) -> np.ndarray:
        low = (rng.random((cells_y, cells_x, 3)) * 255).astype(np.uint8)
        return np.asarray(Image.fromarray(low).resize((width, height), Image.BICUBIC), dtype=np.float32)

    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    angle = rng.uniform(0, 2 * np.pi)
    grad = (np.cos(angle) * xx / width + np.sin(angle) * yy / height)[..., None]
    tint = rng.uniform(0.3, 1.0, size=3).astype(np.float32)
    img = (0.45 * field(4, 5) + 0.20 * field(height // 24, width // 24) + 0.15 * field(height // 6, width // 6)
           + 60.0 * grad * tint)
    canvas = Image.fromarray(np.clip(img, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(canvas)
    for _ in range(int(rng.integers(4, 9))):
        x0, y0 = rng.integers(0, width), rng.integers(0, height)
        x1, y1 = x0 + rng.integers(20, width // 3), y0 + rng.integers(20, height // 3)
        colour = tuple(int(c) for c in rng.integers(0, 256, size=3))
        (draw.ellipse if rng.random() < 0.5 else draw.rectangle)((x0, y0, x1, y1), fill=colour)
    canvas = canvas.filter(ImageFilter.GaussianBlur(radius=float(rng.uniform(0.0, 1.2))))
    arr = np.asarray(canvas, dtype=np.float32) + rng.normal(0.0, 6.0, size=(height, width, 3))
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))


def natural_jpeg(seed: int, width: int = 640, height: int = 480, quality: int = 90,
                 subsampling: str = "4:2:0", progressive: bool = False) -> bytes:
    buf = io.BytesIO()
    natural_image(seed, width, height).save(buf, format="JPEG", quality=quality,
                                            subsampling=SUBSAMPLING[subsampling], progressive=progressive)
    return buf.getvalue()


def _one(args) -> bytes:
    return natural_jpeg(*args)


def make_jpegs(count: int, width: int = 640, height: int = 480, quality: int = 90, seed: int = 0,
               workers: int = 1) -> list[bytes]:
    """`count` distinct baseline 4:2:0 JPEGs of width x height, made with `workers` processes."""
    jobs = [(seed + i, width, height, quality) for i in range(count)]
    if workers <= 1:
        return [_one(j) for j in jobs]
    with ProcessPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(_one, jobs, chunksize=16))

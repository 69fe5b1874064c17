"""A small but complete `cpu` repository for the local server's tests and benchmark, built by the builder.

`build` runs a tiny spec through builders.build.build: the built-in digits demo with the
`tiny_cnn` architecture (contract.spec.LOCAL_ARCHS) trained for one epoch, a small calibration
set, the cpu target only and no TorchScript twin. The repository and its manifest are the
builder's own (contract.manifest, format_version 2), only smaller and quicker to make than the
default spec's (no MobileNet training). When the builder's repository exists, use that instead.
"""
from __future__ import annotations

import io
import tempfile
from pathlib import Path

import numpy as np

from contract import layout
from contract.spec import BuildSpec, Calibration, Data, Engine, ModelSpec, Source, Triton

NUM_CLASSES = 10


def sample_images(count: int = 64, seed: int = 0) -> list[tuple[bytes, int]]:
    """(JPEG, digit) pairs: scikit-learn's 8x8 digits upscaled to 36..52 px, so byte lengths differ
    (ragged batches). count: how many (at most 1,797); seed: which digits and sizes."""
    from PIL import Image
    from sklearn.datasets import load_digits

    digits = load_digits()
    rng = np.random.default_rng(seed)
    out = []
    for i in rng.choice(len(digits.images), size=count, replace=False):
        img = (digits.images[i] * (255.0 / 16.0)).astype(np.uint8)
        side = int(rng.integers(36, 53))
        pil = Image.fromarray(img).resize((side, side), Image.BILINEAR).convert("RGB")
        buf = io.BytesIO()
        pil.save(buf, "JPEG", quality=90)
        out.append((buf.getvalue(), int(digits.target[i])))
    return out


def tiny_spec(output: Path, max_batch_size: int = 8, precisions=layout.PRECISIONS, name: str = "digits",
              seed: int = 0, max_queue_delay_us: int = 500, dali_threads: int = 2, onnx_threads: int = 0,
              calibration_images: int = 64, bundle_val_images: int = 64) -> BuildSpec:
    """The spec `build` runs. output: the folder that receives cpu/ and manifest.json;
    max_batch_size: every model's (preferred batch sizes: half of it and itself); precisions: the
    ensembles to build (fp32 always); name: the models' prefix; seed: the demo's split, initial
    weights and training order; max_queue_delay_us, dali_threads, onnx_threads: the triton section's
    max_queue_delay_us, dali_num_threads and onnx_intra_op_threads; calibration_images: int8
    calibration images; bundle_val_images: validation images copied into the repository."""
    preferred = tuple(sorted({b for b in (max_batch_size // 2, max_batch_size) if b >= 1}))
    model = ModelSpec(
        name=name, precisions=tuple(precisions), torchscript=False,
        source=Source(kind="demo", arch="tiny_cnn", train_epochs=1, seed=seed),
        data=Data(bundle_val_images=bundle_val_images),
        calibration=Calibration(max_images=calibration_images),
        triton=Triton(max_batch_size=max_batch_size, preferred_batch_sizes=preferred,
                      max_queue_delay_us=max_queue_delay_us, dali_num_threads=dali_threads,
                      onnx_intra_op_threads=onnx_threads),
        engine=Engine(opt_batch=max_batch_size))
    return BuildSpec(output=Path(output), targets=("cpu",), models=(model,))


def build(output: Path, max_batch_size: int = 8, precisions=layout.PRECISIONS,
          name: str = "digits", seed: int = 0, max_queue_delay_us: int = 500,
          dali_threads: int = 2, onnx_threads: int = 0, cache_dir: Path | None = None) -> Path:
    """Build `tiny_spec(...)` with builders.build.build into `output` (`<output>/cpu/...` and
    `<output>/manifest.json`); returns `output`. cache_dir: the stage cache to use (a second build
    with the same arguments then takes a fraction of the time); None: a private temporary one,
    deleted afterwards. The other parameters: see tiny_spec. Raises builders.build.BuildError."""
    from builders.build import build as run_build

    spec = tiny_spec(output, max_batch_size, precisions, name, seed, max_queue_delay_us, dali_threads, onnx_threads)
    if cache_dir is not None:
        run_build(spec, Path(cache_dir), quiet=True)
    else:
        with tempfile.TemporaryDirectory(prefix="minirepo-cache-") as tmp:
            run_build(spec, Path(tmp), quiet=True)
    return Path(output)

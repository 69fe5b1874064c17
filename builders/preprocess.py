"""Preprocessing: one DALI pipeline definition, serialized for the DALI backend, plus the
PIL/numpy reference it is checked against.

    encoded bytes -> decode (RGB) -> resize shorter side -> center crop -> normalize -> CHW float32

The same definition yields both variants: `gpu` (mixed decoder, GPU resize and normalize) and
`cpu` (CPU operators only). Both serialize on a machine without a GPU (DESIGN.md §5).
"""
from __future__ import annotations

import io
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image

from builders.layout import DALI_INPUT
from builders.spec import Input


def _dali():
    # DALI is imported lazily: it is heavy and the spec/config code does not need it.
    from nvidia.dali import fn, pipeline_def, types

    return fn, pipeline_def, types


def build_pipeline(inp: Input, device: str, batch_size: int, num_threads: int = 2,
                   device_id: int | None = None, hw_decoder_load: float = 0.65):
    """Return an unbuilt DALI pipeline for `device` ('cpu' or 'gpu').

    batch_size is the DALI backend's max batch (Triton's max_batch_size); the external source
    is named DALI_INPUT_0 so it matches the config's input name.
    """
    if device not in ("cpu", "gpu"):
        raise ValueError(f"device must be 'cpu' or 'gpu', got {device!r}")
    fn, pipeline_def, types = _dali()

    @pipeline_def(batch_size=batch_size, num_threads=num_threads, device_id=device_id,
                  prefetch_queue_depth=1)
    def preprocess():
        encoded = fn.external_source(name=DALI_INPUT, dtype=types.UINT8, ndim=1, no_copy=True)
        if device == "gpu":
            images = fn.decoders.image(encoded, device="mixed", output_type=types.RGB,
                                       hw_decoder_load=hw_decoder_load)
        else:
            images = fn.decoders.image(encoded, device="cpu", output_type=types.RGB)
        images = fn.resize(images, resize_shorter=float(inp.resize), antialias=True,
                           interp_type=types.INTERP_LINEAR)
        return fn.crop_mirror_normalize(
            images,
            crop=(inp.crop, inp.crop),
            crop_pos_x=0.5, crop_pos_y=0.5,
            mean=[m * 255.0 for m in inp.mean],
            std=[s * 255.0 for s in inp.std],
            dtype=types.FLOAT,
            output_layout="CHW",
        )

    return preprocess()


def serialize(inp: Input, device: str, batch_size: int, path: Path, num_threads: int = 2,
              hw_decoder_load: float = 0.65) -> Path:
    """Write the `device` variant as a serialized pipeline (`model.dali`)."""
    pipe = build_pipeline(inp, device, batch_size, num_threads, device_id=None,
                          hw_decoder_load=hw_decoder_load)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    pipe.serialize(filename=str(path))
    return path


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


class CpuPreprocessor:
    """Runs a serialized CPU `model.dali` in-process, one batch at a time.

    This is what the builder's parity check, the local server's DALI stand-in and the in-process
    baselines use, so all of them run the very artifact Triton serves.
    """

    def __init__(self, dali_file: Path, num_threads: int = 2, batch_size: int | None = None):
        from nvidia.dali import Pipeline

        self._pipe = Pipeline.deserialize(filename=str(dali_file), device_id=None,
                                          num_threads=num_threads,
                                          **({"batch_size": batch_size} if batch_size else {}))
        self._pipe.build()
        self.max_batch_size = self._pipe.max_batch_size

    def __call__(self, samples: Sequence[np.ndarray]) -> np.ndarray:
        """samples: 1-D uint8 arrays of encoded bytes (padded or not). Returns [N, 3, H, W] float32."""
        if not 0 < len(samples) <= self.max_batch_size:
            raise ValueError(f"batch of {len(samples)} images; allowed 1..{self.max_batch_size}")
        self._pipe.feed_input(DALI_INPUT, [np.ascontiguousarray(s, dtype=np.uint8) for s in samples])
        (out,) = self._pipe.run()
        return np.stack([np.asarray(out[i]) for i in range(len(samples))])


def reference_preprocess(encoded: bytes, inp: Input) -> np.ndarray:
    """PIL/numpy version of the DALI pipeline: the ground truth the DALI output is checked against.

    Uses PIL's bilinear filter with antialiasing (reducing_gap off), the closest match to DALI's
    antialiased linear resize; the rounding of the output size follows DALI's resize_shorter.
    """
    img = Image.open(io.BytesIO(encoded)).convert("RGB")
    w, h = img.size
    scale = inp.resize / min(w, h)
    new_w, new_h = (inp.resize, round(h * scale)) if w <= h else (round(w * scale), inp.resize)
    img = img.resize((new_w, new_h), Image.BILINEAR)
    arr = np.asarray(img, dtype=np.float32)
    top = int(round((new_h - inp.crop) * 0.5))
    left = int(round((new_w - inp.crop) * 0.5))
    arr = arr[top: top + inp.crop, left: left + inp.crop]
    mean = np.asarray(inp.mean, dtype=np.float32) * 255.0
    std = np.asarray(inp.std, dtype=np.float32) * 255.0
    return ((arr - mean) / std).transpose(2, 0, 1).copy()


def parity_tolerance(inp: Input) -> float:
    """Max abs difference (normalized units) allowed between DALI and the PIL reference.

    Resize filters differ (DESIGN.md §5): within one pixel level at 224 px, up to ~11 levels at
    32 px. One pixel level is 1/(255*std) in normalized units; allow 12 levels for small crops
    and 2 levels from 128 px up.
    """
    levels = 12.0 if inp.crop < 128 else 2.0
    return levels / (255.0 * min(inp.std))


def dali_gpu_support() -> tuple[bool, str]:
    """(True, description) where DALI can build and run a GPU pipeline on device 0."""
    try:
        import torch
    except ImportError:
        torch = None
    if torch is not None and not torch.cuda.is_available():
        return False, "no CUDA GPU (torch.cuda.is_available() is False)"
    try:
        import nvidia.dali as dali
        from nvidia.dali import fn, pipeline_def, types
        from nvidia.dali.backend import GetCUDADeviceCount
    except ImportError as err:
        return False, f"DALI is not installed ({err})"
    if GetCUDADeviceCount() < 1:
        return False, "DALI sees no CUDA GPU"
    try:
        @pipeline_def(batch_size=2, num_threads=1, device_id=0)
        def probe():
            return fn.external_source(name="x", dtype=types.UINT8, ndim=1).gpu()

        pipe = probe()
        pipe.build()
        pipe.feed_input("x", [np.arange(5, dtype=np.uint8)] * 2)
        (out,) = pipe.run()
        assert np.array_equal(np.asarray(out.as_cpu()[1]), np.arange(5))
    except Exception as err:  # noqa: BLE001 - any failure means "no DALI GPU support here"
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        return False, f"DALI cannot run a GPU pipeline on device 0: {first}"
    name = torch.cuda.get_device_name(0) if torch is not None else "GPU 0"
    return True, f"{name}, DALI {dali.__version__}"

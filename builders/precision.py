"""Precision variants made at the ONNX level: fp16 with FP32 I/O, and int8 as
explicit symmetric Q/DQ from calibration. TensorRT 10 and 11 build both; ONNX Runtime runs them
on the CPU, so every variant is checked before any GPU is involved."""
from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Callable

import numpy as np
import onnx

from builders.layout import ENGINE_INPUT
from builders.spec import Calibration


def to_fp16(fp32_path: Path, out_path: Path) -> Path:
    """Convert weights and compute to fp16; inputs and outputs stay FP32 (casts at the edges)."""
    from onnxconverter_common import float16

    model = float16.convert_float_to_float16(onnx.load(str(fp32_path)), keep_io_types=True)
    onnx.save(model, str(out_path))
    return out_path


class _Batches:
    """ONNX Runtime's CalibrationDataReader protocol over preprocessed images.

    One image per batch: the histogram calibrators stack per-batch arrays, so a short last batch
    would break them.
    """

    def __init__(self, x: np.ndarray, batch: int = 1, progress: Callable[[int, int], None] | None = None):
        self.x, self.batch, self.i, self.progress = x, batch, 0, progress

    def get_next(self):
        if self.i >= len(self.x):
            return None
        feed = {ENGINE_INPUT: self.x[self.i: self.i + self.batch]}
        self.i += self.batch
        if self.progress:
            self.progress(min(self.i, len(self.x)), len(self.x))
        return feed

    def rewind(self):
        self.i = 0


def calibration_key(fp32_path: Path, x: np.ndarray, calib: Calibration) -> str:
    """Content hash of what a calibration depends on: the model, the images and the method."""
    h = hashlib.sha256()
    h.update(Path(fp32_path).read_bytes())
    h.update(np.ascontiguousarray(x).tobytes())
    h.update(f"{calib.method}:{calib.percentile}".encode())
    return h.hexdigest()[:20]


def calibrate(fp32_path: Path, x: np.ndarray, calib: Calibration, cache: Path,
              progress: Callable[[int, int], None] | None = None) -> None:
    """Collect activation ranges with ONNX Runtime's calibrator and save them to `cache`.

    Called directly rather than through quantize_static, which fixes entropy calibration at 128
    histogram bins: with 128 quantized bins the KL search then has nothing to choose and returns
    the plain max. 2048 bins into 128 is TensorRT's entropy setting.
    """
    import tempfile

    from onnxruntime.quantization.calibrate import create_calibrator, save_tensors_data

    method, options = _ort_method(calib)
    options |= {"symmetric": True}
    with tempfile.TemporaryDirectory(prefix="calib-") as tmp:
        calibrator = create_calibrator(str(fp32_path), [], augmented_model_path=f"{tmp}/augmented.onnx",
                                       calibrate_method=method, extra_options=options)
        calibrator.collect_data(_Batches(x, progress=progress))
        ranges = calibrator.compute_data()
        del calibrator
    tmp_cache = cache.with_suffix(".partial")
    save_tensors_data(ranges, tmp_cache)
    tmp_cache.replace(cache)  # a killed calibration leaves no half-written cache behind


def _ort_method(calib: Calibration):
    from onnxruntime.quantization import CalibrationMethod

    if calib.method == "entropy":
        return CalibrationMethod.Entropy, {"num_bins": 2048, "num_quantized_bins": 128}
    if calib.method == "percentile":
        return CalibrationMethod.Percentile, {"num_bins": 2048, "percentile": calib.percentile}
    return CalibrationMethod.MinMax, {}


def to_int8(fp32_path: Path, out_path: Path, x: np.ndarray, calib: Calibration, cache_dir: Path,
            progress: Callable[[int, int], None] | None = None) -> tuple[Path, Path, bool]:
    """Quantize with ONNX Runtime into symmetric QDQ (per-channel weights, zero points 0).

    Tensor ranges are cached in `cache_dir`, keyed by model, images and method, so a rebuild does
    not recalibrate. Returns (int8 model, cache file, whether the cache was reused).
    """
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

    cache_dir.mkdir(parents=True, exist_ok=True)
    cache = cache_dir / f"calib-{calib.method}-{calibration_key(fp32_path, x, calib)}.json"
    reused = cache.is_file()
    if not reused:
        calibrate(fp32_path, x, calib, cache, progress)
    quantize_static(
        str(fp32_path), str(out_path), calibration_data_reader=None,
        quant_format=QuantFormat.QDQ, per_channel=True,
        activation_type=QuantType.QInt8, weight_type=QuantType.QInt8,
        calibrate_method=_ort_method(calib)[0], calibration_cache_path=cache,
        # Biases stay float: TensorRT fuses them itself and does not take int32-quantized ones.
        extra_options={"ActivationSymmetric": True, "WeightSymmetric": True, "QuantizeBias": False},
    )
    return Path(out_path), cache, reused

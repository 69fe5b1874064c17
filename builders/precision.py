"""Precision variants made at the ONNX level: fp16 with FP32 I/O, and int8 from
one calibration, shaped for the runtime that serves it:

* `tensorrt` (gpu target, the source of the plans): symmetric S8S8 Q/DQ, zero points 0,
  per-channel weights, float biases -- what TensorRT's explicit quantization takes;
* `onnxruntime` (cpu target): U8S8 -- asymmetric uint8 activations, symmetric per-channel int8
  weights, int32 biases -- in Q/DQ or QOperator form, with reduce_range (7-bit weights) where the
  CPU lacks VNNI, as ONNX Runtime's quantization guide advises for x86. ONNX Runtime's x86 kernels
  run S8S8 Q/DQ slower than fp32 (0.60-0.91x on the demo and ResNet-18: docs/cpu_precision.md).

ONNX Runtime runs every variant on the CPU, so each is checked before any GPU is involved."""
from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Callable

import numpy as np
import onnx

from builders.quiet_warnings import fp16_truncation_summarized, ort_quantization_quiet
from contract.layout import ENGINE_INPUT
from contract.spec import Calibration


def to_fp16(fp32_path: Path, out_path: Path) -> Path:
    """Convert weights and compute to fp16; inputs and outputs stay FP32 (casts at the edges)."""
    from onnxconverter_common import float16

    fp32 = onnx.load(str(fp32_path))
    # The model's own Cast-to-float nodes (e.g. a transformer's softmax in float32, `.to(query.dtype)`)
    # keep `to = FLOAT` in the converter while their outputs are declared fp16, which ONNX Runtime
    # refuses to load; in an fp16 graph they cast to fp16 (the converter's own edge casts are new nodes).
    to_float = {n.name for n in fp32.graph.node if n.op_type == "Cast"
                and any(a.name == "to" and a.i == onnx.TensorProto.FLOAT for a in n.attribute)}
    with fp16_truncation_summarized():
        model = float16.convert_float_to_float16(fp32, keep_io_types=True)
    for node in model.graph.node:
        if node.op_type == "Cast" and node.name in to_float:
            for a in node.attribute:
                if a.name == "to":
                    a.i = onnx.TensorProto.FLOAT16
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


INT8_RUNTIMES = ("tensorrt", "onnxruntime")


def _shares_signed_ranges(calib: Calibration, symmetric: bool) -> bool:
    """Whether the ranges for this method are the same recorded (min, max) for both variants.

    entropy and max record the signed range; the symmetric variant symmetrizes it at quantization
    (max(|min|, |max|)), which equals what a symmetric calibration gives. percentile differs: the
    symmetric one takes a percentile of |x|, the asymmetric one cuts each tail, so they are two
    calibrations.
    """
    return calib.method != "percentile" or not symmetric


def calibration_key(fp32_path: Path, x: np.ndarray, calib: Calibration, symmetric: bool = True) -> str:
    """Content hash of what a calibration depends on: the model, the images, the method and, for
    percentile only, whether the ranges are symmetric (see _shares_signed_ranges)."""
    h = hashlib.sha256()
    h.update(Path(fp32_path).read_bytes())
    h.update(np.ascontiguousarray(x).tobytes())
    ranges = "signed" if _shares_signed_ranges(calib, symmetric) else "absolute"
    h.update(f"{calib.method}:{calib.percentile}:{ranges}".encode())
    return h.hexdigest()[:20]


def calibrate(fp32_path: Path, x: np.ndarray, calib: Calibration, cache: Path, symmetric: bool = True,
              progress: Callable[[int, int], None] | None = None) -> None:
    """Collect activation ranges with ONNX Runtime's calibrator and save them to `cache`.

    symmetric: the ranges feed a symmetric (TensorRT) quantization; matters for percentile only.
    Called directly rather than through quantize_static, which fixes entropy calibration at 128
    histogram bins: with 128 quantized bins the KL search then has nothing to choose and returns
    the plain max. 2048 bins into 128 is TensorRT's entropy setting.
    """
    import tempfile

    from onnxruntime.quantization.calibrate import create_calibrator, save_tensors_data

    method, options = _ort_method(calib)
    options |= {"symmetric": not _shares_signed_ranges(calib, symmetric)}
    with tempfile.TemporaryDirectory(prefix="calib-") as tmp:
        calibrator = create_calibrator(str(fp32_path), [], augmented_model_path=f"{tmp}/augmented.onnx",
                                       calibrate_method=method, extra_options=options)
        with ort_quantization_quiet(f"calibration ({calib.method})"):
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


def cpu_has_vnni() -> bool | None:
    """Whether this x86 CPU has an 8-bit dot-product instruction (AVX-512 VNNI, AVX-VNNI or AMX);
    None where that cannot be read (not Linux, or not x86)."""
    import platform

    if platform.machine().lower() not in ("x86_64", "amd64", "i686", "x86"):
        return None
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return None
    flags = next((line.split(":", 1)[1].split() for line in text.splitlines() if line.startswith("flags")), [])
    return bool({"avx512_vnni", "avx_vnni", "amx_int8"} & set(flags))


def cpu_int8_options(calib: Calibration) -> dict:
    """The cpu target's quantization settings, resolved on this machine: quant_format and
    reduce_range (spec `auto`: on for an x86 CPU without VNNI, per ONNX Runtime's guide), with why."""
    vnni = cpu_has_vnni()
    if calib.cpu_reduce_range == "auto":
        reduce_range = vnni is False
        why = {True: "VNNI found", False: "no VNNI on this x86 CPU", None: "not an x86 CPU with readable flags"}[vnni]
        why = f"auto: {why}"
    else:
        reduce_range, why = bool(calib.cpu_reduce_range), "set in the spec"
    return {"quant_format": calib.cpu_format, "reduce_range": reduce_range, "reduce_range_reason": why}


def _inline_shared_initializers(fp32_path: Path, out_path: Path) -> Path:
    """Copy of the model where each Identity of an initializer is replaced by its own initializer.

    torch.onnx shares equal tensors (often biases) through Identity nodes; ONNX Runtime's quantizer
    then leaves such a bias in float ("Expected bias ... to be an initializer") and that Conv cannot
    fuse into an integer kernel. Every other tensor keeps its name, so the cached ranges still apply.
    """
    from onnx import numpy_helper

    model = onnx.load(str(fp32_path))
    inits = {t.name: t for t in model.graph.initializer}
    keep = []
    for node in model.graph.node:
        if node.op_type == "Identity" and node.input[0] in inits:
            copy = numpy_helper.from_array(numpy_helper.to_array(inits[node.input[0]]), node.output[0])
            model.graph.initializer.append(copy)
        else:
            keep.append(node)
    del model.graph.node[:]
    model.graph.node.extend(keep)
    onnx.save(model, str(out_path))
    return Path(out_path)


def to_int8(fp32_path: Path, out_path: Path, x: np.ndarray, calib: Calibration, cache_dir: Path,
            runtime: str = "tensorrt", quant_format: str = "qdq", reduce_range: bool = False,
            progress: Callable[[int, int], None] | None = None) -> tuple[Path, Path, bool]:
    """Quantize the fp32 ONNX into the int8 shape `runtime` wants (see the module docstring).

    x: the preprocessed calibration images (N, 3, H, W float32). calib: the spec's method.
    runtime: `tensorrt` (S8S8 Q/DQ, zero points 0) or `onnxruntime` (U8S8, `quant_format` qdq
    or qoperator, `reduce_range`: 7-bit weights; ignored for tensorrt).
    Tensor ranges are cached in `cache_dir`, keyed by model, images and method, so the second
    variant and a rebuild do not recalibrate. Returns (int8 model, cache file, whether the cache
    was reused).
    """
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

    if runtime not in INT8_RUNTIMES:
        raise ValueError(f"int8 runtime {runtime!r} is not one of {INT8_RUNTIMES}")
    if quant_format not in ("qdq", "qoperator"):
        raise ValueError(f"int8 quant_format {quant_format!r} is not 'qdq' or 'qoperator'")
    symmetric = runtime == "tensorrt"
    cache_dir.mkdir(parents=True, exist_ok=True)
    cache = cache_dir / f"calib-{calib.method}-{calibration_key(fp32_path, x, calib, symmetric)}.json"
    reused = cache.is_file()
    if not reused:
        calibrate(fp32_path, x, calib, cache, symmetric, progress)
    if symmetric:
        settings = dict(quant_format=QuantFormat.QDQ, activation_type=QuantType.QInt8, reduce_range=False,
                        # Biases stay float: TensorRT fuses them itself and does not take int32-quantized ones.
                        extra_options={"ActivationSymmetric": True, "WeightSymmetric": True, "QuantizeBias": False})
    else:
        settings = dict(quant_format=QuantFormat.QDQ if quant_format == "qdq" else QuantFormat.QOperator,
                        activation_type=QuantType.QUInt8, reduce_range=reduce_range,
                        extra_options={"ActivationSymmetric": False, "WeightSymmetric": True})
    import tempfile

    with tempfile.TemporaryDirectory(prefix="int8-") as tmp:
        # The TensorRT variant quantizes the export as it is: TensorRT takes float biases anyway.
        source = fp32_path if symmetric else _inline_shared_initializers(fp32_path, Path(tmp) / "inlined.onnx")
        with ort_quantization_quiet(f"int8 ({runtime})"):
            quantize_static(str(source), str(out_path), calibration_data_reader=None, per_channel=True,
                            weight_type=QuantType.QInt8, calibrate_method=_ort_method(calib)[0],
                            calibration_cache_path=cache, **settings)
    return Path(out_path), cache, reused

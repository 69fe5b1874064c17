"""A small but complete `cpu` repository for the local server's tests and benchmark.

It uses the builder's own contracts (contract.layout names, builders.triton_config configs,
contract.preprocess.write_definition for dali.py) with a tiny untrained CNN, so the serving path
can be exercised without running the full build (training, calibration, TensorRT).
When the builder's repository exists, use that instead.
"""
from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np

from builders import triton_config
from contract import layout
from contract.preprocess import CpuPreprocessor, write_definition
from contract.spec import Input, ModelSpec, Triton

NUM_CLASSES = 10


def sample_images(count: int = 64, seed: int = 0) -> list[tuple[bytes, int]]:
    """JPEG digits (scikit-learn's 8x8 digits, upscaled to 36..52 px so byte lengths differ)."""
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


def _tiny_cnn(seed: int):
    import torch
    from torch import nn

    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(3, 16, 3, stride=2, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
        nn.Conv2d(16, 32, 3, stride=2, padding=1), nn.BatchNorm2d(32), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, NUM_CLASSES),
    ).eval()


def _export_onnx(path: Path, crop: int, seed: int) -> None:
    import torch

    model = _tiny_cnn(seed)
    torch.onnx.export(model, torch.zeros(1, 3, crop, crop), str(path), dynamo=False, opset_version=17,
                      input_names=[layout.ENGINE_INPUT], output_names=[layout.ENGINE_OUTPUT],
                      dynamic_axes={layout.ENGINE_INPUT: {0: "batch"}, layout.ENGINE_OUTPUT: {0: "batch"}})


def _fp16(src: Path, dst: Path) -> None:
    import onnx
    from onnxconverter_common import float16

    model = float16.convert_float_to_float16(onnx.load(str(src)), keep_io_types=True)
    onnx.save(model, str(dst))


def _int8(src: Path, dst: Path, calib: np.ndarray) -> None:
    from onnxruntime.quantization import CalibrationDataReader, CalibrationMethod, QuantFormat, quantize_static

    class Reader(CalibrationDataReader):
        def __init__(self):
            self._it = iter([{layout.ENGINE_INPUT: calib[i:i + 1]} for i in range(len(calib))])

        def get_next(self):
            return next(self._it, None)

    quantize_static(str(src), str(dst), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                    calibrate_method=CalibrationMethod.MinMax,
                    extra_options={"ActivationSymmetric": True, "WeightSymmetric": True})


def build(output: Path, max_batch_size: int = 8, precisions=("fp32", "fp16", "int8"),
          name: str = "digits", seed: int = 0, max_queue_delay_us: int = 500,
          dali_threads: int = 2, onnx_threads: int = 0) -> Path:
    """Write `<output>/cpu/...` and `<output>/manifest.json`; returns `output`."""
    output = Path(output)
    repo = output / "cpu"
    preferred = tuple(sorted({b for b in (max_batch_size // 2, max_batch_size) if b >= 1}))
    spec = ModelSpec(name=name, precisions=tuple(precisions), input=Input(),
                     triton=Triton(max_batch_size=max_batch_size, preferred_batch_sizes=preferred,
                                   max_queue_delay_us=max_queue_delay_us, dali_num_threads=dali_threads,
                                   onnx_intra_op_threads=onnx_threads),
                     engine={"opt_batch": max_batch_size})
    labels = "\n".join(str(i) for i in range(NUM_CLASSES)) + "\n"

    pre_dir = repo / layout.preprocess_model(name)
    triton_config.write_config(triton_config.preprocess_config(spec, "cpu"), pre_dir)
    dali_file = write_definition(spec.input, "cpu", pre_dir / "1" / layout.DALI_DEFINITION, max_batch_size,
                                 num_threads=dali_threads, model=name)

    fp32_dir = repo / layout.engine_model(name, "fp32") / "1"
    fp32_dir.mkdir(parents=True, exist_ok=True)
    _export_onnx(fp32_dir / "model.onnx", spec.input.crop, seed)
    for precision in precisions:
        eng_dir = repo / layout.engine_model(name, precision)
        (eng_dir / "1").mkdir(parents=True, exist_ok=True)
        if precision == "fp16":
            _fp16(fp32_dir / "model.onnx", eng_dir / "1" / "model.onnx")
        elif precision == "int8":
            pre = CpuPreprocessor(dali_file, num_threads=dali_threads)
            imgs = [np.frombuffer(b, np.uint8) for b, _ in sample_images(32, seed + 1)]
            calib = np.concatenate([pre(imgs[i:i + max_batch_size]) for i in range(0, len(imgs), max_batch_size)])
            _int8(fp32_dir / "model.onnx", eng_dir / "1" / "model.onnx", calib)
        triton_config.write_config(triton_config.engine_config(spec, "cpu", precision, NUM_CLASSES), eng_dir)
        (eng_dir / layout.LABELS_FILE).write_text(labels)
        ens_dir = repo / layout.ensemble_model(name, precision)
        triton_config.write_config(triton_config.ensemble_config(spec, precision, NUM_CLASSES), ens_dir)
        (ens_dir / "1").mkdir(exist_ok=True)
        (ens_dir / layout.LABELS_FILE).write_text(labels)

    manifest = {"kind": "serving.minirepo (tiny untrained CNN for serving tests)", "models": [{
        "name": name, "max_batch_size": max_batch_size, "crop": spec.input.crop, "num_classes": NUM_CLASSES,
        "precisions": list(precisions)}]}
    (output / layout.MANIFEST_FILE).write_text(json.dumps(manifest, indent=2))
    return output

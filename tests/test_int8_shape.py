"""The int8 builder's quantization shape, per target, on a tiny convolutional model (seconds, no
demo build): both targets quantize Conv weights per output channel (one scale per filter, axis
0); the gpu target's zero points are all 0 (TensorRT's symmetric Q/DQ), the cpu target's
activations are uint8 with zero points (ONNX Runtime's U8S8). tests/test_builder.py checks the
same on the demo's built models; this file pins it where a builder edit is cheap to test."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from builders.precision import to_int8
from contract import layout
from contract.spec import Calibration

torch = pytest.importorskip("torch")

FILTERS = (6, 10)   # output channels of the two convolutions


@pytest.fixture(scope="module")
def tiny_fp32(tmp_path_factory) -> tuple[Path, np.ndarray]:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, FILTERS[0], 3), torch.nn.ReLU(),
                                torch.nn.Conv2d(FILTERS[0], FILTERS[1], 3), torch.nn.ReLU(),
                                torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(FILTERS[1], 4)).eval()
    with torch.no_grad():   # filters of very different sizes: one scale per tensor would not fit them all
        model[0].weight.mul_(torch.logspace(-2, 1, FILTERS[0]).view(-1, 1, 1, 1))
    path = tmp_path_factory.mktemp("tiny-int8") / "fp32.onnx"
    torch.onnx.export(model, (torch.randn(1, 3, 12, 12),), str(path), input_names=[layout.ENGINE_INPUT],
                      output_names=["logits"], dynamic_axes={layout.ENGINE_INPUT: {0: "batch"}}, opset_version=17,
                      dynamo=False)
    x = np.random.default_rng(0).standard_normal((8, 3, 12, 12)).astype(np.float32)
    return path, x


def _conv_weight_scales(model: onnx.ModelProto) -> list[tuple[tuple[int, ...], int, np.ndarray]]:
    """(weight shape, axis, scale) of each Conv weight's DequantizeLinear."""
    inits = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    conv_weights = {n.input[1] for n in model.graph.node if n.op_type == "Conv"}
    out = []
    for n in model.graph.node:
        if n.op_type == "DequantizeLinear" and n.output[0] in conv_weights and n.input[0] in inits:
            axis = next((a.i for a in n.attribute if a.name == "axis"), 1)
            out.append((inits[n.input[0]].shape, axis, inits[n.input[1]]))
    return out


@pytest.mark.parametrize("runtime", ["onnxruntime", "tensorrt"])
def test_conv_weights_are_quantized_per_output_channel(tiny_fp32, tmp_path, runtime):
    fp32, x = tiny_fp32
    out, _, _ = to_int8(fp32, tmp_path / f"{runtime}.onnx", x, Calibration(method="max"), tmp_path / "cache",
                        runtime=runtime, reduce_range=False)
    model = onnx.load(str(out))
    convs = _conv_weight_scales(model)
    assert [shape[0] for shape, _, _ in convs] == list(FILTERS), f"{runtime}: Conv weights not quantized: {convs}"
    for shape, axis, scale in convs:
        assert axis == 0 and scale.shape == (shape[0],), (
            f"{runtime}: a Conv weight {shape} has scale shape {scale.shape} on axis {axis}; per output channel "
            f"is one scale per filter on axis 0")
        assert np.all(scale > 0)
    # the first convolution's filters span three decades: their scales must too
    first = convs[0][2]
    assert first.max() / first.min() > 50
    inits = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    act_zero_points = [inits[n.input[2]] for n in model.graph.node
                       if n.op_type == "QuantizeLinear" and len(n.input) > 2]
    want = np.uint8 if runtime == "onnxruntime" else np.int8
    assert act_zero_points and all(z.dtype == want for z in act_zero_points)


def _zero_points(model: onnx.ModelProto, op: str) -> list[np.ndarray]:
    inits = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    return [inits[n.input[2]] for n in model.graph.node if n.op_type == op and len(n.input) > 2 and n.input[2] in inits]


def test_each_targets_zero_points_biases_and_weight_range(tiny_fp32, tmp_path):
    """tensorrt: every zero point 0 (symmetric), biases left in float, full 8-bit weights;
    onnxruntime: weights symmetric, some activation zero point off 0 (asymmetric uint8)."""
    fp32, x = tiny_fp32
    calib = Calibration(method="max")
    trt, cache, reused = to_int8(fp32, tmp_path / "trt.onnx", x, calib, tmp_path / "cache", runtime="tensorrt",
                                 reduce_range=True)   # ignored for tensorrt
    assert not reused and cache.is_file() and cache.parent == tmp_path / "cache"
    model = onnx.load(str(trt))
    assert all(np.all(z == 0) and z.dtype == np.int8 for z in _zero_points(model, "DequantizeLinear"))
    inits = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    assert not [n for n in model.graph.node if n.op_type == "DequantizeLinear" and inits.get(n.input[0]) is not None
                and inits[n.input[0]].dtype == np.int32], "biases quantized to int32: TensorRT takes float biases"
    weights = [inits[n.input[0]] for n in model.graph.node if n.op_type == "DequantizeLinear"
               and n.input[0] in inits and inits[n.input[0]].ndim == 4]
    assert weights and max(int(np.abs(w).max()) for w in weights) == 127   # 8-bit, not reduce_range's 7
    ort, _, reused = to_int8(fp32, tmp_path / "ort.onnx", x, Calibration(method="max"), tmp_path / "cache2",
                             runtime="onnxruntime", reduce_range=True)
    model = onnx.load(str(ort))
    inits = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    weight_dq = [n for n in model.graph.node if n.op_type == "DequantizeLinear" and n.input[0] in inits
                 and inits[n.input[0]].ndim == 4]
    assert weight_dq and all(np.all(inits[n.input[2]] == 0) for n in weight_dq)          # symmetric weights
    assert max(int(np.abs(inits[n.input[0]]).max()) for n in weight_dq) <= 64             # reduce_range: 7 bits
    assert any(np.any(z != 0) for z in _zero_points(model, "QuantizeLinear"))             # asymmetric activations


def test_calibration_is_reused_and_qoperator_is_available(tiny_fp32, tmp_path):
    fp32, x = tiny_fp32
    calib = Calibration(method="max")
    qdq, _, reused = to_int8(fp32, tmp_path / "a.onnx", x, calib, tmp_path / "cache", runtime="onnxruntime")
    assert not reused and "QLinearConv" not in {n.op_type for n in onnx.load(str(qdq)).graph.node}
    out, _, reused = to_int8(fp32, tmp_path / "b.onnx", x, calib, tmp_path / "cache", runtime="onnxruntime",
                             quant_format="qoperator")
    assert reused
    ops = {n.op_type for n in onnx.load(str(out)).graph.node}
    assert "QLinearConv" in ops


@pytest.mark.parametrize("kwargs,words", [({"runtime": "openvino"}, "int8 runtime 'openvino' is not one of"),
                                          ({"quant_format": "qlinear"}, "int8 quant_format 'qlinear' is not")])
def test_unknown_runtime_or_format_is_refused(tiny_fp32, tmp_path, kwargs, words):
    fp32, x = tiny_fp32
    with pytest.raises(ValueError, match=words):
        to_int8(fp32, tmp_path / "x.onnx", x, Calibration(method="max"), tmp_path / "cache", **kwargs)
    assert not (tmp_path / "x.onnx").exists()

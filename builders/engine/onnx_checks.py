"""ONNX checks that run everywhere: would TensorRT's parser take this variant, at this precision?"""
from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

_QUANT_OPS_TRT_REJECTS = {"DynamicQuantizeLinear", "QLinearConv", "QLinearMatMul", "ConvInteger",
                          "MatMulInteger"}


def check_onnx_for_tensorrt(onnx_path: Path, precision: str, input_name: str | None = None) -> list[str]:
    """Problems that would stop TensorRT's ONNX parser or change the precision; [] when fine.

    Checks (docs/design.md, TensorRT): opset >= 13, a dynamic batch axis on the input, FP32 I/O, an fp16
    variant that really holds fp16 weights, and Q/DQ that TensorRT accepts (symmetric int8 with
    zero points 0, positive scales, per-tensor activations, per-channel weights on the
    output-channel axis, no dynamic or QOperator-style quantization).
    """
    import onnx
    from onnx import TensorProto

    model = onnx.load(str(onnx_path))
    graph = model.graph
    problems: list[str] = []
    opset = max((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), default=0)
    if opset < 13:
        problems.append(f"opset {opset} < 13: TensorRT needs opset >= 13 for per-channel Q/DQ")

    inits = {i.name: i for i in graph.initializer}
    real_inputs = [i for i in graph.input if i.name not in inits]
    for vi in list(real_inputs) + list(graph.output):
        if vi.type.tensor_type.elem_type != TensorProto.FLOAT:
            problems.append(f"I/O tensor {vi.name!r} is {TensorProto.DataType.Name(vi.type.tensor_type.elem_type)}, "
                            "expected FLOAT (fp16/int8 variants keep FP32 I/O)")
    for vi in real_inputs:
        if input_name is not None and vi.name != input_name:
            problems.append(f"input {vi.name!r} is not the expected {input_name!r}")
        dims = vi.type.tensor_type.shape.dim
        if not dims or dims[0].HasField("dim_value"):
            problems.append(f"input {vi.name!r} has no dynamic batch axis (dim 0 must be symbolic "
                            "for an optimization profile)")

    ops = Counter(n.op_type for n in graph.node)
    if precision == "fp16" and not any(i.data_type == TensorProto.FLOAT16 for i in inits.values()):
        problems.append("fp16 variant holds no FLOAT16 initializers: it is still an fp32 graph")
    if precision != "int8":
        if ops["QuantizeLinear"] or ops["DequantizeLinear"]:
            problems.append(f"{precision} variant contains Q/DQ nodes")
        return problems

    rejected = sorted(op for op in _QUANT_OPS_TRT_REJECTS if ops[op])
    if rejected:
        problems.append(f"int8 variant uses {rejected}: TensorRT takes only QuantizeLinear/DequantizeLinear")
    if not ops["QuantizeLinear"] or not ops["DequantizeLinear"]:
        problems.append("int8 variant has no QuantizeLinear/DequantizeLinear nodes (explicit quantization)")

    consumers: dict[str, list[Any]] = {}
    for n in graph.node:
        for name in n.input:
            consumers.setdefault(name, []).append(n)
    for n in graph.node:
        if n.op_type in ("QuantizeLinear", "DequantizeLinear"):
            problems.extend(_qdq_problems(n, inits, consumers))
    return problems


def onnx_has_qdq(onnx_path: Path) -> bool:
    import onnx

    return any(n.op_type == "QuantizeLinear" for n in onnx.load(str(onnx_path), load_external_data=False).graph.node)


def _qdq_problems(n: Any, inits: dict[str, Any], consumers: dict[str, list[Any]]) -> list[str]:
    """What TensorRT would reject in one QuantizeLinear/DequantizeLinear node `n` (its scale and zero
    point from the initializers `inits`; `consumers` maps a tensor to the nodes that read it)."""
    from onnx import TensorProto, numpy_helper

    problems: list[str] = []
    scale = numpy_helper.to_array(inits[n.input[1]]) if n.input[1] in inits else None
    zero = numpy_helper.to_array(inits[n.input[2]]) if len(n.input) > 2 and n.input[2] in inits else None
    where = f"{n.op_type} {n.name or n.output[0]!r}"
    if scale is not None and not np.all(scale > 0):
        problems.append(f"{where}: scales must be positive")
    source = inits.get(n.input[0])
    if n.op_type == "DequantizeLinear" and source is not None and source.data_type == TensorProto.INT32:
        return problems + [f"{where}: int32 quantized bias; TensorRT's Q/DQ takes int8 (quantize with "
                           "extra_options QuantizeBias=False and keep biases float)"]
    if zero is not None:
        if zero.dtype != np.int8:
            problems.append(f"{where}: zero point type {zero.dtype} (TensorRT needs int8, symmetric)")
        elif np.any(zero != 0):
            problems.append(f"{where}: zero points must be 0 (symmetric quantization)")
    per_channel = scale is not None and scale.size > 1
    is_weight = n.op_type == "DequantizeLinear" and n.input[0] in inits
    if per_channel and not is_weight:
        problems.append(f"{where}: activations must be quantized per tensor")
    if per_channel and is_weight:
        axis = next((a.i for a in n.attribute if a.name == "axis"), 1)
        rank = len(inits[n.input[0]].dims)
        axis = axis % rank if rank else axis
        for c in consumers.get(n.output[0], []):
            trans_b = next((a.i for a in c.attribute if a.name == "transB"), 0)
            want = {"Conv": 0, "ConvTranspose": 1, "MatMul": rank - 1, "Gemm": 0 if trans_b else 1}.get(c.op_type)
            if want is not None and axis != want:
                problems.append(f"{where}: per-channel weight axis {axis}, but {c.op_type} "
                                f"needs its output-channel axis {want}")
    return problems

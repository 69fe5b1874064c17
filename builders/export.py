"""PyTorch -> ONNX with a dynamic batch axis and named tensors."""
from __future__ import annotations

import warnings
from pathlib import Path

import onnx
import torch

from contract.layout import ENGINE_INPUT, ENGINE_OUTPUT


def export_onnx(model: torch.nn.Module, crop: int, path: Path, opset: int = 17) -> Path:
    """Write `model` as ONNX: input [batch, 3, crop, crop] named `input`, output `logits`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    example = torch.zeros(2, 3, crop, crop)
    with warnings.catch_warnings():
        # The TorchScript-based exporter (dynamo=False) needs no onnxscript; it warns that it is legacy.
        warnings.simplefilter("ignore")
        torch.onnx.export(model.eval(), (example,), str(path), dynamo=False, opset_version=opset,
                          input_names=[ENGINE_INPUT], output_names=[ENGINE_OUTPUT],
                          dynamic_axes={ENGINE_INPUT: {0: "batch"}, ENGINE_OUTPUT: {0: "batch"}})
    onnx.checker.check_model(str(path))
    return path


def check_onnx_interface(path: Path) -> tuple[int, int]:
    """Check a user-supplied ONNX has the names and dynamic batch axis the repository relies on;
    returns (crop, num_classes)."""
    model = onnx.load(str(path))
    ins = [i for i in model.graph.input if i.name not in {t.name for t in model.graph.initializer}]
    if len(ins) != 1 or ins[0].name != ENGINE_INPUT or len(model.graph.output) != 1 \
            or model.graph.output[0].name != ENGINE_OUTPUT:
        raise ValueError(f"{path}: expected one input named '{ENGINE_INPUT}' and one output named "
                         f"'{ENGINE_OUTPUT}', got inputs {[i.name for i in ins]} and outputs "
                         f"{[o.name for o in model.graph.output]}")
    dims = ins[0].type.tensor_type.shape.dim
    if len(dims) != 4 or dims[0].dim_value or dims[1].dim_value != 3 or dims[2].dim_value != dims[3].dim_value:
        raise ValueError(f"{path}: input must be [batch (dynamic), 3, S, S], got "
                         f"{[d.dim_param or d.dim_value for d in dims]}")
    out = model.graph.output[0].type.tensor_type.shape.dim
    return dims[2].dim_value, out[-1].dim_value

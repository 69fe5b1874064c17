"""PyTorch -> ONNX with a dynamic batch axis and named tensors."""
from __future__ import annotations

import re
import warnings
from pathlib import Path

import onnx
import torch

from contract.errors import ToolkitError
from contract.layout import ENGINE_INPUT, ENGINE_OUTPUT


class ExportError(ToolkitError, ValueError):
    """The model cannot be exported to ONNX; the message names the module, the op and what to try."""


_OP = re.compile(r"operator '(?P<op>[\w:.]+)'")


def module_calling(model: torch.nn.Module, op: str, example: torch.Tensor) -> str | None:
    """"'name' (Class)" of the innermost module whose forward calls the aten op `op` ("aten::x")
    on `example`, found by running forward once under a dispatch mode; None when none does."""
    from torch.utils._python_dispatch import TorchDispatchMode

    names = {m: n for n, m in model.named_modules()}
    stack: list[torch.nn.Module] = []
    found: list[torch.nn.Module] = []

    class _Find(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            # Composite ops may reach the dispatcher as a variant (linalg_inv -> linalg_inv_ex).
            if not found and stack and func._schema.name.startswith(op):
                found.append(stack[-1])
            return func(*args, **(kwargs or {}))

    def leave(_m, _a, _o):
        stack.pop()     # returns None: a forward hook's return value would replace the output

    hooks = [h for m in names for h in (m.register_forward_pre_hook(lambda mod, _a: stack.append(mod)),
                                         m.register_forward_hook(leave))]
    try:
        with torch.no_grad(), _Find():
            model(example)
    except Exception:  # noqa: BLE001 - the search is best effort; the exporter's error is reported anyway
        pass
    finally:
        for h in hooks:
            h.remove()
    return f"'{names[found[0]] or '(the model itself)'}' ({type(found[0]).__name__})" if found else None


def describe_export_failure(model: torch.nn.Module, err: Exception, opset: int, example: torch.Tensor) -> str:
    """Why `model` did not export, in words: the module and op where the exporter names an op, and
    what to try. err: the exporter's exception; opset: the opset asked for; example: the input traced."""
    text = str(err)
    first = next((line for line in text.splitlines() if line.strip()), type(err).__name__)
    what = type(model).__name__
    m = _OP.search(text)
    if m:
        module = module_calling(model, m.group("op"), example) or "(not found by a forward pass)"
        return (f"ONNX export of {what} failed: module {module} calls {m.group('op')}, which has no ONNX form "
                f"at opset {opset}. Try: a higher `opset` in the spec (up to 23); replacing that call in the "
                "module's forward with ops ONNX has; or exporting the ONNX yourself and using "
                "source.kind = 'onnx' (no TorchScript twin then).")
    return (f"ONNX export of {what} failed: {first}. Tracing runs forward once on a [2, 3, crop, crop] "
            "tensor: control flow that depends on tensor values, outputs that are not one logits tensor, or "
            "inputs other than the image do not trace. Try: make the branch static, return the logits "
            "tensor, or export the ONNX yourself and use source.kind = 'onnx'.")


def export_onnx(model: torch.nn.Module, crop: int, path: Path, opset: int = 17) -> Path:
    """Write `model` as ONNX: input [batch, 3, crop, crop] named `input`, output `logits`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    example = torch.zeros(2, 3, crop, crop)
    with warnings.catch_warnings():
        # The TorchScript-based exporter (dynamo=False) needs no onnxscript; it warns that it is legacy.
        warnings.simplefilter("ignore")
        try:
            torch.onnx.export(model.eval(), (example,), str(path), dynamo=False, opset_version=opset,
                              input_names=[ENGINE_INPUT], output_names=[ENGINE_OUTPUT],
                              dynamic_axes={ENGINE_INPUT: {0: "batch"}, ENGINE_OUTPUT: {0: "batch"}})
        except Exception as err:  # noqa: BLE001 - any exporter failure is reported in the user's terms
            path.unlink(missing_ok=True)
            raise ExportError(describe_export_failure(model, err, opset, example)) from None
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

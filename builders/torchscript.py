"""The PyTorch-backend twin: TorchScript variants of the network, checked against PyTorch.

Per precision (fp32, fp16) one `model.pt` for Triton's PyTorch (LibTorch) backend
(`platform: "pytorch_libtorch"`). Both take and return float32, like the fp16 ONNX variant keeps
FP32 I/O: the fp16 model casts its input to half inside the script and its logits back to float,
so the DALI model's FP32 output feeds either twin unchanged. The model is traced on the CPU with a
dynamic batch and holds no device constant, so the backend can load it onto the GPU of each
KIND_GPU instance (or keep it on the CPU for KIND_CPU).

Parity, as for the ONNX variants: the TorchScript model and the eager PyTorch model (fp32) run on
the validation images after DALI preprocessing; the manifest records max/mean |Δlogit|, top-1
agreement and accuracy, and whether the difference lies within the precision's tolerance.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

# |Δlogit| allowed against eager fp32 PyTorch, relative to the largest |logit| (at least 1):
# fp32 differs by float rounding only (operator fusion); fp16 carries ~3 decimal digits.
RELATIVE_TOLERANCE = {"fp32": 1e-4, "fp16": 2e-2}


@dataclass
class TorchScriptModel:
    path: Path
    precision: str
    seconds: float
    method: str                    # how the script was made (torch.jit.trace)
    max_abs_diff_pytorch: float    # vs eager fp32 PyTorch on the validation tensors
    mean_abs_diff_pytorch: float
    top1_agreement_pytorch: float
    accuracy: float
    pytorch_accuracy: float
    tolerance: float
    within_tolerance: bool
    images: int


def _half_wrapper(net):
    import torch

    class HalfNet(torch.nn.Module):
        """fp16 weights and compute, FP32 input and output (the cast happens in the script)."""

        def __init__(self, inner: torch.nn.Module):
            super().__init__()
            self.inner = inner.half()

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.inner(x.half()).float()

    return HalfNet(net)


def script_model(net, precision: str, crop: int, path: Path) -> Path:
    """Trace `net` (eval mode, fp32 weights) for `precision` and save it to `path`.

    Traced with batch 2 and checked at batches 1 and 3 against the traced module, so a shape baked
    into the trace (a batch that is not dynamic) fails here, not in Triton."""
    import torch

    if precision not in RELATIVE_TOLERANCE:
        raise ValueError(f"TorchScript precision must be one of {sorted(RELATIVE_TOLERANCE)}, got {precision!r}")
    model = net.eval() if precision == "fp32" else _half_wrapper(net).eval()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with torch.no_grad():
        traced = torch.jit.trace(model, torch.zeros(2, 3, crop, crop), check_trace=False)
        for n in (1, 3):
            x = torch.randn(n, 3, crop, crop, generator=torch.Generator().manual_seed(n))
            want, got = model(x), traced(x)
            if got.shape != want.shape or got.dtype != torch.float32:
                raise RuntimeError(f"traced {precision} model gives {tuple(got.shape)} {got.dtype} at batch {n}; "
                                   f"eager gives {tuple(want.shape)} float32")
    traced.save(str(path))
    return path


def load_script(path: Path, device: str = "cpu"):
    """A saved TorchScript model on `device` (cpu, cuda, cuda:N), in eval mode."""
    import torch

    return torch.jit.load(str(path), map_location=device).eval()


def run_script(script, x: np.ndarray, batch: int = 64) -> np.ndarray:
    """Logits of a loaded script for float32 images [N, 3, H, W] (CPU)."""
    import torch

    with torch.inference_mode():
        return np.concatenate([script(torch.from_numpy(np.ascontiguousarray(x[i: i + batch]))).float().numpy()
                               for i in range(0, len(x), batch)])


def _torchscript(workdir: Path, checkpoint: Path, source, num_classes: int, crop: int, precision: str,
                 val_tensors: Path, val: Path, factory_code: Path | None = None) -> TorchScriptModel:
    """source: the spec's Source; checkpoint: its weights (state dict, or the save_pretrained folder)."""
    from builders.families import load_model
    from builders.models import predict
    from contract.images import load_image_folder
    from runners.compare import accuracy, compare_logits

    start = time.perf_counter()
    path = script_model(load_model(source, checkpoint, num_classes), precision, crop, workdir / "model.pt")
    seconds = time.perf_counter() - start
    x = np.load(val_tensors)
    targets = load_image_folder(val).targets
    ref = predict(load_model(source, checkpoint, num_classes), x)
    got = run_script(load_script(path), x)
    cmp = compare_logits(ref, got, "pytorch", f"torchscript-{precision}")
    tol = RELATIVE_TOLERANCE[precision] * max(1.0, float(np.abs(ref).max()))
    return TorchScriptModel(path, precision, seconds, "torch.jit.trace", cmp.max_abs_diff, cmp.mean_abs_diff,
                            cmp.top1_agreement, accuracy(got, targets), accuracy(ref, targets), tol,
                            bool(np.isfinite(got).all() and cmp.max_abs_diff <= tol), len(x))


def build_twin(spec, checkpoint: Path | None, num_classes: int, val_tensors: Path, val: Path,
               ctx) -> tuple[dict[str, TorchScriptModel], str]:
    """The TorchScript variants of one spec entry (cached stages), and a status line for the manifest.

    spec: the entry's ModelSpec; checkpoint: its PyTorch state dict (None for an onnx source);
    val_tensors/val: the DALI-preprocessed validation images and their folder; ctx: the BuildContext."""
    from builders.stages import Stage
    from contract.layout import TORCH_PRECISIONS

    if not spec.torchscript:
        return {}, "off (torchscript = false)"
    if checkpoint is None:
        return {}, "not built: source.kind = 'onnx' has no PyTorch model"
    from builders.families import factory_code

    stage = Stage("torchscript", TorchScriptModel, _torchscript,
                  code=("builders.torchscript", "builders.models", "builders.families"),
                  tools=("torch", "torchvision", "numpy", "timm", "transformers"))
    out = {}
    for precision in (p for p in TORCH_PRECISIONS if p in spec.precisions):
        out[precision] = stage(ctx, label=f"{spec.name}/{precision}", checkpoint=checkpoint, source=spec.source,
                               num_classes=num_classes, crop=spec.input.crop, precision=precision,
                               val_tensors=val_tensors, val=val, factory_code=factory_code(spec.source))
    bad = [p for p, m in out.items() if not m.within_tolerance]
    if bad:
        raise ValueError(f"{spec.name}: TorchScript {bad} differ from PyTorch beyond tolerance: " + "; ".join(
            f"{p} max |Δlogit| {out[p].max_abs_diff_pytorch:.3g} > {out[p].tolerance:.3g}" for p in bad))
    return out, f"built {sorted(out)} with torch.jit.trace"

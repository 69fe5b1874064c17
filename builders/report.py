"""Terminal output of the build: progress bars for the long stages and the final summary table."""
from __future__ import annotations

import contextlib
import sys
from pathlib import Path
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable, Iterator

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

if TYPE_CHECKING:
    from builders.pipeline import ModelBuild
    from contract.spec import BuildSpec


@dataclass
class BuildResult:
    """What one build made: the models, the manifest written, the stage records, the plan status."""

    spec: BuildSpec
    models: list[ModelBuild]
    manifest: dict
    records: list = field(default_factory=list)
    plan_status: dict = field(default_factory=dict)   # model -> message about TensorRT plans


# Wide enough for the summary table when output goes to a file or CI log (no terminal width).
console = Console(width=None if sys.stdout.isatty() else 120)


@contextlib.contextmanager
def progress_factory(quiet: bool = False) -> Iterator[Callable[[str], Callable[[int, int], None]]]:
    """Yields `start(description) -> update(done, total)`: one bar per long-running step."""
    if quiet:
        yield lambda description: (lambda done, total: None)
        return
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), console=console, transient=False) as progress:
        def start(description: str) -> Callable[[int, int], None]:
            task = progress.add_task(description, total=None)
            return lambda done, total: progress.update(task, completed=done, total=total)

        yield start


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{100 * v:.1f}%"


def _size(n: int | None) -> str:
    return "-" if n is None else f"{n / 1e6:.2f} MB" if n >= 1e5 else f"{n / 1e3:.1f} kB"


def print_summary(result: "BuildResult", seconds: float) -> None:
    """The build's summary table, read back from the manifest it wrote (contract.manifest's reader).
    seconds: the build's wall time."""
    from contract.manifest import load_manifest

    m = load_manifest(result.spec.output)
    table = Table(title=f"model repository: {result.spec.output}", title_justify="left")
    for col in ("target", "artifact", "precision", "accuracy", "agreement", "max |Δ|", "size", "time"):
        table.add_column(col, justify="left" if col in ("target", "artifact", "precision") else "right")
    for path, art in m.artifacts.items():
        target, model_dir = path.split("/")[:2]
        artifact = f"{model_dir}/{Path(path).name}"
        mm = m.model(art.model)
        if art.kind in ("dali", "dali_definition"):
            pre = mm.preprocessing
            table.add_row(target, artifact, "-", "-", "-", f"{pre['max_levels']:.3g} lv", _size(art.bytes), "-")
            continue
        if art.kind == "torchscript":
            ts = mm.torchscript["precisions"][art.precision]
            table.add_row(target, artifact, art.precision, _pct(ts["accuracy"]), _pct(ts["top1_agreement_pytorch"]),
                          f"{ts['max_abs_diff_pytorch']:.3g}", _size(art.bytes), f"{ts['seconds']:.1f}s")
            continue
        ev = mm.precisions[art.precision].on(target)  # int8: each target's own model
        if art.missing:
            table.add_row(target, artifact, art.precision, "-", "-", "-", "not built", "-", style="yellow")
        elif not ev.runnable:
            table.add_row(target, artifact, art.precision, "n/a", "n/a", "n/a", _size(art.bytes),
                          f"{ev.build_seconds:.1f}s", style="yellow")
        else:
            table.add_row(target, artifact, art.precision, _pct(ev.accuracy), _pct(ev.top1_agreement_fp32),
                          f"{ev.max_abs_diff_fp32:.3g}", _size(art.bytes), f"{ev.build_seconds:.1f}s")
    table.caption = ("accuracy and agreement (top-1, vs fp32) measured with ONNX Runtime on the validation "
                     "images; max |Δ|: logits vs fp32, or for dali.py DALI CPU vs the torchvision transform in pixel "
                     "levels; model.pt (TorchScript): measured with torch.jit, agreement and max |Δ| vs eager PyTorch fp32")
    console.print(table)
    for name, mm in m.models.items():
        exp = mm.export
        if exp:
            console.print(f"[bold]{name}[/bold]: PyTorch accuracy {_pct(exp['pytorch_accuracy'])}, "
                          f"ONNX vs PyTorch max |Δ| {exp['max_abs_diff']:.2e}, top-1 agreement "
                          f"{_pct(exp['top1_agreement'])}", highlight=False)
        pre = mm.preprocessing
        ok = "within" if pre["within_tolerance"] else "[red]OUTSIDE[/red]"
        tol = pre["tolerance_levels"]
        console.print(f"  DALI CPU vs torchvision transform on {pre['images']} images, pixel levels per image: "
                      f"mean <= {pre['mean_levels']['max_over_images']:.2f}, p99 <= {pre['p99_levels']['max_over_images']:.2f}, "
                      f"max {pre['max_levels']:.2f} ({ok} tolerance mean {tol['mean']}, p99 {tol['p99']}, max {tol['max']})",
                      highlight=False)
        if pre["outside_tolerance"]:
            console.print(f"  [red]outside tolerance ({pre['policy']}):[/red] {', '.join(pre['outside_tolerance'][:10])}",
                          highlight=False)
        for precision, ev in mm.precisions.items():
            if not ev.runnable:
                console.print(f"  [yellow]{precision}[/yellow]: {ev.reason}", highlight=False)
            for target, tev in ev.targets.items():
                # The int8 shape per target, and fp16's warning on the cpu target.
                if precision == "int8" or (precision, target) == ("fp16", "cpu"):
                    style = "yellow" if precision == "fp16" else "bold"
                    console.print(f"  [{style}]{precision} on {target}[/{style}]: {tev.notes}", highlight=False)
        console.print(f"  TensorRT: {mm.tensorrt.get('status')}", highlight=False)
        if mm.torchscript:
            console.print(f"  TorchScript (PyTorch-backend twin): {mm.torchscript.get('status')}", highlight=False)
    cached = sum(r.cached for r in result.records)
    console.print(f"{len(result.records)} stages ({cached} from cache) in {seconds:.1f}s; "
                  f"manifest: {result.spec.output}/manifest.json", highlight=False)

"""What tik-verify prints and writes: the results table, the preprocessing lines, the problems,
provenance and verdict on the console, and the same findings as JSON (clients.verify computes them)."""
from __future__ import annotations

import json
from dataclasses import dataclass, field

from clients import provenance
from contract import layout
from contract.verdict import Verdict


@dataclass
class Findings:
    """What a run found: one row per (model, precision), the preprocessing parity per model, and the
    words about each model's reference and TensorRT build."""

    rows: list[dict] = field(default_factory=list)
    pre_rows: dict[str, dict] = field(default_factory=dict)
    references: dict[str, str] = field(default_factory=dict)
    notes: dict[str, str] = field(default_factory=dict)

    def verdict(self) -> Verdict:
        """FAIL when a row or a preprocessing check failed or no row passed, else PASS."""
        failed = any(r["status"] == Verdict.FAIL for r in self.rows)
        pre_failed = any(pr["status"] == Verdict.FAIL for pr in self.pre_rows.values())
        return Verdict.of(not failed and not pre_failed and any(r["status"] == Verdict.PASS for r in self.rows))


def _results_table(args, client, meta: dict, rows: list[dict]):
    """The rich table: one line per (model, precision)."""
    from rich.table import Table

    table = Table(title=f"verify: Triton {meta.get('version')} at {client.url} ({args.protocol}) vs PyTorch")
    for col, just in (("model", "left"), ("precision", "left"), ("images", "right"), ("accuracy", "right"),
                      ("PyTorch acc.", "right"), ("drop (pts)", "right"), ("top-1 agree", "right"),
                      ("max |Δlogit|", "right"), ("mean |Δlogit|", "right"), ("network max |Δ|", "right"),
                      ("result", "left")):
        table.add_column(col, justify=just)
    for r in rows:
        if "accuracy" in r:
            table.add_row(r["model"], r["precision"], str(r["images"]), f"{r['accuracy']:.4f}",
                          f"{r['pytorch_accuracy']:.4f}", f"{100 * r['accuracy_drop']:+.2f}",
                          f"{r['top1_agreement']:.4f}", f"{r['max_abs_diff']:.3g}", f"{r['mean_abs_diff']:.3g}",
                          f"{r['network_max_abs_diff']:.3g}",
                          "[green]PASS[/]" if r["status"] == Verdict.PASS else "[red]FAIL[/]")
        else:
            style = "red" if r["status"] == Verdict.FAIL else "yellow"
            table.add_row(r["model"], r["precision"], str(r["images"]), "-", f"{r['pytorch_accuracy']:.4f}",
                          "-", "-", "-", "-", "-", f"[{style}]{r['status']}[/]")
    table.caption = ("end to end: served ensemble vs PyTorch on its own transform (the reference below); "
                     "network: served ensemble vs PyTorch on the served preprocessing output")
    return table


def _print_preprocessing(console, pre_rows: dict[str, dict]) -> None:
    """One line per model: the served preprocessing against its reference transform."""
    for name, pr in pre_rows.items():
        tol = pr["tolerance_levels"]
        style = "green" if pr["status"] == Verdict.PASS else "red"
        console.print(f"preprocessing ({name}, served {layout.preprocess_model(name)} on {pr['device'].upper()} vs "
                      f"its reference transform, pixel levels per image over {pr['images']} images): mean <= "
                      f"{pr['mean_levels']['max_over_images']:.2f}, p99 <= {pr['p99_levels']['max_over_images']:.2f}, "
                      f"max {pr['max_levels']:.2f} (tolerance mean {tol['mean']}, p99 {tol['p99']}, max {tol['max']}) "
                      f"[{style}]{pr['status']}[/]", highlight=False)
        if pr["status"] == Verdict.FAIL:
            console.print(f"FAIL {name} preprocessing: worst images: {pr['worst']}", highlight=False, markup=False)


def render(console, args, client, meta: dict, loaded, names: list[str], found, seconds: float) -> None:
    """Print the table, the preprocessing lines, every problem, the provenance and the verdict."""
    rows = found.rows
    console.print(_results_table(args, client, meta, rows))
    _print_preprocessing(console, found.pre_rows)
    for r in rows:
        for problem in r.get("problems", []):
            console.print(f"{r['status']} {r['model']} {r['precision']}: {problem}", highlight=False, markup=False)
    console.print(f"server: {meta.get('name')} {meta.get('version')} at {client.url} ({args.protocol})", highlight=False)
    console.print("artifacts built with: " + ", ".join(f"{k} {v}" for k, v in loaded.tools.items() if v)
                  + f" (manifest {loaded.created or '?'})", highlight=False)
    for name in names:
        console.print(f"reference ({name}): {found.references.get(name, '-')}", highlight=False, markup=False)
        console.print(f"TensorRT ({name}): {found.notes.get(name, '-')}", highlight=False, markup=False)
    verdict = found.verdict()
    if not rows or not any(r["status"] != Verdict.SKIP for r in rows):
        console.print("[red]nothing verified:[/] the server serves none of the manifest's precisions")
    count = {v: sum(r["status"] == v for r in rows) for v in Verdict}
    console.print(f"verdict: [{'green' if verdict == Verdict.PASS else 'red'}]{verdict}[/] "
                  f"({count[Verdict.PASS]} passed, {count[Verdict.FAIL]} failed, "
                  f"{count[Verdict.SKIP]} skipped; {seconds:.1f} s)")


def write_json(args, client, meta: dict, loaded, thresholds, found: Findings) -> None:
    """The findings, thresholds, server and manifest provenance as JSON at --json."""
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({
        "verdict": found.verdict(),
        "server": {"url": client.url, "protocol": args.protocol, **meta},
        "manifest": {"path": str(loaded.path), "created": loaded.created, "tools": loaded.tools},
        "reference": found.references, "tensorrt": found.notes,
        "thresholds": thresholds, "preprocessing": found.pre_rows, "results": found.rows,
        "command": getattr(args, "command", None), "machine": provenance.machine(),
    }, indent=2))

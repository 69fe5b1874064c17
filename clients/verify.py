"""Check every served precision of a model against the PyTorch model run in-process.

    python -m clients.verify                                  # manifest and server defaults
    python -m clients.verify --protocol grpc --min-agreement int8=0.97 --json results/verify.json

For each precision ensemble on the server (`<model>_<precision>`), the labeled image set (the
manifest's data.val by default) goes through the server, and the PyTorch checkpoint the repository
was built from (manifest: `checkpoint`, `source.arch`) runs in-process on the same images. Reported
per precision: accuracy of both, the accuracy drop, top-1 agreement, max and mean abs logit diff;
thresholds per precision (flags below); exit status 1 when one is missed, 2 when verification could
not run (server unreachable, no manifest, ...).

PyTorch's input is, by default, the output of the repository's own CPU DALI pipeline
(`cpu/<model>_preprocess/1/model.dali`, run in-process with the same DALI version), not the PIL
reference. Why: then both sides see bit-identical tensors and every difference in the table comes
from what the served path adds (precision conversion, the runtime, batching) and not from resize
filters, which differ between DALI and PIL by up to ~11 pixel levels at small sizes (DESIGN.md §5);
the builder checks DALI against PIL separately and records it in the manifest (preprocessing).
`--pytorch-input pil` uses builders.preprocess.reference_preprocess instead (end-to-end vs. a
plain PIL pipeline; expect larger diffs).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from builders import layout

PRECISION_ORDER = ("fp32", "tf32", "fp16", "bf16", "fp8", "int8")
# Defaults: fp32 must match PyTorch to float rounding; fp16 nearly; int8 (calibrated Q/DQ) may
# flip borderline images. "*" applies to precisions not named here.
DEFAULT_THRESHOLDS: dict[str, dict[str, float | None]] = {
    "min_agreement": {"fp32": 0.99, "fp16": 0.99, "int8": 0.95, "*": 0.95},
    "max_accuracy_drop": {"fp32": 0.01, "fp16": 0.01, "int8": 0.02, "*": 0.02},
    "max_abs_diff": {"fp32": 1e-3, "fp16": 0.1, "int8": None, "*": None},
}


def _precision_key(p: str) -> tuple[int, str]:
    return (PRECISION_ORDER.index(p) if p in PRECISION_ORDER else len(PRECISION_ORDER), p)


def parse_thresholds(kind: str, values: list[str]) -> dict[str, float | None]:
    """Flag values "0.97" (every precision) or "int8=0.97" (one), later ones win; "none" disables."""
    out = dict(DEFAULT_THRESHOLDS[kind])
    for v in values:
        prec, _, num = v.rpartition("=")
        val = None if num.strip().lower() == "none" else float(num)
        if prec:
            out[prec.strip()] = val
        else:
            out = {k: val for k in out}
    return out


def _threshold(table: dict[str, float | None], precision: str) -> float | None:
    return table.get(precision, table.get("*"))


def tensorrt_note(manifest_model: dict, engine_platform: str, triton_version: str) -> str:
    """Words about the TensorRT version the plans were built with against the server's."""
    trt = manifest_model.get("tensorrt") or {}
    versions = sorted({str(v) for v in _find_key(trt, "tensorrt_version") if v})
    if engine_platform != "tensorrt_plan":
        built = f"; the manifest says for the gpu target: {trt.get('status')}" if trt.get("status") else ""
        return (f"the served engines are {engine_platform or 'not TensorRT'} (the cpu target), so no TensorRT "
                f"version applies here{built}")
    if not versions:
        return (f"the server runs TensorRT plans, but the manifest records no TensorRT build "
                f"({trt.get('status') or 'no status'}); the plans were not built by this repository's builder, "
                "so their TensorRT version is unknown. A plan runs only on the TensorRT version and GPU it was "
                "built for: rebuild with `docker compose up` if the models fail to load.")
    return (f"plans were built with TensorRT {', '.join(versions)}; the server (Triton {triton_version}) does not "
            "report its TensorRT version, so it is unknown here and cannot be compared. The plans load only in the "
            f"Triton container of the same release as the TensorRT {versions[0]} container that built them; if the "
            "ensembles are not ready, rebuild the plans there (`docker compose up`, docs/gpu.md).")


def _find_key(obj: Any, key: str):
    if isinstance(obj, dict):
        for k, v in obj.items():
            if k == key:
                yield v
            else:
                yield from _find_key(v, key)
    elif isinstance(obj, list):
        for v in obj:
            yield from _find_key(v, key)


def _parser() -> argparse.ArgumentParser:
    from clients.repository import add_backend_argument
    from clients.triton import add_connection_arguments

    p = argparse.ArgumentParser(
        prog="python -m clients.verify",
        description="Compare each precision ensemble on a Triton server with the PyTorch model run in-process on "
                    "the same labeled images: accuracy, top-1 agreement, logit differences. Exit status 1 when a "
                    "threshold is missed, 2 when verification could not run.")
    add_connection_arguments(p)
    p.add_argument("--manifest", type=Path, default=Path("model_repository/manifest.json"),
                   help="the builder's manifest.json: checkpoint, architecture, labels, image set "
                        "(default: %(default)s)")
    p.add_argument("--model", action="append", default=[],
                   help="model name from the manifest, e.g. digits (repeatable; default: every model in the manifest)")
    p.add_argument("--precision", action="append", default=[],
                   help="precision to verify, e.g. fp16 (repeatable; default: every precision the server serves "
                        "for the model). A named precision that is not served counts as a failure.")
    add_backend_argument(p)
    p.add_argument("--data", type=Path, default=None,
                   help="labeled ImageFolder (<root>/<label>/<image>); default: the manifest's data.val")
    p.add_argument("--limit", type=int, default=None, help="use only the first N images (default: all)")
    p.add_argument("--batch-size", type=int, default=32,
                   help="images per request (capped at the model's max_batch_size; default: %(default)s)")
    p.add_argument("--pytorch-input", choices=("dali", "pil"), default="dali",
                   help="what PyTorch gets: the repository's CPU DALI pipeline output (default; isolates what the "
                        "served path adds) or the PIL reference preprocessing")
    p.add_argument("--min-agreement", action="append", default=[], metavar="[PREC=]VALUE",
                   help="minimum top-1 agreement with PyTorch, 0..1 (defaults: fp32 0.99, fp16 0.99, int8 0.95)")
    p.add_argument("--max-accuracy-drop", action="append", default=[], metavar="[PREC=]VALUE",
                   help="maximum accuracy drop against PyTorch, as a fraction (0.01 = 1 point; defaults: fp32 0.01, "
                        "fp16 0.01, int8 0.02)")
    p.add_argument("--max-abs-diff", action="append", default=[], metavar="[PREC=]VALUE",
                   help="maximum abs logit difference (defaults: fp32 1e-3, fp16 0.1, int8 none = not checked)")
    p.add_argument("--shared-memory", action="store_true",
                   help="send images through system shared memory (server on this machine only)")
    p.add_argument("--json", type=Path, default=None, help="also write the results as JSON to this path")
    return p


def _load_reference(manifest_path: Path, name: str, entry: dict, images, pytorch_input: str):
    """PyTorch logits on the same images; returns (logits, description)."""
    from builders.models import load_checkpoint
    from builders.preprocess import CpuPreprocessor, reference_preprocess
    from builders.spec import Input
    from runners.compare import run_batches
    from runners.torch_runner import TorchRunner

    root = manifest_path.parent
    if not entry.get("checkpoint"):
        raise SystemExit(f"error: the manifest has no PyTorch checkpoint for {name!r} (source: "
                         f"{entry.get('source', {}).get('kind')}); nothing to verify against")
    ckpt = root / entry["checkpoint"]
    arch = entry["source"]["arch"]
    model = load_checkpoint(arch, ckpt, int(entry["num_classes"]))
    encoded = [f.read_bytes() for f in images.files]
    dali_file = root / "cpu" / layout.preprocess_model(name) / "1" / "model.dali"
    if pytorch_input == "dali" and not dali_file.is_file():
        print(f"note: {dali_file} not found (no cpu target); PyTorch gets the PIL reference preprocessing",
              file=sys.stderr)
        pytorch_input = "pil"
    if pytorch_input == "dali":
        pre = CpuPreprocessor(dali_file)
        x = np.concatenate([pre([np.frombuffer(e, np.uint8) for e in encoded[i: i + pre.max_batch_size]])
                            for i in range(0, len(encoded), pre.max_batch_size)])
        how = f"PyTorch {arch} ({entry['checkpoint']}) on the output of {dali_file.relative_to(root)} (DALI CPU)"
    else:
        inp = Input(**entry["input"])
        x = np.stack([reference_preprocess(e, inp) for e in encoded])
        how = f"PyTorch {arch} ({entry['checkpoint']}) on builders.preprocess.reference_preprocess (PIL)"
    with TorchRunner(model) as runner:
        logits = run_batches(runner, layout.ENGINE_INPUT, x, layout.ENGINE_OUTPUT, batch=128)
    return logits, how


def run(args) -> int:
    from rich.console import Console
    from rich.table import Table

    from builders.datasets import load_image_folder
    from builders.preprocess import pad_batch
    from clients.triton import TritonClient, TritonClientError, served_precisions
    from runners.compare import accuracy, compare_logits, run_batches
    from runners.triton_runner import TritonRunner

    # Wide enough for the table when piped (rich falls back to 80 columns without a terminal).
    console = Console(width=None if sys.stdout.isatty() else 130)
    thresholds = {k: parse_thresholds(k, getattr(args, k)) for k in DEFAULT_THRESHOLDS}
    manifest_path = args.manifest.resolve()
    if not manifest_path.is_file():
        print(f"error: manifest {args.manifest} not found; build the repository (python builders/build_all.py) "
              "or pass --manifest", file=sys.stderr)
        return 2
    manifest = json.loads(manifest_path.read_text())
    names = args.model or sorted(manifest.get("models", {}))
    unknown = [n for n in names if n not in manifest.get("models", {})]
    if unknown:
        print(f"error: {unknown} not in {args.manifest}; it has {sorted(manifest.get('models', {}))}", file=sys.stderr)
        return 2

    client = TritonClient(args.url, args.protocol, timeout_s=args.timeout, retries=args.retries)
    try:
        client.wait_until_ready()
        meta = client.server_metadata()
        index = client.repository_index()
    except TritonClientError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2

    rows: list[dict] = []
    notes: dict[str, str] = {}
    references: dict[str, str] = {}
    started = time.perf_counter()
    for name in names:
        entry = manifest["models"][name]
        on_server = served_precisions(index, name, args.backend)
        built_precisions = (entry.get("torchscript", {}).get("precisions", {}) if args.backend == layout.TORCH_BACKEND
                            else entry.get("precisions", {}))
        wanted = args.precision or sorted(set(on_server) | set(built_precisions), key=_precision_key)
        data = args.data or (Path(entry["data"]["val"]) if entry.get("data", {}).get("val") else None)
        if data is None or not Path(data).is_dir():
            print(f"error: image set {data} for {name!r} not found; pass --data <ImageFolder>", file=sys.stderr)
            return 2
        images = load_image_folder(data)
        if args.limit:
            images = type(images)(images.root, images.files[: args.limit], images.targets[: args.limit], images.classes)
        labels = list(entry["labels"])
        # Folder names are the labels the model was trained with; map by name so a subset of classes works.
        targets = [labels.index(images.classes[t]) if images.classes[t] in labels else t for t in images.targets]
        ref_logits, how = _load_reference(manifest_path, name, entry, images, args.pytorch_input)
        references[name] = how
        ref_acc = accuracy(ref_logits, targets)
        padded = pad_batch([f.read_bytes() for f in images.files])
        for precision in wanted:
            ensemble = layout.ensemble_model(name, precision, args.backend)
            row: dict[str, Any] = {"model": name, "precision": precision, "ensemble": ensemble,
                                   "images": len(images), "pytorch_accuracy": ref_acc}
            if precision not in on_server:
                why = "requested but not served" if args.precision else "in the manifest but not served"
                built = built_precisions.get(precision, {})
                if built and not built.get("runnable", True):
                    why += f" (build: {built.get('reason')})"
                row.update(status="FAIL" if args.precision else "SKIP", problems=[f"{ensemble} {why}"])
                rows.append(row)
                continue
            runner = TritonRunner(ensemble, args.url, args.protocol, timeout_s=args.timeout,
                                  shared_memory=args.shared_memory)
            try:
                with runner:
                    bs = min(args.batch_size, runner.max_batch_size or args.batch_size)
                    t0 = time.perf_counter()
                    served = run_batches(runner, layout.ENSEMBLE_INPUT, padded, layout.ENSEMBLE_OUTPUT, batch=bs)
                    row["seconds"] = time.perf_counter() - t0
                    info = runner.client.model_info(ensemble)
                    engine_platform = client.model_info(info.steps[-1]).platform if info.steps else info.platform
                    server_labels = runner.client.labels(ensemble, padded[:1])
            except TritonClientError as err:
                print(f"error: {err}", file=sys.stderr)
                return 2
            cmp = compare_logits(ref_logits, served, "pytorch", ensemble)
            acc = accuracy(served, targets)
            row.update(accuracy=acc, accuracy_drop=ref_acc - acc, top1_agreement=cmp.top1_agreement,
                       max_abs_diff=cmp.max_abs_diff, mean_abs_diff=cmp.mean_abs_diff,
                       engine_platform=engine_platform, batch_size=bs)
            problems = []
            t = _threshold(thresholds["min_agreement"], precision)
            if t is not None and cmp.top1_agreement < t:
                problems.append(f"top-1 agreement {cmp.top1_agreement:.4f} < {t}")
            t = _threshold(thresholds["max_accuracy_drop"], precision)
            if t is not None and ref_acc - acc > t:
                problems.append(f"accuracy drop {100 * (ref_acc - acc):.2f} pts > {100 * t:.2f}")
            t = _threshold(thresholds["max_abs_diff"], precision)
            if t is not None and cmp.max_abs_diff > t:
                problems.append(f"max abs diff {cmp.max_abs_diff:.3g} > {t:g}")
            if server_labels != labels:
                problems.append(f"the server's labels {server_labels[:5]}... differ from the manifest's {labels[:5]}...")
            row.update(status="FAIL" if problems else "PASS", problems=problems)
            rows.append(row)
            notes.setdefault(name, tensorrt_note(entry, engine_platform, meta.get("version", "?")))
        notes.setdefault(name, tensorrt_note(entry, "", meta.get("version", "?")))
    client.close()

    table = Table(title=f"verify: Triton {meta.get('version')} at {client.url} ({args.protocol}) vs PyTorch")
    for col, just in (("model", "left"), ("precision", "left"), ("images", "right"), ("accuracy", "right"),
                      ("PyTorch acc.", "right"), ("drop (pts)", "right"), ("top-1 agree", "right"),
                      ("max |Δlogit|", "right"), ("mean |Δlogit|", "right"), ("result", "left")):
        table.add_column(col, justify=just)
    for r in rows:
        if "accuracy" in r:
            table.add_row(r["model"], r["precision"], str(r["images"]), f"{r['accuracy']:.4f}",
                          f"{r['pytorch_accuracy']:.4f}", f"{100 * r['accuracy_drop']:+.2f}",
                          f"{r['top1_agreement']:.4f}", f"{r['max_abs_diff']:.3g}", f"{r['mean_abs_diff']:.3g}",
                          "[green]PASS[/]" if r["status"] == "PASS" else "[red]FAIL[/]")
        else:
            style = "red" if r["status"] == "FAIL" else "yellow"
            table.add_row(r["model"], r["precision"], str(r["images"]), "-", f"{r['pytorch_accuracy']:.4f}",
                          "-", "-", "-", "-", f"[{style}]{r['status']}[/]")
    console.print(table)
    for r in rows:
        for problem in r.get("problems", []):
            console.print(f"{r['status']} {r['model']} {r['precision']}: {problem}", highlight=False, markup=False)
    tools = manifest.get("tools", {})
    console.print(f"server: {meta.get('name')} {meta.get('version')} at {client.url} ({args.protocol})", highlight=False)
    console.print("artifacts built with: " + ", ".join(f"{k} {v}" for k, v in tools.items() if v)
                  + f" (manifest {manifest.get('created', '?')})", highlight=False)
    for name in names:
        console.print(f"reference ({name}): {references.get(name, '-')}", highlight=False, markup=False)
        console.print(f"TensorRT ({name}): {notes.get(name, '-')}", highlight=False, markup=False)
    failed = [r for r in rows if r["status"] == "FAIL"]
    verdict = "FAIL" if failed or not any(r["status"] == "PASS" for r in rows) else "PASS"
    if not rows or not any(r["status"] != "SKIP" for r in rows):
        console.print("[red]nothing verified:[/] the server serves none of the manifest's precisions")
    console.print(f"verdict: [{'green' if verdict == 'PASS' else 'red'}]{verdict}[/] "
                  f"({sum(r['status'] == 'PASS' for r in rows)} passed, {len(failed)} failed, "
                  f"{sum(r['status'] == 'SKIP' for r in rows)} skipped; {time.perf_counter() - started:.1f} s)")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({
            "verdict": verdict,
            "server": {"url": client.url, "protocol": args.protocol, **meta},
            "manifest": {"path": str(manifest_path), "created": manifest.get("created"), "tools": tools},
            "reference": references, "tensorrt": notes,
            "thresholds": thresholds, "results": rows,
        }, indent=2))
        console.print(f"wrote {args.json}", highlight=False)
    return 0 if verdict == "PASS" else 1


def main(argv: list[str] | None = None) -> int:
    return run(_parser().parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())

"""Check that the served ensembles answer like the user's PyTorch model with its own preprocessing.

    python -m clients.verify                                  # manifest and server defaults
    python -m clients.verify --protocol grpc --min-agreement int8=0.97 --json results/verify.json

The reference is the user's view: the PyTorch checkpoint the repository was built from (manifest:
`checkpoint`, `source`), run in-process on the output of its own eval transform (the manifest's
`preprocessing.reference_transform`: timm's create_transform, the Hugging Face image processor, or
torchvision `Resize`, `CenterCrop`, `ToTensor`, `Normalize` as its `input` says; builders.families) of
the labeled images (the manifest's validation set by default). Three things are reported:

- preprocessing parity: the served `<model>_preprocess` (DALI) output vs that reference transform,
  per image in pixel levels (mean, p99, max), against the tolerance for the device the server runs
  it on (contract.preprocess: CPU or GPU/nvJPEG);
- network parity, per precision: the ensemble's logits vs PyTorch run on the served
  preprocessing output (what the conversion to ONNX/TensorRT and the precision change);
- end to end, per precision: the ensemble vs PyTorch on the reference transform — accuracy of
  both, the drop, top-1 agreement, logit differences.

Exit status 1 when a threshold (flags below) or the preprocessing tolerance is missed, 2 when
verification could not run (server unreachable, no manifest, ...).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from clients import provenance
from contract import layout
from contract.manifest import ManifestError, ModelEntry, load_manifest

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


def tensorrt_note(manifest_model: ModelEntry, engine_platform: str, triton_version: str) -> str:
    """Words about the TensorRT version the plans were built with (manifest_model: the manifest's
    entry) against the server's (engine_platform: the served engine's platform; triton_version)."""
    trt = manifest_model.tensorrt
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
    from clients.connection import add_connection_arguments
    from clients.repository import add_backend_argument

    p = argparse.ArgumentParser(
        prog="python -m clients.verify",
        description="Compare each precision ensemble on a Triton server with the PyTorch model run in-process on "
                    "the same labeled images: accuracy, top-1 agreement, logit differences. Exit status 1 when a "
                    "threshold is missed, 2 when verification could not run.")
    add_connection_arguments(p)
    p.add_argument("--manifest", type=Path, default=Path("model_repository/manifest.json"),
                   help="the builder's manifest.json, or the folder holding it: checkpoint, architecture, "
                        "labels, bundled validation images (default: %(default)s)")
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
    p.add_argument("--min-agreement", action="append", default=[], metavar="[PREC=]VALUE",
                   help="minimum top-1 agreement with PyTorch, 0..1 (defaults: fp32 0.99, fp16 0.99, int8 0.95)")
    p.add_argument("--max-accuracy-drop", action="append", default=[], metavar="[PREC=]VALUE",
                   help="maximum accuracy drop against PyTorch, as a fraction (0.01 = 1 point; defaults: fp32 0.01, "
                        "fp16 0.01, int8 0.02)")
    p.add_argument("--max-abs-diff", action="append", default=[], metavar="[PREC=]VALUE",
                   help="maximum abs logit difference of the network: served ensemble vs PyTorch on the served "
                        "preprocessing output (defaults: fp32 1e-3, fp16 0.1, int8 none = not checked)")
    p.add_argument("--shared-memory", action="store_true",
                   help="send images through system shared memory (server on this machine only)")
    p.add_argument("--json", type=Path, default=None, help="also write the results as JSON to this path")
    return p


class _Reference:
    """The user's PyTorch model and its own transform for one manifest entry (builders.families)."""

    def __init__(self, model: ModelEntry):
        from builders.families import load_model
        from contract.spec import Source

        if model.checkpoint is None:
            raise SystemExit(f"error: the manifest has no PyTorch checkpoint for {model.name!r} (source: "
                             f"{model.source.get('kind')}); nothing to verify against")
        src = model.source
        kind = src.get("kind", "torchvision")
        root = model.source_root
        # The repository's own copies stand in for the spec's files (the manifest names them by name only).
        self.source = Source(kind=kind, arch=src.get("arch", "mobilenet_v3_small"), factory=src.get("factory"),
                             root=root, checkpoint=model.checkpoint if kind != "huggingface" else None,
                             path=model.checkpoint if kind == "huggingface" else None)
        self.arch = src.get("factory") or src.get("arch") if kind != "huggingface" else "Hugging Face model"
        self.checkpoint = model.checkpoint_name
        self.model = load_model(self.source, model.checkpoint, model.num_classes)
        self.input = model.input_spec()
        self.record = (model.record.get("preprocessing") or {}).get("reference_transform") or {"family": "torchvision"}

    def transform(self, encoded: list[bytes]) -> np.ndarray:
        from builders.families import reference_preprocess_all

        hf = self.source.path if self.source.kind == "huggingface" else None
        return reference_preprocess_all(encoded, self.record, self.input, hf)

    def logits(self, x: np.ndarray) -> np.ndarray:
        from runners.compare import run_batches
        from runners.torch_runner import TorchRunner

        with TorchRunner(self.model) as runner:
            return run_batches(runner, layout.ENGINE_INPUT, x, layout.ENGINE_OUTPUT, batch=128)

    def tolerance(self, device: str) -> dict[str, float]:
        from contract.preprocess import tolerance_for

        return tolerance_for(device, self.input.interpolation, self.record.get("family", "torchvision"))

    def describe(self) -> str:
        from builders.families import describe_reference

        return f"PyTorch {self.arch} ({self.checkpoint}) on {describe_reference(self.record, self.input)}"


def _served_preprocessing(client, name: str, padded: np.ndarray, batch: int) -> tuple[np.ndarray, str]:
    """The served preprocessing model's output on every image, and the device it runs on."""
    model = layout.preprocess_model(name)
    config = client.model_config(model)
    groups = config.get("instance_group") or [{}]
    device = "gpu" if any(g.get("kind") == "KIND_GPU" for g in groups) else "cpu"
    size = min(batch, int(config.get("max_batch_size") or batch))
    out = np.concatenate([client.preprocess(model, padded[i: i + size], config)
                          for i in range(0, len(padded), size)])
    return out, device


def run(args) -> int:
    from rich.console import Console
    from rich.table import Table

    from clients.connection import client_options
    from clients.repository import served_precisions
    from clients.triton import TritonClient, TritonClientError
    from clients.triton_runner import TritonRunner
    from contract.images import load_image_folder, pack_batch
    from contract.preprocess import parity
    from runners.compare import accuracy, compare_logits, run_batches

    # Wide enough for the table when piped (rich falls back to 80 columns without a terminal).
    console = Console(width=None if sys.stdout.isatty() else 130)
    thresholds = {k: parse_thresholds(k, getattr(args, k)) for k in DEFAULT_THRESHOLDS}
    try:
        loaded = load_manifest(args.manifest)
    except ManifestError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    manifest_path = loaded.path
    names = args.model or sorted(loaded.models)
    unknown = [n for n in names if n not in loaded.models]
    if unknown:
        print(f"error: {unknown} not in {args.manifest}; it has {sorted(loaded.models)}", file=sys.stderr)
        return 2

    client = TritonClient(args.url, args.protocol, **client_options(args))
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
    pre_rows: dict[str, dict] = {}
    started = time.perf_counter()
    for name in names:
        entry = loaded.models[name]
        on_server = served_precisions(index, name, args.backend)
        built_precisions = entry.built_precisions(args.backend)
        wanted = args.precision or sorted(set(on_server) | set(built_precisions), key=_precision_key)
        data = args.data or loaded.models[name].val
        if data is None or not Path(data).is_dir():
            what = f"image set {data}" if data else "no validation images in the manifest"
            print(f"error: {what} for {name!r} not found; pass --data <ImageFolder>", file=sys.stderr)
            return 2
        images = load_image_folder(data)
        if args.limit:
            images = type(images)(images.root, images.files[: args.limit], images.targets[: args.limit], images.classes)
        labels = entry.labels
        # Folder names are the labels the model was trained with; map by name so a subset of classes works.
        targets = [labels.index(images.classes[t]) if images.classes[t] in labels else t for t in images.targets]
        reference = _Reference(loaded.models[name])
        references[name] = reference.describe()
        encoded = [f.read_bytes() for f in images.files]
        ref_x = reference.transform(encoded)
        ref_logits = reference.logits(ref_x)
        ref_acc = accuracy(ref_logits, targets)
        padded = pack_batch(encoded)
        try:
            served_x, device = _served_preprocessing(client, name, padded, args.batch_size)
        except TritonClientError as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
        pre = parity(served_x, ref_x, reference.input.std,
                     [str(f.relative_to(images.root)) for f in images.files], device, reference.tolerance(device))
        net_logits = reference.logits(served_x)
        pre_rows[name] = {**pre.summary(), "device": device, "status": "FAIL" if pre.failing else "PASS",
                          "worst": pre.worst()}
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
                                  shared_memory=args.shared_memory, client_kw=client_options(args))
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
            net = compare_logits(net_logits, served, "pytorch-on-served-preprocessing", ensemble)
            acc = accuracy(served, targets)
            row.update(accuracy=acc, accuracy_drop=ref_acc - acc, top1_agreement=cmp.top1_agreement,
                       max_abs_diff=cmp.max_abs_diff, mean_abs_diff=cmp.mean_abs_diff,
                       network_max_abs_diff=net.max_abs_diff, network_top1_agreement=net.top1_agreement,
                       engine_platform=engine_platform, batch_size=bs)
            problems = []
            t = _threshold(thresholds["min_agreement"], precision)
            if t is not None and cmp.top1_agreement < t:
                problems.append(f"top-1 agreement {cmp.top1_agreement:.4f} < {t}")
            t = _threshold(thresholds["max_accuracy_drop"], precision)
            if t is not None and ref_acc - acc > t:
                problems.append(f"accuracy drop {100 * (ref_acc - acc):.2f} pts > {100 * t:.2f}")
            t = _threshold(thresholds["max_abs_diff"], precision)
            if t is not None and net.max_abs_diff > t:
                problems.append(f"network max abs logit diff {net.max_abs_diff:.3g} > {t:g} (vs PyTorch on the served "
                                "preprocessing output)")
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
                      ("max |Δlogit|", "right"), ("mean |Δlogit|", "right"), ("network max |Δ|", "right"),
                      ("result", "left")):
        table.add_column(col, justify=just)
    for r in rows:
        if "accuracy" in r:
            table.add_row(r["model"], r["precision"], str(r["images"]), f"{r['accuracy']:.4f}",
                          f"{r['pytorch_accuracy']:.4f}", f"{100 * r['accuracy_drop']:+.2f}",
                          f"{r['top1_agreement']:.4f}", f"{r['max_abs_diff']:.3g}", f"{r['mean_abs_diff']:.3g}",
                          f"{r['network_max_abs_diff']:.3g}",
                          "[green]PASS[/]" if r["status"] == "PASS" else "[red]FAIL[/]")
        else:
            style = "red" if r["status"] == "FAIL" else "yellow"
            table.add_row(r["model"], r["precision"], str(r["images"]), "-", f"{r['pytorch_accuracy']:.4f}",
                          "-", "-", "-", "-", "-", f"[{style}]{r['status']}[/]")
    table.caption = ("end to end: served ensemble vs PyTorch on its own transform (the reference below); "
                     "network: served ensemble vs PyTorch on the served preprocessing output")
    console.print(table)
    for name, pr in pre_rows.items():
        tol = pr["tolerance_levels"]
        style = "green" if pr["status"] == "PASS" else "red"
        console.print(f"preprocessing ({name}, served {layout.preprocess_model(name)} on {pr['device'].upper()} vs "
                      f"its reference transform, pixel levels per image over {pr['images']} images): mean <= "
                      f"{pr['mean_levels']['max_over_images']:.2f}, p99 <= {pr['p99_levels']['max_over_images']:.2f}, "
                      f"max {pr['max_levels']:.2f} (tolerance mean {tol['mean']}, p99 {tol['p99']}, max {tol['max']}) "
                      f"[{style}]{pr['status']}[/]", highlight=False)
        if pr["status"] == "FAIL":
            console.print(f"FAIL {name} preprocessing: worst images: {pr['worst']}", highlight=False, markup=False)
    for r in rows:
        for problem in r.get("problems", []):
            console.print(f"{r['status']} {r['model']} {r['precision']}: {problem}", highlight=False, markup=False)
    tools = loaded.tools
    console.print(f"server: {meta.get('name')} {meta.get('version')} at {client.url} ({args.protocol})", highlight=False)
    console.print("artifacts built with: " + ", ".join(f"{k} {v}" for k, v in tools.items() if v)
                  + f" (manifest {loaded.created or '?'})", highlight=False)
    for name in names:
        console.print(f"reference ({name}): {references.get(name, '-')}", highlight=False, markup=False)
        console.print(f"TensorRT ({name}): {notes.get(name, '-')}", highlight=False, markup=False)
    failed = [r for r in rows if r["status"] == "FAIL"]
    pre_failed = [n for n, pr in pre_rows.items() if pr["status"] == "FAIL"]
    verdict = "FAIL" if failed or pre_failed or not any(r["status"] == "PASS" for r in rows) else "PASS"
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
            "manifest": {"path": str(manifest_path), "created": loaded.created, "tools": tools},
            "reference": references, "tensorrt": notes,
            "thresholds": thresholds, "preprocessing": pre_rows, "results": rows,
            "command": getattr(args, "command", None), "machine": provenance.machine(),
        }, indent=2))
        console.print(f"wrote {args.json}", highlight=False)
    return 0 if verdict == "PASS" else 1


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    args.command = provenance.command("tik-verify", argv)
    return run(args)


if __name__ == "__main__":
    sys.exit(main())

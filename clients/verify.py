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
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from clients import provenance
from clients._verify_report import Findings, render, write_json
from contract import layout
from contract.errors import CannotRun, MissingInput, UsageError, exit_code_of
from contract.manifest import ModelEntry, load_manifest
from contract.verdict import Verdict

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
    from clients.connection import command_parser
    from clients.served_models import add_backend_argument

    p = command_parser("python -m clients.verify",
                       "Compare each precision ensemble on a Triton server with the PyTorch model run in-process on "
                       "the same labeled images: accuracy, top-1 agreement, logit differences. Exit status 1 when a "
                       "threshold is missed, 2 when verification could not run.")
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
            raise MissingInput(f"the manifest has no PyTorch checkpoint for {model.name!r} (source: "
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


def _selected_models(args, loaded) -> list[str]:
    """The manifest's model names to verify (--model, default all); UsageError for an unknown one."""
    names = args.model or sorted(loaded.models)
    unknown = [n for n in names if n not in loaded.models]
    if unknown:
        raise UsageError(f"{unknown} not in {args.manifest}; it has {sorted(loaded.models)}")
    return names


def _labeled_images(args, entry: ModelEntry):
    """The labeled images for one model (--data or the manifest's bundled set, cut to --limit) and
    their targets as indices into the model's labels (mapped by folder name, so a subset works)."""
    from contract.images import load_image_folder

    data = args.data or entry.val
    if data is None or not Path(data).is_dir():
        what = f"image set {data}" if data else "no validation images in the manifest"
        raise UsageError(f"{what} for {entry.name!r} not found; pass --data <ImageFolder>")
    images = load_image_folder(data)
    if args.limit:
        images = type(images)(images.root, images.files[: args.limit], images.targets[: args.limit], images.classes)
    labels = entry.labels
    targets = [labels.index(images.classes[t]) if images.classes[t] in labels else t for t in images.targets]
    return images, targets


def _threshold_problems(thresholds, precision: str, cmp, net, ref_acc: float, acc: float) -> list[str]:
    """The thresholds (per kind, per precision) that the comparison `cmp` (end to end) and `net`
    (network only) miss, in words."""
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
    return problems


def _unserved_row(args, row: dict, precision: str, built: dict) -> dict:
    """`row` for a precision the server does not serve: FAIL when asked for by name, else SKIP."""
    why = "requested but not served" if args.precision else "in the manifest but not served"
    if built and not built.get("runnable", True):
        why += f" (build: {built.get('reason')})"
    row.update(status=Verdict.FAIL if args.precision else Verdict.SKIP, problems=[f"{row['ensemble']} {why}"])
    return row


def _served_logits(args, client, ensemble: str, padded: np.ndarray) -> tuple[np.ndarray, dict]:
    """The ensemble's logits for every image, and what the row records about the call: seconds,
    batch size, the engine's platform and the server's labels."""
    from clients.connection import client_options
    from clients.triton import TritonClientError
    from clients.triton_runner import TritonRunner
    from runners.compare import run_batches

    runner = TritonRunner(ensemble, args.url, args.protocol, timeout_s=args.timeout,
                          shared_memory=args.shared_memory, client_kw=client_options(args))
    try:
        with runner:
            bs = min(args.batch_size, runner.max_batch_size or args.batch_size)
            t0 = time.perf_counter()
            served = run_batches(runner, layout.ENSEMBLE_INPUT, padded, layout.ENSEMBLE_OUTPUT, batch=bs)
            seconds = time.perf_counter() - t0
            info = runner.client.model_info(ensemble)
            engine_platform = client.model_info(info.steps[-1]).platform if info.steps else info.platform
            server_labels = runner.client.labels(ensemble, padded[:1])
    except TritonClientError as err:
        raise CannotRun(str(err)) from err
    return served, {"seconds": seconds, "engine_platform": engine_platform, "batch_size": bs,
                    "server_labels": server_labels}


def _verify_precision(args, client, thresholds, entry: ModelEntry, precision: str, ref: dict) -> dict:
    """One row: the served ensemble of `precision` against the reference logits in `ref` (end to end
    and on the served preprocessing output), its accuracy, and the thresholds it misses."""
    from runners.compare import accuracy, compare_logits

    ensemble = layout.ensemble_model(entry.name, precision, args.backend)
    served, call = _served_logits(args, client, ensemble, ref["padded"])
    server_labels = call.pop("server_labels")
    cmp = compare_logits(ref["logits"], served, "pytorch", ensemble)
    net = compare_logits(ref["net_logits"], served, "pytorch-on-served-preprocessing", ensemble)
    acc = accuracy(served, ref["targets"])
    row = {"model": entry.name, "precision": precision, "ensemble": ensemble, "images": ref["images"],
           "pytorch_accuracy": ref["accuracy"], "seconds": call.pop("seconds")}
    row.update(accuracy=acc, accuracy_drop=ref["accuracy"] - acc, top1_agreement=cmp.top1_agreement,
               max_abs_diff=cmp.max_abs_diff, mean_abs_diff=cmp.mean_abs_diff,
               network_max_abs_diff=net.max_abs_diff, network_top1_agreement=net.top1_agreement, **call)
    problems = _threshold_problems(thresholds, precision, cmp, net, ref["accuracy"], acc)
    if server_labels != entry.labels:
        problems.append(f"the server's labels {server_labels[:5]}... differ from the manifest's {entry.labels[:5]}...")
    row.update(status=Verdict.of(not problems), problems=problems)
    return row


def _reference_side(args, client, entry: ModelEntry, found: Findings) -> dict:
    """The PyTorch reference for one model: its logits on its own transform and on the served
    preprocessing output, its accuracy; records the preprocessing parity in `found`."""
    from clients.triton import TritonClientError
    from contract.images import pack_batch
    from contract.preprocess import parity
    from runners.compare import accuracy

    images, targets = _labeled_images(args, entry)
    reference = _Reference(entry)
    found.references[entry.name] = reference.describe()
    encoded = [f.read_bytes() for f in images.files]
    ref_x = reference.transform(encoded)
    ref_logits = reference.logits(ref_x)
    padded = pack_batch(encoded)
    try:
        served_x, device = _served_preprocessing(client, entry.name, padded, args.batch_size)
    except TritonClientError as err:
        raise CannotRun(str(err)) from err
    pre = parity(served_x, ref_x, reference.input.std,
                 [str(f.relative_to(images.root)) for f in images.files], device, reference.tolerance(device))
    found.pre_rows[entry.name] = {**pre.summary(), "device": device, "status": Verdict.of(not pre.failing),
                                  "worst": pre.worst()}
    return {"images": len(images), "targets": targets, "padded": padded, "logits": ref_logits,
            "accuracy": accuracy(ref_logits, targets), "net_logits": reference.logits(served_x)}


def _verify_model(args, client, loaded, name: str, index, meta: dict, thresholds, found: Findings) -> None:
    """Every wanted precision of model `name` (--precision, default all served or built) into `found`."""
    from clients.served_models import served_precisions

    entry = loaded.models[name]
    on_server = served_precisions(index, name, args.backend)
    built_precisions = entry.built_precisions(args.backend)
    wanted = args.precision or sorted(set(on_server) | set(built_precisions), key=_precision_key)
    ref = _reference_side(args, client, entry, found)
    for precision in wanted:
        if precision not in on_server:
            row = {"model": name, "precision": precision, "ensemble": layout.ensemble_model(name, precision, args.backend),
                   "images": ref["images"], "pytorch_accuracy": ref["accuracy"]}
            found.rows.append(_unserved_row(args, row, precision, built_precisions.get(precision, {})))
            continue
        row = _verify_precision(args, client, thresholds, entry, precision, ref)
        found.rows.append(row)
        found.notes.setdefault(name, tensorrt_note(entry, row["engine_platform"], meta.get("version", "?")))
    found.notes.setdefault(name, tensorrt_note(entry, "", meta.get("version", "?")))


def run(args) -> int:
    """Verify every selected model and precision; 0 when the verdict is PASS, 1 when FAIL. Raises
    ToolkitError (ManifestError, UsageError, CannotRun: exit code 2) when it cannot run."""
    from rich.console import Console

    from clients.connection import client_options
    from clients.triton import TritonClient, TritonClientError

    # Wide enough for the table when piped (rich falls back to 80 columns without a terminal).
    console = Console(width=None if sys.stdout.isatty() else 130)
    thresholds = {k: parse_thresholds(k, getattr(args, k)) for k in DEFAULT_THRESHOLDS}
    loaded = load_manifest(args.manifest)
    names = _selected_models(args, loaded)
    client = TritonClient(args.url, args.protocol, **client_options(args))
    try:
        client.wait_until_ready()
        meta = client.server_metadata()
        index = client.repository_index()
    except TritonClientError as err:
        raise CannotRun(str(err)) from err
    found = Findings()
    started = time.perf_counter()
    for name in names:
        _verify_model(args, client, loaded, name, index, meta, thresholds, found)
    client.close()
    render(console, args, client, meta, loaded, names, found, time.perf_counter() - started)
    if args.json:
        write_json(args, client, meta, loaded, thresholds, found)
        console.print(f"wrote {args.json}", highlight=False)
    return 0 if found.verdict() == Verdict.PASS else 1


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    args.command = provenance.command("tik-verify", argv)
    return exit_code_of(run, args)


if __name__ == "__main__":
    sys.exit(main())

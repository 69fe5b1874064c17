"""fp32 vs int8 vs fp16 on the cpu target: ONNX Runtime in-process and the ensemble served end to end.

    python benchmarks/cpu_precision_bench.py --out docs/cpu_precision/results.json
    python benchmarks/cpu_precision_bench.py --models demo --batch-sizes 16 --repeats 1 --seconds 1   # quick look
    python benchmarks/cpu_precision_bench.py --table docs/cpu_precision/results.json         # markdown table

Models (each built by the builder, cpu target, the same stage cache as `build_all.py`):

* `demo`: build.toml's digits model (MobileNetV3-small trained at build time, 32x32 input);
* `resnet18`: torchvision's ResNet-18 at 224 with RANDOM weights (torch.manual_seed(0), 10
  classes) saved as a checkpoint -- speed does not depend on the weights; its accuracy means
  nothing. Its images are synthetic 256x256 JPEGs (builders/synthetic_jpegs.py), resized to 256 and
  cropped to 224 as ImageNet models are served; calibration uses --calibration-images of them.

Measured for each batch size, in repeats that interleave the precisions (fp32, int8, fp16,
fp32, int8, ... -- on a shared machine a slow moment then hits every precision, and each ratio
compares neighbours):

* in-process: one ONNX Runtime session per model file the cpu target serves, --threads intra-op
  threads, fed the build's own preprocessed validation tensors; also the TensorRT-shaped S8S8
  int8 (the gpu target's plan source, not served on CPU) and DALI CPU preprocessing alone;
* served: the repository's cpu target in the local tritonserver, JPEG batches sent to each
  ensemble by --concurrency gRPC clients (closed loop); Triton's per-model statistics split each
  request's server time between DALI preprocessing and the ONNX Runtime model.

Prints int8/fp32 and fp16/fp32 (median over repeats, with min-max) and writes everything as JSON.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]

from benchmarks.results_file import write_result
from benchmarks.served_preprocess_bench import server_stats
from benchmarks.load import ClosedLoop, triton_requests
from benchmarks.stats import statistics_delta
from contract import layout
from contract.images import pack_batch
from contract.preprocess import CpuPreprocessor

ORDER = ("fp32", "int8", "fp16")
MACHINE = "2-core CPU dev machine, shared"


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", default="demo,resnet18", help="comma-separated: demo, resnet18 (default: both)")
    p.add_argument("--batch-sizes", default="1,16,64", help="comma-separated (default: %(default)s)")
    p.add_argument("--threads", type=int, default=2, help="ONNX Runtime intra-op threads (default: %(default)s)")
    p.add_argument("--repeats", type=int, default=3, help="interleaved repeats per point (default: %(default)s)")
    p.add_argument("--seconds", type=float, default=3.0, help="measured seconds per in-process point")
    p.add_argument("--served-seconds", type=float, default=4.0, help="measured seconds per served point")
    p.add_argument("--warmup", type=float, default=1.0, help="warm-up seconds per served point")
    p.add_argument("--concurrency", type=int, default=2, help="gRPC clients in flight (default: %(default)s)")
    p.add_argument("--no-served", action="store_true", help="in-process only")
    p.add_argument("--calibration-images", type=int, default=64, help="resnet18: calibration JPEGs")
    p.add_argument("--val-images", type=int, default=128, help="resnet18: validation JPEGs")
    p.add_argument("--cache-dir", type=Path, default=ROOT / ".cache" / "build", help="builder stage cache")
    p.add_argument("--workdir", type=Path, default=ROOT / ".cache" / "cpu_precision",
                   help="repositories and resnet18 data/checkpoint (default: %(default)s)")
    p.add_argument("--out", type=Path, default=None, help="write the results JSON here")
    args = p.parse_args(argv)
    args.models = [m.strip() for m in args.models.split(",") if m.strip()]
    bad = [m for m in args.models if m not in ("demo", "resnet18")]
    if bad:
        p.error(f"--models: unknown {bad}; allowed: demo, resnet18")
    args.batch_sizes = [int(b) for b in args.batch_sizes.split(",")]
    if min(args.batch_sizes) < 1 or max(args.batch_sizes) > 64:
        p.error(f"--batch-sizes {args.batch_sizes}: each must lie in 1..64 (the repositories' max_batch_size)")
    return args


# --- the repositories ------------------------------------------------------------------------------

def _resnet18_inputs(workdir: Path, n_val: int, n_calib: int) -> tuple[Path, Path, Path]:
    """Random-weight ResNet-18 checkpoint and ImageFolder val/calibration splits (10 classes)."""
    import torch
    import torchvision

    from builders.synthetic_jpegs import make_jpegs

    ckpt = workdir / "resnet18_random_weights.pt"
    if not ckpt.is_file():
        torch.manual_seed(0)
        workdir.mkdir(parents=True, exist_ok=True)
        torch.save(torchvision.models.resnet18(weights=None, num_classes=10).state_dict(), ckpt)
    splits = {}
    for split, count, seed in (("val", n_val, 0), ("calibration", n_calib, 100_000)):
        folder = workdir / f"{split}-{count}"
        if not folder.is_dir():
            tmp = Path(tempfile.mkdtemp(prefix=f"{split}-", dir=workdir))
            for i, jpeg in enumerate(make_jpegs(count, 256, 256, seed=seed, workers=os.cpu_count() or 1)):
                (tmp / str(i % 10)).mkdir(exist_ok=True)
                (tmp / str(i % 10) / f"{i:05d}.jpg").write_bytes(jpeg)
            tmp.rename(folder)  # whole splits only: a killed run leaves no half-written folder
        splits[split] = folder
    return ckpt, splits["val"], splits["calibration"]


def build_repository(model: str, args) -> tuple[Path, object]:
    """Build `model`'s cpu target; returns (repository/cpu, the builder's ModelBuild)."""
    from builders.build import build
    from contract.spec import load_spec, parse_spec

    out = args.workdir / model / "model_repository"
    if model == "demo":
        spec = load_spec(ROOT / "build.toml")
        (m,) = spec.models
        m = m.model_copy(update={"triton": m.triton.model_copy(update={"onnx_intra_op_threads": args.threads})})
        spec = spec.model_copy(update={"models": (m,), "targets": ("cpu",), "output": out})
    else:
        ckpt, val, calib = _resnet18_inputs(args.workdir / "resnet18", args.val_images, args.calibration_images)
        spec = parse_spec({"output": str(out), "targets": ["cpu"], "models": [{
            "name": "resnet18", "source": {"kind": "torchvision", "arch": "resnet18", "checkpoint": str(ckpt)},
            "data": {"val": str(val), "calibration": str(calib)}, "input": {"resize": 256, "crop": 224},
            "calibration": {"method": "entropy", "max_images": args.calibration_images},
            "triton": {"max_batch_size": 64, "onnx_intra_op_threads": args.threads}}]})
    result = build(spec, cache_dir=args.cache_dir, quiet=True)
    return out / "cpu", result.models[0]


# --- measuring -------------------------------------------------------------------------------------

def _rate(fn, images_per_call: int, seconds: float) -> float:
    fn()  # warm-up: first-run allocations
    done, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        fn()
        done += images_per_call
    return done / (time.perf_counter() - start)


def _summary(runs: dict[str, list[float]]) -> dict:
    """Per precision: median img/s and runs; per ratio vs fp32: median, min, max over repeats."""
    out = {"img_s": {p: {"median": statistics.median(r), "runs": r} for p, r in runs.items()}}
    for p in runs:
        if p != "fp32":
            ratios = [a / b for a, b in zip(runs[p], runs["fp32"])]
            out[f"{p}/fp32"] = {"median": statistics.median(ratios), "min": min(ratios), "max": max(ratios)}
    return out


def in_process(files: dict[str, Path], x: np.ndarray, dali_file: Path, encoded: list[bytes], args) -> dict:
    import onnxruntime as ort

    sessions = {}
    for precision, path in files.items():
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = args.threads
        opts.inter_op_num_threads = 1
        sessions[precision] = ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])
    pre = CpuPreprocessor(dali_file, num_threads=args.threads)
    results = {}
    for b in args.batch_sizes:
        feed = {layout.ENGINE_INPUT: np.ascontiguousarray(np.resize(x, (b, *x.shape[1:])))}
        rows = list(pack_batch((encoded * b)[:b]))
        runs = {p: [] for p in files} | {"dali_preprocess": []}
        for r in range(args.repeats):
            for p in files:
                runs[p].append(_rate(lambda s=sessions[p]: s.run(None, feed), b, args.seconds))
            runs["dali_preprocess"].append(_rate(lambda: pre(rows), b, args.seconds))
            print(f"  in-process batch {b} repeat {r + 1}: " +
                  ", ".join(f"{p} {v[-1]:,.0f}" for p, v in runs.items()) + " img/s", flush=True)
        results[str(b)] = _summary(runs)
    return results


def served(repo: Path, name: str, precisions: list[str], encoded: list[bytes], args) -> dict:
    from serving.local_server import LocalTritonServer, free_port

    results = {}
    with LocalTritonServer(repo, http_port=free_port(), grpc_port=free_port(), metrics_port=free_port(),
                           timeout_s=300) as server:
        url = server.grpc_url
        for b in args.batch_sizes:
            requests = [pack_batch((encoded * b)[i: i + b]) for i in range(0, max(len(encoded), b), b)]
            runs = {p: [] for p in precisions}
            split = {p: [] for p in precisions}
            for r in range(args.repeats):
                for p in precisions:
                    models = (layout.preprocess_model(name), layout.engine_model(name, p))
                    before = server_stats(url)
                    res = ClosedLoop(triton_requests(url, "grpc", layout.ensemble_model(name, p)), requests,
                                     args.concurrency).run(args.served_seconds, args.warmup)
                    delta = statistics_delta(before, server_stats(url), models)
                    # Execute time per image of each composing model (includes warm-up requests).
                    per_image = [delta[m]["compute_infer_ns"] / max(delta[m]["inference_count"], 1) / 1e6
                                 for m in models]
                    runs[p].append(res.images_per_s)
                    split[p].append({"dali_ms_per_image": per_image[0], "onnxruntime_ms_per_image": per_image[1],
                                     "latency_ms_p50": res.latency_ms["p50"]})
                print(f"  served batch {b} repeat {r + 1}: " +
                      ", ".join(f"{p} {v[-1]:,.0f}" for p, v in runs.items()) + " img/s", flush=True)
            out = _summary(runs)
            out["server_time_split"] = {p: {k: statistics.median(s[k] for s in split[p]) for k in split[p][0]}
                                        for p in precisions}
            results[str(b)] = out
    return results


def environment() -> dict:
    import platform

    import onnxruntime

    from builders.precision import cpu_has_vnni

    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor()) if Path("/proc/cpuinfo").exists() else ""
    return {"machine": MACHINE, "cpu": cpu, "cpu_count": os.cpu_count(), "vnni": cpu_has_vnni(),
            "onnxruntime": onnxruntime.__version__, "python": platform.python_version()}


def _fmt(s: dict, key: str) -> str:
    r = s.get(key)
    return "-" if r is None else f"{r['median']:.2f} ({r['min']:.2f}-{r['max']:.2f})"


def markdown(result: dict) -> str:
    """The ratio table docs/cpu_precision.md and README quote, from a results JSON."""
    rows = ["| model | batch | in-process int8/fp32 | fp16/fp32 | S8S8 int8/fp32 | served int8/fp32 | served fp16/fp32 |",
            "|---|---:|---:|---:|---:|---:|---:|"]
    for model, entry in result["models"].items():
        for b, ip in entry["in_process"].items():
            sv = entry.get("served", {}).get(b, {})
            rows.append(f"| {model} | {b} | {_fmt(ip, 'int8/fp32')} | {_fmt(ip, 'fp16/fp32')} | "
                        f"{_fmt(ip, 'int8_tensorrt_qdq/fp32')} | {_fmt(sv, 'int8/fp32')} | {_fmt(sv, 'fp16/fp32')} |")
    return "\n".join(rows)


def main(argv=None) -> int:
    if argv is None and len(sys.argv) == 3 and sys.argv[1] == "--table":
        print(markdown(json.loads(Path(sys.argv[2]).read_text())))  # --table results.json
        return 0
    args = parse_args(argv)
    result = {"environment": environment(), "load_before": os.getloadavg(), "models": {},
              "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()
                         if k not in ("out", "cache_dir", "workdir")}}
    for model in args.models:
        print(f"{model}: building the cpu target ...", flush=True)
        repo, mb = build_repository(model, args)
        name = mb.spec.name
        files = {p: v.path for p, v in mb.variants_for("cpu").items()}
        files["int8_tensorrt_qdq"] = mb.variants_for("gpu")["int8"].path  # why the cpu target does not serve it
        from contract.images import load_image_folder

        encoded = [f.read_bytes() for f in load_image_folder(mb.data.val).files]
        x = np.load(mb.preprocessing.val_tensors)
        entry = {"quality": {p: {"accuracy": mb.evaluation_for("cpu", p).accuracy,
                                 "top1_agreement_fp32": mb.evaluation_for("cpu", p).top1_agreement_fp32}
                             for p in files if p in mb.variants},
                 "int8_notes": mb.variants_for("cpu")["int8"].notes,
                 "in_process": in_process(files, x, repo / layout.preprocess_model(name) / "1" / "model.dali",
                                          encoded, args)}
        if not args.no_served:
            entry["served"] = served(repo, name, [p for p in ORDER if p in mb.variants], encoded, args)
        result["models"][model] = entry
        print(f"\n{model} ({args.threads} threads; median ratio over {args.repeats} repeats, min-max):")
        for b in args.batch_sizes:
            ip = entry["in_process"][str(b)]
            line = (f"  batch {b:>3}: in-process int8/fp32 {_fmt(ip, 'int8/fp32')}, fp16/fp32 {_fmt(ip, 'fp16/fp32')}"
                    f", S8S8 int8/fp32 {_fmt(ip, 'int8_tensorrt_qdq/fp32')}")
            if "served" in entry:
                sv = entry["served"][str(b)]
                line += f"; served int8/fp32 {_fmt(sv, 'int8/fp32')}, fp16/fp32 {_fmt(sv, 'fp16/fp32')}"
            print(line, flush=True)
    result["load_after"] = os.getloadavg()
    if args.out:
        write_result(args.out, result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

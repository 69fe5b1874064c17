"""The two bounds of the served GPU ensemble, each measured alone on one GPU: DALI and the network.

    python benchmarks/gpu_bounds.py --out results/gpu_bounds.json          # GPU host (H100/H200)

* DALI alone: the resnet50 `dali.py` (640x480 JPEGs -> resize 256 -> crop 224, output left on the
  GPU) as `--pipelines` pipelines in parallel threads, each at batch `--batch`, built the way
  dali_backend builds them (contract.preprocess.backend_executor()) unless a case says otherwise.
  Each case names what ran before the timed batches ("before"): nothing (fresh), one batch of 1,
  the build's warm-up (contract.preprocess.warmup_batch_sizes), ... `batch_order_ratio` is the
  throughput after one batch of 1 over a fresh pipeline's, both with the settings the build writes.
* Network alone: the ResNet-50 fp16 TorchScript `model.pt` (random weights) at the same batch on
  1..4 CUDA streams (one thread each), input already on the GPU; the best stream count counts.

Each DALI case runs one untimed batch at the timed size before timing, and `--warmup-seconds` more
(default 0, as docs/gpu_ensemble/summary.json was measured; the network always gets one second).
Raw JSON with the GPU, driver, DALI and torch versions, every DALI_* variable set, and the command
goes to --out.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from benchmarks.results_file import write_result
from builders.synthetic_jpegs import make_jpegs
from contract.layout import DALI_INPUT
from contract.preprocess import load_pipeline, warmup_batch_sizes, with_definition_params, write_definition
from contract.spec import Input, Triton

# (case name, executor, DALI definition overrides, batches run before the timed ones; "max" = --batch)
CASES = (
    ("fresh", "backend", {}, ()),
    ("after_batch_1", "backend", {}, (1,)),
    ("after_batch_16", "backend", {}, (16,)),
    ("after_build_warmup", "backend", {}, "warmup"),
    ("after_build_warmup_then_1", "backend", {}, "warmup+1"),
    ("simple_executor_fresh", "simple", {}, ()),
    ("dynamic_executor_fresh", "dynamic", {}, ()),
    ("dynamic_executor_after_batch_1", "dynamic", {}, (1,)),
    ("hw_load_0_fresh", "backend", {"hw_decoder_load": 0.0}, ()),
    ("hw_load_0_after_batch_1", "backend", {"hw_decoder_load": 0.0}, (1,)),
    ("hint_640x480_fresh", "backend", {"preallocate_hint": (640, 480)}, ()),
    ("hint_640x480_after_batch_1", "backend", {"preallocate_hint": (640, 480)}, (1,)),
)
NETWORK_WARMUP_S = 1.0   # untimed seconds per stream count: cuDNN algorithms, the fuser's profiling runs


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--batch", type=int, default=128, help="images per pipeline run / network call")
    p.add_argument("--pipelines", type=int, default=2,
                   help="DALI pipelines in parallel (2: the DALI-alone bound docs/gpu_ensemble.md quotes; "
                        "the gpu target runs Triton.gpu_instances, 3 by default)")
    p.add_argument("--images", type=int, default=256, help="distinct 640x480 JPEGs")
    p.add_argument("--seconds", type=float, default=3.0, help="timed seconds per case")
    p.add_argument("--warmup-seconds", type=float, default=0.0,
                   help="untimed seconds of batches at the timed size before each DALI case's timing, after "
                        "its one untimed batch (0: that batch only, as the committed summary was measured)")
    p.add_argument("--cases", default=None, help="comma-separated case names (default: all)")
    p.add_argument("--streams", default="1,2,3,4", help="network stream counts to try")
    p.add_argument("--skip-network", action="store_true")
    p.add_argument("--out", type=Path, required=True, help="JSON file to write")
    a = p.parse_args(argv)
    if a.seconds <= 0 or a.warmup_seconds < 0:
        p.error(f"--seconds must be above 0 and --warmup-seconds at least 0, got {a.seconds} and {a.warmup_seconds}")
    return a


def environment() -> dict:
    import nvidia.dali
    import torch

    # DALI reads its executor and thread-pool switches from the environment: record every one set
    env = {"python": platform.python_version(), "torch": torch.__version__, "dali": nvidia.dali.__version__,
           "DALI_USE_EXEC2": os.environ.get("DALI_USE_EXEC2"),
           **{k: v for k, v in sorted(os.environ.items()) if k.startswith("DALI_")}}
    if torch.cuda.is_available():
        env["gpu"] = torch.cuda.get_device_name(0)
    try:
        env["driver"] = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                                       capture_output=True, text=True, timeout=30).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        env["driver"] = None
    return env


def _definition(tmp: Path, batch: int, threads: int, hw_decoder_load: float, overrides: dict) -> Path:
    path = write_definition(Input(resize=256, crop=224), "gpu", tmp / f"dali_{len(list(tmp.iterdir()))}.py", batch,
                            num_threads=threads, hw_decoder_load=hw_decoder_load, model="resnet50")
    if overrides:
        from contract.preprocess import read_definition_params

        params = {**read_definition_params(path.read_text()), **overrides}
        path.write_text(with_definition_params(path.read_text(), params))
    return path


def _timed(loop, workers: int, seconds: float, finish=None) -> float:
    """Run loop(w, deadline) on `workers` threads, w = 0..workers-1, until `seconds` from now; then
    `finish()` (e.g. wait for the GPU); returns the seconds it all took."""
    start = time.perf_counter()
    threads = [threading.Thread(target=loop, args=(w, start + seconds)) for w in range(workers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if finish:
        finish()
    return time.perf_counter() - start


def _run(pipe, rows) -> None:
    pipe.feed_input(DALI_INPUT, rows)
    pipe.run()


def dali_case(dali_file: Path, executor: str, before, batch: int, pipelines: int, threads: int,
              jpegs: list, seconds: float, rows: list | None = None, warmup_s: float = 0.0) -> dict:
    """Images/s at `batch` of `pipelines` new pipelines, each first given the batches `before` (a
    tuple of sizes, or "warmup" / "warmup+1": the build's warm-up, then a batch of 1), one
    untimed batch of `batch`, then `warmup_s` seconds of untimed batches of `batch` (all
    pipelines at once, as timed). The
    pipelines are fed `rows` (uint8 arrays, one per image), by default the bare files of `jpegs`."""
    import numpy as np
    import torch

    if rows is None:
        rows = [np.frombuffer(j, dtype=np.uint8) for j in jpegs]
    pipes = [load_pipeline(dali_file, 0, threads, batch, executor=executor) for _ in range(pipelines)]
    if before == "warmup":
        before = warmup_batch_sizes(batch)
    elif before == "warmup+1":
        before = warmup_batch_sizes(batch) + [1]
    for pipe in pipes:
        for b in before:
            _run(pipe, rows[:b])
        _run(pipe, rows[:batch])   # one untimed batch at the timed size: lazy allocations
    torch.cuda.synchronize()
    counts = [0] * pipelines

    def loop(w: int, deadline: float) -> None:
        i = w
        while time.perf_counter() < deadline:
            start = (i * batch) % (len(rows) - batch + 1)
            _run(pipes[w], rows[start:start + batch])
            counts[w] += batch
            i += 1

    if warmup_s > 0:   # all pipelines at once, as timed: buffers grown, clocks up
        _timed(loop, pipelines, warmup_s, finish=torch.cuda.synchronize)
        counts = [0] * pipelines
    # torch.cuda.synchronize: every stream of this process, so DALI's work is done.
    elapsed = _timed(loop, pipelines, seconds, finish=torch.cuda.synchronize)
    pipes.clear()   # free the pipelines before the next case builds its own
    return {"images_per_s": sum(counts) / elapsed, "before": list(before), "executor": executor,
            "warmup_s": warmup_s}


def network_alone(batch: int, streams: list[int], seconds: float, tmp: Path) -> dict:
    """Images/s of the ResNet-50 fp16 TorchScript network (random weights) per stream count."""
    import torch
    import torchvision

    from builders.torchscript import script_model

    torch.manual_seed(0)
    net = torchvision.models.get_model("resnet50", weights=None, num_classes=1000).eval()
    module = torch.jit.load(str(script_model(net, "fp16", 224, tmp / "model.pt")), map_location="cuda").eval()
    x = torch.randn(batch, 3, 224, 224, device="cuda")
    result = {}
    for n in streams:
        cuda_streams = [torch.cuda.Stream() for _ in range(n)]
        counts = [0] * n

        def loop(w: int, deadline: float) -> None:
            with torch.inference_mode(), torch.cuda.stream(cuda_streams[w]):
                while time.perf_counter() < deadline:
                    module(x)
                    counts[w] += batch
                cuda_streams[w].synchronize()

        for w in range(n):   # warm-up: cuDNN algorithms, the fuser's profiling runs
            loop(w, time.perf_counter() + NETWORK_WARMUP_S)
        counts = [0] * n
        elapsed = _timed(loop, n, seconds)   # each loop waits for its own stream
        result[n] = sum(counts) / elapsed
        print(f"network alone, {n} stream(s): {result[n]:,.0f} img/s", flush=True)
    best = max(result, key=result.get)
    return {"per_streams": result, "best_streams": best, "images_per_s": result[best]}


def main(argv=None) -> int:
    args = parse_args(argv)
    import torch

    if not torch.cuda.is_available():
        print("gpu_bounds: no CUDA GPU visible to torch", file=sys.stderr)
        return 2
    # The executor the deployments run dali_backend's pipelines with (docker-compose.yml, the
    # Kubernetes gpu overlay); DALI_USE_EXEC2=0 measures the backend's own pipelined executor.
    os.environ.setdefault("DALI_USE_EXEC2", "1")
    t = Triton()
    wanted = set(args.cases.split(",")) if args.cases else None
    jpegs = make_jpegs(args.images, 640, 480)
    out = {"command": "python benchmarks/gpu_bounds.py " + " ".join(sys.argv[1:] if argv is None else argv),
           "environment": environment(), "batch": args.batch, "pipelines": args.pipelines,
           "dali_threads": t.dali_gpu_num_threads, "hw_decoder_load": t.hw_decoder_load, "cases": {}}
    with tempfile.TemporaryDirectory(prefix="gpu-bounds-") as tmp:
        tmp = Path(tmp)
        for name, executor, overrides, before in CASES:
            if wanted and name not in wanted:
                continue
            dali_file = _definition(tmp, args.batch, t.dali_gpu_num_threads, t.hw_decoder_load, overrides)
            res = dali_case(dali_file, executor, before, args.batch, args.pipelines, t.dali_gpu_num_threads,
                            jpegs, args.seconds, warmup_s=args.warmup_seconds)
            res["overrides"] = {k: list(v) if isinstance(v, tuple) else v for k, v in overrides.items()}
            out["cases"][name] = res
            print(f"DALI alone {name:32} {res['images_per_s']:9,.0f} img/s", flush=True)
        cases = out["cases"]
        if "fresh" in cases:
            out["dali_alone_img_s"] = cases["fresh"]["images_per_s"]
        if "fresh" in cases and "after_build_warmup_then_1" in cases:
            out["batch_order_ratio"] = cases["after_build_warmup_then_1"]["images_per_s"] / cases["fresh"]["images_per_s"]
        if "fresh" in cases and "after_batch_1" in cases:
            out["batch_order_ratio_without_warmup"] = cases["after_batch_1"]["images_per_s"] / cases["fresh"]["images_per_s"]
        if not args.skip_network:
            out["network_alone"] = network_alone(args.batch, [int(s) for s in args.streams.split(",")],
                                                 args.seconds, tmp)
            out["network_alone_img_s"] = out["network_alone"]["images_per_s"]
    write_result(args.out, out, quiet=True)
    print(json.dumps({k: v for k, v in out.items() if k.endswith(("_img_s", "_ratio", "_warmup"))}))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The gpu target's DALI -> TorchScript ensembles served by the local tritonserver vs the same work in-process.

    python benchmarks/gpu_ensemble_bench.py --out results/gpu_ensemble          # GPU host (H100/H200)
    python benchmarks/gpu_ensemble_bench.py --device cpu --out results/smoke    # no GPU: KIND_CPU, tiny, < 60 s

For each model (`demo`: MobileNetV3-small at 32, `resnet50`: ResNet-50 at 224 from resize 256; both
with RANDOM weights, so the figures are throughput, latency and logit agreement, never accuracy)
it writes a Triton repository with the builder's own pieces (contract.preprocess.write_definition
for dali.py, builders.torchscript.script_model for model.pt, builders.triton_config for the configs
of `<name>_preprocess`, `<name>_<precision>_torch_infer` and the ensemble `<name>_<precision>_torch`),
serves it with serving.local_server.LocalTritonServer (DALI and PyTorch stand-ins on the instance's
device) and measures on the same 640x480 JPEGs (builders/synthetic_jpegs.py):

* served: images/s, p50/p99 per batch x concurrency, from a multi-process gRPC load generator with
  inputs in system shared memory (benchmarks/multiprocess_load.py) that reports its own CPU use; Triton's
  per-step statistics (queue, compute per request) and each step's busy fraction (time executing /
  window x instances); GPU utilization sampled with pynvml or nvidia-smi;
* in-process: the same dali.py and model.pt on the same device, as many pipeline+network
  workers as the server has instances, the same padded batches, output left on the device;
* served / in-process at each batch and at the best point, and served logits vs in-process logits
  for the same batch (tolerance: builders.torchscript.RELATIVE_TOLERANCE x max(1, max|logit|));
* perf_analyzer on the best batch as a second opinion where a perf_analyzer binary is on PATH.

Raw JSON (one file per model and a summary) goes to --out.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from builders.synthetic_jpegs import make_jpegs
from benchmarks.multiprocess_load import client_cores, run_load
from benchmarks.server_evidence import GpuSampler, perf_analyzer, server_statistics, step_breakdown
from builders import triton_config
from builders.torchscript import RELATIVE_TOLERANCE, script_model
from contract import layout
from contract.images import request_pool
from contract.preprocess import load_pipeline, reference_preprocess, warmup_batch_sizes, write_definition
from contract.spec import Input, ModelSpec, Triton

MODELS = {  # name -> (torchvision arch, classes, resize, crop)
    "demo": ("mobilenet_v3_small", 10, 36, 32),
    "resnet50": ("resnet50", 1000, 256, 224),
}


def _ints(text: str) -> list[int]:
    try:
        values = sorted({int(v) for v in text.split(",") if v.strip()})
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if not values or values[0] < 1:
        raise argparse.ArgumentTypeError(f"expected integers >= 1, got {text!r}")
    return values


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", choices=("cuda", "cpu"), default="cuda",
                   help="cuda: gpu target, KIND_GPU; cpu: cpu target, KIND_CPU, tiny defaults (smoke test)")
    p.add_argument("--models", default=None, help="comma-separated of demo,resnet50 (default: both; cpu: demo)")
    p.add_argument("--precision", choices=("fp32", "fp16"), default="fp16")
    p.add_argument("--batch", type=_ints, default=None, help="batch sizes (default 16,64,128; cpu: 8)")
    p.add_argument("--concurrency", type=_ints, default=None, help="requests in flight (default 2,4,8,16; cpu: 2)")
    p.add_argument("--processes", type=int, default=None, help="load-generator processes (default: min(8, cores); cpu: 1)")
    p.add_argument("--instances", type=int, default=None,
                   help="instances of each model (served) = workers (in-process) (default: the spec's gpu_instances; "
                        "cpu: 1)")
    p.add_argument("--images", type=int, default=None, help="distinct 640x480 JPEGs (default 512; cpu: 16)")
    p.add_argument("--seconds", type=float, default=None, help="measured seconds per served point (default 5; cpu: 4)")
    p.add_argument("--warmup", type=float, default=None, help="warm-up seconds per point (default 2)")
    p.add_argument("--cuda-pool-mib", type=int, default=1024,
                   help="tritonserver's CUDA memory pool on GPU 0, MiB (Triton's default: 64; default here: %(default)s)")
    p.add_argument("--no-shared-memory", action="store_true", help="send inputs in the gRPC messages instead")
    p.add_argument("--mps", action="store_true",
                   help="run under a private CUDA MPS daemon (serving.gpu_mps): the stand-ins are separate processes, "
                        "MPS lets their kernels overlap as one tritonserver process's backends do")
    p.add_argument("--out", type=Path, required=True, help="folder for the raw JSON")
    a = p.parse_args(argv)
    a.argv = list(sys.argv[1:] if argv is None else argv)
    cpu = a.device == "cpu"
    a.models = [m.strip() for m in (a.models or ("demo" if cpu else "demo,resnet50")).split(",") if m.strip()]
    bad = [m for m in a.models if m not in MODELS]
    if bad:
        p.error(f"--models: unknown {bad}; allowed: {sorted(MODELS)}")
    a.batch = a.batch or ([8] if cpu else [16, 64, 128])
    a.concurrency = a.concurrency or ([2] if cpu else [2, 4, 8, 16])
    a.processes = a.processes or (1 if cpu else min(8, client_cores()))
    a.images = a.images or (16 if cpu else 512)
    a.instances = a.instances or (1 if cpu else Triton().gpu_instances)
    a.seconds = a.seconds or (4.0 if cpu else 5.0)
    a.warmup = a.warmup if a.warmup is not None else 2.0
    return a


# --- the repository -------------------------------------------------------------------------------

def write_repository(root: Path, model: str, args, warmup_jpeg: bytes) -> tuple[ModelSpec, Path, Path]:
    """One model's preprocess, TorchScript engine and ensemble for the target of --device, with
    the warm-up the build writes (warmup_jpeg for DALI, its reference preprocessing for the network;
    builders.triton_config: largest batch first). Returns (spec, dali.py, model.pt)."""
    import torchvision

    arch, classes, resize, crop = MODELS[model]
    target = "gpu" if args.device == "cuda" else "cpu"
    mbs = max(args.batch)
    spec = ModelSpec(name=model, precisions=("fp32", "fp16"), input=Input(resize=resize, crop=crop),
                     triton=Triton(max_batch_size=mbs, preferred_batch_sizes=tuple(args.batch),
                                   gpu_instances=args.instances, cpu_instances=args.instances),
                     engine={"opt_batch": mbs})
    t = spec.triton
    pre_dir = root / layout.preprocess_model(model)
    dali = write_definition(spec.input, target, pre_dir / "1" / layout.DALI_DEFINITION, mbs,
                            num_threads=t.dali_gpu_num_threads if target == "gpu" else t.dali_num_threads,
                            hw_decoder_load=t.hw_decoder_load, model=model)
    (pre_dir / triton_config.WARMUP_DIR).mkdir(parents=True, exist_ok=True)
    (pre_dir / triton_config.WARMUP_DIR / "image.jpg").write_bytes(warmup_jpeg)
    triton_config.write_config(triton_config.preprocess_config(spec, target, len(warmup_jpeg)), pre_dir)
    import torch

    torch.manual_seed(0)  # random weights, the same every run
    net = torchvision.models.get_model(arch, weights=None, num_classes=classes).eval()
    eng_dir = root / layout.engine_model(model, args.precision, layout.TORCH_BACKEND)
    pt = script_model(net, args.precision, crop, eng_dir / "1" / "model.pt")
    labels = "".join(f"class_{i}\n" for i in range(classes))
    (eng_dir / triton_config.WARMUP_DIR).mkdir(parents=True, exist_ok=True)
    warm = reference_preprocess(warmup_jpeg, spec.input)
    (eng_dir / triton_config.WARMUP_DIR / "input.fp32").write_bytes(np.ascontiguousarray(warm, np.float32).tobytes())
    triton_config.write_config(triton_config.torchscript_config(spec, target, args.precision, classes, warmup=True),
                               eng_dir)
    (eng_dir / layout.LABELS_FILE).write_text(labels)
    ens_dir = root / layout.ensemble_model(model, args.precision, layout.TORCH_BACKEND)
    triton_config.write_config(triton_config.ensemble_config(spec, args.precision, classes, layout.TORCH_BACKEND), ens_dir)
    (ens_dir / layout.LABELS_FILE).write_text(labels)
    (ens_dir / "1").mkdir(exist_ok=True)
    return spec, dali, pt


# --- in-process reference -------------------------------------------------------------------------

class InProcess:
    """`workers` x (DALI pipeline + the shared TorchScript module) on one device, as the server runs them."""

    def __init__(self, dali_file: Path, pt_file: Path, device: str, batch: int, workers: int, threads: int,
                 warmup_jpeg: bytes):
        import torch

        self.torch, self.device = torch, device
        self.module = torch.jit.load(str(pt_file), map_location=device).eval()
        self.pipes = []
        for _ in range(workers):
            # Autoserialized from dali.py and run exactly as the server's DALI stand-in does it.
            self.pipes.append(load_pipeline(dali_file, 0 if device == "cuda" else None, threads, batch))
        self.streams = [torch.cuda.Stream() if device == "cuda" else None for _ in range(workers)]
        row = np.frombuffer(warmup_jpeg, dtype=np.uint8)
        for w in range(workers):   # the warm-up the build writes into the config, in its order
            for b in warmup_batch_sizes(batch):
                self.run([row] * b, w)

    def run(self, rows: list[np.ndarray], worker: int = 0):
        """Logits (torch, on the device) for one padded batch (rows: uint8 1-D arrays)."""
        torch = self.torch
        pipe = self.pipes[worker]
        pipe.feed_input(layout.DALI_INPUT, rows)
        (out,) = pipe.run()
        with torch.inference_mode():
            if self.device == "cuda":
                from nvidia.dali.plugin.pytorch import feed_ndarray

                stream = self.streams[worker]
                with torch.cuda.stream(stream):
                    dense = out.as_tensor()
                    x = torch.empty(dense.shape(), dtype=torch.float32, device="cuda")
                    feed_ndarray(dense, x, cuda_stream=stream.cuda_stream)
                    return self.module(x)
            return self.module(torch.from_numpy(out.as_array()))

    def images_per_s(self, batches: list[list[np.ndarray]], seconds: float) -> float:
        """All workers in parallel, each through the batches round robin, for about `seconds`."""
        counts = [0] * len(self.pipes)

        def loop(w: int) -> None:
            i, deadline = w, time.perf_counter() + seconds
            while time.perf_counter() < deadline:
                rows = batches[i % len(batches)]
                self.run(rows, w)
                counts[w] += len(rows)
                i += 1
            if self.device == "cuda":
                self.streams[w].synchronize()

        for w in range(len(self.pipes)):   # warm-up: allocations, cuDNN algorithm choice
            self.run(batches[0], w)
        threads = [threading.Thread(target=loop, args=(w,)) for w in range(len(self.pipes))]
        start = time.perf_counter()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        return sum(counts) / (time.perf_counter() - start)


# --- the run ------------------------------------------------------------------------------------------

def _ms(v: float | None) -> str:
    return "-" if v is None else f"{v:.1f} ms"


def _check_logits(grpc_url: str, model: str, ensemble: str, inproc: "InProcess", padded: dict, args) -> dict:
    """Served vs in-process logits on the same padded batch, at every batch size."""
    from clients.sender import Sender

    checks = []
    with Sender(grpc_url, "grpc") as sender:
        for b in args.batch:
            batch0 = padded[b][0]
            served = sender.infer_array(ensemble, layout.ENSEMBLE_INPUT, batch0, layout.ENSEMBLE_OUTPUT)
            logits = inproc.run(list(batch0))
            if args.device == "cuda":
                # The module ran on the worker's stream; read the result only once it finished.
                inproc.streams[0].synchronize()
            local = logits.float().cpu().numpy()
            diff = float(np.abs(served - local).max())
            tol = RELATIVE_TOLERANCE[args.precision] * max(1.0, float(np.abs(local).max()))
            checks.append({"batch": int(batch0.shape[0]), "max_abs_diff": diff, "tolerance": tol,
                           "within_tolerance": diff <= tol,
                           "top1_agreement": float((served.argmax(1) == local.argmax(1)).mean())})
            print(f"{model} served vs in-process logits, batch {batch0.shape[0]}: max |Δ| {diff:.3g} "
                  f"(tolerance {tol:.3g}) {'OK' if diff <= tol else 'OUTSIDE'}", flush=True)
    return {"checks": checks, "within_tolerance": all(c["within_tolerance"] for c in checks)}


def _served_point(server, model: str, ensemble: str, instances: dict[str, int], requests: list, b: int, c: int,
                  args, in_process: float) -> dict:
    """One point of the served sweep: batch `b` at concurrency `c`, with the server's per-step times
    (`instances`: step model → instance count) and the GPU's utilization over the window."""
    marks = {}
    with GpuSampler(args.device == "cuda") as gpu:
        load = run_load(server.grpc_url, ensemble, layout.ENSEMBLE_INPUT, layout.ENSEMBLE_OUTPUT,
                        requests, c, args.processes, args.seconds, args.warmup,
                        shared_memory=not args.no_shared_memory,
                        on_mark=lambda m: marks.__setitem__(m, server_statistics(server.http_url)))
    steps = step_breakdown(marks["start"], marks["stop"], args.seconds, instances)
    point = {"batch": b, "concurrency": c, "images_per_s": load.images_per_s, "requests": load.requests,
             "p50_ms": load.pct(0.50), "p99_ms": load.pct(0.99),
             "client": {"processes": load.processes, "cpu_cores_busy": load.client_cpu_cores,
                        "cores_available": client_cores(), "shared_memory": load.shared_memory},
             "gpu_util": gpu.summary(), "steps": steps,
             "server_busy_fraction": max((s["busy_fraction"] or 0) for s in steps.values()),
             "served_over_in_process": load.images_per_s / in_process}
    print(f"{model} b={b:3} c={c:2}: {load.images_per_s:9.1f} img/s p50 {_ms(point['p50_ms'])} "
          f"p99 {_ms(point['p99_ms'])}, served/in-process {point['served_over_in_process']:.2f}, "
          f"busy {point['server_busy_fraction']:.2f}, GPU {gpu.summary()['mean_pct']}, "
          f"client CPU {load.client_cpu_cores:.2f}/{client_cores()} cores", flush=True)
    return point


def bench_model(model: str, args, jpegs: list[bytes], workdir: Path) -> dict:
    from serving.local_server import LocalTritonServer, free_port

    spec, dali_file, pt_file = write_repository(workdir / model, model, args, jpegs[0])
    ensemble = layout.ensemble_model(model, args.precision, layout.TORCH_BACKEND)
    engine = layout.engine_model(model, args.precision, layout.TORCH_BACKEND)
    pre = layout.preprocess_model(model)
    t = spec.triton
    threads = t.dali_gpu_num_threads if args.device == "cuda" else t.dali_num_threads
    padded = {b: request_pool(jpegs, b) for b in args.batch}
    result = {"command": "python benchmarks/gpu_ensemble_bench.py " + " ".join(args.argv),
              "DALI_USE_EXEC2": os.environ.get("DALI_USE_EXEC2"),
              "model": model, "arch": MODELS[model][0], "weights": "random (torch.manual_seed(0))",
              "precision": args.precision, "ensemble": ensemble, "instances": args.instances,
              "dali_threads": threads, "points": [], "in_process": {}}

    inproc = InProcess(dali_file, pt_file, args.device, spec.triton.max_batch_size, args.instances, threads,
                       jpegs[0])
    for b in args.batch:
        result["in_process"][b] = inproc.images_per_s([list(x) for x in padded[b]], args.seconds)
        print(f"{model} in-process batch {b}: {result['in_process'][b]:.1f} img/s", flush=True)

    # The python backend's shared memory carries every tensor that crosses a stub; start it large
    # enough for the biggest batch of 224x224 float32 so it does not grow on the first requests.
    extra = ("--backend-config=python,shm-default-byte-size=268435456",
             "--backend-config=python,shm-growth-byte-size=67108864")
    if args.device == "cuda":
        # GPU tensors between ensemble steps come from Triton's CUDA memory pool (64 MiB by default);
        # a batch of 128 float32 224x224 images is 77 MB. Keep the pool above the largest tensor.
        extra += (f"--cuda-memory-pool-byte-size=0:{args.cuda_pool_mib << 20}",)
    with LocalTritonServer(workdir / model, http_port=free_port(), grpc_port=free_port(), metrics_port=free_port(),
                           timeout_s=600, model_control_mode="explicit", load_models=(ensemble,),
                           extra_args=extra, log_file=args.out / f"{model}_server.log",
                           open_apis=True) as server:   # the load generator registers shared memory
        result["logits"] = _check_logits(server.grpc_url, model, ensemble, inproc, padded, args)
        del inproc  # free its device memory before the served sweep
        for b in args.batch:
            for c in args.concurrency:
                result["points"].append(_served_point(server, model, ensemble, {pre: args.instances,
                                                      engine: args.instances}, padded[b], b, c, args,
                                                      result["in_process"][b]))
        best = max(result["points"], key=lambda p: p["images_per_s"])
        result["best"] = {k: best[k] for k in ("batch", "concurrency", "images_per_s", "p99_ms",
                                                "server_busy_fraction", "served_over_in_process")}
        result["perf_analyzer"] = perf_analyzer(server.grpc_url, ensemble, padded[best["batch"]][0][0],
                                                best["batch"], best["concurrency"], workdir)
    return result


def environment(device: str) -> dict:
    import platform

    import torch

    env = {"python": platform.python_version(), "torch": torch.__version__, "cpu_cores": client_cores(),
           "device": device}
    if device == "cuda":
        env["gpu"] = torch.cuda.get_device_name(0)
    return env


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.device == "cuda":
        import torch

        if not torch.cuda.is_available():
            print("no CUDA GPU visible to torch; run with --device cpu for the smoke test", file=sys.stderr)
            return 2
    args.out.mkdir(parents=True, exist_ok=True)
    if args.device == "cuda":
        # As docker-compose.yml and the Kubernetes gpu overlay run tritonserver (docs/gpu.md).
        os.environ.setdefault("DALI_USE_EXEC2", "1")
    if args.mps:
        from serving.gpu_mps import private_mps

        with private_mps():
            return _run(args)
    return _run(args)


def _run(args) -> int:
    started = time.perf_counter()
    jpegs = make_jpegs(args.images, 640, 480, workers=min(8, client_cores()))
    summary = {"environment": environment(args.device), "settings": {k: (str(v) if isinstance(v, Path) else v)
                                                                     for k, v in vars(args).items()},
               "jpeg": {"count": len(jpegs), "size": "640x480", "mean_bytes": float(np.mean([len(j) for j in jpegs]))},
               "models": {}}
    with tempfile.TemporaryDirectory(prefix="gpu-ensemble-bench-") as tmp:
        for model in args.models:
            res = bench_model(model, args, jpegs, Path(tmp))
            (args.out / f"{model}.json").write_text(json.dumps(res, indent=2))
            summary["models"][model] = {"best": res["best"], "logits": res["logits"]}
    summary["seconds"] = time.perf_counter() - started
    (args.out / "summary.json").write_text(json.dumps(summary, indent=2))
    for model, s in summary["models"].items():
        b = s["best"]
        print(f"{model}: best served {b['images_per_s']:.1f} img/s at batch {b['batch']} x {b['concurrency']} in flight, "
              f"served/in-process {b['served_over_in_process']:.2f}; logits within tolerance: "
              f"{s['logits']['within_tolerance']}")
    print(f"wrote {args.out} in {summary['seconds']:.0f} s")
    ok = all(s["logits"]["within_tolerance"] for s in summary["models"].values())
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

"""The gpu target's preprocessing model served alone by the local tritonserver vs the same pipeline in-process.

    python benchmarks/served_preprocess_bench.py --out docs/gpu_preprocess/served.json
    python benchmarks/served_preprocess_bench.py --cpu-smoke      # no GPU: the same flow with the cpu variant

Builds the gpu variant of model.dali exactly as the builder does (`contract.preprocess.serialize`,
resize 256, crop 224, no GPU needed) into a temporary Triton repository holding only that DALI model
(config from `builders.triton_config.preprocess_config(spec, "gpu")`: KIND_GPU, the spec's instance
count, num_threads), starts `serving.local_server.LocalTritonServer` on it (the python DALI stand-in
runs the pipeline on the instance's GPU) and measures, on the same 640x480 JPEGs
(`builders/synthetic_jpegs.py`), each batch = max_batch_size, zero-padded as clients send them:

* in-process, GPU-resident: the same model.dali deserialized here, as many pipelines as the
  server has instances, output left on the GPU (the figure docs/gpu_preprocess.md reports);
* in-process, host copy: the same, but each batch's output copied to host numpy (`as_cpu()`),
  which the served path has to do too;
* served (gRPC, several requests in flight): the output (batch x 3 x 224 x 224 float32, 77 MB for
  a batch of 128) comes back to the client, through the python backend's shared memory, the
  server and gRPC.

Prints both fractions (served / in-process GPU-resident and served / in-process host copy) and
writes a JSON with everything. Without a GPU (or without DALI GPU support) it prints the reason
and exits 0; --cpu-smoke runs the whole flow with the cpu variant and KIND_CPU instead, to check
the mechanics on such a machine (its numbers mean nothing for the GPU).
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np

from builders.synthetic_jpegs import make_jpegs
from benchmarks.preprocess_baselines import repeat
from benchmarks.preprocess_bench import dali_gpu_support, environment, timed_loops
from benchmarks.results_file import write_result
from builders import triton_config
from benchmarks.load import ClosedLoop, triton_requests
from benchmarks.stats import per_request_ms, percentile, statistics_delta
from contract import layout
from contract.images import pack_batch
from contract.preprocess import serialize
from contract.spec import Input, ModelSpec, Triton


def parse_args(argv=None):
    d = Triton()
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--batch", type=int, default=128, help="max_batch_size = pipeline batch = request size (default 128)")
    p.add_argument("--instances", type=int, default=d.gpu_instances,
                   help="DALI model instances (served) = concurrent pipelines (in-process) (default: spec's gpu_instances)")
    p.add_argument("--threads", type=int, default=d.dali_gpu_num_threads, help="DALI num_threads (default: spec's)")
    p.add_argument("--hw-decoder-load", type=float, default=d.hw_decoder_load, help="default: spec's")
    p.add_argument("--images", type=int, default=1024, help="distinct 640x480 JPEGs (default 1024)")
    p.add_argument("--concurrency", default="2,4,8,16", help="requests in flight, comma-separated; the best counts")
    p.add_argument("--seconds", type=float, default=5.0, help="measured seconds per served point")
    p.add_argument("--warmup", type=float, default=2.0, help="warm-up seconds per served point")
    p.add_argument("--min-time", type=float, default=1.5, help="seconds per in-process repeat")
    p.add_argument("--repeats", type=int, default=3, help="in-process repeats (median)")
    p.add_argument("--shm-growth-mb", type=int, default=64,
                   help="python backend shm-growth-byte-size in MiB (outputs are large); 0: Triton's default")
    p.add_argument("--out", type=Path, default=None, help="write the results JSON here")
    p.add_argument("--server-log", type=Path, default=None, help="keep the tritonserver log here")
    p.add_argument("--cpu-smoke", action="store_true",
                   help="no GPU needed: cpu variant, KIND_CPU, small settings; checks the mechanics only")
    return p.parse_args(argv)


def build_repository(root: Path, spec: ModelSpec, target: str, hw_decoder_load: float) -> Path:
    t = spec.triton
    model_dir = root / layout.preprocess_model(spec.name)
    threads = t.dali_gpu_num_threads if target == "gpu" else t.dali_num_threads
    serialize(spec.input, target, t.max_batch_size, model_dir / "1" / "model.dali", num_threads=threads,
              hw_decoder_load=hw_decoder_load)
    triton_config.write_config(triton_config.preprocess_config(spec, target), model_dir)
    return root


def in_process_rate(dali_file: Path, device_id, threads: int, batch: int, instances: int,
                    batches: list[list[np.ndarray]], host_copy: bool, min_time: float, repeats: int):
    from nvidia.dali import Pipeline

    pipes = []
    for _ in range(instances):
        pipe = Pipeline.deserialize(filename=str(dali_file), device_id=device_id, num_threads=threads,
                                    batch_size=batch)
        pipe.build()
        pipes.append(pipe)

    def workers():
        out = []
        for k, pipe in enumerate(pipes):
            state = {"i": k, "last": None}

            def step(pipe=pipe, state=state):
                rows = batches[state["i"] % len(batches)]
                state["i"] += 1
                pipe.feed_input(layout.DALI_INPUT, rows)
                (out_,) = pipe.run()
                if host_copy:
                    if hasattr(out_, "as_cpu"):
                        out_ = out_.as_cpu()
                    out_.as_array()             # host numpy, as the stand-in hands to Triton
                state["last"] = out_
                return len(rows)

            def finish(state=state):
                last = state["last"]
                if last is not None and hasattr(last, "as_cpu"):
                    last.as_cpu()               # waits for the pipeline's stream
            out.append((step, finish))
        return out

    med, runs = repeat(lambda: timed_loops(workers(), min_time), repeats)
    reference = None
    pipes[0].feed_input(layout.DALI_INPUT, batches[0])
    (o,) = pipes[0].run()
    reference = (o.as_cpu() if hasattr(o, "as_cpu") else o).as_array()
    return med, runs, reference


def served_rate(url: str, model: str, requests: list[np.ndarray], concurrency: int, seconds: float,
                warmup: float) -> dict:
    """The preprocessing model under `concurrency` closed-loop gRPC clients (benchmarks.load): images/s,
    requests and latency of the measured window; each output tensor is read into client memory."""
    w = ClosedLoop(triton_requests(url, "grpc", model, preprocess=True, timeout_s=120), requests,
                   concurrency).run(seconds, warmup)
    return {"concurrency": concurrency, "img_s": w.images_per_s, "requests": w.requests,
            "latency_ms_p50": w.latency_ms["p50"], "latency_ms_max": percentile(w.latencies_s, 100) * 1000}


def server_stats(url: str, model: str | None = None) -> dict:
    """Triton's cumulative statistics ({model: counters}, clients.served_models.normalize_statistics) of
    `model`, or of every model when None, over gRPC at url."""
    from clients.triton import TritonClient

    with TritonClient(url, "grpc") as client:
        return client.statistics(model or "")


def stats_delta(a: dict, b: dict, model: str) -> dict:
    """Server-side time per request (ms) of `model` between two server_stats snapshots: where a
    request's time goes inside tritonserver (queue, input copy, the stand-in's execute incl. DALI and
    the host copy, output)."""
    d = statistics_delta(a, b, [model])[model]
    return {"requests": d["success_count"], "executions": d["execution_count"], "inferences": d["inference_count"],
            **{f"{key}_ms_per_request": ms for key, ms in per_request_ms(d).items()}}


def _write(out: Path | None, result: dict, quiet: bool = True) -> None:
    if out:
        write_result(out, result, quiet=quiet)


def _spec(args) -> ModelSpec:
    """The one-model spec whose preprocessing step is served: batch, instances and threads as asked."""
    triton = Triton(max_batch_size=args.batch, preferred_batch_sizes=(args.batch,),
                    gpu_instances=args.instances, cpu_instances=args.instances,
                    dali_gpu_num_threads=args.threads, dali_num_threads=args.threads,
                    hw_decoder_load=args.hw_decoder_load)
    return ModelSpec(name="bench", input=Input(resize=256, crop=224), triton=triton,
                     engine={"opt_batch": min(32, args.batch)})


def _served(server, model: str, requests: list, reference: np.ndarray, args, result: dict) -> list[dict]:
    """Parity of the served output with the in-process one (into `result`), then one point per
    concurrency with where a request's time goes inside the server."""
    from clients.sender import Sender

    with Sender(server.grpc_url, "grpc") as sender:
        served0 = sender.infer_array(model, layout.DALI_INPUT, requests[0], layout.DALI_OUTPUT)
    diff = np.abs(served0 - reference)
    result["parity_vs_in_process"] = {"max_abs": float(diff.max()), "mean_abs": float(diff.mean()),
                                      "shape": list(served0.shape)}
    print(f"served vs in-process output, same batch: max abs {diff.max():.3g}, "
          f"mean abs {diff.mean():.3g}", flush=True)
    points = []
    for c in (int(x) for x in args.concurrency.split(",")):
        before = server_stats(server.grpc_url, model)
        pt = served_rate(server.grpc_url, model, requests, c, args.seconds, args.warmup)
        pt["server_side"] = stats_delta(before, server_stats(server.grpc_url, model), model)
        points.append(pt)
        ss = pt["server_side"]
        print(f"served, {c} requests in flight: {pt['img_s']:,.0f} img/s "
              f"(p50 latency {pt['latency_ms_p50']:.0f} ms; inside the server per request: "
              f"queue {ss['queue_ms_per_request']:.0f} ms, input {ss['compute_input_ms_per_request']:.0f}, "
              f"execute {ss['compute_infer_ms_per_request']:.0f}, output "
              f"{ss['compute_output_ms_per_request']:.0f}, total {ss['success_ms_per_request']:.0f})",
              flush=True)
    return points


def _in_process(dali_file: Path, device_id: int | None, rows: list, args, result: dict) -> tuple:
    """DALI alone, output left where it is made and with the host copy; (both rates, the reference output)."""
    gpu_rate, gpu_runs, reference = in_process_rate(dali_file, device_id, args.threads, args.batch,
                                                    args.instances, rows, False, args.min_time, args.repeats)
    host_rate, host_runs, _ = in_process_rate(dali_file, device_id, args.threads, args.batch, args.instances,
                                              rows, True, args.min_time, args.repeats)
    result["in_process"] = {"output_on_device": {"img_s": gpu_rate, "runs": gpu_runs},
                            "host_copy": {"img_s": host_rate, "runs": host_runs}}
    print(f"in-process ({args.instances} pipelines): output left on the "
          f"{'GPU' if device_id is not None else 'host'} {gpu_rate:,.0f} img/s; with host copy {host_rate:,.0f} img/s",
          flush=True)
    return gpu_rate, host_rate, reference


def main(argv=None) -> int:
    args = parse_args(argv)
    target = "gpu"
    if args.cpu_smoke:
        target = "cpu"
        args.batch, args.instances, args.images = min(args.batch, 16), 1, min(args.images, 64)
        args.seconds, args.warmup, args.min_time, args.repeats = 2.0, 0.5, 0.5, 1
        args.concurrency = "2"
    else:
        ok, reason = dali_gpu_support()
        if not ok:
            print(f"skipped: {reason} (the served GPU benchmark needs a CUDA GPU and DALI with GPU support; "
                  "--cpu-smoke checks the mechanics without one)")
            _write(args.out, {"skipped": reason})
            return 0

    from serving.local_server import LocalTritonServer, free_port

    spec = _spec(args)
    result: dict = {"environment": environment(), "target": target,
                    "config": {"max_batch_size": args.batch, "request_batch": args.batch,
                               "instances": args.instances, "num_threads": args.threads,
                               "hw_decoder_load": args.hw_decoder_load, "resize": 256, "crop": 224,
                               "images": args.images, "image_size": "640x480", "protocol": "grpc",
                               "seconds": args.seconds, "warmup": args.warmup, "min_time": args.min_time,
                               "repeats": args.repeats}}
    t0 = time.perf_counter()
    encoded = make_jpegs(args.images, workers=os.cpu_count() or 1)
    result["config"]["mean_jpeg_kib"] = round(sum(map(len, encoded)) / len(encoded) / 1024, 1)
    print(f"{len(encoded)} JPEGs in {time.perf_counter() - t0:.1f} s (mean {result['config']['mean_jpeg_kib']} KiB)",
          flush=True)
    n = len(encoded) // args.batch * args.batch or len(encoded)
    requests = [pack_batch(encoded[i:i + args.batch]) for i in range(0, n, args.batch)]
    rows = [list(r) for r in requests]        # the same padded rows the stand-in feeds its pipeline

    with tempfile.TemporaryDirectory(prefix="served-pre-") as tmp:
        repo = build_repository(Path(tmp) / "repo", spec, target, args.hw_decoder_load)
        model = layout.preprocess_model(spec.name)
        print((repo / model / "config.pbtxt").read_text(), flush=True)
        gpu_rate, host_rate, reference = _in_process(repo / model / "1" / "model.dali",
                                                     0 if target == "gpu" else None, rows, args, result)
        extra = (f"--backend-config=python,shm-growth-byte-size={args.shm_growth_mb * 2**20}",) \
            if args.shm_growth_mb else ()
        server = LocalTritonServer(repo, http_port=free_port(), grpc_port=free_port(), metrics_port=free_port(),
                                   timeout_s=300, log_file=args.server_log, extra_args=extra)
        t0 = time.perf_counter()
        try:
            server.start()
        except Exception as err:
            result["served"] = {"error": str(err)}
            print(f"tritonserver failed: {err}", flush=True)
            _write(args.out, result)
            return 1
        result["server_start_s"] = round(time.perf_counter() - t0, 1)
        print(f"tritonserver ready in {result['server_start_s']} s", flush=True)
        try:
            points = _served(server, model, requests, reference, args, result)
        finally:
            server.stop()
            result["server_log_tail"] = server.log_tail(15)

    best = max(points, key=lambda p: p["img_s"])
    out_mb = 3 * 224 * 224 * 4 / 1e6
    result["served"] = {"points": points, "best": best,
                        "output_mb_per_image": out_mb, "output_gb_s_at_best": best["img_s"] * out_mb / 1e3}
    result["fraction"] = {"served_over_in_process_on_device": best["img_s"] / gpu_rate,
                          "served_over_in_process_host_copy": best["img_s"] / host_rate}
    print(f"\nbest served: {best['img_s']:,.0f} img/s at {best['concurrency']} in flight "
          f"({result['served']['output_gb_s_at_best']:.2f} GB/s of float32 output to the client)")
    print(f"served / in-process (output on {'GPU' if target == 'gpu' else 'host'}): "
          f"{result['fraction']['served_over_in_process_on_device']:.3f}")
    print(f"served / in-process (with host copy):   {result['fraction']['served_over_in_process_host_copy']:.3f}")
    _write(args.out, result, quiet=False)
    return 0

if __name__ == "__main__":
    raise SystemExit(main())

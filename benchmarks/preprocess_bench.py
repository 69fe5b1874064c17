"""Preprocessing throughput on the same JPEGs: DALI GPU vs DALI CPU vs a PIL loop vs a torch DataLoader.

    python benchmarks/preprocess_bench.py --out results/preprocess_bench          # full sweep
    python benchmarks/preprocess_bench.py --out /tmp/pb --quick                    # smoke run

Every DALI row runs the very artifact the builder writes: `contract.preprocess.serialize` (without
a GPU, device_id=None), deserialized here with the row's device, num_threads and batch size. DALI
GPU rows sweep hw_decoder_load, batch size, num_threads and the number of concurrent pipelines
(Triton's instance count for the DALI model); their output stays on the GPU, as it does when DALI
feeds TensorRT (copying every batch back to the host would hide the GPU's speed). The DataLoader
(torchvision transforms in N worker processes, the usual training-style baseline) delivers its
batches to the GPU too (pinned memory, non-blocking copy) where there is one; the DALI CPU and
PIL rows end on the host.

Prints a rich table (img/s and ratio vs the DataLoader baseline) and writes results.json and
preprocess_bench.png into --out. On a machine without a GPU (or without DALI's GPU support)
the GPU rows are skipped with the reason.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from builders.synthetic_jpegs import make_jpegs
from benchmarks.preprocess_baselines import dataloader_rates, pil_loop, repeat
from benchmarks.preprocess_report import plot, print_table
from contract.layout import DALI_INPUT
from contract.preprocess import dali_gpu_support, serialize
from contract.spec import Input, Triton


def _csv(kind):
    return lambda s: [kind(x) for x in s.split(",") if x.strip()]


def parse_args(argv=None):
    cpus = os.cpu_count() or 1
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=Path("results/preprocess_bench"), help="output folder")
    p.add_argument("--images", type=int, default=2048, help="distinct JPEGs to make (default 2048)")
    p.add_argument("--size", default="640x480", help="JPEG width x height (default 640x480)")
    p.add_argument("--quality", type=int, default=90)
    p.add_argument("--resize", type=int, default=256, help="shorter side after resize (default 256)")
    p.add_argument("--crop", type=int, default=224, help="center crop (default 224)")
    p.add_argument("--batch", type=int, default=128, help="batch size of the sweeps that hold it fixed")
    p.add_argument("--threads", type=int, default=4, help="DALI num_threads of the sweeps that hold it fixed")
    p.add_argument("--hw-loads", type=_csv(float), default=[0.0, 0.25, 0.5, 0.65, 0.75, 0.9, 1.0])
    p.add_argument("--batch-sizes", type=_csv(int), default=[16, 32, 64, 128, 256])
    p.add_argument("--thread-counts", type=_csv(int), default=[1, 2, 4, 8])
    p.add_argument("--instances", type=_csv(int), default=[1, 2, 3, 4],
                   help="concurrent DALI GPU pipelines (Triton instance count of the DALI model)")
    p.add_argument("--grid-loads", type=_csv(float), default=[], help="extra DALI GPU grid: hw_decoder_load values")
    p.add_argument("--grid-batches", type=_csv(int), default=[], help="extra DALI GPU grid: batch sizes")
    p.add_argument("--grid-threads", type=_csv(int), default=[], help="extra DALI GPU grid: num_threads values")
    p.add_argument("--grid-instances", type=_csv(int), default=[1], help="extra DALI GPU grid: instance counts")
    p.add_argument("--no-sweep", action="store_true", help="skip the one-factor DALI GPU sweeps (grid only)")
    p.add_argument("--cpu-threads", type=_csv(int), default=sorted({min(2, cpus), cpus}),
                   help="DALI CPU num_threads rows")
    p.add_argument("--workers", type=_csv(int), default=sorted({max(1, cpus // 2), cpus}),
                   help="DataLoader worker counts; the largest is the baseline of the ratio column")
    p.add_argument("--pil-images", type=int, default=256, help="images for the single-process PIL loop")
    p.add_argument("--min-time", type=float, default=1.0, help="seconds per timed repeat")
    p.add_argument("--repeats", type=int, default=3, help="timed repeats per row (the median is reported)")
    p.add_argument("--gen-workers", type=int, default=min(cpus, 16), help="processes making the JPEGs")
    p.add_argument("--skip", type=_csv(str), default=[], help="backends to skip: dali_gpu,dali_cpu,pil,dataloader")
    p.add_argument("--quick", action="store_true", help="tiny sweep for a smoke test")
    args = p.parse_args(argv)
    if args.quick:
        args.images, args.pil_images, args.min_time, args.repeats = min(args.images, 128), 32, 0.3, 1
        args.batch, args.hw_loads, args.batch_sizes = 32, [0.0, 0.65, 1.0], [16, 32]
        args.thread_counts, args.instances = [1, 2], [1, 2]
        args.workers = [min(2, cpus)]
        args.cpu_threads = [min(2, cpus)]
    args.width, args.height = (int(v) for v in args.size.lower().split("x"))
    return args


# --- environment ----------------------------------------------------------------------------------


def environment() -> dict:
    env = {"python": platform.python_version(), "numpy": np.__version__, "cpu_count": os.cpu_count(),
           "machine": platform.machine(), "host": platform.node()}
    try:
        import nvidia.dali as dali
        env["dali"] = dali.__version__
    except ImportError:
        env["dali"] = None
    try:
        import torch
        env["torch"] = torch.__version__
        if torch.cuda.is_available():
            props = torch.cuda.get_device_properties(0)
            env["gpu"] = torch.cuda.get_device_name(0)
            env["gpu_memory_gib"] = round(props.total_memory / 2**30, 1)
            env["gpu_sms"] = props.multi_processor_count
            env["cuda"] = torch.version.cuda
    except ImportError:
        env["torch"] = None
    try:
        import subprocess
        smi = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=20)
        if smi.returncode == 0:
            env["nvidia_smi"] = smi.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        pass
    return env


# --- timing ---------------------------------------------------------------------------------------

def timed_loops(workers, min_time: float, warmup: int = 2) -> float:
    """Run each worker (step(), finish()) in its own thread for min_time seconds, all together.

    step() processes one batch and returns its image count; finish() waits for outstanding
    (asynchronous GPU) work. Returns the aggregate images/s.
    """
    counts = [0] * len(workers)
    barrier = threading.Barrier(len(workers) + 1)
    errors: list[BaseException] = []
    t = {}

    def loop(i, step, finish):
        try:
            for _ in range(warmup):
                step()
            finish()
        except BaseException as err:  # noqa: BLE001
            errors.append(err)
        barrier.wait()
        barrier.wait()
        if errors:
            return
        try:
            n = 0
            while time.perf_counter() - t["start"] < min_time:
                n += step()
            finish()
            counts[i] = n
        except BaseException as err:  # noqa: BLE001
            errors.append(err)

    threads = [threading.Thread(target=loop, args=(i, s, f), daemon=True) for i, (s, f) in enumerate(workers)]
    for th in threads:
        th.start()
    barrier.wait()              # all warmed up
    t["start"] = time.perf_counter()
    barrier.wait()
    for th in threads:
        th.join()
    elapsed = time.perf_counter() - t["start"]
    if errors:
        raise errors[0]
    return sum(counts) / elapsed


# --- backends -------------------------------------------------------------------------------------

class DaliRunner:
    """A serialized model.dali, deserialized `instances` times; each copy is fed its own batches."""

    def __init__(self, dali_file: Path, device_id, num_threads: int, batch: int, instances: int,
                 encoded: list[np.ndarray]):
        from nvidia.dali import Pipeline

        self.pipes = []
        for _ in range(instances):
            pipe = Pipeline.deserialize(filename=str(dali_file), device_id=device_id,
                                        num_threads=num_threads, batch_size=batch)
            pipe.build()
            self.pipes.append(pipe)
        n = len(encoded) // batch * batch or len(encoded)
        self.batches = [encoded[i:i + batch] for i in range(0, n, batch)]

    def workers(self):
        out = []
        for k, pipe in enumerate(self.pipes):
            state = {"i": k, "last": None}

            def step(pipe=pipe, state=state):
                batch = self.batches[state["i"] % len(self.batches)]
                state["i"] += 1
                pipe.feed_input(DALI_INPUT, batch)
                (state["last"],) = pipe.run()      # stays where the pipeline made it (GPU for gpu rows)
                return len(batch)

            def finish(state=state):
                last = state["last"]
                if last is not None and hasattr(last, "as_cpu"):
                    last.as_cpu()                   # waits for the pipeline's stream: all earlier batches are done
            out.append((step, finish))
        return out

    def measure(self, min_time: float, repeats: int):
        return repeat(lambda: timed_loops(self.workers(), min_time), repeats)


# --- the run --------------------------------------------------------------------------------------

class _Table:
    """The rows measured so far, printed as they come; `dali` measures one DALI configuration."""

    def __init__(self, console, inp: Input, encoded: list[np.ndarray], args) -> None:
        self.console, self.inp, self.encoded, self.args = console, inp, encoded, args
        self.rows: list[dict] = []
        self.skipped: list[dict] = []
        self.tmp = Path(tempfile.mkdtemp(prefix="preprocess_bench_"))

    def record(self, backend, label, output, rate, runs, **cfg) -> dict:
        row = {"backend": backend, "label": label, "output": output, "img_s": round(rate, 1),
               "img_s_runs": [round(r, 1) for r in runs], **cfg}
        self.rows.append(row)
        self.console.print(f"  {backend:<11} {label:<46} {rate:>10,.0f} img/s   runs {row['img_s_runs']}")
        return row

    def skip(self, backend: str, reason: str) -> None:
        self.skipped.append({"backend": backend, "reason": reason})

    def dali(self, device, load, batch, threads, instances, tag="") -> dict:
        f = self.tmp / f"{device}_{load}_{batch}.dali"
        if not f.exists():
            serialize(self.inp, device, batch, f, num_threads=threads, hw_decoder_load=load)
        runner = DaliRunner(f, 0 if device == "gpu" else None, threads, batch, instances, self.encoded)
        rate, runs = runner.measure(self.args.min_time, self.args.repeats)
        del runner
        if device == "gpu":
            label = f"load {load:g}, batch {batch}, {threads} thr, {instances} inst{tag}"
            return self.record("DALI GPU", label, "GPU", rate, runs, sweep=tag.strip(" ()") or None,
                               hw_decoder_load=load, batch=batch, num_threads=threads, instances=instances)
        label = f"batch {batch}, {threads} thr, {instances} inst{tag}"
        return self.record("DALI CPU", label, "host", rate, runs, batch=batch, num_threads=threads,
                           instances=instances)


def _dali_gpu_rows(table: _Table, args, defaults: Triton) -> None:
    """DALI GPU: hw_decoder_load, then batch size, threads and instances around the best load;
    then the spec's defaults and the grid, if asked for."""
    if not args.no_sweep:
        best = max((table.dali("gpu", load, args.batch, args.threads, 1, " (hw_decoder_load)")
                    for load in args.hw_loads), key=lambda r: r["img_s"])
        load = best["hw_decoder_load"]
        for b in args.batch_sizes:
            if b != args.batch:
                table.dali("gpu", load, b, args.threads, 1, " (batch)")
        for t in args.thread_counts:
            if t != args.threads:
                table.dali("gpu", load, args.batch, t, 1, " (threads)")
        for k in args.instances:
            if k != 1:
                table.dali("gpu", load, args.batch, args.threads, k, " (instances)")
        table.dali("gpu", defaults.hw_decoder_load, defaults.max_batch_size, defaults.dali_num_threads,
                   defaults.gpu_instances, " (spec defaults)")
    for load in args.grid_loads:
        for b in args.grid_batches or [args.batch]:
            for t in args.grid_threads or [args.threads]:
                for k in args.grid_instances:
                    table.dali("gpu", load, b, t, k, " (grid)")


def _dataloader_rows(table: _Table, args, encoded_bytes: list[bytes]) -> None:
    """torch's DataLoader with torchvision's transforms, the baseline the ratios are against."""
    try:
        import torch
        import torchvision  # noqa: F401
    except ImportError as err:
        table.skip("DataLoader", f"torch/torchvision missing: {err}")
        return
    table.console.print("[bold]torch DataLoader[/] (torchvision Resize/CenterCrop/ToTensor/Normalize)")
    out = "GPU" if torch.cuda.is_available() else "host"
    for w in args.workers:
        rate, runs = dataloader_rates(encoded_bytes, table.inp, w, args.batch, args.repeats)
        table.record("DataLoader", f"{w} workers, batch {args.batch}", out, rate, runs, workers=w, batch=args.batch)


def run(args) -> dict:
    from rich.console import Console

    console = Console()
    inp = Input(resize=args.resize, crop=args.crop)
    defaults = Triton()
    env = environment()
    console.print(f"[bold]environment[/]: {env}")

    t0 = time.perf_counter()
    encoded_bytes = make_jpegs(args.images, args.width, args.height, args.quality, workers=args.gen_workers)
    encoded = [np.frombuffer(e, dtype=np.uint8) for e in encoded_bytes]
    sizes = [len(e) for e in encoded_bytes]
    console.print(f"made {len(encoded)} JPEGs {args.width}x{args.height} q{args.quality} in "
                  f"{time.perf_counter() - t0:.1f} s (mean {np.mean(sizes) / 1024:.0f} KiB)")
    table = _Table(console, inp, encoded, args)

    ok, why = dali_gpu_support() if "dali_gpu" not in args.skip else (False, "skipped by --skip")
    if ok:
        console.print("[bold]DALI GPU[/] (output stays on the GPU)")
        _dali_gpu_rows(table, args, defaults)
    else:
        table.skip("DALI GPU", why)
        console.print(f"[yellow]DALI GPU skipped[/]: {why}")
    if "dali_cpu" not in args.skip:
        console.print("[bold]DALI CPU[/]")
        for t in args.cpu_threads:
            table.dali("cpu", 0.0, args.batch, t, 1)
    if "pil" not in args.skip:
        subset = encoded_bytes[: args.pil_images]
        rate, runs = repeat(lambda: pil_loop(subset, inp), max(1, min(args.repeats, 2)))
        table.record("PIL loop", f"1 process, per image ({len(subset)} images)", "host", rate, runs)
    if "dataloader" not in args.skip:
        _dataloader_rows(table, args, encoded_bytes)

    rows = table.rows
    base = max((r for r in rows if r["backend"] == "DataLoader"), key=lambda r: r["workers"], default=None)
    for r in rows:
        r["ratio_vs_dataloader"] = round(r["img_s"] / base["img_s"], 2) if base else None
    result = {
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "environment": env,
        "images": {"count": len(encoded), "width": args.width, "height": args.height, "quality": args.quality,
                   "mean_bytes": int(np.mean(sizes)), "kind": "synthetic photo-like, baseline 4:2:0 (PIL)"},
        "preprocess": {"resize": inp.resize, "crop": inp.crop},
        "timing": {"min_time_s": args.min_time, "repeats": args.repeats, "statistic": "median img/s"},
        "baseline": base and base["label"],
        "spec_defaults": {"hw_decoder_load": defaults.hw_decoder_load, "dali_num_threads": defaults.dali_num_threads,
                          "gpu_instances": defaults.gpu_instances, "max_batch_size": defaults.max_batch_size},
        "rows": rows,
        "skipped": table.skipped,
    }
    gpu_rows = [r for r in rows if r["backend"] == "DALI GPU"]
    if gpu_rows:
        top = max(gpu_rows, key=lambda r: r["img_s"])
        result["best_gpu"] = {k: top[k] for k in ("hw_decoder_load", "batch", "num_threads", "instances", "img_s")}
    return result


def main(argv=None) -> int:
    args = parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    result = run(args)
    print_table(result)
    (args.out / "results.json").write_text(json.dumps(result, indent=2))
    plot(result, args.out / "preprocess_bench.png")
    print(f"wrote {args.out / 'results.json'} and {args.out / 'preprocess_bench.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

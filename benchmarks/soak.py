"""Bounded soak of the local server: steady load for a fixed time, memory of every process over time.

    python benchmarks/soak.py --out docs/hardening/soak.json             # 10 minutes (default)
    python benchmarks/soak.py --quick                                     # 60 s

Starts serving.local_server.LocalTritonServer on the repository (default model_repository/cpu),
then `--concurrency` closed-loop clients (benchmarks.load: threads, one TritonClient each, HTTP by default) send
requests of `--batch` real validation images (the manifest's data.val) back to back for
`--duration` seconds. Every `--sample` seconds it records the resident memory (VmRSS) of
tritonserver and of every python backend stub (named by its model), and the requests finished,
failed and their latencies since the last sample.

Reports, after the warm-up (`--warmup` seconds, default a sixth of the run): per process the RSS
slope (least squares, MiB per minute) and the change first -> last sample; the error count; p99
latency of the first and the last third of the post-warm-up run and their drift. Writes everything
(samples included) as JSON and prints the Markdown table that docs/hardening.md quotes.
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np

from benchmarks.load import ClosedLoop, triton_requests
from benchmarks.stats import throughput
from contract import layout
from contract.errors import MissingInput, ToolkitError
from contract.manifest import load_manifest


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--repository", type=Path, default=Path("model_repository/cpu"),
                   help="cpu model repository to serve (default: %(default)s); manifest.json beside it")
    p.add_argument("--duration", type=float, default=600.0, help="seconds of load (default: %(default)s)")
    p.add_argument("--quick", action="store_true", help="60 s run (overrides --duration)")
    p.add_argument("--warmup", type=float, default=None, help="seconds left out of slopes and drift "
                   "(default: a sixth of the run)")
    p.add_argument("--sample", type=float, default=5.0, help="seconds between samples (default: %(default)s)")
    p.add_argument("--concurrency", type=int, default=2, help="requests in flight (default: %(default)s)")
    p.add_argument("--batch", type=int, default=8, help="images per request (default: %(default)s)")
    p.add_argument("--precision", default="fp32", help="ensemble precision (default: %(default)s)")
    p.add_argument("--protocol", choices=("http", "grpc"), default="http")
    p.add_argument("--machine", default="2-core CPU dev machine, shared", help="recorded in the JSON")
    p.add_argument("--out", type=Path, default=None, help="write the JSON here")
    return p.parse_args(argv)


def _children(pid: int) -> list[int]:
    """All descendants of pid (the stubs are children of tritonserver)."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        try:
            kids = [int(c) for t in Path(f"/proc/{p}/task").iterdir()
                    for c in (t / "children").read_text().split()]
        except OSError:
            continue
        out += kids
        todo += kids
    return out


def _rss_mib(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        return None
    return None


def _label(pid: int, server_pid: int) -> str:
    if pid == server_pid:
        return "tritonserver"
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return f"pid {pid}"
    # triton_python_backend_stub <model dir>/<version>/model.py ... : name the stub by its model
    for a in argv[1:2]:
        parts = Path(a.decode(errors="replace")).parts
        if len(parts) >= 3:
            return f"stub {parts[-3]}"
    return Path(argv[0].decode(errors="replace")).name


def memory(server_pid: int) -> dict[str, float]:
    out = {}
    for pid in [server_pid] + _children(server_pid):
        rss = _rss_mib(pid)
        if rss is not None:
            label = _label(pid, server_pid)
            out[label if label not in out else f"{label} ({pid})"] = rss
    return out


def slope_mib_per_min(t: list[float], y: list[float]) -> float:
    if len(t) < 3:
        return float("nan")
    return float(np.polyfit(np.asarray(t) / 60.0, np.asarray(y), 1)[0])


def run(args) -> dict:
    from contract.images import load_image_folder, request_pool
    from serving.local_server import LocalTritonServer, free_port

    duration = 60.0 if args.quick else args.duration
    warmup = args.warmup if args.warmup is not None else duration / 6
    manifest = load_manifest(args.repository.parent)
    name = sorted(manifest.models)[0]
    if manifest.models[name].val is None:
        raise MissingInput(f"{manifest.path} bundles no validation images for {name}")
    encoded = load_image_folder(manifest.models[name].val).encoded(256)
    batches = request_pool(encoded, args.batch)
    model = layout.ensemble_model(name, args.precision)

    inf = float("inf")
    with LocalTritonServer(args.repository, http_port=free_port(), grpc_port=free_port(),
                           metrics_port=free_port(), timeout_s=300) as server:
        url = server.http_url if args.protocol == "http" else server.grpc_url
        # Errors are recorded, not fatal: the soak counts them over time.
        loop = ClosedLoop(triton_requests(url, args.protocol, model, timeout_s=60), batches, args.concurrency,
                          stop_on_error=False)
        loop.start()
        start = loop.go()
        samples = []
        next_at = start
        try:
            while True:
                now = loop.clock()
                w = loop.window(start + samples[-1]["t"] if samples else -inf, now)
                samples.append({"t": round(now - start, 2), "rss_mib": memory(server.pid),
                                "requests": w.requests + len(w.errors), "errors": len(w.errors),
                                "p99_ms": w.latency_ms["p99"]})
                print(f"t={now - start:6.0f}s  " + "  ".join(f"{k} {v:.0f}" for k, v in samples[-1]["rss_mib"].items())
                      + f"  req {samples[-1]['requests']} err {samples[-1]['errors']}", flush=True)
                if now - start >= duration:
                    break
                next_at += args.sample
                time.sleep(max(0.0, min(next_at, start + duration) - loop.clock()))
        finally:
            loop.stop(70)

    third = (duration - warmup) / 3
    p99_first = loop.window(start + warmup, start + warmup + third).latency_ms["p99"]
    p99_last = loop.window(start + duration - third, inf).latency_ms["p99"]
    everything = loop.window(-inf, inf)
    requests = everything.requests + len(everything.errors)
    procs = {}
    for label in samples[-1]["rss_mib"]:
        pts = [(s["t"], s["rss_mib"][label]) for s in samples if label in s["rss_mib"] and s["t"] >= warmup]
        if pts:
            procs[label] = {"rss_first_mib": pts[0][1], "rss_last_mib": pts[-1][1],
                            "slope_mib_per_min": slope_mib_per_min([p[0] for p in pts], [p[1] for p in pts])}
    errors = everything.errors
    return {
        "machine": args.machine, "python": platform.python_version(), "model": model, "protocol": args.protocol,
        "duration_s": duration, "warmup_s": warmup, "concurrency": args.concurrency, "batch": args.batch,
        "requests": requests, "errors": len(errors), "first_errors": errors[:5],
        "images_per_s": throughput(requests, requests * args.batch, duration)["images_per_s"],
        "p99_ms_first_third": p99_first, "p99_ms_last_third": p99_last,
        "p99_drift_pct": (100 * (p99_last - p99_first) / p99_first) if p99_first and p99_last else None,
        "processes": procs, "samples": samples,
    }


def table(r: dict) -> str:
    lines = [f"{r['model']} over {r['protocol']}, {r['duration_s']:.0f} s ({r['warmup_s']:.0f} s warm-up), "
             f"concurrency {r['concurrency']}, batch {r['batch']}: {r['requests']} requests, {r['errors']} errors, "
             f"{r['images_per_s']:.0f} images/s; p99 {r['p99_ms_first_third']:.1f} ms (first third after warm-up) "
             f"-> {r['p99_ms_last_third']:.1f} ms (last third): drift {r['p99_drift_pct']:+.1f} %", "",
             "| process | RSS after warm-up (MiB) | RSS at end (MiB) | slope after warm-up (MiB/min) |",
             "|---|---:|---:|---:|"]
    for label, p in r["processes"].items():
        lines.append(f"| {label} | {p['rss_first_mib']:.0f} | {p['rss_last_mib']:.0f} | "
                     f"{p['slope_mib_per_min']:+.2f} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        result = run(args)
    except ToolkitError as err:
        print(f"error: {err}", file=sys.stderr)
        return err.exit_code
    print(table(result))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2))
        print(f"wrote {args.out}")
    return 1 if result["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())

"""Locust-driven throughput versus the bench client's, same model, batch size, protocol and concurrency.

    python load_tests/compare_bench.py --users 4 --batch-size 8 --protocol grpc --precision fp32

Answers "does Locust (gevent, one process) generate the load we think it does?": if the Locust
users reach at least ~90 % of what benchmarks.bench reaches with as many closed-loop threads, the
load test is limited by the server, not by itself. One run of each, back to back:

1. benchmarks.bench's measure_point: `--users` threads, stability-windowed (as `python -m benchmarks.bench`).
2. `locust --headless -u <users>` with this repository's locustfile and --request-log; throughput is
   the successful requests that end inside the steady part of the run (after every user has started
   plus --warmup seconds, before the last --warmup seconds), per second.

Both send the same batches (the image set cycled `batch-size` at a time, zero-padded). Without
--http-url a local server (serving.local_server) is started on free ports for the comparison.
Prints both figures and their ratio; exits 1 when the ratio is below --target.
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

from benchmarks.stats import latency_ms, throughput
from contract import layout
from contract.errors import MissingInput, ToolkitError
from contract.manifest import load_manifest


def locust_throughput(log_file: Path, warmup_s: float) -> dict:
    """Successful requests/s and their latency over the steady window of a --request-log file (rows:
    start, end, ..., user, ..., ok; times in seconds)."""
    rows = []
    with open(log_file) as f:
        for r in csv.reader(f):
            rows.append((float(r[0]), float(r[1]), r[3], r[5] == "1"))
    if not rows:
        raise RuntimeError(f"{log_file} is empty: Locust sent no request")
    first_per_user: dict[str, float] = {}
    for start, _end, user, _ok in rows:
        first_per_user[user] = min(first_per_user.get(user, start), start)
    lo = max(first_per_user.values()) + warmup_s
    hi = max(end for _s, end, _u, _ok in rows) - warmup_s
    if hi - lo < 1.0:
        raise RuntimeError(f"the steady window is {hi - lo:.2f} s; run longer (--seconds) or shorten --warmup")
    inside = [(end - start, ok) for start, end, _u, ok in rows if lo <= end < hi]
    ok_latencies = [lat for lat, ok in inside if ok]
    # The same figures as benchmarks.bench's (benchmarks.stats): successful requests per second of the window.
    return {"requests_per_s": throughput(len(ok_latencies), 0, hi - lo)["requests_per_s"], "window_s": hi - lo,
            "requests": len(inside), "failures": len(inside) - len(ok_latencies), "total_requests": len(rows),
            "latency_ms": latency_ms(ok_latencies)}


def run_locust(args, urls: dict, log_file: Path, out: Path) -> tuple[int, str]:
    cmd = [sys.executable, "-m", "locust", "-f", str(ROOT / "load_tests" / "locustfile.py"), "--headless",
           "-u", str(args.users), "-r", str(args.users), "-t", f"{args.seconds}s", "--only-summary",
           "--http-url", urls["http"], "--grpc-url", urls["grpc"], "--protocol", args.protocol,
           "--model", args.model, "--precision", args.precision, "--batch-size", str(args.batch_size),
           "--max-images", str(args.images), "--request-log", str(log_file), "--csv", str(out / "locust"),
           "--manifest", str(args.manifest)]
    if args.data:
        cmd += ["--images", str(args.data)]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=args.seconds + 120)
    return proc.returncode, proc.stdout + proc.stderr


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python load_tests/compare_bench.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--http-url", default=None, help="running server's HTTP address (default: start a local server)")
    p.add_argument("--grpc-url", default=None, help="its gRPC address (default: HTTP port + 1)")
    p.add_argument("--repository", type=Path, default=Path("model_repository"),
                   help="built output folder (cpu/ + manifest.json) for the local server (default: %(default)s)")
    p.add_argument("--manifest", type=Path, default=None, help="default: <repository>/manifest.json")
    p.add_argument("--model", default="digits")
    p.add_argument("--precision", default="fp32")
    p.add_argument("--protocol", choices=("grpc", "http"), default="grpc")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--users", type=int, default=4, help="Locust users = bench concurrency (default: %(default)s)")
    p.add_argument("--seconds", type=int, default=10, help="Locust run time (default: %(default)s)")
    p.add_argument("--warmup", type=float, default=1.0,
                   help="seconds left out at each end of the Locust run (default: %(default)s)")
    p.add_argument("--images", type=int, default=256, help="images of the set to cycle through (default: %(default)s)")
    p.add_argument("--data", type=Path, default=None, help="image folder (default: the manifest's data.val)")
    p.add_argument("--target", type=float, default=0.9, help="ratio below which the exit code is 1 (default: %(default)s)")
    p.add_argument("--out", type=Path, default=Path("results/compare_bench"),
                   help="folder for the Locust CSV, request log and compare.json (default: %(default)s)")
    args = p.parse_args(argv)
    # Recorded in compare.json so that a figure quoted from it names the command that made it.
    args.command = shlex.join(["python", "load_tests/compare_bench.py", *(sys.argv[1:] if argv is None else argv)])
    args.manifest = args.manifest or args.repository / layout.MANIFEST_FILE
    args.out.mkdir(parents=True, exist_ok=True)

    server = None
    if args.http_url:
        http = args.http_url
        host, port = http.rsplit(":", 1)
        urls = {"http": http, "grpc": args.grpc_url or f"{host}:{int(port) + 1}"}
    else:
        from serving.local_server import LocalTritonServer, free_port

        server = LocalTritonServer(args.repository / "cpu", http_port=free_port(), grpc_port=free_port(),
                                   metrics_port=free_port(), timeout_s=180).start()
        urls = {"http": server.http_url, "grpc": server.grpc_url}
    try:
        return _compare(args, urls)
    except ToolkitError as err:
        print(f"error: {err}", file=sys.stderr)
        return err.exit_code
    finally:
        if server:
            server.stop()


def _compare(args, urls: dict) -> int:
    from benchmarks.bench import measure_point
    from clients.triton import TritonClient
    from contract.images import load_image_folder, request_pool

    data = args.data or load_manifest(args.manifest).model(args.model).val
    if data is None:
        raise MissingInput(f"{args.manifest} bundles no validation images for {args.model}; pass --data")
    encoded = load_image_folder(data).encoded(args.images)
    bs = args.batch_size
    # The same pool the locustfile builds (load_tests/scenario.py) and benchmarks.bench builds.
    pool = request_pool(encoded, bs)
    model = layout.ensemble_model(args.model, args.precision)

    load = os.getloadavg()
    with TritonClient(urls["http"], "http", timeout_s=60) as stats:
        stats.wait_until_ready()
        steps = list(stats.model_info(model).steps)
        bench = measure_point(urls[args.protocol], args.protocol, model, pool, args.users, window_s=1.0,
                              max_windows=8, stability=0.10, timeout_s=30.0, stats_client=stats, steps=steps)
    print(f"bench : {bench['inferences_per_s']:8.1f} req/s  {bench['images_per_s']:8.1f} images/s  "
          f"({args.protocol}, {model}, batch {bs}, concurrency {args.users}, {bench['windows']} windows, "
          f"{'stable' if bench['stable'] else 'NOT stable'})", flush=True)

    with tempfile.TemporaryDirectory() as tmp:
        log_file = Path(tmp) / "requests.csv"
        code, output = run_locust(args, urls, log_file, args.out)
        if code != 0:
            print(output[-4000:], file=sys.stderr)
            print(f"error: locust exited with {code}", file=sys.stderr)
            return 2
        loc = locust_throughput(log_file, args.warmup)
        (args.out / "requests.csv").write_bytes(log_file.read_bytes())
    print(f"locust: {loc['requests_per_s']:8.1f} req/s  {loc['requests_per_s'] * bs:8.1f} images/s  "
          f"({args.users} users, {loc['requests']} requests in a {loc['window_s']:.1f} s steady window, "
          f"{loc['failures']} failed)", flush=True)
    ratio = loc["requests_per_s"] / bench["inferences_per_s"] if bench["inferences_per_s"] else 0.0
    verdict = "meets" if ratio >= args.target else "BELOW"
    print(f"ratio locust/bench = {ratio:.3f} ({verdict} the target {args.target:g}); load average before: "
          f"{load[0]:.2f} on {os.cpu_count()} CPUs, server and both clients on this machine")
    (args.out / "compare.json").write_text(json.dumps({
        "command": args.command, "machine_cpus": os.cpu_count(), "model": model, "protocol": args.protocol, "batch_size": bs, "users": args.users, "urls": urls,
        "bench": {k: bench[k] for k in ("inferences_per_s", "images_per_s", "stable", "windows", "latency_ms")},
        "locust": {**loc, "images_per_s": loc["requests_per_s"] * bs}, "ratio": ratio, "target": args.target, "loadavg": load, "time": time.time()}, indent=2))
    return 0 if ratio >= args.target else 1


if __name__ == "__main__":
    sys.exit(main())

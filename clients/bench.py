"""Throughput and latency of the served ensembles across batch sizes, precisions, protocols and concurrency.

    python -m clients.bench                       # short sweep (under a minute on 2 cores)
    python -m clients.bench --thorough            # every batch size 1..max, concurrency 1/2/4, longer windows
    python -m clients.bench --protocol grpc --precision fp16 --batch-size 1 --batch-size 32 --concurrency 4

Each point (protocol x precision x batch size x concurrency) runs `concurrency` closed-loop clients
(threads, one TritonClient each) that send the same kind of request back to back: `batch` encoded
images of the image set, zero-padded, one request. Time is cut into windows; a point is stable when
three consecutive windows agree within --stability (10 %) on both throughput and mean latency, as
perf_analyzer does, or it stops at --max-windows and is flagged unstable. Figures come from the last
three windows: inferences/s (requests), images/s (= requests x batch), latency p50/p90/p95/p99 of
those requests, and Triton's own statistics over the same windows: per composing model of the
ensemble the average queue, compute_input, compute_infer and compute_output time per request, and
the step that takes longest (the bottleneck). Every point also checks that the requests this client
sent equal the ensemble's success count delta on the server.

In the same run, the DALI CPU pipeline of the repository (dali.py, in-process) is timed against
a per-image PIL + torchvision loop (decode, resize, crop, normalize: what a DataLoader worker does)
on the same images, and the ratio is printed.

Outputs in --out (default results/bench/): bench.csv, bench.json, throughput_vs_batch.png,
latency_vs_throughput.png.
"""
from __future__ import annotations

import argparse
import csv
import io
import json
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from contract import layout
from contract.manifest import ManifestError, load_manifest, manifest_file

PHASES = ("queue", "compute_input", "compute_infer", "compute_output")
SHORT = {"batch_sizes": [1, 8, 32], "concurrency": [1], "window_s": 0.5, "max_windows": 6, "preprocess_s": 1.0}
THOROUGH = {"batch_sizes": [1, 2, 4, 8, 16, 32, 64], "concurrency": [1, 2, 4], "window_s": 2.0,
            "max_windows": 10, "preprocess_s": 4.0}


@dataclass
class _Worker:
    latencies: list[tuple[float, float]] = field(default_factory=list)   # (end time, seconds)
    sent: int = 0
    errors: list[str] = field(default_factory=list)


def _role(step: str) -> str:
    if step.endswith("_preprocess"):
        return "preprocess"
    if step.endswith("_infer"):
        return "engine"
    return step


def _stats_delta(before: dict, after: dict, models: list[str]) -> dict[str, dict[str, int]]:
    out = {}
    for m in models:
        a, b = after.get(m, {}), before.get(m, {})
        out[m] = {k: a.get(k, 0) - b.get(k, 0) for k in a}
    return out


def breakdown(delta: dict[str, dict[str, int]], steps: list[str]) -> tuple[dict, str]:
    """Average µs per request for each composing model and phase; names the slowest step."""
    table: dict[str, dict[str, float]] = {}
    for step in steps:
        d = delta.get(step, {})
        n = max(d.get("success_count", 0), 1)
        table[step] = {ph: d.get(f"{ph}_ns", 0) / n / 1000.0 for ph in PHASES}
        table[step]["total"] = sum(table[step][ph] for ph in PHASES)
    if not table or all(v["total"] == 0 for v in table.values()):
        return table, "no server statistics"
    worst = max(table, key=lambda s: table[s]["total"])
    phase = max(PHASES, key=lambda ph: table[worst][ph])
    share = table[worst]["total"] / max(sum(v["total"] for v in table.values()), 1e-9)
    return table, (f"{_role(worst)} ({worst}): {table[worst]['total'] / 1000:.2f} ms/request, "
                   f"{100 * share:.0f} % of the server-side step time, mostly {phase}")


def _short(bottleneck: str) -> str:
    """'engine (digits_fp32_infer): 2.10 ms/request, 70 % ..., mostly compute_infer' -> 'engine compute_infer 70 %'."""
    if "mostly" not in bottleneck:
        return bottleneck
    share = bottleneck.split(", ")[1].split(" of")[0]
    return f"{bottleneck.split(' ')[0]} {bottleneck.rsplit('mostly ', 1)[-1]} ({share})"


def _stable(values: list[float], tol: float) -> bool:
    if len(values) < 3:
        return False
    last = values[-3:]
    mean = sum(last) / 3
    return mean > 0 and all(abs(v - mean) <= tol * mean for v in last)


def measure_point(url: str | None, protocol: str, model: str, batches: list[np.ndarray], concurrency: int,
                  window_s: float, max_windows: int, stability: float, timeout_s: float, stats_client,
                  steps: list[str], client_kw: dict | None = None) -> dict:
    """One sweep point; see the module docstring. client_kw: further TritonClient arguments (TLS, key)."""
    from clients.triton import TritonClient, TritonClientError

    watched = [model] + steps
    stop = threading.Event()
    workers = [_Worker() for _ in range(concurrency)]
    # Each thread makes its own client: the sync HTTP client runs on gevent and must stay on the
    # thread that created it. Warm-up happens before the barrier, outside the counted period.
    ready = threading.Barrier(concurrency + 1, timeout=timeout_s + 10)
    firsts: list[float] = []

    def loop(i: int):
        w = workers[i]
        try:
            client = TritonClient(url, protocol, **dict(client_kw or {}, timeout_s=timeout_s))
            client.model_info(model)
            t0 = time.perf_counter()
            client.infer(model, batches[i % len(batches)], top_k=0)  # first request pays lazy allocations
            firsts.append(time.perf_counter() - t0)
        except TritonClientError as err:
            w.errors.append(str(err))
            stop.set()
            ready.abort()
            return
        try:
            ready.wait()
            k = i
            while not stop.is_set():
                batch = batches[k % len(batches)]
                k += concurrency
                w.sent += 1
                start = time.perf_counter()
                try:
                    client.infer(model, batch, top_k=0)
                except TritonClientError as err:
                    w.errors.append(str(err))
                    stop.set()
                    return
                end = time.perf_counter()
                w.latencies.append((end, end - start))
        except threading.BrokenBarrierError:
            pass
        finally:
            client.close()

    threads = [threading.Thread(target=loop, args=(i,), daemon=True) for i in range(concurrency)]
    for t in threads:
        t.start()
    try:
        return _measure(model, batches, concurrency, window_s, max_windows, stability, timeout_s, stats_client,
                        steps, protocol, watched, stop, workers, ready, firsts, threads)
    finally:
        stop.set()   # whatever failed, no client thread keeps sending
        for t in threads:
            t.join(timeout=timeout_s + 5)


def _measure(model, batches, concurrency, window_s, max_windows, stability, timeout_s, stats_client, steps,
             protocol, watched, stop, workers, ready, firsts, threads) -> dict:
    """measure_point's windows and figures, with its clients running."""
    from clients.triton import TritonClientError

    before_all: dict = {}
    try:
        # Statistics are read before releasing the clients, so the totals cover exactly the counted requests.
        while len(firsts) < concurrency and not stop.is_set():
            time.sleep(0.01)
        before_all = stats_client.statistics()
        ready.wait()
    except threading.BrokenBarrierError:
        pass
    # A window must hold enough requests to make a rate: at least ~8 per client.
    window = max(window_s, 8 * max(firsts, default=0.0))
    if not stop.is_set():
        time.sleep(min(window / 2, 1.0))   # let every client get going before the first window
    bounds = [time.perf_counter()]
    snaps = [stats_client.statistics()]
    rates, means = [], []
    while len(rates) < max_windows and not stop.is_set():
        time.sleep(max(0.0, bounds[-1] + window - time.perf_counter()))
        bounds.append(time.perf_counter())
        snaps.append(stats_client.statistics())
        lats = [d for w in workers for (e, d) in w.latencies if bounds[-2] <= e < bounds[-1]]
        rates.append(len(lats) / (bounds[-1] - bounds[-2]))
        means.append(float(np.mean(lats)) if lats else float("inf"))
        if _stable(rates, stability) and _stable(means, stability):
            break
    stop.set()
    for t in threads:   # every request sent has its answer before the server's totals are read
        t.join(timeout=timeout_s + 5)
    after_all = stats_client.statistics()
    errors = [e for w in workers for e in w.errors]
    if errors:
        raise TritonClientError(f"{model} batch {len(batches[0])}: {errors[0]}")

    lo, hi = bounds[max(0, len(bounds) - 4)], bounds[-1]
    lats = np.array([d for w in workers for (e, d) in w.latencies if lo <= e < hi]) * 1000.0
    span = hi - lo
    batch = batches[0].shape[0]
    delta = _stats_delta(snaps[max(0, len(snaps) - 4)], snaps[-1], watched)
    table, bottleneck = breakdown(delta, steps)
    ens = delta.get(model, {})
    total = _stats_delta(before_all, after_all, [model])[model]
    infer_s = len(lats) / span if span > 0 else 0.0
    return {
        "protocol": protocol, "model": model, "batch_size": batch, "concurrency": concurrency,
        "window_s": round(window, 3), "windows": len(rates), "stable": _stable(rates, stability) and
        _stable(means, stability), "measured_requests": int(len(lats)),
        "inferences_per_s": infer_s, "images_per_s": infer_s * batch,
        "latency_ms": {"avg": float(lats.mean()) if len(lats) else None,
                       **{f"p{q}": float(np.percentile(lats, q)) if len(lats) else None for q in (50, 90, 95, 99)}},
        "server_latency_ms": ens.get("success_ns", 0) / max(ens.get("success_count", 0), 1) / 1e6,
        "server_breakdown_us": table, "bottleneck": bottleneck,
        # Whole point, warm-up excluded (taken before before_all), for the request-count check.
        "client_requests": int(sum(w.sent for w in workers)),
        "server_requests": int(total.get("success_count", 0) + total.get("fail_count", 0)),
        "server_inferences": int(total.get("inference_count", 0)),
    }


def preprocess_comparison(dali_file: Path, inp: dict, encoded: list[bytes], min_s: float, threads: int = 2) -> dict:
    """DALI CPU pipeline (batched, `threads` worker threads) vs a per-image PIL + torchvision loop."""
    import torch
    import torchvision.transforms as T
    from PIL import Image

    from contract.preprocess import CpuPreprocessor

    pre = CpuPreprocessor(dali_file, num_threads=threads)
    arrays = [np.frombuffer(e, np.uint8) for e in encoded]
    bs = pre.max_batch_size

    def dali_pass():
        for i in range(0, len(arrays), bs):
            pre(arrays[i: i + bs])

    tf = T.Compose([T.Resize(inp["resize"]), T.CenterCrop(inp["crop"]), T.ToTensor(),
                    T.Normalize(inp["mean"], inp["std"])])

    def pil_pass():
        for e in encoded:
            tf(Image.open(io.BytesIO(e)).convert("RGB"))

    def rate(fn) -> tuple[float, int]:
        fn()  # warm-up (pipeline buffers, first decode)
        n, start = 0, time.perf_counter()
        while True:
            fn()
            n += len(encoded)
            el = time.perf_counter() - start
            if el >= min_s:
                return n / el, n

    torch.set_num_threads(1)  # the per-image loop is one DataLoader worker's work
    dali_rate, dali_n = rate(dali_pass)
    pil_rate, pil_n = rate(pil_pass)
    return {"images": len(encoded), "dali_images_per_s": dali_rate, "pil_images_per_s": pil_rate,
            "ratio": dali_rate / pil_rate if pil_rate else None, "dali_threads": threads, "dali_batch": bs,
            "dali_file": str(dali_file), "pil": "PIL decode + torchvision Resize/CenterCrop/ToTensor/Normalize, "
            "one image at a time", "timed_images": {"dali": dali_n, "pil": pil_n}}


def write_outputs(out: Path, rows: list[dict], meta: dict) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / "bench.json", out / "bench.csv"]
    paths[0].write_text(json.dumps({**meta, "points": rows}, indent=2))
    with paths[1].open("w", newline="") as f:
        w = csv.writer(f)
        head = ["protocol", "precision", "model", "batch_size", "concurrency", "stable", "windows",
                "inferences_per_s", "images_per_s", "p50_ms", "p90_ms", "p95_ms", "p99_ms", "avg_ms",
                "server_ms", "client_requests", "server_requests"]
        head += [f"{role}_{ph}_us" for role in ("preprocess", "engine") for ph in PHASES] + ["bottleneck"]
        w.writerow(head)
        for r in rows:
            lat = r["latency_ms"]
            by_role = {_role(s): v for s, v in r["server_breakdown_us"].items()}
            w.writerow([r["protocol"], r["precision"], r["model"], r["batch_size"], r["concurrency"], r["stable"],
                        r["windows"], f"{r['inferences_per_s']:.2f}", f"{r['images_per_s']:.1f}",
                        *(f"{lat[k]:.3f}" for k in ("p50", "p90", "p95", "p99", "avg")), f"{r['server_latency_ms']:.3f}",
                        r["client_requests"], r["server_requests"],
                        *(f"{by_role.get(role, {}).get(ph, 0):.1f}" for role in ("preprocess", "engine") for ph in PHASES),
                        r["bottleneck"]])
    paths += _plots(out, rows)
    return paths


def _plots(out: Path, rows: list[dict]) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    series: dict[tuple, list[dict]] = {}
    for r in rows:
        series.setdefault((r["precision"], r["protocol"], r["concurrency"]), []).append(r)
    multi_c = len({r["concurrency"] for r in rows}) > 1
    colors = {"fp32": "tab:blue", "fp16": "tab:orange", "int8": "tab:green"}
    styles = {"http": "-", "grpc": "--"}
    label = (lambda p, pr, c: f"{p} {pr}" + (f" c={c}" if multi_c else ""))

    fig, ax = plt.subplots(figsize=(6.4, 4.0), dpi=80)
    for (prec, proto, conc), pts in sorted(series.items()):
        pts = sorted(pts, key=lambda r: r["batch_size"])
        ax.plot([r["batch_size"] for r in pts], [r["images_per_s"] for r in pts], styles.get(proto, ":"),
                marker="o", color=colors.get(prec), label=label(prec, proto, conc), alpha=0.9)
    ax.set_xscale("log", base=2)
    p1 = _save(fig, ax, out / "throughput_vs_batch.png", "throughput vs batch size",
               "batch size (images per request)", "images/s")

    fig, ax = plt.subplots(figsize=(6.4, 4.0), dpi=80)
    for (prec, proto, conc), pts in sorted(series.items()):
        pts = sorted(pts, key=lambda r: r["images_per_s"])
        ax.plot([r["images_per_s"] for r in pts], [r["latency_ms"]["p99"] for r in pts], styles.get(proto, ":"),
                marker="o", color=colors.get(prec), label=label(prec, proto, conc), alpha=0.9)
        for r in pts:
            ax.annotate(str(r["batch_size"]), (r["images_per_s"], r["latency_ms"]["p99"]), fontsize=7,
                        xytext=(3, 3), textcoords="offset points")
    ax.set_yscale("log")
    p2 = _save(fig, ax, out / "latency_vs_throughput.png", "latency vs throughput (labels: batch size)",
               "images/s", "p99 latency per request (ms)")
    return [p1, p2]


def _save(fig, ax, path: Path, title: str, xlabel: str, ylabel: str) -> Path:
    import matplotlib.pyplot as plt

    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def _parser() -> argparse.ArgumentParser:
    from clients.repository import add_backend_argument
    from clients.triton import PROTOCOLS, add_connection_arguments

    p = argparse.ArgumentParser(
        prog="python -m clients.bench",
        description="Sweep batch sizes x precisions x protocols x concurrency against a Triton server; stability-"
                    "windowed throughput and latency percentiles, Triton's per-step server breakdown, and DALI vs "
                    "PIL preprocessing. Writes CSV, JSON and PNG plots.")
    add_connection_arguments(p, protocol_choices=False)   # --url is the HTTP address here
    p.add_argument("--grpc-url", default=None,
                   help="gRPC address host:port (default: --url's host, HTTP port + 1, i.e. 127.0.0.1:8001)")
    p.add_argument("--protocol", action="append", choices=PROTOCOLS, default=[],
                   help="protocol(s) to measure (repeatable; default: http and grpc)")
    p.add_argument("--manifest", type=Path, default=Path("model_repository/manifest.json"),
                   help="manifest.json of the served repository (or its folder): bundled images and dali.py for the preprocessing "
                        "comparison (default: %(default)s)")
    p.add_argument("--model", default=None, help="model name, e.g. digits (default: the only one served)")
    p.add_argument("--precision", action="append", default=[],
                   help="precision(s) to measure (repeatable; default: every one served)")
    add_backend_argument(p)
    p.add_argument("--batch-size", action="append", type=int, default=[],
                   help="images per request (repeatable; default 1, 8, 32; --thorough: 1..64 in powers of 2; "
                        "capped at max_batch_size)")
    p.add_argument("--concurrency", action="append", type=int, default=[],
                   help="requests in flight (closed-loop clients; repeatable; default 1; --thorough: 1, 2, 4)")
    p.add_argument("--window", type=float, default=None,
                   help="measurement window in seconds (default 0.5; --thorough 2); stretched to hold >= 8 requests")
    p.add_argument("--max-windows", type=int, default=None,
                   help="time cap per point, in windows, when it does not become stable (default 6; --thorough 10)")
    p.add_argument("--stability", type=float, default=0.10,
                   help="three consecutive windows must agree within this fraction (default: %(default)s)")
    p.add_argument("--thorough", action="store_true",
                   help="the full sweep with longer windows (several minutes) instead of the short default")
    p.add_argument("--data", type=Path, default=None,
                   help="ImageFolder whose images are sent (default: the manifest's data.val)")
    p.add_argument("--images", type=int, default=256,
                   help="how many images of the set to cycle through (default: %(default)s)")
    p.add_argument("--no-preprocess-comparison", action="store_true",
                   help="skip the DALI vs PIL preprocessing comparison")
    p.add_argument("--out", type=Path, default=Path("results/bench"),
                   help="folder for bench.csv, bench.json and the plots (default: %(default)s)")
    return p


def run(args) -> int:
    from rich.console import Console
    from rich.table import Table

    from clients.connection import client_options, split_url
    from clients.hints import resolve_ensemble
    from clients.triton import (TritonClient, TritonClientError, normalize_url, served_base_models,
                                served_precisions)
    from contract.images import load_image_folder
    from contract.images import pad_batch

    console = Console(width=None if sys.stdout.isatty() else 150)
    mode = THOROUGH if args.thorough else SHORT
    protocols = args.protocol or ["http", "grpc"]
    batch_sizes = sorted(set(args.batch_size or mode["batch_sizes"]))
    concurrencies = sorted(set(args.concurrency or mode["concurrency"]))
    window_s = args.window or mode["window_s"]
    max_windows = max(3, args.max_windows or mode["max_windows"])

    http_url = normalize_url(args.url, "http")
    host, port = http_url.rsplit(":", 1)
    # Triton's convention puts gRPC one port above HTTP (8000/8001); --grpc-url overrides.
    urls = {"http": http_url, "grpc": normalize_url(args.grpc_url, "grpc") if args.grpc_url else f"{host}:{int(port) + 1}"}
    # normalize_url drops the scheme; a TLS URL keeps it so that no client falls back to plain text.
    if split_url(args.url, "http")[1]:
        urls["http"] = f"https://{http_url}"
    if split_url(args.grpc_url or args.url, "grpc")[1]:
        urls["grpc"] = f"grpcs://{urls['grpc']}"
    client_kw = client_options(args)

    try:
        # Optional: without one, --data names the images and the preprocessing comparison is skipped.
        loaded = load_manifest(args.manifest) if manifest_file(args.manifest).is_file() else None
    except ManifestError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    stats_client = TritonClient(urls["http"], "http", **client_kw)
    try:
        stats_client.wait_until_ready()
        meta = stats_client.server_metadata()
        index = stats_client.repository_index()
        bases = served_base_models(index)
        name = args.model or (bases[0] if len(bases) == 1 else None)
        if name is None:
            print(f"error: the server serves {len(bases)} models ({', '.join(bases) or 'none'}); choose one with "
                  "--model", file=sys.stderr)
            return 2
        for precision in args.precision or [None]:   # the name as typed, and each precision asked for
            resolve_ensemble(index, name, precision, args.backend, http_url)
        precisions = args.precision or sorted(served_precisions(index, name, args.backend),
                                              key=lambda p: ("fp32", "fp16", "int8").index(p)
                                              if p in ("fp32", "fp16", "int8") else 9)
        listed = loaded.models.get(name) if loaded else None
        entry = listed.record if listed else {}
        data = args.data or (listed.val if listed else None)
        if data is None:
            print("error: no image set; pass --data <ImageFolder> or --manifest", file=sys.stderr)
            return 2
        encoded = load_image_folder(data).encoded(args.images)

        rows, failed = [], []
        console.print(f"Triton {meta.get('version')} at {http_url}: {name}, precisions {precisions}, protocols "
                      f"{protocols}, batch sizes {batch_sizes}, concurrency {concurrencies}; window {window_s} s, "
                      f"<= {max_windows} windows per point", highlight=False)
        started = time.perf_counter()
        for protocol in protocols:
            for precision in precisions:
                model = layout.ensemble_model(name, precision, args.backend)
                try:
                    info = stats_client.model_info(model)
                except TritonClientError as err:
                    failed += [{"protocol": protocol, "precision": precision, "batch_size": bs, "concurrency": c,
                                "error": str(err)} for bs in batch_sizes for c in concurrencies]
                    console.print(f"  {protocol:4} {precision:5}: FAILED: {err}", highlight=False)
                    continue
                steps = list(info.steps)
                for bs in batch_sizes:
                    if info.max_batch_size and bs > info.max_batch_size:
                        console.print(f"skip batch {bs}: {model} has max_batch_size {info.max_batch_size}")
                        continue
                    # Every request carries `bs` different images, cycling through the set.
                    pool = [pad_batch([encoded[(i + j) % len(encoded)] for j in range(bs)])
                            for i in range(0, max(len(encoded), bs), bs)]
                    for conc in concurrencies:
                        try:
                            r = measure_point(urls[protocol], protocol, model, pool, conc, window_s, max_windows,
                                              args.stability, args.timeout, stats_client, steps, client_kw)
                        except TritonClientError as err:
                            # A failed point (server restarted or crashed, request rejected) is recorded
                            # as such and the sweep goes on; what was measured is still written.
                            failed.append({"protocol": protocol, "precision": precision, "batch_size": bs,
                                           "concurrency": conc, "error": str(err)})
                            console.print(f"  {protocol:4} {precision:5} batch {bs:3} c={conc}: FAILED: {err}",
                                          highlight=False)
                            continue
                        r["precision"] = precision
                        rows.append(r)
                        console.print(f"  {protocol:4} {precision:5} batch {bs:3} c={conc}: "
                                      f"{r['images_per_s']:8.1f} img/s  p99 {r['latency_ms']['p99']:7.2f} ms  "
                                      f"{'stable' if r['stable'] else 'NOT stable'} ({r['windows']} windows)",
                                      highlight=False)
        sweep_s = time.perf_counter() - started
    except TritonClientError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    finally:
        stats_client.close()

    pre = None
    dali_file = (loaded.dali_definition(name) if loaded else
                 manifest_file(args.manifest).parent / "cpu" / layout.preprocess_model(name) / "1" / layout.DALI_DEFINITION)
    if not args.no_preprocess_comparison:
        if dali_file.is_file() and entry.get("input"):
            pre = preprocess_comparison(dali_file, entry["input"], encoded, mode["preprocess_s"])
        else:
            console.print(f"note: no {dali_file} (or no input spec in the manifest); preprocessing comparison skipped")

    table = Table(title=f"bench: {name} on Triton {meta.get('version')} ({sweep_s:.0f} s)")
    for col in ("protocol", "precision", "batch", "conc.", "infer/s", "images/s", "p50 ms", "p90 ms", "p95 ms",
                "p99 ms", "server ms", "bottleneck (server side)"):
        table.add_column(col, justify="left" if col in ("protocol", "precision", "bottleneck (server side)")
                         else "right")
    for f in failed:
        table.add_row(f["protocol"], f["precision"], str(f["batch_size"]), str(f["concurrency"]), "FAILED",
                      *[""] * 6, f["error"][:80])
    for r in rows:
        lat = r["latency_ms"]
        table.add_row(r["protocol"], r["precision"], str(r["batch_size"]), str(r["concurrency"]),
                      f"{r['inferences_per_s']:.1f}", f"{r['images_per_s']:.1f}" + ("" if r["stable"] else "*"),
                      *(f"{lat[k]:.2f}" for k in ("p50", "p90", "p95", "p99")), f"{r['server_latency_ms']:.2f}",
                      _short(r["bottleneck"]))
    console.print(table)
    if any(not r["stable"] for r in rows):
        console.print("* not stable within the window cap (raise --max-windows or --window)")
    mismatched = [r for r in rows if r["client_requests"] != r["server_requests"]]
    console.print(f"request counts: client and server statistics agree on {len(rows) - len(mismatched)} of "
                  f"{len(rows)} points" + (f"; differ on {[(r['protocol'], r['precision'], r['batch_size']) for r in mismatched]}"
                                           if mismatched else ""), highlight=False)
    for prec in precisions:
        pts = [r for r in rows if r["precision"] == prec]
        if pts:
            best = max(pts, key=lambda r: r["images_per_s"])
            b1 = [r for r in pts if r["batch_size"] == 1]
            p99 = (f"; p99 at batch 1: {min(r['latency_ms']['p99'] for r in b1):.2f} ms" if b1 else "")
            console.print(f"{prec}: best {best['images_per_s']:.1f} images/s (batch {best['batch_size']}, "
                          f"{best['protocol']}, c={best['concurrency']}){p99}", highlight=False)
    if pre:
        console.print(f"preprocessing, {pre['images']} images: DALI CPU ({pre['dali_threads']} threads, batch "
                      f"{pre['dali_batch']}) {pre['dali_images_per_s']:.0f} images/s vs per-image PIL/torchvision "
                      f"{pre['pil_images_per_s']:.0f} images/s: {pre['ratio']:.2f}x", highlight=False)
    written = write_outputs(args.out, rows, {
        "server": {"url": http_url, "grpc_url": urls.get("grpc"), **meta}, "model": name,
        "settings": {"protocols": protocols, "backend": args.backend, "precisions": precisions, "batch_sizes": batch_sizes,
                     "concurrency": concurrencies, "window_s": window_s, "max_windows": max_windows,
                     "stability": args.stability, "thorough": args.thorough, "images": len(encoded)},
        "sweep_seconds": sweep_s, "preprocessing": pre, "failed_points": failed})
    console.print("wrote " + ", ".join(str(p) for p in written), highlight=False)
    if failed:
        print(f"error: {len(failed)} point(s) failed (listed as FAILED above and under failed_points in "
              "bench.json); the others were measured and written", file=sys.stderr)
    return 1 if failed else 0


def main(argv: list[str] | None = None) -> int:
    return run(_parser().parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())

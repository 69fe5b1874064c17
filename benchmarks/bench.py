"""Throughput and latency of the served ensembles across batch sizes, precisions, protocols and concurrency.

    python -m benchmarks.bench                       # short sweep (under a minute on 2 cores)
    python -m benchmarks.bench --thorough            # every batch size 1..max, concurrency 1/2/4, longer windows
    python -m benchmarks.bench --protocol grpc --precision fp16 --batch-size 1 --batch-size 32 --concurrency 4

Each point (protocol x precision x batch size x concurrency) runs `concurrency` closed-loop clients
(benchmarks.load: threads, one TritonClient each) that send the same kind of request back to back:
`batch` encoded images of the image set, zero-padded, one request. Time is cut into windows; a point is stable when
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
from dataclasses import dataclass
import sys
import time
from pathlib import Path

from benchmarks._bench_output import preprocess_comparison, write_outputs
from benchmarks._bench_point import breakdown, measure_point, short as _short
from clients import provenance
from contract import layout
from contract.errors import CannotRun, UsageError, exit_code_of
from contract.manifest import load_manifest, manifest_file

# The public API of this module: the CLI, one measured point (another command calls it), and the
# pieces that turn points into the report.
__all__ = ["main", "run", "measure_point", "breakdown", "write_outputs", "preprocess_comparison", "SHORT", "THOROUGH"]

SHORT = {"batch_sizes": [1, 8, 32], "concurrency": [1], "window_s": 0.5, "max_windows": 6, "preprocess_s": 1.0}
THOROUGH = {"batch_sizes": [1, 2, 4, 8, 16, 32, 64], "concurrency": [1, 2, 4], "window_s": 2.0,
            "max_windows": 10, "preprocess_s": 4.0}


# How each point is windowed: flag -> (type, what it means). The defaults come from SHORT/THOROUGH.
_WINDOW_FLAGS = {
    "--window": (float, "measurement window in seconds (default 0.5; --thorough 2); stretched to hold >= 8 requests"),
    "--max-windows": (int, "time cap per point, in windows, when it does not become stable (default 6; --thorough 10)"),
}


def _add_window_arguments(p: argparse.ArgumentParser) -> None:
    """--window, --max-windows, --stability, --thorough: how long each point is measured."""
    for flag, (kind, meaning) in _WINDOW_FLAGS.items():
        p.add_argument(flag, type=kind, default=None, help=meaning)
    p.add_argument("--stability", type=float, default=0.10,
                   help="three consecutive windows must agree within this fraction (default: %(default)s)")
    p.add_argument("--thorough", action="store_true",
                   help="the full sweep with longer windows (several minutes) instead of the short default")


def _parser() -> argparse.ArgumentParser:
    from clients.connection import PROTOCOLS, command_parser
    from clients.served_models import add_backend_argument

    p = command_parser("python -m benchmarks.bench",
                       "Sweep batch sizes x precisions x protocols x concurrency against a Triton server; stability-"
                       "windowed throughput and latency percentiles, Triton's per-step server breakdown, and DALI vs "
                       "PIL preprocessing. Writes CSV, JSON and PNG plots.",
                       protocol_choices=False)   # --url is the HTTP address here
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
    _add_window_arguments(p)
    p.add_argument("--data", type=Path, default=None,
                   help="ImageFolder whose images are sent (default: the manifest's data.val)")
    p.add_argument("--images", type=int, default=256,
                   help="how many images of the set to cycle through (default: %(default)s)")
    p.add_argument("--no-preprocess-comparison", action="store_true",
                   help="skip the DALI vs PIL preprocessing comparison")
    p.add_argument("--out", type=Path, default=Path("results/bench"),
                   help="folder for bench.csv, bench.json and the plots (default: %(default)s)")
    return p


@dataclass
class _Sweep:
    """What one run measures: the settings (flags over SHORT/THOROUGH), the addresses, the model,
    its precisions and the encoded images sent."""

    protocols: list[str]
    batch_sizes: list[int]
    concurrencies: list[int]
    window_s: float
    max_windows: int
    preprocess_s: float
    http_url: str = ""
    urls: dict | None = None
    name: str = ""
    precisions: list[str] | None = None
    encoded: list[bytes] | None = None


def _settings(args) -> _Sweep:
    """The sweep's settings from the flags, defaults from --thorough's mode, and the addresses:
    gRPC one port above HTTP (Triton's 8000/8001) unless --grpc-url, TLS schemes kept."""
    from clients.connection import normalize_url, split_url

    mode = THOROUGH if args.thorough else SHORT
    sweep = _Sweep(args.protocol or ["http", "grpc"], sorted(set(args.batch_size or mode["batch_sizes"])),
                   sorted(set(args.concurrency or mode["concurrency"])), args.window or mode["window_s"],
                   max(3, args.max_windows or mode["max_windows"]), mode["preprocess_s"])
    sweep.http_url = normalize_url(args.url, "http")
    host, port = sweep.http_url.rsplit(":", 1)
    urls = {"http": sweep.http_url,
            "grpc": normalize_url(args.grpc_url, "grpc") if args.grpc_url else f"{host}:{int(port) + 1}"}
    # normalize_url drops the scheme; a TLS URL keeps it so that no client falls back to plain text.
    if split_url(args.url, "http")[1]:
        urls["http"] = f"https://{sweep.http_url}"
    if split_url(args.grpc_url or args.url, "grpc")[1]:
        urls["grpc"] = f"grpcs://{urls['grpc']}"
    sweep.urls = urls
    return sweep


def _choose_model(args, sweep: _Sweep, index, loaded):
    """Set the model, its precisions and the images on `sweep`; the manifest's entry for the model
    (None without one). UsageError when the model or the image set is not clear."""
    from clients.user_errors import resolve_ensemble
    from clients.served_models import served_base_models, served_precisions
    from contract.images import load_image_folder

    bases = served_base_models(index)
    name = args.model or (bases[0] if len(bases) == 1 else None)
    if name is None:
        raise UsageError(f"the server serves {len(bases)} models ({', '.join(bases) or 'none'}); choose one with --model")
    for precision in args.precision or [None]:   # the name as typed, and each precision asked for
        resolve_ensemble(index, name, precision, args.backend, sweep.http_url)
    sweep.name = name
    sweep.precisions = args.precision or sorted(served_precisions(index, name, args.backend),
                                                key=lambda p: layout.PRECISIONS.index(p)
                                                if p in layout.PRECISIONS else 9)
    listed = loaded.models.get(name) if loaded else None
    data = args.data or (listed.val if listed else None)
    if data is None:
        raise UsageError("no image set; pass --data <ImageFolder> or --manifest")
    sweep.encoded = load_image_folder(data).encoded(args.images)
    return listed


def _failed(protocol: str, precision: str, bs: int, conc: int, err: Exception) -> dict:
    return {"protocol": protocol, "precision": precision, "batch_size": bs, "concurrency": conc, "error": str(err)}


def _measure_model(console, args, sweep: _Sweep, protocol: str, precision: str, stats_client, client_kw,
                   rows: list[dict], failed: list[dict]) -> None:
    """Every (batch size, concurrency) point of one ensemble over one protocol, into `rows`, or
    into `failed` where a point (or the model) failed: the sweep goes on."""
    from clients.triton import TritonClientError
    from contract.images import request_pool

    model = layout.ensemble_model(sweep.name, precision, args.backend)
    try:
        info = stats_client.model_info(model)
    except TritonClientError as err:
        failed += [_failed(protocol, precision, bs, c, err) for bs in sweep.batch_sizes for c in sweep.concurrencies]
        console.print(f"  {protocol:4} {precision:5}: FAILED: {err}", highlight=False)
        return
    for bs in sweep.batch_sizes:
        if info.max_batch_size and bs > info.max_batch_size:
            console.print(f"skip batch {bs}: {model} has max_batch_size {info.max_batch_size}")
            continue
        pool = request_pool(sweep.encoded, bs)   # every request carries `bs` different images, cycling the set
        for conc in sweep.concurrencies:
            try:
                r = measure_point(sweep.urls[protocol], protocol, model, pool, conc, sweep.window_s, sweep.max_windows,
                                  args.stability, args.timeout, stats_client, list(info.steps), client_kw)
            except TritonClientError as err:
                # A failed point (server restarted or crashed, request rejected) is recorded as
                # such and the sweep goes on; what was measured is still written.
                failed.append(_failed(protocol, precision, bs, conc, err))
                console.print(f"  {protocol:4} {precision:5} batch {bs:3} c={conc}: FAILED: {err}", highlight=False)
                continue
            r["precision"] = precision
            rows.append(r)
            p99 = r["latency_ms"]["p99"]   # None when no request finished inside the window
            console.print(f"  {protocol:4} {precision:5} batch {bs:3} c={conc}: {r['images_per_s']:8.1f} img/s  p99 "
                          f"{'-' if p99 is None else f'{p99:7.2f}'} ms  "
                          f"{'stable' if r['stable'] else 'NOT stable'} ({r['windows']} windows)", highlight=False)


def _preprocessing(console, args, sweep: _Sweep, loaded, listed) -> dict | None:
    """DALI vs PIL on the same images, unless skipped or the repository's dali.py is not here."""
    dali_file = (loaded.dali_definition(sweep.name) if loaded else manifest_file(args.manifest).parent / "cpu"
                 / layout.preprocess_model(sweep.name) / "1" / layout.DALI_DEFINITION)
    if args.no_preprocess_comparison:
        return None
    if dali_file.is_file() and listed and listed.input:
        return preprocess_comparison(dali_file, listed.input, sweep.encoded, sweep.preprocess_s)
    console.print(f"note: no {dali_file} (or no input spec in the manifest); preprocessing comparison skipped")
    return None


def _results_table(title: str, rows: list[dict], failed: list[dict]):
    from rich.table import Table

    table = Table(title=title)
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
    return table


def _render(console, sweep: _Sweep, title: str, rows: list[dict], failed: list[dict], pre: dict | None) -> None:
    """The table, the request-count check, the best point per precision and the preprocessing ratio."""
    console.print(_results_table(title, rows, failed))
    if any(not r["stable"] for r in rows):
        console.print("* not stable within the window cap (raise --max-windows or --window)")
    mismatched = [r for r in rows if r["client_requests"] != r["server_requests"]]
    console.print(f"request counts: client and server statistics agree on {len(rows) - len(mismatched)} of "
                  f"{len(rows)} points" + (f"; differ on {[(r['protocol'], r['precision'], r['batch_size']) for r in mismatched]}"
                                           if mismatched else ""), highlight=False)
    for prec in sweep.precisions:
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


def _write(args, sweep: _Sweep, meta: dict, rows, failed, sweep_s: float, pre) -> list[Path]:
    return write_outputs(args.out, rows, {
        "server": {"url": sweep.http_url, "grpc_url": sweep.urls.get("grpc"), **meta}, "model": sweep.name,
        "settings": {"protocols": sweep.protocols, "backend": args.backend, "precisions": sweep.precisions,
                     "batch_sizes": sweep.batch_sizes, "concurrency": sweep.concurrencies, "window_s": sweep.window_s,
                     "max_windows": sweep.max_windows, "stability": args.stability, "thorough": args.thorough,
                     "images": len(sweep.encoded)},
        "sweep_seconds": sweep_s, "preprocessing": pre, "failed_points": failed,
        "command": getattr(args, "command", None), "machine": provenance.machine()})


def run(args) -> int:
    """Measure the sweep, print and write it; 1 when a point failed (the rest is still written),
    else 0. Raises ToolkitError (exit code 2) when the sweep cannot start."""
    from rich.console import Console

    from clients.connection import client_options
    from clients.triton import TritonClient, TritonClientError

    console = Console(width=None if sys.stdout.isatty() else 150)
    sweep = _settings(args)
    client_kw = client_options(args)
    # Optional: without one, --data names the images and the preprocessing comparison is skipped.
    loaded = load_manifest(args.manifest) if manifest_file(args.manifest).is_file() else None
    stats_client = TritonClient(sweep.urls["http"], "http", **client_kw)
    rows, failed = [], []
    try:
        stats_client.wait_until_ready()
        meta = stats_client.server_metadata()
        listed = _choose_model(args, sweep, stats_client.repository_index(), loaded)
        console.print(f"Triton {meta.get('version')} at {sweep.http_url}: {sweep.name}, precisions {sweep.precisions}, "
                      f"protocols {sweep.protocols}, batch sizes {sweep.batch_sizes}, concurrency {sweep.concurrencies}; "
                      f"window {sweep.window_s} s, <= {sweep.max_windows} windows per point", highlight=False)
        started = time.perf_counter()
        for protocol in sweep.protocols:
            for precision in sweep.precisions:
                _measure_model(console, args, sweep, protocol, precision, stats_client, client_kw, rows, failed)
        sweep_s = time.perf_counter() - started
    except TritonClientError as err:
        raise CannotRun(str(err)) from err
    finally:
        stats_client.close()
    pre = _preprocessing(console, args, sweep, loaded, listed)
    _render(console, sweep, f"bench: {sweep.name} on Triton {meta.get('version')} ({sweep_s:.0f} s)", rows, failed, pre)
    written = _write(args, sweep, meta, rows, failed, sweep_s, pre)
    console.print("wrote " + ", ".join(str(p) for p in written), highlight=False)
    if failed:
        print(f"error: {len(failed)} point(s) failed (listed as FAILED above and under failed_points in "
              "bench.json); the others were measured and written", file=sys.stderr)
    return 1 if failed else 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    args.command = provenance.command("tik-bench", argv)
    return exit_code_of(run, args)


if __name__ == "__main__":
    sys.exit(main())


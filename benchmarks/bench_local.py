"""Served vs in-process throughput on this machine, in one run.

    python -m benchmarks.bench_local [--repository model_repository/cpu] [--precision fp32]
    python -m benchmarks.bench_local --tiny          # no built repository: a small one (serving.minirepo)

Both sides run the repository's own artifacts: dali.py through DALI on CPU, then model.onnx
through ONNX Runtime, with the thread counts the configs give the server. The served side goes
through a real tritonserver (started here on free ports, or --url): client -> ensemble -> DALI
stand-in -> ONNX Runtime stand-in -> client, all on the same cores as the in-process loop.

Printed: images/s per batch size for both sides, the ratio of the bests (target >= 0.85), and
single-image requests from concurrent clients (the dynamic batcher merges them) vs batch 1
in-process.
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from builders import triton_config
from benchmarks.load import ClosedLoop, triton_requests
from contract import layout
from contract.errors import MissingInput, ToolkitError
from contract.images import pack_batch
from contract.preprocess import CpuPreprocessor

TARGET_RATIO = 0.85


def _load_images(folder: Path | None, count: int) -> list[bytes]:
    if folder is None:
        from serving import minirepo

        return [b for b, _ in minirepo.sample_images(count)]
    files = sorted(p for p in Path(folder).rglob("*") if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    if not files:
        raise MissingInput(f"no .jpg/.jpeg/.png files under {folder}")
    return [files[i % len(files)].read_bytes() for i in range(count)]


def _rate(work, seconds: float, warmup: float) -> float:
    """Items per second of `work()` (which returns how many items it did), after a warm-up."""
    end = time.perf_counter() + warmup
    while time.perf_counter() < end:
        work()
    done, start = 0, time.perf_counter()
    end = start + seconds
    while time.perf_counter() < end:
        done += work()
    return done / (time.perf_counter() - start)


class InProcess:
    def __init__(self, repo: Path, name: str, precision: str):
        import onnxruntime as ort

        pre_dir = repo / layout.preprocess_model(name)
        pre_cfg = triton_config.read_config(pre_dir / "config.pbtxt")
        eng_dir = repo / layout.engine_model(name, precision)
        eng_cfg = triton_config.read_config(eng_dir / "config.pbtxt")
        threads = pre_cfg.parameters["num_threads"].string_value
        self.pre = CpuPreprocessor(pre_dir / "1" / layout.DALI_DEFINITION, num_threads=int(threads) if threads else 2)
        intra = eng_cfg.parameters["intra_op_thread_count"].string_value
        model_file = str(eng_dir / "1" / (eng_cfg.default_model_filename or "model.onnx"))
        # Thread spinning helps ONNX Runtime alone but steals cores from DALI's workers; which
        # wins depends on batch size, so the baseline tries both and keeps the faster.
        self.sessions = {}
        for spin in ("0", "1"):
            opts = ort.SessionOptions()
            opts.intra_op_num_threads = int(intra) if intra else 0
            opts.add_session_config_entry("session.intra_op.allow_spinning", spin)
            self.sessions[spin] = ort.InferenceSession(model_file, sess_options=opts,
                                                       providers=["CPUExecutionProvider"])
        self.sess = self.sessions["0"]

    def __call__(self, rows: list[np.ndarray]) -> np.ndarray:
        return self.sess.run([layout.ENGINE_OUTPUT], {layout.ENGINE_INPUT: self.pre(rows)})[0]


def _served_rate(url: str, protocol: str, model: str, batches: list[np.ndarray], concurrency: int,
                 seconds: float, warmup: float) -> float:
    """Images/s with `concurrency` clients each sending requests back to back (benchmarks.load)."""
    return ClosedLoop(triton_requests(url, protocol, model), batches, concurrency).run(seconds, warmup).images_per_s


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.bench_local", description=__doc__.split("\n\n")[0])
    ap.add_argument("--repository", type=Path, default=Path("model_repository/cpu"),
                    help="the cpu repository to serve and to run in-process (default: %(default)s)")
    ap.add_argument("--tiny", action="store_true",
                    help="benchmark a small repository built now (serving.minirepo) instead of --repository")
    ap.add_argument("--cache-dir", type=Path, default=None,
                    help="--tiny: the builder's stage cache, so a rerun builds in about a second (default: a "
                         "temporary one, deleted afterwards)")
    ap.add_argument("--precision", default="fp32", help="ensemble precision to measure (default: %(default)s)")
    ap.add_argument("--images", type=Path, default=None,
                    help="folder of JPEG/PNG files to send (default: scikit-learn digits as JPEG)")
    ap.add_argument("--protocol", choices=("grpc", "http"), default="grpc", help="client protocol (default: grpc)")
    ap.add_argument("--url", default=None, help="use a running server at this URL instead of starting one")
    ap.add_argument("--batch-sizes", default=None,
                    help="comma-separated batch sizes (default: 1, then powers of two up to max_batch_size)")
    ap.add_argument("--concurrency", default="2,4",
                    help="requests in flight for the batched served runs, comma-separated; each batch size keeps "
                         "its best (default: %(default)s: with several in flight the DALI and ONNX Runtime steps "
                         "overlap, as they do in production)")
    ap.add_argument("--single-concurrency", type=int, default=16,
                    help="clients sending one image each for the dynamic batching run (default: %(default)s)")
    ap.add_argument("--seconds", type=float, default=4.0, help="measured seconds per point (default: %(default)s)")
    ap.add_argument("--warmup", type=float, default=1.0, help="warm-up seconds per point (default: %(default)s)")
    ap.add_argument("--out", type=Path, default=None,
                    help="also write the figures as JSON to this file, with the command that made them")
    return ap


def _repository(args, console, tmp_dir: Path | None) -> Path:
    """The cpu repository to measure: --repository, or with --tiny a small one built in `tmp_dir`.
    MissingInput when it is not there or holds no preprocessing model."""
    repo = args.repository
    if args.tiny:
        from serving import minirepo

        console.print("building a small repository (serving.minirepo through the builder, max_batch_size 64) ...")
        repo = minirepo.build(tmp_dir / "repository", max_batch_size=64, precisions=("fp32", "int8"),
                              cache_dir=args.cache_dir) / "cpu"
    if not repo.is_dir():
        raise MissingInput(f"{repo} does not exist: build it (python builders/build_all.py), pass --repository, "
                           "or use --tiny")
    if not any(repo.glob("*_preprocess")):
        raise MissingInput(f"no *_preprocess model in {repo}")
    return repo


class _Workload:
    """The images cut into requests of each batch size, and the in-process rate on them."""

    def __init__(self, encoded: list[bytes], local: InProcess, seconds: float, warmup: float):
        self.encoded, self.local, self.seconds, self.warmup = encoded, local, seconds, warmup
        self._rows: dict[int, list[list[np.ndarray]]] = {}

    def batches_of(self, size: int) -> list[np.ndarray]:
        """Padded request batches of `size` images (at least one, repeating the images)."""
        encoded = self.encoded
        return [pack_batch(encoded[i:i + size]) for i in range(0, len(encoded) - size + 1, size)] or \
               [pack_batch((encoded * size)[:size])]

    def rows_of(self, size: int) -> list[list[np.ndarray]]:
        if size not in self._rows:
            self._rows[size] = [list(batch) for batch in self.batches_of(size)]
        return self._rows[size]

    def in_process(self, size: int) -> float:
        """Images/s in-process at batch `size`: the faster of ONNX Runtime with and without spinning."""
        it = iter(range(10 ** 12))

        def work():
            rows = self.rows_of(size)[next(it) % len(self.rows_of(size))]
            self.local(rows)
            return len(rows)
        best = 0.0
        for spin, sess in self.local.sessions.items():
            self.local.sess = sess
            best = max(best, _rate(work, self.seconds / 2, self.warmup / 2))
        return best


def _per_batch(args, console, url: str, model: str, sizes: list[int], load: _Workload) -> dict:
    """Both sides at every batch size (the served side at its best concurrency level), printed as a table."""
    from rich.table import Table

    levels = [int(c) for c in str(args.concurrency).split(",")]
    table = Table(title=f"{model}: images/s on this machine ({args.protocol})")
    for col in ("batch", "in-process", "served", "in flight", "served / in-process"):
        table.add_column(col, justify="right")
    best_local = best_served = (0.0, 0)
    rows = []
    for b in sizes:
        lr = load.in_process(b)
        sr, c = max((_served_rate(url, args.protocol, model, load.batches_of(b), c, args.seconds, args.warmup), c)
                    for c in levels)
        best_local = max(best_local, (lr, b))
        best_served = max(best_served, (sr, b))
        table.add_row(str(b), f"{lr:,.0f}", f"{sr:,.0f}", str(c), f"{sr / lr:.2f}")
        rows.append({"batch": b, "in_process_images_per_s": lr, "served_images_per_s": sr, "in_flight": c,
                     "ratio": sr / lr})
    console.print(table)
    return {"rows": rows, "best_local": best_local, "best_served": best_served}


def _summary(args, console, url: str, model: str, load: _Workload, per_batch: dict) -> dict:
    """Single images from concurrent clients vs batch 1 in-process; prints the summary and the ratio
    against TARGET_RATIO, returns the figures the JSON records."""
    from rich.table import Table

    best_local, best_served = per_batch["best_local"], per_batch["best_served"]
    single_local = load.in_process(1)
    single_served = _served_rate(url, args.protocol, model, load.batches_of(1), args.single_concurrency,
                                 args.seconds, args.warmup)
    ratio = best_served[0] / best_local[0]
    verdict = "[green]meets[/green]" if ratio >= TARGET_RATIO else "[red]below[/red]"
    summary = Table(title="summary")
    for col in ("measure", "in-process", "served", "ratio"):
        summary.add_column(col, justify="right")
    summary.add_row(f"best batch (local {best_local[1]}, served {best_served[1]})", f"{best_local[0]:,.0f}",
                    f"{best_served[0]:,.0f}", f"{ratio:.2f}")
    summary.add_row(f"single images ({args.single_concurrency} clients vs batch 1)", f"{single_local:,.0f}",
                    f"{single_served:,.0f}", f"{single_served / single_local:.2f}")
    console.print(summary)
    console.print(f"served/in-process at best batch: [bold]{ratio:.2f}[/bold] — {verdict} the target "
                  f"{TARGET_RATIO}")
    return {"best": {"in_process_images_per_s": best_local[0], "in_process_batch": best_local[1],
                     "served_images_per_s": best_served[0], "served_batch": best_served[1], "ratio": ratio},
            "single_images": {"clients": args.single_concurrency, "in_process_images_per_s": single_local,
                              "served_images_per_s": single_served, "ratio": single_served / single_local}}


def _measure(args, console, repo: Path) -> dict:
    """Start a server on `repo` (unless --url), measure both sides, return the JSON figures."""
    name = sorted(p.name[: -len("_preprocess")] for p in repo.glob("*_preprocess"))[0]
    model = layout.ensemble_model(name, args.precision)
    max_batch = triton_config.read_config(repo / model / "config.pbtxt").max_batch_size
    sizes = ([int(s) for s in args.batch_sizes.split(",")] if args.batch_sizes else
             sorted({1, *[2 ** k for k in range(1, 13) if 2 ** k <= max_batch], max_batch}))
    load = _Workload(_load_images(args.images, 256), InProcess(repo, name, args.precision), args.seconds, args.warmup)
    server = None
    try:
        if args.url is None:
            from serving.local_server import LocalTritonServer, free_port

            console.print(f"starting tritonserver on {repo} ...")
            server = LocalTritonServer(repo, http_port=free_port(), grpc_port=free_port(),
                                       metrics_port=free_port(), timeout_s=300).start()
            url = server.grpc_url if args.protocol == "grpc" else server.http_url
        else:
            url = args.url
        per_batch = _per_batch(args, console, url, model, sizes, load)
        figures = _summary(args, console, url, model, load, per_batch)
    finally:
        if server is not None:
            server.stop()
    return {"model": model, "batches": per_batch["rows"], **figures}


def main(argv=None) -> int:
    args = _parser().parse_args(argv)
    command = shlex.join(["python", "-m", "benchmarks.bench_local", *(sys.argv[1:] if argv is None else argv)])
    from rich.console import Console

    console = Console()
    try:
        with tempfile.TemporaryDirectory(prefix="bench-minirepo-") as tmp:
            figures = _measure(args, console, _repository(args, console, Path(tmp)))
    except ToolkitError as err:
        print(err, file=sys.stderr)
        return err.exit_code
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({
            "command": command, "model": figures["model"], "protocol": args.protocol, "machine_cpus": os.cpu_count(),
            "loadavg_after": os.getloadavg(), "time": time.time(), "batches": figures["batches"],
            "best": figures["best"], "single_images": figures["single_images"]}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

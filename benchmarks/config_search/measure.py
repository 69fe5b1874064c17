"""Measuring one candidate: its configs written into a private copy of the repository, a local
tritonserver started on that copy (explicit model control, only the ensemble and its steps), and
benchmarks.bench.measure_point at each named concurrency."""
from __future__ import annotations

import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from benchmarks.bench import measure_point
from clients.infer import collect_images
from clients.triton import TritonClient, TritonClientError
from contract.images import IMAGE_SUFFIXES
from benchmarks.config_search.space import Config, apply_config, ensemble_steps
from benchmarks.config_search.strategy import Score
from serving.local_server import LocalTritonServer, ServerError, free_port


@dataclass(frozen=True)
class Settings:
    """How each candidate is measured. sla_ms: p99 bound; min_throughput: images/s a feasible point
    needs (0: none); concurrencies: requests in flight; batch_size: images per request; window_s,
    max_windows, stability: measure_point's windows; protocol: grpc or http; timeout_s: per
    request; start_timeout_s: for the server and its models to become ready; server_args: further
    tritonserver arguments (e.g. --cuda-memory-pool-byte-size for the gpu ensembles)."""

    sla_ms: float
    concurrencies: tuple[int, ...]
    min_throughput: float = 0.0
    batch_size: int = 1
    window_s: float = 0.5
    max_windows: int = 6
    stability: float = 0.10
    protocol: str = "grpc"
    timeout_s: float = 30.0
    start_timeout_s: float = 180.0
    server_args: tuple[str, ...] = ()


def load_images(folder: Path, count: int) -> list[bytes]:
    """Up to `count` encoded images from `folder` (an ImageFolder or a flat folder, searched
    recursively in sorted order, as clients.infer reads its folders)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"image folder {folder} does not exist")
    files = collect_images([folder])[:count]
    if not files:
        raise ValueError(f"{folder} holds no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
    return [p.read_bytes() for p in files]


class Workspace:
    """A private copy (0700 temporary folder) of the ensemble and its composing models; candidates
    are written into it, never into the user's repository. Use as a context manager."""

    def __init__(self, repo: Path, ensemble: str):
        self.source, self.ensemble = Path(repo), ensemble
        self.models = [ensemble] + ensemble_steps(repo, ensemble)
        self._tmp = tempfile.TemporaryDirectory(prefix="config-search-")
        self.repo = Path(self._tmp.name) / "repository"
        self.repo.mkdir()
        for m in self.models:
            shutil.copytree(self.source / m, self.repo / m, symlinks=True)

    def __enter__(self) -> "Workspace":
        return self

    def __exit__(self, *exc) -> None:
        self._tmp.cleanup()


def score_of(points: list[dict], settings: Settings) -> Score:
    """The candidate's Score from its measured points (see strategy.Score)."""
    ok = [p for p in points if p["latency_ms"]["p99"] is not None and p["latency_ms"]["p99"] <= settings.sla_ms
          and p["images_per_s"] >= settings.min_throughput]
    p99s = [p["latency_ms"]["p99"] for p in points if p["latency_ms"]["p99"] is not None]
    return Score(bool(ok), max((p["images_per_s"] for p in ok), default=0.0), min(p99s, default=float("inf")))


def measure(ws: Workspace, cfg: Config, batches: list[np.ndarray], settings: Settings) -> dict:
    """Write `cfg` into the workspace, serve it, measure every concurrency. Returns a record with
    `points` (measure_point's dicts), `score`, `start_s` and `error` (a server that did not start or
    a failed request makes the candidate infeasible; the search goes on)."""
    apply_config(ws.repo, cfg)
    steps = ensemble_steps(ws.repo, ws.ensemble)
    record = {"points": [], "error": None, "start_s": None}
    began = time.monotonic()
    server = LocalTritonServer(ws.repo, http_port=free_port(), grpc_port=free_port(), metrics_port=free_port(),
                               model_control_mode="explicit", load_models=(ws.ensemble,),
                               timeout_s=settings.start_timeout_s, extra_args=settings.server_args)
    try:
        server.start()
        record["start_s"] = round(time.monotonic() - began, 2)
        url = server.grpc_url if settings.protocol == "grpc" else server.http_url
        with TritonClient(server.http_url, "http", timeout_s=settings.timeout_s) as stats:
            for conc in settings.concurrencies:
                record["points"].append(measure_point(
                    url, settings.protocol, ws.ensemble, batches, conc, settings.window_s, settings.max_windows,
                    settings.stability, settings.timeout_s, stats, steps))
    except (ServerError, TritonClientError) as err:
        record["error"] = str(err).splitlines()[0][:300]
    finally:
        server.stop()
    record["seconds"] = round(time.monotonic() - began, 2)
    s = score_of(record["points"], settings) if not record["error"] else Score(False, 0.0, float("inf"))
    record["score"] = {"feasible": s.feasible, "images_per_s": s.throughput,
                       "best_p99_ms": s.p99_ms if s.p99_ms != float("inf") else None}
    return record

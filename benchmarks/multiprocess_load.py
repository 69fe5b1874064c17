"""A closed-loop gRPC load generator spread over several processes, that reports its own CPU use.

Each of `processes` worker processes runs benchmarks.load's closed loop with `threads` clients
(concurrency = processes x threads), each with its own gRPC client. With `shared_memory`, every thread puts its input batches
once into a system shared-memory region registered with the server, and requests only name the
region: the server reads the bytes in place, nothing is serialized or copied through gRPC. The
outputs (logits) are small and come back in the response.

All processes measure the same wall-clock window (epoch seconds decided by the parent), count the
requests that finished inside it (benchmarks.load's window; figures from benchmarks.stats), and report their CPU seconds in it, so the result
says whether the load generator itself could have been the limit (client CPU busy ~ cores it has).
"""
from __future__ import annotations

import multiprocessing as mp
import os
import resource
import threading
import time
import uuid
from dataclasses import dataclass

import numpy as np

from benchmarks.load import ClosedLoop, LoadError
from clients.sender import Sender
from benchmarks.stats import percentile, throughput


@dataclass
class LoadResult:
    images_per_s: float
    requests: int
    latencies_ms: list[float]        # sorted
    client_cpu_s: float              # all load-generator processes, user + system, inside the window
    window_s: float
    processes: int
    concurrency: int
    shared_memory: bool

    def pct(self, q: float) -> float | None:
        """Latency (ms) at quantile q (0..1): benchmarks.stats.percentile, as every other load figure."""
        return percentile(self.latencies_ms, 100 * q)

    @property
    def client_cpu_cores(self) -> float:
        """CPU cores the load generator kept busy on average (compare with os.cpu_count())."""
        return self.client_cpu_s / self.window_s


def _cpu_s() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


class _GrpcRequester:
    """One gRPC client for benchmarks.load's loop; with shared memory, every batch is put once into a
    system shared-memory region registered with the server, and a request only names its region."""

    def __init__(self, url: str, model: str, input_name: str, output_name: str, batches: list[np.ndarray],
                 shm: bool):
        self.model, self.input_name, self.output_name = model, input_name, output_name
        self.sender = Sender(url, "grpc")
        self.outputs = [self.sender.output(output_name)]
        self.regions: dict[int, str] = {}     # id(batch) -> region name
        self.handles: list = []
        if shm:
            import tritonclient.utils.shared_memory as shmlib

            for b in batches:
                name = f"lg-{uuid.uuid4().hex[:12]}"
                handle = shmlib.create_shared_memory_region(name, f"/{name}", b.nbytes)
                self.handles.append(handle)
                shmlib.set_shared_memory_region(handle, [b])
                self.sender.register_system_shared_memory(name, f"/{name}", b.nbytes)
                self.regions[id(b)] = name

    def send(self, batch: np.ndarray) -> None:
        if self.regions:
            inp = self.sender.shm_input(self.input_name, list(batch.shape), self.regions[id(batch)], batch.nbytes)
        else:
            inp = self.sender.input(self.input_name, batch)
        res = self.sender.infer(self.model, [inp], self.outputs)
        out = res.as_numpy(self.output_name)
        if out is None or out.shape[0] != batch.shape[0]:
            raise RuntimeError(f"{self.model}: {None if out is None else out.shape[0]} outputs for "
                               f"{batch.shape[0]} images")

    def close(self) -> None:
        for name in self.regions.values():
            try:
                self.sender.unregister_system_shared_memory(name)
            except Exception:  # noqa: BLE001 - the server may be gone; the region goes below
                pass
        if self.handles:
            import tritonclient.utils.shared_memory as shmlib

            for h in self.handles:
                shmlib.destroy_shared_memory_region(h)
        self.sender.close()


def _worker(url, model, input_name, output_name, batches, threads, window, go, shm, queue):
    """One process: benchmarks.load's closed loop with `threads` gRPC clients, on the wall clock so
    that every process cuts the same window."""
    loop = ClosedLoop(lambda _i: _GrpcRequester(url, model, input_name, output_name, batches, shm), batches,
                      threads, clock=time.time)
    try:
        loop.start()                 # clients connected, shared memory registered, one request answered
    except LoadError as err:
        queue.put({"errors": [f"{type(e).__name__}: {e}" for e in err.errors]})
        return
    queue.put("ready")
    go.wait()
    start_at, stop_at = window   # set by the parent before `go`
    loop.go()
    time.sleep(max(0.0, start_at - time.time()))
    cpu_start = _cpu_s()
    time.sleep(max(0.0, stop_at - time.time()))
    cpu_s = _cpu_s() - cpu_start
    errors = loop.stop()
    w = loop.window(start_at, stop_at)
    queue.put({"latencies_s": w.latencies_s, "images": w.images, "cpu_s": cpu_s,
               "errors": [f"{type(e).__name__}: {e}" for e in errors]})


def run_load(url: str, model: str, input_name: str, output_name: str, batches: list[np.ndarray],
             concurrency: int, processes: int, seconds: float, warmup: float,
             shared_memory: bool = True, on_mark=None) -> LoadResult:
    """Drive `model` at `url` (gRPC host:port) with `concurrency` requests in flight from up to
    `processes` processes, sending uint8 `batches` round robin; `warmup` seconds first, then a
    `seconds` window that counts. shared_memory: inputs through system shared memory (server on
    this host only). on_mark: called with "start" and "stop" (from a thread of this process) when
    the window opens and closes, e.g. to snapshot server statistics."""
    processes = max(1, min(processes, concurrency))
    per = [concurrency // processes + (1 if p < concurrency % processes else 0) for p in range(processes)]
    ctx = mp.get_context("spawn")   # no inherited gRPC state or threads
    queue, go = ctx.Queue(), ctx.Event()
    window = ctx.Array("d", 2)
    procs = [ctx.Process(target=_worker, args=(url, model, input_name, output_name, batches, n, window, go,
                                               shared_memory, queue), daemon=True) for n in per]
    for p in procs:
        p.start()
    # The window opens only when every process has imported, connected and registered its memory.
    for _ in procs:
        got = queue.get(timeout=300)
        if got != "ready":
            go.set()
            raise RuntimeError(f"load generator process did not start: {got['errors'][0]}")
    start_at = time.time() + warmup
    stop_at = start_at + seconds
    window[0], window[1] = start_at, stop_at
    go.set()

    def marks() -> None:
        for mark, at in (("start", start_at), ("stop", stop_at)):
            time.sleep(max(0.0, at - time.time()))
            on_mark(mark)

    marker = threading.Thread(target=marks, daemon=True) if on_mark else None
    if marker:
        marker.start()
    reports = [queue.get(timeout=stop_at - time.time() + 120) for _ in procs]
    if marker:
        marker.join(timeout=30)
    for p in procs:
        p.join(timeout=30)
    errors = [e for r in reports for e in r["errors"]]
    if errors:
        raise RuntimeError(f"load generator failed ({len(errors)} client(s)): {errors[0]}")
    lat = [x for r in reports for x in r["latencies_s"]]
    rate = throughput(len(lat), sum(r["images"] for r in reports), seconds)
    return LoadResult(rate["images_per_s"], len(lat), sorted(1000 * x for x in lat), sum(r["cpu_s"] for r in reports),
                      seconds, processes, concurrency, shared_memory)


def client_cores() -> int:
    """Cores this process may run on (the load generator's budget)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1

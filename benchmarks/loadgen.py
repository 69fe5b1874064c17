"""A closed-loop gRPC load generator spread over several processes, that reports its own CPU use.

Each of `processes` worker processes runs `threads` closed-loop clients (concurrency = processes x
threads), each with its own gRPC client. With `shared_memory`, every thread puts its input batches
once into a system shared-memory region registered with the server, and requests only name the
region: the server reads the bytes in place, nothing is serialized or copied through gRPC. The
outputs (logits) are small and come back in the response.

All processes measure the same wall-clock window (epoch seconds decided by the parent), count only
requests that started and finished inside it, and report their CPU seconds in it, so the result
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
        if not self.latencies_ms:
            return None
        return self.latencies_ms[min(int(q * len(self.latencies_ms)), len(self.latencies_ms) - 1)]

    @property
    def client_cpu_cores(self) -> float:
        """CPU cores the load generator kept busy on average (compare with os.cpu_count())."""
        return self.client_cpu_s / self.window_s


def _cpu_s() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _worker(url, model, input_name, output_name, batches, threads, window, go, shm, queue):
    import tritonclient.grpc as grpcclient

    results, errors = [], []
    cpu = {}
    ready = threading.Barrier(threads + 1)
    started = threading.Event()

    def loop(k: int) -> None:
        client, regions, handles = None, [], []
        try:
            client = grpcclient.InferenceServerClient(url)
            if shm:
                import tritonclient.utils.shared_memory as shmlib

                for i, b in enumerate(batches):
                    name = f"lg-{uuid.uuid4().hex[:12]}"
                    handle = shmlib.create_shared_memory_region(name, f"/{name}", b.nbytes)
                    shmlib.set_shared_memory_region(handle, [b])
                    client.register_system_shared_memory(name, f"/{name}", b.nbytes)
                    regions.append(name)
                    handles.append(handle)
        except BaseException as err:  # noqa: BLE001 - reported to the parent
            errors.append(f"{type(err).__name__}: {err}")
        ready.wait()
        started.wait()
        start_at, stop_at = window
        try:
            if errors:
                return
            count, lat, i = 0, [], k
            while time.time() < stop_at:
                j = i % len(batches)
                i += 1
                data = batches[j]
                inp = grpcclient.InferInput(input_name, list(data.shape), "UINT8")
                if shm:
                    inp.set_shared_memory(regions[j], data.nbytes)
                else:
                    inp.set_data_from_numpy(data)
                t0 = time.time()
                res = client.infer(model, [inp], outputs=[grpcclient.InferRequestedOutput(output_name)])
                out = res.as_numpy(output_name)
                t1 = time.time()
                if out is None or out.shape[0] != data.shape[0]:
                    raise RuntimeError(f"{model}: {None if out is None else out.shape[0]} outputs for "
                                       f"{data.shape[0]} images")
                if t0 >= start_at and t1 <= stop_at:
                    count += data.shape[0]
                    lat.append(1000 * (t1 - t0))
            results.append((count, lat))
        except BaseException as err:  # noqa: BLE001 - reported to the parent
            errors.append(f"{type(err).__name__}: {err}")
        finally:
            for name in regions if client else ():
                try:
                    client.unregister_system_shared_memory(name)
                except Exception:  # noqa: BLE001 - the server may be gone; the region goes below
                    pass
            if handles:
                import tritonclient.utils.shared_memory as shmlib

                for h in handles:
                    shmlib.destroy_shared_memory_region(h)
            if client:
                client.close()

    workers = [threading.Thread(target=loop, args=(k,)) for k in range(threads)]
    for t in workers:
        t.start()
    ready.wait()                 # clients connected, shared memory registered
    queue.put("ready")
    go.wait()
    start_at, stop_at = window   # set by the parent before `go`
    started.set()
    time.sleep(max(0.0, start_at - time.time()))
    cpu["start"] = _cpu_s()
    time.sleep(max(0.0, stop_at - time.time()))
    cpu["stop"] = _cpu_s()
    for t in workers:
        t.join()
    queue.put({"results": results, "errors": errors, "cpu_s": cpu.get("stop", 0.0) - cpu.get("start", 0.0)})


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
        if queue.get(timeout=300) != "ready":
            raise RuntimeError("load generator process did not start")
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
    count = sum(c for r in reports for c, _ in r["results"])
    lat = sorted(x for r in reports for _, ls in r["results"] for x in ls)
    return LoadResult(count / seconds, len(lat), lat, sum(r["cpu_s"] for r in reports), seconds,
                      processes, concurrency, shared_memory)


def client_cores() -> int:
    """Cores this process may run on (the load generator's budget)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1

"""The project's one load driver: a closed loop of N concurrent requests of fixed batches.

    loop = ClosedLoop(triton_requests(url, "grpc", "digits_fp32"), batches, concurrency=4)
    result = loop.run(seconds=5, warmup_s=1)          # or start() / go() / window() / stop() by hand
    result.images_per_s, result.latency_ms["p99"], result.requests, result.errors

Each of `concurrency` threads makes its own requester (a TritonClient by default: the sync HTTP
client runs on gevent and must stay on the thread that made it), sends one warm-up request (the
first request pays lazy allocations; its time is kept in `first_s`), then waits until `go()`; from
then on it sends its next batch as soon as the last answer came back. Thread i sends batches
i, i+N, i+2N, ... of the list (round robin), so N threads cover the list once per N turns.

Every answered request is recorded with its end time (on `clock`), latency and image count; a
window [lo, hi) holds the requests that ended inside it, and all figures come from benchmarks.stats.
An error stops the loop (`stop_on_error`, the default: a benchmark with failures means nothing)
or is recorded with its end time and the thread goes on (a soak counts errors over time).
"""
from __future__ import annotations

import queue
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Protocol, Sequence

import numpy as np

from benchmarks import stats
from contract.errors import ToolkitError


class Requester(Protocol):
    """What a loop thread sends through: one request per call, the batch as given."""

    def send(self, batch: np.ndarray) -> None: ...

    def close(self) -> None: ...


class LoadError(ToolkitError, RuntimeError):
    """Requests of a load run failed; `errors` holds the exceptions (first first)."""

    def __init__(self, errors: list[BaseException], concurrency: int):
        self.errors = errors
        super().__init__(f"{len(errors)} request(s) failed (concurrency {concurrency}): {errors[0]}")


@dataclass
class Window:
    """The requests that ended in [lo, hi) of the loop's clock."""

    lo: float
    hi: float
    latencies_s: list[float] = field(default_factory=list)
    images: int = 0
    errors: list[str] = field(default_factory=list)

    @property
    def seconds(self) -> float:
        return self.hi - self.lo

    @property
    def requests(self) -> int:
        return len(self.latencies_s)

    @property
    def images_per_s(self) -> float:
        return stats.throughput(self.requests, self.images, self.seconds)["images_per_s"]

    @property
    def requests_per_s(self) -> float:
        return stats.throughput(self.requests, self.images, self.seconds)["requests_per_s"]

    @property
    def latency_ms(self) -> dict:
        return stats.latency_ms(self.latencies_s)

    def summary(self) -> dict:
        return {**stats.summary(self.latencies_s, self.images, self.seconds), "errors": len(self.errors)}


class _TritonRequester:
    """One TritonClient sending to an ensemble (infer, no top-k) or a preprocessing model."""

    def __init__(self, url: str | None, protocol: str, model: str, preprocess: bool, client_kw: dict):
        from clients.triton import TritonClient

        self.client = TritonClient(url, protocol, **client_kw)
        self.model = model
        # The preprocessing model's config is read once, not once per request.
        self.config = self.client.model_config(model) if preprocess else None
        if not preprocess:
            self.client.model_info(model)

    def send(self, batch: np.ndarray) -> None:
        if self.config is not None:
            out = self.client.preprocess(self.model, batch, self.config)
            if out is None or out.shape[0] != batch.shape[0]:
                raise RuntimeError(f"{self.model}: {None if out is None else out.shape[0]} outputs for "
                                   f"{batch.shape[0]} images")
        else:
            self.client.infer(self.model, batch, top_k=0)

    def close(self) -> None:
        self.client.close()


def triton_requests(url: str | None, protocol: str, model: str, *, preprocess: bool = False,
                    **client_kw) -> Callable[[int], Requester]:
    """The default requester factory: each thread gets its own TritonClient for `model` at `url`.
    preprocess: `model` is a preprocessing model (its output tensor is fetched instead of logits);
    client_kw: further TritonClient arguments (timeout_s, TLS files, api_key)."""
    return lambda _i: _TritonRequester(url, protocol, model, preprocess, client_kw)


class ClosedLoop:
    """`concurrency` threads sending `batches` back to back; see the module docstring.

    connect: called on each loop thread with its index, returns that thread's Requester;
    batches: uint8 [N, bytes] arrays (padded encoded images), sent round robin;
    clock: the time source of the recorded end times (time.time when several processes must
    agree on a window); stop_on_error: an error stops every thread (else it is recorded)."""

    def __init__(self, connect: Callable[[int], Requester], batches: Sequence[np.ndarray], concurrency: int, *,
                 clock: Callable[[], float] = time.perf_counter, stop_on_error: bool = True):
        if concurrency < 1:
            raise ValueError(f"concurrency must be at least 1, got {concurrency}")
        if not batches:
            raise ValueError("no batches to send")
        self.connect, self.batches, self.concurrency = connect, list(batches), concurrency
        self.clock, self.stop_on_error = clock, stop_on_error
        self.first_s: list[float] = []           # each thread's warm-up request
        self.sent = 0                            # requests sent after go(), failed ones included
        self._done: list[list[tuple[float, float, int]]] = [[] for _ in range(concurrency)]  # (end, latency, images)
        self._failed: list[list[tuple[float, BaseException]]] = [[] for _ in range(concurrency)]
        self._sent = [0] * concurrency
        self._go, self._stop = threading.Event(), threading.Event()
        self._ready: queue.Queue = queue.Queue()
        self._threads: list[threading.Thread] = []

    def _loop(self, i: int) -> None:
        try:
            requester = self.connect(i)
        except Exception as err:  # noqa: BLE001 - handed to start(), which raises it
            self._ready.put(err)
            return
        try:
            t0 = time.perf_counter()
            requester.send(self.batches[i % len(self.batches)])
            self.first_s.append(time.perf_counter() - t0)
        except Exception as err:  # noqa: BLE001 - handed to start(), which raises it
            self._ready.put(err)
            requester.close()
            return
        self._ready.put(None)
        try:
            self._go.wait()
            k = i
            while not self._stop.is_set():
                batch = self.batches[k % len(self.batches)]
                k += self.concurrency
                self._sent[i] += 1
                start = self.clock()
                try:
                    requester.send(batch)
                except Exception as err:  # noqa: BLE001 - recorded; the caller decides what it means
                    self._failed[i].append((self.clock(), err))
                    if self.stop_on_error:
                        self._stop.set()
                        return
                    continue
                end = self.clock()
                self._done[i].append((end, end - start, batch.shape[0]))
        finally:
            requester.close()

    def start(self, timeout_s: float = 300.0) -> "ClosedLoop":
        """Start the threads; returns when every one has connected and answered its warm-up request.
        Raises LoadError (after stopping the others) when one could not."""
        self._threads = [threading.Thread(target=self._loop, args=(i,), daemon=True) for i in range(self.concurrency)]
        for t in self._threads:
            t.start()
        failures = []
        for _ in self._threads:
            try:
                got = self._ready.get(timeout=timeout_s)
            except queue.Empty:
                got = TimeoutError(f"a load thread did not connect and warm up within {timeout_s:g} s")
            if got is not None:
                failures.append(got)
                if isinstance(got, TimeoutError):
                    break
        if failures:
            self._stop.set()
            self._go.set()
            self.join(timeout_s)
            raise LoadError(failures, self.concurrency)
        return self

    def go(self) -> float:
        """Release the warmed-up threads; returns the clock's time."""
        self._go.set()
        return self.clock()

    def window(self, lo: float, hi: float) -> Window:
        """The requests (and errors) that ended in [lo, hi)."""
        w = Window(lo, hi)
        for done, failed in zip(self._done, self._failed):
            for end, latency, images in list(done):
                if lo <= end < hi:
                    w.latencies_s.append(latency)
                    w.images += images
            w.errors += [str(err) for end, err in list(failed) if lo <= end < hi]
        return w

    def errors(self) -> list[BaseException]:
        return [err for failed in self._failed for _, err in sorted(failed, key=lambda e: e[0])]

    @property
    def stopped(self) -> bool:
        return self._stop.is_set()

    def join(self, timeout_s: float = 300.0) -> None:
        for t in self._threads:
            t.join(timeout=timeout_s)

    def stop(self, timeout_s: float = 300.0) -> list[BaseException]:
        """Stop and join the threads (each finishes the request it has in flight); the errors."""
        self._stop.set()
        self._go.set()
        self.join(timeout_s)
        self.sent = sum(self._sent)
        return self.errors()

    def run(self, seconds: float, warmup_s: float = 0.0, on_mark: Callable[[str], None] | None = None) -> Window:
        """start(), go(), `warmup_s` uncounted, then a `seconds` window; stops the loop and returns
        the window. Raises LoadError if any request failed. on_mark: called with "start" and "stop"
        as the window opens and closes (e.g. to snapshot the server's statistics)."""
        self.start()
        try:
            self.go()
            time.sleep(warmup_s)
            lo = self.clock()
            if on_mark:
                on_mark("start")
            while self.clock() < lo + seconds and not self.stopped:
                time.sleep(min(0.05, max(0.0, lo + seconds - self.clock())))
            hi = self.clock()
            if on_mark:
                on_mark("stop")
        finally:
            errors = self.stop()
        if errors:
            raise LoadError(errors, self.concurrency)
        return self.window(lo, hi)

"""Closed-loop load: N client threads, each sending its next request as soon as the last returned.

Shared by the served-vs-in-process benchmarks, so both measure served throughput the same way.
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass

import numpy as np


@dataclass
class LoopResult:
    images_per_s: float
    requests: int
    latencies_s: list[float]   # sorted, measured requests only

    def latency_ms(self, q: float) -> float | None:
        """Latency at quantile q (0..1) in milliseconds."""
        if not self.latencies_s:
            return None
        return 1000 * self.latencies_s[min(int(q * len(self.latencies_s)), len(self.latencies_s) - 1)]


def closed_loop(url: str, protocol: str, model: str, input_name: str, output_name: str,
                batches: list[np.ndarray], concurrency: int, seconds: float, warmup: float) -> LoopResult:
    """Send uint8 `batches` (round robin) to `model` from `concurrency` threads for `warmup` then
    `seconds`; only the second period counts. Each thread has its own client (the HTTP client is
    not thread-safe); the output is read into client memory, as a user's would be."""
    if protocol == "grpc":
        import tritonclient.grpc as mod
    else:
        import tritonclient.http as mod
    counts, nreq = [0] * concurrency, [0] * concurrency
    latencies: list[float] = []
    errors: list[BaseException] = []
    phase = {"measure": False, "stop": False}

    def loop(k: int) -> None:
        client = mod.InferenceServerClient(url)
        try:
            i = k
            while not phase["stop"]:
                data = batches[i % len(batches)]
                i += 1
                inp = mod.InferInput(input_name, list(data.shape), "UINT8")
                inp.set_data_from_numpy(data)
                t0 = time.perf_counter()
                res = client.infer(model, [inp], outputs=[mod.InferRequestedOutput(output_name)])
                out = res.as_numpy(output_name)
                dt = time.perf_counter() - t0
                if out is None or out.shape[0] != data.shape[0]:
                    raise RuntimeError(f"{model}: got {None if out is None else out.shape[0]} outputs "
                                       f"for {data.shape[0]} images")
                if phase["measure"]:
                    counts[k] += data.shape[0]
                    nreq[k] += 1
                    latencies.append(dt)
        except BaseException as err:  # noqa: BLE001 - reported below, the run must not hang
            errors.append(err)
            phase["stop"] = True
        finally:
            client.close()

    threads = [threading.Thread(target=loop, args=(k,), daemon=True) for k in range(concurrency)]
    for t in threads:
        t.start()
    time.sleep(warmup)
    phase["measure"] = True
    start = time.perf_counter()
    time.sleep(seconds)
    phase["measure"] = False
    elapsed = time.perf_counter() - start
    phase["stop"] = True
    for t in threads:
        t.join()
    if errors:
        raise RuntimeError(f"served requests failed (concurrency {concurrency}): {errors[0]}")
    return LoopResult(sum(counts) / elapsed, sum(nreq), sorted(latencies))

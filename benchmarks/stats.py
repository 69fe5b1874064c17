"""The one place where load figures are computed: latency percentiles, throughput, and the change
in Triton's own statistics between two snapshots.

Every load generator of the project (benchmarks.bench, the served-vs-in-process benchmarks, the Locust
comparison, the GPU benchmarks, the soak) reports through these functions, so a "p99" or an
"images/s" means the same thing wherever it is printed:

* a percentile is numpy's default (linear interpolation between the closest ranks), of the
  latencies of the requests counted in the measurement window;
* throughput is the requests (or images) counted in the window divided by the window's length;
* a request counts in a window when it ended inside it (benchmarks.load records the end times).
"""
from __future__ import annotations

from typing import Iterable, Sequence

import numpy as np

QUANTILES = (50, 90, 95, 99)   # the percentiles every summary reports


def percentile(values: Sequence[float] | np.ndarray, q: float) -> float | None:
    """The q-th percentile (q in 0..100) of values, numpy's linear interpolation; None when empty."""
    if not 0 <= q <= 100:
        raise ValueError(f"a percentile is between 0 and 100, got {q}")
    arr = np.asarray(values, dtype=np.float64)
    return float(np.percentile(arr, q)) if arr.size else None


def latency_ms(latencies_s: Sequence[float] | np.ndarray, quantiles: Iterable[float] = QUANTILES) -> dict:
    """{"avg", "p50", "p90", "p95", "p99"} in milliseconds from latencies in seconds (None when empty)."""
    ms = np.asarray(latencies_s, dtype=np.float64) * 1000.0
    out: dict = {"avg": float(ms.mean()) if ms.size else None}
    for q in quantiles:
        out[f"p{q:g}"] = percentile(ms, q)
    return out


def throughput(requests: int, images: int, seconds: float) -> dict:
    """{"requests_per_s", "images_per_s"} over a window of `seconds` (0 for an empty window)."""
    if seconds <= 0:
        return {"requests_per_s": 0.0, "images_per_s": 0.0}
    return {"requests_per_s": requests / seconds, "images_per_s": images / seconds}


def summary(latencies_s: Sequence[float], images: int, seconds: float) -> dict:
    """What a measured window says: request and image counts, throughput, latency in ms."""
    return {"requests": len(latencies_s), "images": int(images), "seconds": float(seconds),
            **throughput(len(latencies_s), images, seconds), "latency_ms": latency_ms(latencies_s)}


# --- Triton's statistics (clients.served_models.normalize_statistics rows) ---------------------------

PHASES = ("queue", "compute_input", "compute_infer", "compute_output")


def statistics_delta(before: dict, after: dict, models: Iterable[str] | None = None) -> dict[str, dict[str, int]]:
    """after - before per model and counter, for snapshots of TritonClient.statistics() (all of
    after's models unless `models` names them; a model missing from before counts from zero)."""
    out = {}
    for m in (after if models is None else models):
        a, b = after.get(m, {}), before.get(m, {})
        out[m] = {k: a.get(k, 0) - b.get(k, 0) for k in a}
    return out


def per_request_ms(delta: dict[str, int]) -> dict[str, float]:
    """One model's statistics delta as milliseconds per successful request, for the request's total
    (success) and each phase inside the server."""
    n = max(delta.get("success_count", 0), 1)
    return {key: delta.get(f"{key}_ns", 0) / n / 1e6 for key in ("success", *PHASES)}

"""One point of benchmarks.bench: `concurrency` closed-loop clients (benchmarks.load) on one model and
batch size, measured in windows until three agree (perf_analyzer's stability rule), with Triton's
own statistics over the same windows. Figures come from benchmarks.stats.
"""
from __future__ import annotations

import time

import numpy as np

from benchmarks.load import ClosedLoop, LoadError, triton_requests
from benchmarks.stats import PHASES, statistics_delta



def role(step: str) -> str:
    if step.endswith("_preprocess"):
        return "preprocess"
    if step.endswith("_infer"):
        return "engine"
    return step


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
    return table, (f"{role(worst)} ({worst}): {table[worst]['total'] / 1000:.2f} ms/request, "
                   f"{100 * share:.0f} % of the server-side step time, mostly {phase}")


def short(bottleneck: str) -> str:
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
    """One sweep point (see benchmarks.bench): `concurrency` clients send `batches` (uint8 [N, bytes],
    round robin) to `model` at `url` over `protocol`; windows of `window_s` seconds (stretched to
    hold ~8 requests per client) until three agree within `stability` or `max_windows` passed.
    timeout_s: per-request timeout; stats_client: a TritonClient whose statistics() is read around
    the windows; steps: the ensemble's composing models (for the server breakdown); client_kw:
    further TritonClient arguments (TLS, key). Raises TritonClientError when a request failed."""
    from clients.triton import TritonClientError

    loop = ClosedLoop(triton_requests(url, protocol, model, **dict(client_kw or {}, timeout_s=timeout_s)),
                      batches, concurrency)
    what = f"{model} batch {len(batches[0])}"
    try:
        loop.start(timeout_s + 10)   # each client's first request pays lazy allocations; not counted
    except LoadError as err:
        raise TritonClientError(f"{what}: {err.errors[0]}") from None
    try:
        # Read before releasing the clients, so the totals cover exactly the counted requests.
        before_all = stats_client.statistics()
        loop.go()
        # A window must hold enough requests to make a rate: at least ~8 per client.
        window = max(window_s, 8 * max(loop.first_s, default=0.0))
        time.sleep(min(window / 2, 1.0))   # let every client get going before the first window
        bounds, snaps = [loop.clock()], [stats_client.statistics()]
        rates, means = [], []
        while len(rates) < max_windows and not loop.stopped:
            time.sleep(max(0.0, bounds[-1] + window - loop.clock()))
            bounds.append(loop.clock())
            snaps.append(stats_client.statistics())
            w = loop.window(bounds[-2], bounds[-1])
            rates.append(w.requests_per_s)
            means.append(w.latency_ms["avg"] or float("inf"))
            if _stable(rates, stability) and _stable(means, stability):
                break
    finally:
        errors = loop.stop(timeout_s + 5)   # every answer is in before the server's totals are read
    if errors:
        raise TritonClientError(f"{what}: {errors[0]}")
    after_all = stats_client.statistics()

    last = loop.window(bounds[max(0, len(bounds) - 4)], bounds[-1])   # the last three windows
    delta = statistics_delta(snaps[max(0, len(snaps) - 4)], snaps[-1], [model] + steps)
    table, bottleneck = breakdown(delta, steps)
    ens = delta.get(model, {})
    total = statistics_delta(before_all, after_all, [model])[model]
    return {
        "protocol": protocol, "model": model, "batch_size": batches[0].shape[0], "concurrency": concurrency,
        "window_s": round(window, 3), "windows": len(rates),
        "stable": _stable(rates, stability) and _stable(means, stability), "measured_requests": last.requests,
        "inferences_per_s": last.requests_per_s, "images_per_s": last.images_per_s,
        "latency_ms": last.latency_ms,
        "server_latency_ms": ens.get("success_ns", 0) / max(ens.get("success_count", 0), 1) / 1e6,
        "server_breakdown_us": table, "bottleneck": bottleneck,
        # Whole point, warm-up excluded (taken before before_all), for the request-count check.
        "client_requests": loop.sent,
        "server_requests": int(total.get("success_count", 0) + total.get("fail_count", 0)),
        "server_inferences": int(total.get("inference_count", 0)),
    }

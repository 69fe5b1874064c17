"""SLA checks at the end of a run: p95 latency, failure ratio, minimum throughput.

Evaluated where the complete statistics are (the local runner, or the master of a distributed
run; a worker only sees its own share). The result decides the exit code: 0 when every check
passes, 1 when one fails, so a CI job can gate on `locust ... --headless`. Locust alone exits 1 on
any failed request; with --sla-max-failure-ratio above 0 the SLA is what decides instead.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

SLA_FAILED_EXIT_CODE = 1


@dataclass(frozen=True)
class Check:
    name: str          # p95_ms | failure_ratio | min_rps | requests
    limit: float
    measured: float
    passed: bool

    def line(self) -> str:
        words = {"p95_ms": ("p95 response time", "<=", "ms"), "failure_ratio": ("failure ratio", "<=", ""),
                 "min_rps": ("successful requests/s", ">=", "req/s"), "requests": ("requests completed", ">=", "")}
        what, op, unit = words[self.name]
        return (f"SLA {'PASS' if self.passed else 'FAIL'}: {what} {self.measured:.4g}{(' ' + unit) if unit else ''} "
                f"(required {op} {self.limit:g}{(' ' + unit) if unit else ''})")


def evaluate(*, num_requests: int, num_failures: int, p95_ms: float, duration_s: float,
             max_p95_ms: float = 0.0, max_failure_ratio: float = 0.0, min_rps: float = 0.0) -> list[Check]:
    """The checks that are on. A run that completed no request at all always fails: a load test that
    sent nothing proves nothing, and every other check would pass vacuously."""
    checks = [Check("requests", 1, num_requests, num_requests >= 1)]
    ratio = num_failures / num_requests if num_requests else 1.0
    if max_failure_ratio < 1:
        checks.append(Check("failure_ratio", max_failure_ratio, ratio, ratio <= max_failure_ratio))
    if max_p95_ms > 0:
        checks.append(Check("p95_ms", max_p95_ms, p95_ms, num_requests > 0 and p95_ms <= max_p95_ms))
    if min_rps > 0:
        rps = (num_requests - num_failures) / duration_s if duration_s > 0 else 0.0
        checks.append(Check("min_rps", min_rps, rps, rps >= min_rps))
    return checks


def evaluate_stats(stats, opts) -> list[Check]:
    """evaluate() on a Locust RequestStats (all request names together)."""
    total = stats.total
    duration = ((total.last_request_timestamp or 0) - (total.start_time or 0)) if total.last_request_timestamp else 0.0
    return evaluate(num_requests=total.num_requests, num_failures=total.num_failures,
                    p95_ms=float(total.get_response_time_percentile(0.95) or 0) if total.num_requests else 0.0,
                    duration_s=duration, max_p95_ms=opts.sla_p95_ms,
                    max_failure_ratio=opts.sla_max_failure_ratio, min_rps=opts.sla_min_rps)


def write_report(path: Path, checks: list[Check]) -> None:
    """The verdict and its checks, with the command and machine (tik-report shows them beside the figures)."""
    from clients import provenance

    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"passed": all(c.passed for c in checks), "checks": [asdict(c) for c in checks],
                                "command": provenance.command("locust", None),   # tik-locust passes these to locust
                                "machine": provenance.machine()}, indent=2))

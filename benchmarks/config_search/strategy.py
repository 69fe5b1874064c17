"""Coordinate descent over the axes of benchmarks.config_search.space.

Why not the full grid: two models x (3 instance counts x 4 delays x 2 preferred lists), plus two
DALI knobs on the gpu target, is hundreds of configurations at tens of seconds each. The knobs act
mostly one at a time (instances set parallelism, the delay and preferred sizes how full batches
get), so turning one knob at a time from the best configuration so far, and passing over the axes
again while something moved, costs the sum of the axes' lengths per pass instead of their product.
Successive halving needs many random configurations measured short first; with a server restart
per configuration (~4-7 s here) that start-up, not the measurement, dominates, so halving saves little.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable

from benchmarks.config_search.space import Axis, Config, config_key


@dataclass(frozen=True)
class Score:
    """How good a measured configuration is. feasible: some named concurrency kept p99 <= SLA (and
    the minimum throughput); throughput: the best images/s among those concurrencies (0 if none);
    p99_ms: the lowest p99 measured (to steer towards feasibility when nothing is feasible yet)."""

    feasible: bool
    throughput: float
    p99_ms: float

    def beats(self, other: "Score", min_gain: float) -> bool:
        """Better than `other` by more than the noise margin `min_gain` (a fraction)."""
        if self.feasible != other.feasible:
            return self.feasible
        if self.feasible:
            return self.throughput > other.throughput * (1 + min_gain)
        return self.p99_ms < other.p99_ms * (1 - min_gain)


def coordinate_descent(start: Config, axes: list[Axis], evaluate: Callable[[Config], Score], *,
                       max_passes: int = 2, min_gain: float = 0.05, budget_s: float | None = None,
                       log: Callable[[str], None] = print) -> tuple[Config, Score, int]:
    """Start at `start`; for each axis in turn, measure every value of it with the other knobs at
    the best configuration so far, and move when one beats the best by more than `min_gain`.
    Repeats passes until one moves nothing or `max_passes` ran; stops early when `budget_s` (wall
    seconds) is spent. `evaluate` is called at most once per distinct configuration.
    Returns (best configuration, its score, passes run)."""
    began = time.monotonic()
    seen: dict[str, Score] = {}

    def score(cfg: Config) -> Score:
        key = config_key(cfg)
        if key not in seen:
            seen[key] = evaluate(cfg)
        return seen[key]

    best, best_score = start, score(start)
    passes = 0
    for passes in range(1, max_passes + 1):
        moved = False
        for axis in axes:
            for value in axis.values:
                if budget_s is not None and time.monotonic() - began > budget_s:
                    log(f"time budget of {budget_s:.0f} s spent; stopping after {len(seen)} configurations")
                    return best, best_score, passes
                cand = axis.set(best, value)
                s = score(cand)
                if s.beats(best_score, min_gain):
                    log(f"  move: {axis.model} {axis.knob} -> {value!r}")
                    best, best_score, moved = cand, s, True
        if not moved:
            break
    return best, best_score, passes

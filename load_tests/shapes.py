"""Load shapes: constant, step ramp, spike, chosen by --load-shape.

Locust uses the first LoadTestShape subclass it finds in the locustfile, whatever the command line
says, so there is exactly one (`TritonLoadShape`, in the locustfile) and it switches on the option. For `constant` the
locustfile removes the shape in the `init` event, which leaves Locust's own -u/-r/-t handling (and
its web UI) untouched. The schedule itself is a pure function (`plan`) so it can be tested without
running Locust. This module must not import locust: that import monkey-patches the standard
library through gevent, which would break threaded gRPC clients in any process that imports it
(the test suite included).

Why the shape checks --run-time itself: in a headless run with a shape, Locust waits for the shape
to finish and starts its own run-time timer only afterwards, so a shape that ignored -t would run
until its own schedule ended.
"""
from __future__ import annotations

import math


def plan(kind: str, t: float, *, users: int, spawn_rate: float, run_time: float | None = None,
         step_users: int = 1, step_time: float = 10.0, spike_base: int = 0, spike_at: float = 5.0,
         spike_duration: float = 5.0) -> tuple[int, float] | None:
    """(user count, spawn rate) at `t` seconds into the test, or None when the test should end.

    step:  step_users, 2*step_users, ... up to `users`, one level per step_time; the top level
           holds until run_time, or for one step_time when there is none.
    spike: spike_base users (default users // 4, at least 1), `users` from spike_at for
           spike_duration (all started within a second: a spike is sudden), then spike_base again
           until run_time, or for as long as before the spike when there is none.
    constant: `users` until run_time (forever without one).
    """
    users = max(int(users), 1)
    rate = max(float(spawn_rate or 1), 0.001)
    if kind == "step":
        per = max(int(step_users), 1)
        levels = math.ceil(users / per)
        end = run_time if run_time else levels * step_time
        if t >= end:
            return None
        level = min(int(t // step_time) + 1, levels)
        return min(users, level * per), rate
    if kind == "spike":
        base = spike_base if spike_base > 0 else max(1, users // 4)
        end = run_time if run_time else 2 * spike_at + spike_duration
        if t >= end:
            return None
        if spike_at <= t < spike_at + spike_duration:
            return users, max(rate, float(users))
        return base, max(rate, float(users))   # drops as suddenly as it rose
    if kind == "constant":
        if run_time and t >= run_time:
            return None
        return users, rate
    raise ValueError(f"unknown load shape {kind!r} (constant, step, spike)")

"""The DALI stand-in's pixel budget as pure functions (serving/backends/dali/model.py): each limit
alone, and the packing of dynamically batched requests into pipeline runs (hypothesis). Seconds,
no server; tests/test_preprocess_limits.py checks the same limits through a running server.

The stand-in imports triton_python_backend_utils, the python backend's own module, which the
nvidia-pytriton wheel ships beside the backend; its import needs only numpy, so the real file is
put on the path here rather than a stand-in for it."""
from __future__ import annotations

import importlib
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

pytriton = pytest.importorskip("pytriton")
_PB_UTILS = Path(pytriton.__file__).parent / "tritonserver" / "backends" / "python"


@pytest.fixture(scope="module")
def dali():
    sys.path.insert(0, str(_PB_UTILS))
    try:
        return importlib.import_module("serving.backends.dali.model")
    finally:
        sys.path.remove(str(_PB_UTILS))


FAST = settings(max_examples=80, deadline=None)


def test_per_image_limit_alone(dali):
    # 72x72 = 5184: above a 4608 per-image limit, far under any per-request limit
    assert dali._first_over_image_limit([(48, 48), (72, 72)], 4608) == 1
    assert dali._first_over_image_limit([(48, 48), (48, 96)], 4608) is None     # 4608 is not above 4608
    assert dali._first_over_image_limit([(20000, 20000)], 0) is None            # 0: no limit
    assert dali._first_over_image_limit([(72, 72), (100, 100)], 4608) == 0      # the first one is named


def test_per_request_limit_alone(dali):
    # three 48x48 images: 6912 pixels, each under a 4608 per-image limit, at the request limit
    assert not dali._over_request_limit(3 * 48 * 48, 3 * 48 * 48)
    assert dali._over_request_limit(3 * 48 * 48 + 1, 3 * 48 * 48)
    assert not dali._over_request_limit(10**12, 0)                              # 0: no limit


requests = st.lists(st.tuples(st.integers(1, 8), st.integers(1, 5000)), min_size=1, max_size=12)


@FAST
@given(requests, st.integers(8, 20), st.sampled_from([0, 2000, 6000, 20000]))
def test_runs_hold_every_request_once_within_both_limits(dali, reqs, max_batch, max_pixels):
    work = [(r, n, p) for r, (n, p) in enumerate(reqs)]
    runs = dali._plan_runs(work, max_batch, max_pixels)
    assert sorted(r for run in runs for r in run) == list(range(len(reqs)))   # each request exactly once
    assert all(run for run in runs)
    for run in runs:
        images, pixels = sum(reqs[r][0] for r in run), sum(reqs[r][1] for r in run)
        assert images <= max_batch
        if len(run) > 1 and max_pixels:
            assert pixels <= max_pixels, (run, pixels)
    order = [reqs[r][1] for run in runs for r in run]
    assert order == sorted(order)                                              # smallest requests first
    # runs are only cut where the next request would not fit: no two neighbours could be merged
    for a, b in zip(runs, runs[1:]):
        images = sum(reqs[r][0] for r in a) + reqs[b[0]][0]
        pixels = sum(reqs[r][1] for r in a) + reqs[b[0]][1]
        assert images > max_batch or (max_pixels and pixels > max_pixels)


def test_runs_split_where_the_pixel_budget_ends(dali):
    # dynamic batching merged three requests of 3000 pixels: 6000 fit one run, the third goes alone
    runs = dali._plan_runs([(0, 1, 3000), (1, 1, 3000), (2, 1, 3000)], 64, 6000)
    assert runs == [[0, 1], [2]]
    # after a cut the next run starts from nothing: two more such requests fill it exactly
    assert dali._plan_runs([(r, 1, 3000) for r in range(4)], 64, 6000) == [[0, 1], [2, 3]]
    assert dali._plan_runs([(0, 1, 3000), (1, 1, 3000), (2, 1, 3000)], 64, 0) == [[0, 1, 2]]
    assert dali._plan_runs([(0, 2, 10), (1, 2, 20), (2, 2, 5)], 4, 0) == [[2, 0], [1]]

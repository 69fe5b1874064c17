"""benchmarks.stats (the one definition of the load figures) and benchmarks.load (the one load driver):
percentiles are numpy's, throughput is counts over the window, and every request the driver sends
is one the real local server counts in its inference statistics."""
from __future__ import annotations

import numpy as np
import pytest

from benchmarks import stats
from contract import layout
from contract.images import pack_batch


# --- statistics -----------------------------------------------------------------------------------

def test_percentiles_are_numpys_on_known_data():
    rng = np.random.default_rng(0)
    for data in (rng.lognormal(0.0, 1.0, 1001), rng.uniform(0, 5, 7), np.array([3.0])):
        for q in (*stats.QUANTILES, 0, 12.5, 100):
            assert stats.percentile(list(data), q) == float(np.percentile(data, q))
    # Linear interpolation, not a nearest rank: on 1..10, p90 is 9.1 and p50 is 5.5.
    ten = list(range(1, 11))
    assert stats.percentile(ten, 90) == pytest.approx(9.1)
    assert stats.percentile(ten, 50) == pytest.approx(5.5)
    summary = stats.latency_ms([t / 1000 for t in ten])
    assert summary == pytest.approx({"avg": 5.5, "p50": 5.5, "p90": 9.1, "p95": 9.55, "p99": 9.91})
    assert stats.percentile([], 99) is None and stats.latency_ms([])["p99"] is None
    with pytest.raises(ValueError, match="between 0 and 100"):
        stats.percentile(ten, 0.99 * 1000)


def test_throughput_and_summary():
    assert stats.throughput(50, 400, 2.0) == {"requests_per_s": 25.0, "images_per_s": 200.0}
    assert stats.throughput(3, 3, 0.0) == {"requests_per_s": 0.0, "images_per_s": 0.0}
    s = stats.summary([0.01, 0.02, 0.03, 0.04], images=32, seconds=0.5)
    assert (s["requests"], s["images"], s["requests_per_s"], s["images_per_s"]) == (4, 32, 8.0, 64.0)
    assert s["latency_ms"]["p50"] == pytest.approx(25.0)


def test_statistics_delta_and_per_request_ms():
    before = {"m": {"success_count": 10, "success_ns": 10_000_000, "queue_ns": 1_000_000}}
    after = {"m": {"success_count": 14, "success_ns": 30_000_000, "queue_ns": 5_000_000},
             "new": {"success_count": 2}}
    delta = stats.statistics_delta(before, after)
    assert delta == {"m": {"success_count": 4, "success_ns": 20_000_000, "queue_ns": 4_000_000},
                     "new": {"success_count": 2}}
    ms = stats.per_request_ms(delta["m"])
    assert ms["success"] == pytest.approx(5.0) and ms["queue"] == pytest.approx(1.0)
    assert ms["compute_infer"] == 0.0


# --- the driver against a real local server ---------------------------------------------------------

@pytest.fixture(scope="module")
def served(repo_root):
    pytest.importorskip("tritonclient.http")
    pytest.importorskip("tritonclient.grpc")
    from contract.images import load_image_folder
    from contract.manifest import load_manifest
    from serving.local_server import LocalTritonServer, free_port

    manifest = load_manifest(repo_root / layout.MANIFEST_FILE)
    name = sorted(manifest.models)[0]
    encoded = load_image_folder(manifest.models[name].val).encoded(32)
    with LocalTritonServer(repo_root / "cpu", http_port=free_port(), grpc_port=free_port(),
                           metrics_port=free_port(), timeout_s=180) as srv:
        yield srv, layout.ensemble_model(name, "fp32"), encoded


@pytest.mark.server
@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_driver_request_count_equals_the_servers(served, protocol):
    from benchmarks.load import ClosedLoop, triton_requests
    from clients.triton import TritonClient

    server, model, encoded = served
    url = server.http_url if protocol == "http" else server.grpc_url
    batch, concurrency = 4, 2
    batches = [pack_batch(encoded[i:i + batch]) for i in range(0, len(encoded), batch)]
    with TritonClient(server.http_url, "http") as stats_client:
        before = stats_client.statistics(model)
        loop = ClosedLoop(triton_requests(url, protocol, model), batches, concurrency)
        window = loop.run(seconds=1.0, warmup_s=0.2)
        after = stats_client.statistics(model)
    delta = stats.statistics_delta(before, after, [model])[model]
    sent = loop.sent + concurrency          # one warm-up request per thread comes first
    assert loop.sent > 0 and loop.errors() == []
    assert delta["success_count"] == sent, (delta, loop.sent)
    assert delta["inference_count"] == sent * batch
    assert delta["fail_count"] == 0
    # The window holds only requests that ended inside it: fewer than were sent, `batch` images each.
    assert 0 < window.requests <= loop.sent
    assert window.images == window.requests * batch
    assert window.images_per_s == pytest.approx(window.requests * batch / window.seconds)
    assert len(loop.first_s) == concurrency


@pytest.mark.server
def test_driver_reports_a_failing_model_before_counting(served):
    from benchmarks.load import ClosedLoop, LoadError, triton_requests

    server, model, encoded = served
    loop = ClosedLoop(triton_requests(server.http_url, "http", model + "_nope", timeout_s=10, retries=0),
                      [pack_batch(encoded[:2])], 2)
    with pytest.raises(LoadError, match="has no model") as info:
        loop.run(seconds=0.5)
    assert len(info.value.errors) == 2 and loop.sent == 0


def test_request_pool_cycles_through_every_image():
    from contract.images import PREFIX_BYTES, request_pool, unpack_row

    encoded = [bytes([0xFF, 0xD8, i]) for i in range(5)]
    pool = request_pool(encoded, 2)
    assert [p.shape for p in pool] == [(2, PREFIX_BYTES + 3)] * 3
    assert [unpack_row(row) for p in pool for row in p] == [encoded[i % 5] for i in range(6)]
    assert len(request_pool(encoded[:1], 4)) == 1 and request_pool(encoded[:1], 4)[0].shape == (4, PREFIX_BYTES + 3)
    with pytest.raises(ValueError):
        request_pool(encoded, 0)

"""The clients end to end against a real local Triton server (serving.local_server) on the builder's
repository: infer, verify and a short bench through their main(argv); request counts against the
server's statistics; errors for a wrong URL and a stopped server; sync and asyncio, HTTP and gRPC,
with and without shared memory giving the same answers.

One server per module (free ports), on the session's repository (`repo_root` in tests/conftest.py).
"""
from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import numpy as np
import pytest

from contract import layout
from contract.images import load_image_folder
from serving.local_server import LocalTritonServer, free_port

pytestmark = pytest.mark.server

pytest.importorskip("tritonclient.http")
pytest.importorskip("tritonclient.grpc")

from clients.triton import (AsyncTritonClient, BatchTooLarge, ServerUnavailable, TritonClient,  # noqa: E402
                            UnknownModel)


# --- fixtures -----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def manifest_path(repo_root) -> Path:
    return repo_root / layout.MANIFEST_FILE


@pytest.fixture(scope="module")
def manifest(manifest_path) -> dict:
    return json.loads(manifest_path.read_text())


@pytest.fixture(scope="module")
def name(manifest) -> str:
    return sorted(manifest["models"])[0]


@pytest.fixture(scope="module")
def val(manifest_path, name):
    from contract.manifest import load_manifest

    return load_image_folder(load_manifest(manifest_path).models[name].val)


@pytest.fixture(scope="module")
def server(repo_root):
    with LocalTritonServer(repo_root / "cpu", http_port=free_port(), grpc_port=free_port(),
                           metrics_port=free_port(), timeout_s=180) as srv:
        yield srv


def _urls(server) -> dict[str, str]:
    return {"http": server.http_url, "grpc": server.grpc_url}


def _conn(server, protocol: str = "http") -> list[str]:
    return ["--url", _urls(server)[protocol], "--protocol", protocol]


# --- library ------------------------------------------------------------------------------------

@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_sync_async_and_shared_memory_agree(server, name, val, protocol):
    url = _urls(server)[protocol]
    images = val.encoded(12)
    model = layout.ensemble_model(name, "fp32")
    with TritonClient(url, protocol) as client:
        sync = client.infer(model, images, top_k=3)
    with TritonClient(url, protocol, shared_memory=True) as client:
        shm = client.infer(model, images, top_k=3)
        shm_bigger = client.infer(model, val.encoded(40), top_k=0)   # grows and re-registers the regions

    async def go():
        async with AsyncTritonClient(url, protocol) as client:
            return await client.infer(model, images, top_k=3), await client.infer_many(model, images, batch_size=5)
    aio, aio_many = asyncio.run(go())

    assert sync.logits.shape == (12, len(val.classes))
    # The same request (same batch) gives the same numbers, however it is sent.
    for other in (shm.logits, aio.logits, aio_many.logits, shm_bigger.logits[:12]):
        np.testing.assert_allclose(other, sync.logits, rtol=1e-5, atol=1e-5)
    assert [[t.label for t in row] for row in aio.top_k] == [[t.label for t in row] for row in sync.top_k]
    assert [[t.label for t in row] for row in shm.top_k] == [[t.label for t in row] for row in sync.top_k]
    # Labels come from the server's labels.txt and rank by logit.
    assert sync.top1() == [val.classes[i] for i in sync.logits.argmax(1)]


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_sender_gives_the_clients_logits_by_value_and_by_shared_memory(server, name, val, protocol):
    """clients.sender, the load generators' low-overhead path, sends the same packed batch as the
    full client and gets the same logits, in the request body and through a shared-memory region;
    the server's statistics count its requests."""
    import tritonclient.utils.shared_memory as shmlib

    from clients.sender import Sender
    from contract.images import pack_batch

    url = _urls(server)[protocol]
    images = val.encoded(6)
    model = layout.ensemble_model(name, "fp32")
    with TritonClient(url, protocol) as client:
        expected = client.infer(model, images, top_k=0).logits
    rows = pack_batch(images)
    with Sender(url, protocol, timeout_s=30) as sender:
        before = sender.statistics()[model]["success_count"]
        by_value = sender.infer_array(model, layout.ENSEMBLE_INPUT, rows, layout.ENSEMBLE_OUTPUT)
        region = f"sender-test-{protocol}"
        handle = shmlib.create_shared_memory_region(region, f"/{region}", rows.nbytes)
        try:
            shmlib.set_shared_memory_region(handle, [rows])
            sender.register_system_shared_memory(region, f"/{region}", rows.nbytes)
            inp = sender.shm_input(layout.ENSEMBLE_INPUT, list(rows.shape), region, rows.nbytes)
            by_shm = sender.infer(model, [inp], [sender.output(layout.ENSEMBLE_OUTPUT)]).as_numpy(layout.ENSEMBLE_OUTPUT)
            sender.unregister_system_shared_memory(region)
        finally:
            shmlib.destroy_shared_memory_region(handle)
        after = sender.statistics()[model]["success_count"]
    np.testing.assert_allclose(by_value, expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(by_shm, expected, rtol=1e-5, atol=1e-5)
    assert after - before == 2


def test_errors_say_what_to_do(server, name, val):
    with TritonClient(server.http_url, "http") as client:
        with pytest.raises(UnknownModel) as err:
            client.infer(f"{name}_nope", val.encoded(1))
        assert layout.ensemble_model(name, "fp32") in str(err.value)          # lists what is there
        limit = client.model_info(layout.ensemble_model(name, "fp32")).max_batch_size
        many = (val.encoded(limit + 1) * 2)[: limit + 1]
        with pytest.raises(BatchTooLarge, match=f"max_batch_size={limit}"):
            client.infer(layout.ensemble_model(name, "fp32"), many)


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_wrong_url_fails_clearly_within_timeout(val, protocol):
    url = f"127.0.0.1:{free_port()}"   # nothing listens there
    start = time.monotonic()
    with pytest.raises(ServerUnavailable) as err:
        TritonClient(url, protocol, timeout_s=3).infer("digits_fp32", val.encoded(1))
    assert time.monotonic() - start < 3 + 2
    assert url in str(err.value) and "serving.local_server" in str(err.value)

    async def go():
        client = AsyncTritonClient(url, protocol, timeout_s=3)
        try:
            await client.infer("digits_fp32", val.encoded(1))
        finally:
            await client.close()
    start = time.monotonic()
    with pytest.raises(ServerUnavailable, match="cannot reach"):
        asyncio.run(go())
    assert time.monotonic() - start < 3 + 2


def test_infer_cli_wrong_url_exit_code(val, capsys):
    from clients import infer

    rc = infer.main([str(val.files[0]), "--url", f"127.0.0.1:{free_port()}", "--timeout", "2"])
    assert rc == 2
    assert "cannot reach a Triton server" in capsys.readouterr().err


# --- commands -----------------------------------------------------------------------------------

@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_infer_cli(server, val, tmp_path, protocol, capsys):
    from clients import infer

    out = tmp_path / "pred.json"
    folder = val.root / val.classes[1]
    rc = infer.main([str(folder), *_conn(server, protocol), "--precision", "fp16", "--top-k", "2",
                     "--batch-size", "4", "--json", str(out)])
    assert rc == 0, capsys.readouterr()
    preds = json.loads(out.read_text())["predictions"]
    assert len(preds) == len(list(folder.glob("*.jpg"))) and all(len(p["top_k"]) == 2 for p in preds)
    hits = sum(p["top_k"][0]["label"] == val.classes[1] for p in preds)
    assert hits >= 0.8 * len(preds)   # the demo model is ~97 % accurate
    assert "top-1" in capsys.readouterr().out


def test_verify_passes_with_defaults(server, manifest_path, tmp_path, capsys):
    from clients import verify

    out = tmp_path / "verify.json"
    rc = verify.main([*_conn(server, "http"), "--manifest", str(manifest_path), "--json", str(out)])
    report = json.loads(out.read_text())
    assert rc == 0, capsys.readouterr().out
    assert report["verdict"] == "PASS"
    assert {r["precision"] for r in report["results"]} == {"fp32", "fp16", "int8"}
    fp32 = next(r for r in report["results"] if r["precision"] == "fp32")
    # Network parity (vs PyTorch on the served preprocessing output) to float rounding; end to end
    # (vs PyTorch on torchvision's transform) the one-level preprocessing noise shows in the logits.
    assert fp32["network_max_abs_diff"] < 1e-3 and fp32["network_top1_agreement"] == 1.0
    assert fp32["top1_agreement"] >= 0.99 and fp32["max_abs_diff"] < 1.0
    pre = report["preprocessing"][fp32["model"]]
    assert pre["status"] == "PASS" and pre["device"] == "cpu" and pre["max_levels"] <= 2.5
    assert report["server"]["version"]   # the server's Triton version is reported
    assert "onnxruntime" in report["tensorrt"][fp32["model"]]


def test_verify_fails_on_impossible_threshold(server, manifest_path, capsys):
    from clients import verify

    rc = verify.main([*_conn(server, "grpc"), "--manifest", str(manifest_path), "--limit", "24",
                      "--precision", "fp32", "--max-abs-diff", "fp32=0", "--min-agreement", "1.01"])
    assert rc == 1
    assert "top-1 agreement" in capsys.readouterr().out


def test_bench_short_run_matches_server_statistics(server, manifest_path, name, tmp_path, capsys):
    from benchmarks import bench

    model = layout.ensemble_model(name, "fp32")
    with TritonClient(server.http_url) as stats:
        before = stats.statistics()
        rc = bench.main(["--url", server.http_url, "--grpc-url", server.grpc_url, "--manifest", str(manifest_path),
                         "--precision", "fp32", "--batch-size", "1", "--batch-size", "4", "--window", "0.3",
                         "--max-windows", "4", "--images", "64", "--out", str(tmp_path)])
        after = stats.statistics()
    assert rc == 0, capsys.readouterr()
    report = json.loads((tmp_path / "bench.json").read_text())
    points = report["points"]
    assert {(p["protocol"], p["batch_size"]) for p in points} == {(pr, b) for pr in ("http", "grpc") for b in (1, 4)}
    for p in points:
        assert p["client_requests"] == p["server_requests"] > 0
        assert p["images_per_s"] == pytest.approx(p["inferences_per_s"] * p["batch_size"])
        # Little's law: `concurrency` closed-loop users, each waiting avg latency per request, cannot
        # exceed concurrency / latency requests per second, and (little time between requests) get close.
        bound = p["concurrency"] / (p["latency_ms"]["avg"] / 1000)
        assert 0.5 * bound < p["inferences_per_s"] <= 1.1 * bound, (p["inferences_per_s"], bound)
        assert p["latency_ms"]["p50"] <= p["latency_ms"]["p99"]
        assert set(p["server_breakdown_us"]) == {layout.preprocess_model(name), layout.engine_model(name, "fp32")}
        assert p["bottleneck"]
    # Independently of the bench's own bookkeeping: the server counted every request it sent
    # (one warm-up request per point comes on top, taken before the bench's own counting starts).
    delta = after[model]["success_count"] - before[model]["success_count"]
    assert delta == sum(p["client_requests"] for p in points) + len(points)
    images = after[model]["inference_count"] - before[model]["inference_count"]
    assert images == sum((p["client_requests"] + 1) * p["batch_size"] for p in points)
    pre = report["preprocessing"]
    assert pre["dali_images_per_s"] > 0 and pre["ratio"] == pytest.approx(pre["dali_images_per_s"] / pre["pil_images_per_s"])
    for f in ("bench.csv", "throughput_vs_batch.png", "latency_vs_throughput.png"):
        assert (tmp_path / f).stat().st_size > 0


# --- what a newcomer trips on (issue 15) ------------------------------------------------------------

def test_unknown_model_is_reported_as_typed_with_what_is_served(server, name, val, capsys):
    from benchmarks import bench
    from clients import infer

    image = str(val.files[0])
    assert infer.main([image, *_conn(server), "--model", f"{name}_fp64"]) == 2
    err = capsys.readouterr().err
    assert f"no model '{name}_fp64'" in err and f"{name}_fp64_fp32" not in err
    assert f"{name} (fp16, fp32, int8)" in err and "Did you mean" in err
    assert infer.main([image, *_conn(server), "--model", name, "--precision", "fp64"]) == 2
    err = capsys.readouterr().err
    assert f"serves '{name}', but not in precision 'fp64'" in err and "fp16, fp32, int8" in err
    assert bench.main(["--url", server.http_url, "--model", f"{name}_fp64", "--precision", "fp32"]) == 2
    assert f"no model '{name}_fp64'" in capsys.readouterr().err


@pytest.mark.parametrize("protocol, other", [("http", "gRPC"), ("grpc", "HTTP")])
def test_client_at_the_other_protocols_port_says_so(server, val, protocol, other, capsys):
    wrong_url = _urls(server)["grpc" if protocol == "http" else "http"]
    with pytest.raises(ServerUnavailable) as err:
        with TritonClient(wrong_url, protocol, timeout_s=3, retries=0) as client:
            client.wait_until_ready()
    assert f"is this the {other} port? Use --protocol {other.lower()}" in str(err.value)
    from clients import infer

    assert infer.main([str(val.files[0]), "--url", wrong_url, "--protocol", protocol, "--timeout", "3"]) == 2
    assert f"is this the {other} port?" in capsys.readouterr().err


def test_stopped_server_fails_clearly(server, name, val):
    """Last in the module: it stops the module's server."""
    model = layout.ensemble_model(name, "fp32")
    client = TritonClient(server.grpc_url, "grpc", timeout_s=3)
    client.infer(model, val.encoded(1), top_k=0)   # connected and working
    server.stop()
    start = time.monotonic()
    with pytest.raises(ServerUnavailable, match=server.grpc_url):
        client.infer(model, val.encoded(1), top_k=0)
    assert time.monotonic() - start < 3 + 2
    client.close()


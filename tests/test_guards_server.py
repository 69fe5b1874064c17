"""Guards for one-line breakages the rest of the suite let through (issue 17), on a real server.

- The network models (`*_infer`) batch concurrent requests: their execution count, from the
  server's statistics, is below the number of requests that reached them.
- A client rides out a short connection outage (its retries), through a TCP relay to the real
  server that stops accepting connections for a moment.
- An SLA missed while no request fails makes Locust exit non-zero.
- Warm-up runs at load time with the files the build wrote: a zeroed warm-up image makes the
  model fail to load, and the network's warm-up tensor is the preprocessed real image.
"""
from __future__ import annotations

import concurrent.futures as cf
import json
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from contract import layout
from contract.images import pack_batch
from contract.preprocess import CpuPreprocessor
from serving.local_server import LocalTritonServer, free_port

pytestmark = pytest.mark.server
pytest.importorskip("tritonclient.grpc")

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def name(manifest) -> str:
    return sorted(manifest["models"])[0]


@pytest.fixture(scope="module")
def server(repo_root):
    with LocalTritonServer(repo_root / "cpu", http_port=free_port(), grpc_port=free_port(),
                           metrics_port=free_port(), timeout_s=180) as srv:
        yield srv


def _stats(url: str, model: str) -> dict:
    from clients.triton import TritonClient

    with TritonClient(url, "http") as client:
        return client.statistics(model)[model]


# --- dynamic batching of the network models -------------------------------------------------------

@pytest.mark.parametrize("precision", ["fp32", "int8"])
def test_network_models_batch_concurrent_requests(server, name, val_images, precision):
    """Requests sent together are executed together by `<name>_<precision>_infer`.

    Without dynamic batching every request is one execution. Thread timing decides whether the
    requests meet in the queue, so a round is repeated (at most 5 times) until they did.
    """
    from clients.triton import TritonClient

    ensemble, infer = layout.ensemble_model(name, precision), layout.engine_model(name, precision)
    jobs = [[val_images[i][0]] for i in range(12)]

    def send(images):
        # geventhttpclient ties a client to the thread that made it: one client per thread, made and
        # checked (readiness, config) before the barrier, so only the requests are timed together.
        with TritonClient(server.http_url, "http", timeout_s=60) as client:
            client.model_info(ensemble)
            barrier.wait()
            return client.infer(ensemble, images, top_k=0)   # no labels request

    seen = []
    for _ in range(5):
        barrier = threading.Barrier(len(jobs))
        before = _stats(server.http_url, infer)
        with cf.ThreadPoolExecutor(len(jobs)) as pool:
            list(pool.map(send, jobs))
        after = _stats(server.http_url, infer)
        requests = after["success_count"] - before["success_count"]
        executions = after["execution_count"] - before["execution_count"]
        assert requests == len(jobs), f"{infer} saw {requests} requests for {len(jobs)} sent"
        assert after["inference_count"] - before["inference_count"] == len(jobs)
        seen.append(executions)
        if executions < requests:
            return
    pytest.fail(f"{infer} ran one execution per request in every round ({seen} for {len(jobs)}): "
                "is dynamic batching off?")


# --- client retries -------------------------------------------------------------------------------

class Relay:
    """A TCP relay on 127.0.0.1:`port` to `target`, which can stop accepting (connections refused
    and open ones cut) and start again on the same port: a server that is briefly unreachable."""

    def __init__(self, target: tuple[str, int]):
        self.target, self.port = target, free_port()
        self._listener: socket.socket | None = None
        self._socks: list[socket.socket] = []
        self._lock = threading.Lock()

    def up(self) -> None:
        lst = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        lst.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        lst.bind(("127.0.0.1", self.port))
        lst.listen(64)
        self._listener = lst
        threading.Thread(target=self._accept, args=(lst,), daemon=True).start()

    def down(self) -> None:
        lst, self._listener = self._listener, None
        if lst is not None:
            lst.close()
        with self._lock:
            socks, self._socks = self._socks, []
        for s in socks:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()

    def _accept(self, lst: socket.socket) -> None:
        lst.settimeout(0.05)
        while self._listener is lst:
            try:
                conn, _ = lst.accept()
            except (socket.timeout, OSError):
                continue
            upstream = socket.create_connection(self.target)
            with self._lock:
                self._socks += [conn, upstream]
            for a, b in ((conn, upstream), (upstream, conn)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass


@pytest.mark.parametrize("protocol,flavour", [("grpc", "sync"), ("http", "asyncio")])
def test_client_rides_out_a_short_outage(server, name, val_images, protocol, flavour):
    """Connection refused for 0.6 s between two requests of a client that has checked the server:
    the second request waits it out with the default retries and backoff.

    (The sync HTTP client is left out: its pooled connection is cut by the outage, and a connection
    lost after it was made is deliberately not retried, see clients/errors.py; gRPC's channel and
    aiohttp's pool open a new connection, which is refused, which is what retries are for.)
    """
    import asyncio

    from clients.triton import AsyncTritonClient, TritonClient

    host, port = (server.http_url if protocol == "http" else server.grpc_url).rsplit(":", 1)
    relay = Relay((host, int(port)))
    relay.up()
    url = f"127.0.0.1:{relay.port}"
    model = layout.ensemble_model(name, "fp32")
    image = [val_images[0][0]]

    def outage():
        relay.down()                 # refused from now on, and open connections are cut
        threading.Timer(0.6, relay.up).start()
        start = time.monotonic()
        # Let the client see its connection closed before the next request: one sent on a cut
        # connection it has not noticed yet is a lost connection, deliberately not retried.
        time.sleep(0.1)
        return start

    async def run_async():
        client = AsyncTritonClient(url, protocol, timeout_s=20)      # default retries
        try:
            first = (await client.infer(model, image, top_k=1)).logits
            start = outage()
            return first, (await client.infer(model, image, top_k=1)).logits, time.monotonic() - start
        finally:
            await client.close()

    try:
        if flavour == "asyncio":
            expected, got, waited = asyncio.run(run_async())
        else:
            with TritonClient(url, protocol, timeout_s=20) as client:     # default retries
                expected = client.infer(model, image, top_k=1).logits
                start = outage()
                got = client.infer(model, image, top_k=1).logits          # sent while nothing listens
                waited = time.monotonic() - start
        np.testing.assert_allclose(got, expected, atol=1e-4)
        assert waited >= 0.2, "the request did not wait for the outage to end"
    finally:
        relay.down()


# --- SLA exit code ----------------------------------------------------------------------------------

def test_sla_missed_without_failed_requests_exits_nonzero(server, repo_root, name, tmp_path):
    """Locust itself exits 1 only when a request failed; a run where every request succeeds but the
    throughput SLA is missed must still fail, by the SLA hook alone."""
    out = tmp_path / "results"
    cmd = [sys.executable, "-m", "locust", "-f", str(ROOT / "load_tests" / "locustfile.py"), "--headless",
           "--only-summary", "--http-url", server.http_url, "--grpc-url", server.grpc_url,
           "--manifest", str(repo_root / layout.MANIFEST_FILE), "-u", "1", "-r", "1", "-t", "3s",
           "--precision", "fp32", "--batch-size", "1", "--sla-min-rps", "100000", "--csv", str(out / "run")]
    run = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120)
    output = run.stdout + run.stderr
    report = json.loads((out / "run_sla.json").read_text())
    with open(f"{out / 'run'}_stats.csv") as f:
        total = [line for line in f.read().splitlines() if ",Aggregated," in line][0].split(",")
    assert int(total[2]) > 0 and int(total[3]) == 0, f"requests, failures: {total[2:4]}"   # all succeeded
    assert report["passed"] is False
    assert "SLA FAIL" in output
    assert run.returncode != 0, f"SLA missed but locust exited 0:\n{output[-2000:]}"


# --- warm-up ----------------------------------------------------------------------------------------

def test_zeroed_warmup_image_fails_the_model_load(repo_root, name, tmp_path):
    """The server really runs the DALI model's warm-up, with the file the build wrote."""
    pre = layout.preprocess_model(name)
    broken = tmp_path / "cpu"
    shutil.copytree(repo_root / "cpu" / pre, broken / pre)
    warm = broken / pre / "warmup" / "image.jpg"
    warm.write_bytes(bytes(warm.stat().st_size))
    srv = LocalTritonServer(broken, http_port=free_port(), grpc_port=free_port(), metrics_port=free_port(),
                            timeout_s=120)
    with pytest.raises(Exception) as err:
        srv.start()
    assert not srv.is_running()
    assert pre in str(err.value) and "warm" in str(err.value).lower(), str(err.value)[-2000:]


def test_network_warmup_tensor_is_the_preprocessed_image(repo_root, name):
    """`<infer>/warmup/input.fp32` is the DALI pipeline's output on the DALI model's warm-up
    image, not zeros or noise: warm-up exercises the network on a real input."""
    cpu = repo_root / "cpu"
    pre = cpu / layout.preprocess_model(name)
    image = (pre / "warmup" / "image.jpg").read_bytes()
    expected = CpuPreprocessor(pre / "1" / layout.DALI_DEFINITION)(list(pack_batch([image])))[0]
    for infer in sorted(cpu.glob(f"{name}_*_infer")):
        tensor = np.fromfile(infer / "warmup" / "input.fp32", dtype=np.float32).reshape(expected.shape)
        assert np.abs(tensor).max() > 0.5, f"{infer.name}: warm-up tensor is (near) zero"
        np.testing.assert_allclose(tensor, expected, atol=1e-5, err_msg=infer.name)

"""The clients under faults (issue 13, docs/hardening.md), against real local tritonservers:
clients.infer reports every file; --retries and --timeout bound the readiness wait and requests as
their help says; a request in flight when the server dies says so; benchmarks.bench records a failed
point and writes the rest; TLS for real (gRPC TLS with mutual authentication served by tritonserver
itself, HTTPS through a TLS proxy in front of it), never silently plain text.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from contract import layout
from contract.images import load_image_folder
from serving.local_server import LocalTritonServer, free_port
from tests.tls_endpoint import TlsProxy, make_certificates

pytestmark = pytest.mark.server

pytest.importorskip("tritonclient.http")
pytest.importorskip("tritonclient.grpc")

from clients.triton import (AsyncTritonClient, ConnectionLost, ServerUnavailable, TritonClient,  # noqa: E402
                            TritonClientError)

ROOT = Path(__file__).resolve().parents[1]
MODEL = layout.ensemble_model("digits", "fp32")


@pytest.fixture(scope="module")
def val(repo_root):
    from contract.manifest import load_manifest

    return load_image_folder(load_manifest(repo_root).models["digits"].val)


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    return make_certificates(tmp_path_factory.mktemp("certs"))


@pytest.fixture(scope="module")
def server(repo_root, certs):
    """Plain HTTP; gRPC with TLS that requires a client certificate signed by the test CA."""
    srv = LocalTritonServer(repo_root / "cpu", http_port=free_port(), grpc_port=free_port(),
                            metrics_port=free_port(), timeout_s=300,
                            extra_args=("--grpc-use-ssl-mutual=true", f"--grpc-server-cert={certs['server']}",
                                        f"--grpc-server-key={certs['server_key']}", f"--grpc-root-cert={certs['ca']}"))
    with srv:
        yield srv


@pytest.fixture(scope="module")
def https(server, certs):
    proxy = TlsProxy(server.http_port, certs["server"], certs["server_key"])
    yield f"https://127.0.0.1:{proxy.port}"
    proxy.close()


def _victim(repo_root) -> LocalTritonServer:
    return LocalTritonServer(repo_root / "cpu", http_port=free_port(), grpc_port=free_port(),
                             metrics_port=free_port(), timeout_s=300).start()


# --- clients.infer ------------------------------------------------------------------------------

def _any_format(kind: str, size: int = 40) -> bytes:
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (size, size), (90, 160, 30)).save(buf, format=kind)
    return buf.getvalue()


def test_infer_cli_reports_every_file(server, val, tmp_path, capsys):
    """Issue 23: every format the server decodes is found in a folder (jpg, png, webp, bmp), the others
    are named with the reason (gif, txt), a missing path is called missing, and none of them stops the
    good files being classified; exit code 1."""
    from clients import infer

    folder = tmp_path / "mixed"
    folder.mkdir()
    good = []
    for i, f in enumerate(val.files[:5]):
        good.append(folder / f"good{i}.jpg")
        good[-1].write_bytes(f.read_bytes())
    for kind, suffix in (("PNG", ".png"), ("WEBP", ".webp"), ("BMP", ".bmp")):
        good.append(folder / f"other{suffix}")
        good[-1].write_bytes(_any_format(kind))
    (folder / "anim.gif").write_bytes(_any_format("GIF"))
    (folder / "notes.txt").write_text("not an image")
    (folder / "garbage.jpg").write_bytes(b"this is not an image" * 10)
    (folder / "truncated.jpg").write_bytes(val.files[0].read_bytes()[:120])
    missing = tmp_path / "no_such_image.jpg"
    out = tmp_path / "pred.json"
    rc = infer.main([str(missing), str(folder), "--url", server.http_url, "--batch-size", "4", "--json", str(out)])
    captured = capsys.readouterr()
    assert rc == 1, captured.err
    for bad in ("garbage.jpg", "truncated.jpg"):
        assert f"error: {folder / bad}: " in captured.err
    assert f"error: {folder / 'anim.gif'}: skipped: .gif is not a format the server decodes" in captured.err
    assert f"error: {folder / 'notes.txt'}: skipped" in captured.err
    assert f"error: {missing}: missing" in captured.err
    assert "5 of 13 files failed, were skipped or missing" in captured.err
    result = json.loads(out.read_text())
    assert sorted(p["image"] for p in result["predictions"]) == sorted(map(str, good))
    assert {e["image"] for e in result["errors"]} == {str(folder / n) for n in (
        "garbage.jpg", "truncated.jpg", "anim.gif", "notes.txt")} | {str(missing)}
    assert "8 of 10 images classified" in captured.out


# --- retries and timeout ------------------------------------------------------------------------

@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_readiness_wait_stops_after_retries(protocol):
    url = f"127.0.0.1:{free_port()}"   # nothing listens there
    start = time.monotonic()
    with pytest.raises(ServerUnavailable, match=r"2 attempt\(s\)"):
        TritonClient(url, protocol, retries=1, timeout_s=30).wait_until_ready()
    assert time.monotonic() - start < 3


def test_readiness_wait_uses_the_whole_timeout_with_default_retries():
    url = f"127.0.0.1:{free_port()}"   # nothing listens there
    start = time.monotonic()
    with pytest.raises(ServerUnavailable, match="cannot reach"):
        TritonClient(url, "http", timeout_s=8, retries=20).wait_until_ready()   # the CLI default
    elapsed = time.monotonic() - start
    assert 6 <= elapsed < 8 + 4, elapsed   # the whole --timeout is used, not cut short by the retry count


def test_infer_cli_reports_an_unreachable_server_within_3_s(val, capsys):
    """Issue 23: tik-infer does not spend --timeout on an address where nothing listens."""
    from clients import infer

    url = f"127.0.0.1:{free_port()}"
    start = time.monotonic()
    rc = infer.main([str(val.files[0]), "--url", url, "--timeout", "30"])
    elapsed = time.monotonic() - start
    assert rc == 2 and f"cannot reach a Triton server at {url}" in capsys.readouterr().err
    assert elapsed < 3, elapsed


# --- server dies ----------------------------------------------------------------------------------

def test_request_in_flight_when_server_dies_says_what_happened(repo_root, val):
    srv = _victim(repo_root)
    batch = val.encoded(64)
    errors: list[BaseException] = []
    started = threading.Barrier(5)

    def loop():
        with TritonClient(srv.http_url, "http", timeout_s=20, retries=0) as client:
            client.model_info(MODEL)
            started.wait()
            while True:
                try:
                    client.infer(MODEL, batch, top_k=0)
                except TritonClientError as err:
                    errors.append(err)
                    return

    threads = [threading.Thread(target=loop, daemon=True) for _ in range(4)]
    try:
        for t in threads:
            t.start()
        started.wait(timeout=60)
        time.sleep(1.0)
        os.kill(srv.pid, signal.SIGKILL)
        for t in threads:
            t.join(timeout=60)
    finally:
        srv.stop()
    assert len(errors) == 4
    lost = [e for e in errors if isinstance(e, ConnectionLost)]
    assert lost, [str(e) for e in errors]
    assert "closed while the request" in str(lost[0]) and "server log" in str(lost[0])


def test_bench_marks_failed_point_and_writes_what_it_measured(repo_root, tmp_path):
    srv = _victim(repo_root)
    out = tmp_path / "bench"
    cmd = [sys.executable, "-m", "benchmarks.bench", "--url", srv.http_url, "--manifest",
           str(repo_root / layout.MANIFEST_FILE), "--protocol", "http", "--precision", "fp32",
           "--batch-size", "1", "--batch-size", "8", "--max-windows", "3", "--window", "0.3",
           "--timeout", "5", "--retries", "1", "--no-preprocess-comparison", "--out", str(out)]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    try:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        lines = []
        for line in proc.stdout:
            lines.append(line)
            if "batch   1 c=1" in line:
                os.kill(srv.pid, signal.SIGKILL)   # the server dies between the two points
        rc = proc.wait(timeout=120)
    finally:
        srv.stop()
    text = "".join(lines)
    assert rc == 1, text
    result = json.loads((out / "bench.json").read_text())
    assert [p["batch_size"] for p in result["points"]] == [1]
    assert [f["batch_size"] for f in result["failed_points"]] == [8]
    assert "FAILED" in text and (out / "bench.csv").is_file()


# --- TLS --------------------------------------------------------------------------------------------

def test_grpc_tls_with_client_certificate(server, certs, val):
    images = val.encoded(4)
    with TritonClient(server.http_url, "http") as plain:
        ref = plain.infer(MODEL, images, top_k=0).logits
    with TritonClient(f"grpcs://{server.grpc_url}", "grpc", ca_cert=str(certs["ca"]),
                      client_cert=str(certs["client"]), client_key=str(certs["client_key"])) as client:
        np.testing.assert_allclose(client.infer(MODEL, images, top_k=0).logits, ref, rtol=1e-5, atol=1e-5)
    # The server requires a client certificate: without one the handshake fails.
    with pytest.raises(TritonClientError):
        TritonClient(f"grpcs://{server.grpc_url}", "grpc", ca_cert=str(certs["ca"]), timeout_s=3,
                     retries=0).wait_until_ready()
    # A plain-text client gets no answer from the TLS port either.
    with pytest.raises(TritonClientError):
        TritonClient(server.grpc_url, "grpc", timeout_s=3, retries=0).wait_until_ready()


def test_https_through_tls_proxy(server, https, certs, val, capsys):
    from clients import infer

    images = val.encoded(3)
    with TritonClient(https, "http", ca_cert=str(certs["ca"])) as client:
        assert client.tls and client.infer(MODEL, images, top_k=1).top_k[0][0].label
    # The proxy's port has no key file: the restricted repository index needs --api-key.
    rc = infer.main([str(val.files[0]), "--url", https, "--ca-cert", str(certs["ca"])])
    assert rc == 2 and "restricts this API" in capsys.readouterr().err
    rc = infer.main([str(val.files[0]), "--url", https, "--ca-cert", str(certs["ca"]), "--api-key", server.api_key])
    assert rc == 0, capsys.readouterr().err

    async def go():
        async with AsyncTritonClient(https, "http", ca_cert=str(certs["ca"])) as aclient:
            return await aclient.infer(MODEL, images, top_k=0)
    import asyncio
    assert asyncio.run(go()).logits.shape[0] == 3
    # Without the test CA the certificate is not trusted: an error, not a plain-text fallback.
    with pytest.raises(TritonClientError):
        TritonClient(https, "http", timeout_s=3, retries=0).wait_until_ready()


def test_https_url_is_never_downgraded(server):
    # The HTTP port speaks plain text only: an https:// URL must fail there, not quietly use HTTP.
    with pytest.raises(TritonClientError):
        TritonClient(f"https://{server.http_url}", "http", timeout_s=3, retries=0).wait_until_ready()
    with pytest.raises(TritonClientError, match="plain-text address"):
        TritonClient(server.http_url, "http", ca_cert="/nonexistent.pem")

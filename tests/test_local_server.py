"""`tik-serve` (serving.local_server) heals what Triton 2.51 does not: a python backend stub or
tritonserver itself killed with SIGKILL (issue 23). A real launcher runs as a subprocess on the
session's cpu repository; the tests kill its processes the way a crash or the OOM killer would.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from contract import layout
from contract.images import pack_batch
from serving import hardening
from serving.local_server import free_port

pytestmark = pytest.mark.server

httpclient = pytest.importorskip("tritonclient.http")
ROOT = Path(__file__).resolve().parents[1]


class Launcher:
    """`python -m serving.local_server` on `repo` with free ports, its output in a file."""

    def __init__(self, repo: Path, tmp_path: Path, *extra: str):
        self.port = free_port()
        self.out = tmp_path / "tik-serve.out"
        cmd = [sys.executable, "-m", "serving.local_server", "--repository", str(repo), "--http-port", str(self.port),
               "--grpc-port", str(free_port()), "--metrics-port", str(free_port()), *extra]
        with open(self.out, "wb") as out:
            self.proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT,
                                         env={**os.environ, "PYTHONPATH": str(ROOT)})
        self.wait_ready(240)

    def ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/v2/health/ready", timeout=1) as resp:
                return resp.status == 200
        except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
            return False

    def wait_ready(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while not (self.ready() and "Triton is ready" in self.output()):   # the launcher saw it too
            assert self.proc.poll() is None, f"tik-serve exited:\n{self.output()[-3000:]}"
            assert time.monotonic() < deadline, f"not ready in {timeout_s} s:\n{self.output()[-3000:]}"
            time.sleep(0.3)

    def output(self) -> str:
        return self.out.read_text(errors="replace")

    def server_pid(self) -> int:
        for proc in Path("/proc").iterdir():
            try:
                argv = (proc / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if proc.name.isdigit() and argv[0].endswith(b"tritonserver") and \
                    f"--http-port={self.port}".encode() in argv:
                return int(proc.name)
        raise AssertionError("no tritonserver process for this launcher")

    def stub_pid(self, model: str) -> int:
        return self._stub(model)[0]

    def shm_prefix(self) -> str:
        """This server's shm region prefix (hardening.ServerRecord), from a stub's command line."""
        return self._stub(layout.preprocess_model("digits"))[1][: len(hardening.SHM_PREFIX) + 12]

    def _stub(self, model: str) -> tuple[int, str]:
        """(pid, shm region argument) of `model`'s python backend stub."""
        group = self.server_pid()
        for proc in Path("/proc").iterdir():
            try:
                fields = (proc / "stat").read_text().rsplit(")", 1)[1].split()
                argv = (proc / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if int(fields[2]) == group and argv[0].endswith(b"triton_python_backend_stub") and \
                    f"/{model}/".encode() in argv[1]:
                return int(proc.name), argv[2].decode()
        raise AssertionError(f"no stub for {model}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(timeout=60)


def _classify(port: int, image: bytes) -> np.ndarray:
    client = httpclient.InferenceServerClient(f"127.0.0.1:{port}", network_timeout=10)
    try:
        batch = pack_batch([image])
        inp = httpclient.InferInput(layout.ENSEMBLE_INPUT, list(batch.shape), "UINT8")
        inp.set_data_from_numpy(batch)
        return client.infer(layout.ensemble_model("digits", "fp32"), [inp]).as_numpy(layout.ENSEMBLE_OUTPUT)
    finally:
        client.close()


def _succeeds_within(port: int, image: bytes, seconds: float) -> float | None:
    start = time.monotonic()
    while time.monotonic() - start < seconds:
        try:
            _classify(port, image)
            return time.monotonic() - start
        except Exception:  # noqa: BLE001 - refused or failed while the server heals
            time.sleep(0.3)
    return None


def test_dead_dali_stub_is_healed_by_a_restart(repo_root, tmp_path, val_images):
    image = val_images[0][0]
    tik = Launcher(repo_root / "cpu", tmp_path)
    try:
        expected = _classify(tik.port, image)
        os.kill(tik.stub_pid(layout.preprocess_model("digits")), signal.SIGKILL)
        healed = _succeeds_within(tik.port, image, 20.0)
        assert healed is not None, f"no good answer within 20 s:\n{tik.output()[-3000:]}"
        np.testing.assert_allclose(_classify(tik.port, image), expected, atol=1e-5)
        assert f"stub of {layout.preprocess_model('digits')}" in tik.output() and "restarting" in tik.output()
    finally:
        tik.stop()


@pytest.mark.parametrize("victim", ["stub", "tritonserver"])
def test_without_restarts_tik_serve_exits_nonzero_and_leaves_nothing(repo_root, tmp_path, victim):
    tik = Launcher(repo_root / "cpu", tmp_path, "--max-restarts", "0")
    try:
        server = tik.server_pid()
        prefix = tik.shm_prefix()
        assert list(hardening.SHM_DIR.glob(f"{prefix}*")), f"no shm region named {prefix}*"
        pid = tik.stub_pid(layout.preprocess_model("digits")) if victim == "stub" else server
        os.kill(pid, signal.SIGKILL)
        start = time.monotonic()
        code = tik.proc.wait(timeout=30)
        took = time.monotonic() - start
    finally:
        tik.stop()
    assert code == 1 and took < 5.0, f"exit code {code} after {took:.1f} s"
    named = f"stub of {layout.preprocess_model('digits')}" if victim == "stub" else f"tritonserver (pid {server})"
    assert named in tik.output(), tik.output()[-2000:]
    assert not tik.ready()
    left = list(hardening.SHM_DIR.glob(f"{prefix}*"))
    assert not left, f"shm regions left behind: {left}"
    assert not (hardening.api_key_dir() / f"{tik.port}.key").exists()

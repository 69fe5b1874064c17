"""The local server's hardening (docs/hardening.md, issue 13) against a real tritonserver:
64 MiB stack and a > 5 MB HTTP request it survives, restricted APIs behind the launcher's key,
private log/shm/key files, the ONNX Runtime stand-in serving on after its repository folder is
swapped away, and shm regions removed after the server is SIGKILLed.

One server per module, on a private copy of the session's repository (one test moves it away).
"""
from __future__ import annotations

import os
import shutil
import signal
import stat
import time
from pathlib import Path

import numpy as np
import pytest

from contract import layout
from contract.images import pack_batch
from serving import hardening
from serving.local_server import LocalTritonServer, free_port

pytestmark = pytest.mark.server

httpclient = pytest.importorskip("tritonclient.http")
grpcclient = pytest.importorskip("tritonclient.grpc")
from tritonclient.utils import InferenceServerException  # noqa: E402


@pytest.fixture(scope="module")
def repo_copy(repo_root, tmp_path_factory) -> Path:
    dst = tmp_path_factory.mktemp("hardening") / "cpu"
    shutil.copytree(repo_root / "cpu", dst)
    return dst


@pytest.fixture(scope="module")
def server(repo_copy):
    srv = LocalTritonServer(repo_copy, http_port=free_port(), grpc_port=free_port(), metrics_port=free_port(),
                            timeout_s=300)
    with srv:
        yield srv


@pytest.fixture(scope="module")
def jpegs(val_images) -> list[bytes]:
    return [b for b, _ in val_images]


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_server_runs_with_64_mib_stack(server):
    limits = Path(f"/proc/{server.pid}/limits").read_text()
    line = next(l for l in limits.splitlines() if l.startswith("Max stack size"))
    assert int(line.split()[3]) == hardening.stack_limit()[0] == 64 * 1024 * 1024, line


def test_http_request_over_5_mb_is_served_and_server_survives(server, jpegs):
    # 64 packed JPEGs zero-padded to 90 kB each (the pipeline trims each to its length): a 5.9 MB
    # HTTP body, above the ~4 MB that crashed 2.51 with the default 8 MiB stack (Triton server#5840).
    packed = pack_batch([jpegs[i % len(jpegs)] for i in range(64)])
    batch = np.pad(packed, ((0, 0), (0, 90_000 - packed.shape[1])))
    assert batch.nbytes > 5_000_000
    client = httpclient.InferenceServerClient(server.http_url, network_timeout=120.0)
    inp = httpclient.InferInput(layout.ENSEMBLE_INPUT, list(batch.shape), "UINT8")
    inp.set_data_from_numpy(batch, binary_data=True)
    model = layout.ensemble_model("digits", "fp32")
    result = client.infer(model, [inp], outputs=[httpclient.InferRequestedOutput(layout.ENSEMBLE_OUTPUT)])
    assert result.as_numpy(layout.ENSEMBLE_OUTPUT).shape[0] == 64
    assert server.is_running() and client.is_server_ready()


def test_restricted_apis_need_the_key(server):
    plain = httpclient.InferenceServerClient(server.http_url)
    # Changing the log level and registering the server's own backend region: refused without the key.
    with pytest.raises(InferenceServerException, match="restricted"):
        plain.update_log_settings({"log_verbose_level": 1})
    region = server.shm_regions()[0]
    with pytest.raises(InferenceServerException, match="restricted"):
        plain.register_system_shared_memory("probe", "/" + region.name, 4096)
    with pytest.raises(InferenceServerException, match="restricted"):
        plain.get_model_repository_index()
    with pytest.raises(InferenceServerException, match="restricted"):
        grpcclient.InferenceServerClient(server.grpc_url).get_model_repository_index()
    # Inference, health and metadata stay open; with the key the admin APIs answer.
    assert plain.is_server_ready() and plain.get_server_metadata()["version"]
    key = {hardening.API_KEY_HEADER: server.api_key}
    assert plain.get_model_repository_index(headers=key)
    assert plain.get_log_settings(headers=key)["log_verbose_level"] == 0
    grpc_key = {f"triton-grpc-protocol-{hardening.API_KEY_HEADER}": server.api_key}
    assert grpcclient.InferenceServerClient(server.grpc_url).get_model_repository_index(headers=grpc_key)
    with pytest.raises(InferenceServerException, match="restricted"):
        plain.get_model_repository_index(headers={hardening.API_KEY_HEADER: "wrong"})


def test_key_is_readable_from_the_process_list_as_the_docs_say(server):
    """docs/hardening.md and `tik-serve --help` state the trust boundary: tritonserver 2.51 takes the
    key only on its command line, which every local user can read. If the key ever leaves the
    command line, this fails and the docs must change with it."""
    from serving.local_server import _parser

    cmdline = Path(f"/proc/{server.pid}/cmdline").read_bytes().split(b"\0")
    seen = [a.decode().rsplit("=", 1)[1] for a in cmdline if a.startswith(b"--http-restricted-api=")]
    assert seen == [server.api_key]
    plain = httpclient.InferenceServerClient(server.http_url)
    assert plain.get_model_repository_index(headers={hardening.API_KEY_HEADER: seen[0]})
    assert "every local user" in _parser().epilog
    assert "any local user can read the key" in (Path(__file__).parents[1] / "docs/hardening.md").read_text()


def test_open_apis_is_an_explicit_choice(tmp_path):
    srv = LocalTritonServer(tmp_path, open_apis=True)
    assert not any("restricted" in a for a in srv.command(tmp_path))
    srv = LocalTritonServer(tmp_path)
    srv.api_key = "k"
    assert any(a.startswith("--http-restricted-api=model-repository,shared-memory,logging,trace:")
               for a in srv.command(tmp_path))


def test_server_files_are_private(server):
    assert _mode(server.log_file) == 0o600
    regions = server.shm_regions()
    assert len(regions) >= 4   # one per python-backend model instance
    assert all(_mode(r) == 0o600 for r in regions), [(r, oct(_mode(r))) for r in regions]
    key_file = hardening.api_key_dir() / f"{server.http_port}.key"
    assert key_file.read_text().strip() == server.api_key
    assert _mode(key_file) == 0o600 and _mode(key_file.parent) == 0o700


def test_user_log_file_is_made_private(tmp_path):
    log = tmp_path / "server.log"
    log.write_text("old\n")
    os.chmod(log, 0o644)
    hardening.open_private_log(log).close()
    assert _mode(log) == 0o600


def test_onnx_standin_keeps_serving_after_its_folder_is_swapped(server, repo_copy):
    model = layout.engine_model("digits", "fp32")
    client = httpclient.InferenceServerClient(server.http_url)
    cfg = client.get_model_config(model)
    dims = [int(d) for d in cfg["input"][0]["dims"]]
    name = cfg["input"][0]["name"]
    x = np.random.default_rng(0).standard_normal([2] + dims).astype(np.float32)

    def call(arr, dtype="FP32"):
        inp = httpclient.InferInput(name, list(arr.shape), dtype)
        inp.set_data_from_numpy(arr)
        return client.infer(model, [inp]).as_numpy(cfg["output"][0]["name"])

    before = call(x)
    # A rebuild swaps the folder: the served one is moved away and deleted.
    moved = repo_copy.with_name("cpu.old")
    repo_copy.rename(moved)
    shutil.rmtree(moved)
    try:
        with pytest.raises(InferenceServerException):   # a bad request (wrong dtype) takes the error path
            call(x.astype(np.float64), "FP64")
        np.testing.assert_allclose(call(x), before, rtol=1e-5, atol=1e-5)
    finally:
        repo_copy.mkdir()   # the module server's teardown expects its folder (cwd) to exist


def test_shm_regions_removed_after_sigkill(server):
    regions = server.shm_regions()
    assert regions
    # The server dies without any chance to clean up; the regions stay behind ...
    os.kill(server.pid, signal.SIGKILL)
    server.process.wait(timeout=30)
    assert all(r.exists() for r in regions)
    # ... until the next launcher start sweeps them (servers still running are left alone).
    removed = hardening.sweep()
    assert set(regions) <= set(removed)
    assert not any(r.exists() for r in regions)
    assert not (hardening.api_key_dir() / f"{server.http_port}.key").exists()


def test_stop_removes_regions_after_a_crash(repo_root):
    srv = LocalTritonServer(repo_root / "cpu", http_port=free_port(), grpc_port=free_port(),
                            metrics_port=free_port(), timeout_s=300)
    with srv:
        regions = srv.shm_regions()
        assert regions
        os.kill(srv.pid, signal.SIGKILL)
        deadline = time.monotonic() + 30
        while srv.is_running() and time.monotonic() < deadline:
            time.sleep(0.1)
    assert not any(r.exists() for r in regions)


def test_api_keys_are_long_random_and_never_look_like_an_option():
    """A key starting with "-" is read by argparse as an option (`--api-key -x...` fails with
    "expected one argument"); urlsafe base64 starts with "-" once in 64 keys."""
    keys = [hardening.new_api_key() for _ in range(2000)]
    assert len(set(keys)) == len(keys) and min(map(len, keys)) >= 32
    assert [k for k in keys if k.startswith("-")] == []

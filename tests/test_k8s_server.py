"""The Kubernetes pieces that can run on one machine, against a real local tritonserver:

- the Triton container's entrypoint, exactly as the cpu overlay renders it (only the Secret mount
  folder moved to a temporary one): it raises the stack limit to 64 MiB, exports the object-store
  variables present in the Secret, and starts tritonserver with the management APIs closed to
  requests without the key;
- Locust's distributed mode as deploy/k8s/locust runs it: a master and 2 workers (separate
  processes, on 127.0.0.1) for a bounded time; the master's aggregate equals the sum of the
  requests each worker sent, and the server's count. The HPA's metric (requests in flight,
  from Triton's counters as the prometheus-adapter rule computes it) is read over the same run.
"""
from __future__ import annotations

import csv
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import yaml

from contract import layout

ROOT = Path(__file__).resolve().parents[1]
K8S = ROOT / "deploy" / "k8s"
LOCUSTFILE = ROOT / "load_tests" / "locustfile.py"
API_KEY_HEADER = "triton-api-key"
USERS = 4

pytestmark = pytest.mark.server


def _http(url: str, method: str = "GET", headers: dict | None = None) -> int:
    req = urllib.request.Request(url, method=method, headers=headers or {}, data=b"{}" if method == "POST" else None)
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status
    except urllib.error.HTTPError as err:
        return err.code


def _entrypoint(tmp_path: Path) -> tuple[str, list[str]]:
    """The cpu overlay's Triton command script and its args, rendered by kubectl kustomize."""
    root = tmp_path / "k8s"
    shutil.copytree(K8S, root, ignore=shutil.ignore_patterns("api-key", "s3.env"))
    (root / "base" / "secrets" / "api-key").write_text("unused")
    shutil.copy(root / "base" / "secrets" / "s3.env.example", root / "base" / "secrets" / "s3.env")
    kubectl = shutil.which("kubectl") or pytest.fail("kubectl is not on PATH")
    out = subprocess.run([kubectl, "kustomize", str(root / "overlays" / "cpu")], capture_output=True, text=True,
                         timeout=60, check=True).stdout
    (dep,) = [d for d in yaml.safe_load_all(out) if d and d["kind"] == "Deployment"]
    c = dep["spec"]["template"]["spec"]["containers"][0]
    return c["command"][2], c["args"]


def _wait_ready(url: str, proc: subprocess.Popen, log: Path, timeout_s: float = 180) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"the entrypoint exited with {proc.returncode}:\n{log.read_text()[-4000:]}")
        try:
            if _http(url) == 200:
                return
        except OSError:
            pass
        time.sleep(0.5)
    pytest.fail(f"not ready within {timeout_s} s:\n{log.read_text()[-4000:]}")


def test_entrypoint_sets_the_stack_the_s3_variables_and_restricts_the_apis(repo_root, tmp_path):
    from serving.local_server import free_port, prepare_backend_dir, server_binary, server_env

    script, overlay_args = _entrypoint(tmp_path)
    secrets = tmp_path / "secrets"
    assert script.count("/etc/triton/") >= 2
    script = script.replace("/etc/triton/", f"{secrets}/")
    key = "k8s-test-" + os.urandom(8).hex()
    (secrets / "api-key").mkdir(parents=True)
    (secrets / "api-key" / "api-key").write_text(key)
    (secrets / "s3").mkdir()
    (secrets / "s3" / "AWS_DEFAULT_REGION").write_text("eu-test-1")
    (secrets / "s3" / "AWS_ACCESS_KEY_ID").write_text("")          # empty: workload identity, not exported
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "tritonserver").symlink_to(server_binary())
    env = server_env()
    env.update(PATH=f"{bin_dir}{os.pathsep}{env['PATH']}", MODEL_REPOSITORY=str(repo_root / "cpu"))
    env.pop("AWS_DEFAULT_REGION", None)
    ports = {"http": free_port(), "grpc": free_port(), "metrics": free_port()}
    # Local-only additions after the overlay's own args: this machine's backends, loopback ports.
    local = [f"--backend-directory={prepare_backend_dir()}",
             *(a for name, p in ports.items() for a in (f"--{name}-address=127.0.0.1", f"--{name}-port={p}"))]
    log = tmp_path / "triton.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(["bash", "-c", script, "tritonserver", *overlay_args, *local], env=env,
                                cwd=repo_root / "cpu", stdin=subprocess.DEVNULL, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)
    try:
        base = f"http://127.0.0.1:{ports['http']}"
        _wait_ready(f"{base}/v2/health/ready", proc, log)
        # `exec`: the pod's main process is tritonserver itself (it gets SIGTERM on pod deletion).
        assert Path(f"/proc/{proc.pid}/exe").resolve() == server_binary().resolve()
        limits = Path(f"/proc/{proc.pid}/limits").read_text()
        assert re.search(r"Max stack size\s+67108864\s", limits), limits
        environ = dict(kv.split("=", 1) for kv in Path(f"/proc/{proc.pid}/environ").read_text().split("\0") if "=" in kv)
        assert environ.get("AWS_DEFAULT_REGION") == "eu-test-1" and "AWS_ACCESS_KEY_ID" not in environ

        # Management API: refused without the key or with a wrong one, served with it.
        index = f"{base}/v2/repository/index"
        assert _http(index, "POST") in (401, 403)
        assert _http(index, "POST", {API_KEY_HEADER: key + "x"}) in (401, 403)
        assert _http(index, "POST", {API_KEY_HEADER: key}) == 200
        # Inference-side APIs stay open: health, metadata, statistics, and Prometheus metrics.
        model = layout.ensemble_model("digits", "fp32")
        assert _http(f"{base}/v2/models/{model}") == 200
        assert _http(f"{base}/v2/models/{model}/stats") == 200
        assert _http(f"http://127.0.0.1:{ports['metrics']}/metrics") == 200
        # gRPC: the same key in the metadata, under the name Triton derives from the header's
        # (`triton-grpc-protocol-` + header).
        import tritonclient.grpc as grpcclient
        from tritonclient.utils import InferenceServerException

        client = grpcclient.InferenceServerClient(f"127.0.0.1:{ports['grpc']}")
        with pytest.raises(InferenceServerException):
            client.get_model_repository_index()
        assert client.get_model_repository_index(headers={f"triton-grpc-protocol-{API_KEY_HEADER}": key}) is not None
        client.close()
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


# --- distributed Locust ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def server(repo_root):
    pytest.importorskip("tritonclient.grpc")
    from serving.local_server import LocalTritonServer, free_port

    with LocalTritonServer(repo_root / "cpu", http_port=free_port(), grpc_port=free_port(),
                           metrics_port=free_port(), timeout_s=180) as srv:
        yield srv


def _metrics(url: str) -> dict[tuple[str, str], float]:
    """(metric, model) -> value for Triton's per-model counters."""
    text = urllib.request.urlopen(url, timeout=10).read().decode()
    out = {}
    for m in re.finditer(r'^(nv_inference_\w+)\{([^}]*)\} (\S+)$', text, re.M):
        model = re.search(r'model="([^"]+)"', m.group(2))
        if model:
            out[(m.group(1), model.group(1))] = float(m.group(3))
    return out


def _ensembles(values: dict, metric: str) -> float:
    # The prometheus-adapter rule's model filter: composing models (_preprocess, _infer) left out.
    return sum(v for (name, model), v in values.items()
               if name == metric and not re.fullmatch(r".+_(preprocess|infer)", model))


def test_distributed_locust_master_aggregates_exactly_its_workers(server, repo_root, tmp_path):
    from serving.local_server import free_port

    model = layout.ensemble_model("digits", "fp32")
    port = free_port()
    log = tmp_path / "requests.csv"
    scenario = ["-f", str(LOCUSTFILE), "--http-url", server.http_url, "--grpc-url", server.grpc_url,
                "--manifest", str(repo_root / layout.MANIFEST_FILE), "--precision", "fp32", "--batch-size", "4",
                "--request-log", str(log)]
    locust = [sys.executable, "-m", "locust"]
    out = tmp_path / "results"
    out.mkdir()

    def stats() -> dict:
        from clients.triton import TritonClient

        with TritonClient(server.http_url, "http") as client:
            return client.statistics(model)[model]

    before, metrics_before, t0 = stats(), _metrics(server.metrics_url), time.monotonic()
    procs = []
    try:
        master = subprocess.Popen([*locust, *scenario, "--master", "--master-bind-host", "127.0.0.1",
                                   "--master-bind-port", str(port), "--expect-workers", "2",
                                   "--expect-workers-max-wait", "60", "--headless", "-u", str(USERS), "-r", str(USERS),
                                   "-t", "8s", "--csv", str(out / "dist"), "--only-summary"],
                                  cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        procs.append(master)
        workers = [subprocess.Popen([*locust, *scenario, "--worker", "--master-host", "127.0.0.1",
                                     "--master-port", str(port)], cwd=ROOT, stdout=subprocess.PIPE,
                                    stderr=subprocess.STDOUT, text=True) for _ in range(2)]
        procs += workers
        try:
            master_out, _ = master.communicate(timeout=90)
            worker_outs = [w.communicate(timeout=30)[0] for w in workers]
        except subprocess.TimeoutExpired:
            pytest.fail("the distributed run did not finish in time")
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    elapsed = time.monotonic() - t0
    after, metrics_after = stats(), _metrics(server.metrics_url)

    assert master.returncode == 0, master_out[-4000:]
    assert all(w.returncode == 0 for w in workers), [o[-2000:] for o in worker_outs]
    with open(out / "dist_stats.csv") as f:
        total = {r["Name"]: r for r in csv.DictReader(f)}["Aggregated"]
    aggregate = int(total["Request Count"])
    assert int(total["Failure Count"]) == 0
    # Each worker logged every request it sent to its own file (<log>.<pid>).
    per_worker = {w.pid: len((log.parent / f"{log.name}.{w.pid}").read_text().splitlines()) for w in workers}
    assert all(n > 10 for n in per_worker.values()), per_worker    # both workers carried load
    assert aggregate == sum(per_worker.values()), (aggregate, per_worker)
    # And the server served exactly those.
    assert aggregate == after["success_count"] - before["success_count"]

    # The HPA metric over the run: request time per second = requests in flight (Little's law).
    # Closed-loop users have at most one request each in flight, and some time goes to the client.
    duration_us = (_ensembles(metrics_after, "nv_inference_request_duration_us")
                   - _ensembles(metrics_before, "nv_inference_request_duration_us"))
    inflight = duration_us / 1e6 / elapsed
    assert 0 < inflight <= USERS, inflight
    assert (_ensembles(metrics_after, "nv_inference_request_success")
            - _ensembles(metrics_before, "nv_inference_request_success")) == aggregate

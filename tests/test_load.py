"""The Locust load tests (load_tests/locustfile.py) against a real local Triton server, run as Locust
is run by users: `python -m locust -f load_tests/locustfile.py --headless ...` in a subprocess.

Checked: a short mixed gRPC + HTTP run has no failures, writes CSV and HTML reports, and the
successful requests in Locust's CSV equal the ensemble's success count delta on the server; gRPC
users really overlap in time (init_gevent); an image set with a corrupt image records
exactly the server's failed requests as failures and fails the SLA (non-zero exit). The shape and
SLA logic are also checked on their own, without a server.

The repository is the session's (`repo_root` in tests/conftest.py). Runs are bounded: <= 8 s and
<= 6 users.
"""
from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from contract import layout
from contract.manifest import load_manifest
from load_tests.shapes import plan
from load_tests.sla import evaluate

ROOT = Path(__file__).resolve().parents[1]
LOCUSTFILE = ROOT / "load_tests" / "locustfile.py"


# --- without a server -----------------------------------------------------------------------------

def test_shapes_plan():
    # step: one more user every 2 s up to 3, then held; ends after the last step without -t.
    assert [plan("step", t, users=3, spawn_rate=5, step_time=2)[0] for t in (0, 1.9, 2, 4.5)] == [1, 1, 2, 3]
    assert plan("step", 6, users=3, spawn_rate=5, step_time=2) is None
    assert plan("step", 7, users=3, spawn_rate=5, step_time=2, run_time=10) == (3, 5)
    # spike: base (a quarter of -u) before and after, all users during, started at once.
    kw = dict(users=8, spawn_rate=1, spike_at=2, spike_duration=3)
    assert plan("spike", 1, **kw) == (2, 8.0)
    assert plan("spike", 2.5, **kw) == (8, 8.0)
    assert plan("spike", 5.5, **kw) == (2, 8.0)
    assert plan("spike", 7, **kw) is None                     # 2 * spike_at + duration
    assert plan("constant", 100, users=4, spawn_rate=2) == (4, 2.0)
    assert plan("constant", 10, users=4, spawn_rate=2, run_time=10) is None
    with pytest.raises(ValueError):
        plan("ramp", 0, users=1, spawn_rate=1)


def test_sla_evaluate():
    ok = evaluate(num_requests=100, num_failures=0, p95_ms=20, duration_s=10, max_p95_ms=50, min_rps=5)
    assert all(c.passed for c in ok) and {c.name for c in ok} == {"requests", "failure_ratio", "p95_ms", "min_rps"}
    bad = {c.name: c for c in evaluate(num_requests=100, num_failures=2, p95_ms=80, duration_s=10,
                                       max_p95_ms=50, max_failure_ratio=0.01, min_rps=20)}
    assert not bad["failure_ratio"].passed and not bad["p95_ms"].passed and not bad["min_rps"].passed
    assert bad["min_rps"].measured == pytest.approx(9.8)
    assert "SLA FAIL: failure ratio 0.02 (required <= 0.01)" == bad["failure_ratio"].line()
    # Off by default except the failure ratio (0: any failure fails, like Locust); 1 turns it off.
    assert {c.name for c in evaluate(num_requests=5, num_failures=5, p95_ms=1, duration_s=1,
                                     max_failure_ratio=1)} == {"requests"}
    # Nothing sent is never a pass.
    assert not evaluate(num_requests=0, num_failures=0, p95_ms=0, duration_s=0, max_failure_ratio=1)[0].passed


# --- against the local server ---------------------------------------------------------------------

@pytest.fixture(scope="module")
def name(manifest) -> str:
    return sorted(manifest["models"])[0]


@pytest.fixture(scope="module")
def server(repo_root):
    pytest.importorskip("tritonclient.grpc")
    from serving.local_server import LocalTritonServer, free_port

    with LocalTritonServer(repo_root / "cpu", http_port=free_port(), grpc_port=free_port(),
                           metrics_port=free_port(), timeout_s=180) as srv:
        yield srv


def _stats(server, model: str) -> dict:
    from clients.triton import TritonClient

    with TritonClient(server.http_url, "http") as client:
        return client.statistics(model)[model]


def _locust(server, repo_root: Path, *args: str, timeout: float = 90) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "--headless", "--only-summary",
           "--http-url", server.http_url, "--grpc-url", server.grpc_url,
           "--manifest", str(repo_root / layout.MANIFEST_FILE), *args]
    # A hang (e.g. at exit) fails the test with the output so far instead of blocking CI.
    try:
        return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as err:
        pytest.fail(f"locust did not finish within {timeout} s:\n{(err.stdout or b'')[-3000:]!r}\n"
                    f"{(err.stderr or b'')[-3000:]!r}")


def _csv_rows(prefix: Path) -> dict[str, dict]:
    with open(f"{prefix}_stats.csv") as f:
        return {row["Name"]: row for row in csv.DictReader(f)}


def _requests(log: Path) -> list[tuple[float, float, str, str, str, bool]]:
    with open(log) as f:
        return [(float(r[0]), float(r[1]), r[2], r[3], r[4], r[5] == "1") for r in csv.reader(f)]


@pytest.mark.server
def test_headless_run_agrees_with_server_and_grpc_users_overlap(server, repo_root, name, tmp_path):
    model = layout.ensemble_model(name, "fp32")
    out = tmp_path / "results"
    log = tmp_path / "requests.csv"
    before = _stats(server, model)
    run = _locust(server, repo_root, "-u", "6", "-r", "6", "-t", "8s", "--precision", "fp32",
                  "--batch-size", "4", "--csv", str(out / "run"), "--html", str(out / "report.html"),
                  "--request-log", str(log), "--sla-p95-ms", "10000", "--sla-min-rps", "1")
    after = _stats(server, model)
    output = run.stdout + run.stderr
    assert run.returncode == 0, output[-4000:]
    assert "SLA FAIL" not in output

    rows = _csv_rows(out / "run")
    names = {f"grpc {model} b4", f"http {model} b4"}
    assert names <= set(rows), rows.keys()
    total = rows["Aggregated"]
    assert int(total["Failure Count"]) == 0
    succeeded = int(total["Request Count"]) - int(total["Failure Count"])
    assert succeeded > 50, "hardly any requests: is the server that slow?"
    # Every request Locust recorded is one the server served, and nothing else reached it.
    assert succeeded == after["success_count"] - before["success_count"]
    assert after["fail_count"] == before["fail_count"]
    # One request is one batch of 4: the server saw 4 inferences per request.
    assert after["inference_count"] - before["inference_count"] == 4 * succeeded
    assert (out / "report.html").stat().st_size > 10_000
    assert json.loads((out / "run_sla.json").read_text())["passed"] is True

    # gRPC users run concurrently: most gRPC requests overlap in time with another user's request.
    reqs = _requests(log)
    assert len(reqs) == int(total["Request Count"])
    grpc = [r for r in reqs if r[2] == "grpc"]
    assert len({r[3] for r in grpc}) == 3        # 6 users split evenly over the two protocols
    overlapping = sum(1 for a in grpc if any(b[3] != a[3] and b[0] < a[1] and a[0] < b[1] for b in grpc))
    assert overlapping / len(grpc) > 0.5, f"only {overlapping} of {len(grpc)} gRPC requests overlap: serialized?"


@pytest.mark.server
def test_corrupt_image_is_a_recorded_failure_and_fails_the_sla(server, repo_root, manifest, name, tmp_path):
    model = layout.ensemble_model(name, "fp32")
    val = load_manifest(repo_root).models[name].val
    mix = tmp_path / "mix" / "a"
    mix.mkdir(parents=True)
    good = sorted(val.rglob("*.jpg"))[:19]
    for f in good:
        shutil.copy(f, mix / f.name)
    (mix / "zz_corrupt.jpg").write_bytes(good[0].read_bytes()[:200])   # a truncated JPEG
    out = tmp_path / "results"
    before = _stats(server, model)
    run = _locust(server, repo_root, "-u", "2", "-r", "2", "-t", "4s", "--images", str(tmp_path / "mix"),
                  "--batch-size", "1", "--csv", str(out / "run"))
    after = _stats(server, model)
    output = run.stdout + run.stderr

    assert run.returncode == 1, output[-4000:]
    assert "SLA FAIL: failure ratio" in output and "SLA failed: failure_ratio" in output
    total = _csv_rows(out / "run")["Aggregated"]
    failures, requests = int(total["Failure Count"]), int(total["Request Count"])
    assert failures > 0
    # The rest are exactly the requests the server served successfully.
    assert requests - failures == after["success_count"] - before["success_count"]
    # Failures are the requests the server failed. Triton 2.51 adds 2 to an ensemble's fail count per
    # failed request (seen here: 3 corrupt requests -> fail_count +6), so either count is accepted.
    assert after["fail_count"] - before["fail_count"] in (failures, 2 * failures)
    # The corrupt image is 1 in 20 and each user cycles through the set: about 5 % fail.
    assert 0.02 < failures / requests < 0.1
    with open(out / "run_failures.csv") as f:
        errors = list(csv.DictReader(f))
    assert errors and all("zz_corrupt.jpg" in e["Error"] for e in errors)
    assert sum(int(e["Occurrences"]) for e in errors) == failures
    assert json.loads((out / "run_sla.json").read_text())["passed"] is False


def test_helpers_do_not_import_locust():
    # Importing locust monkey-patches the standard library through gevent; in the test process
    # that would deadlock the threaded gRPC clients of the other test modules.
    code = "import sys, load_tests.shapes, load_tests.sla; sys.exit('locust' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], cwd=ROOT).returncode == 0

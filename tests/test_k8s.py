"""deploy/k8s: every kustomization renders (`kubectl kustomize`), validates strictly against the
Kubernetes schemas (kubernetes-validate), passes checkov with only reasoned suppressions, and says
what the deployment relies on: probes on Triton's ports and paths, the image from one place,
the restricted APIs keyed from a Secret, limits, no host namespaces, a HPA whose metric the
prometheus-adapter rules define and whose target the capacity model computes from the committed
benchmark. No cluster is needed; the server-side half is tests/test_k8s_server.py.
"""
from __future__ import annotations

import base64
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from contract.releases import DEFAULT_RELEASE, RELEASES

ROOT = Path(__file__).resolve().parents[1]
K8S = ROOT / "deploy" / "k8s"
KUSTOMIZATIONS = ("overlays/gpu", "overlays/cpu", "locust")
# The Triton release the manifests serve: one `images:` entry in base, checked against the
# release matrix's default (contract/releases.py).
TRITON_RELEASE = DEFAULT_RELEASE           # the image must come from the release matrix
TRITON_IMAGE = RELEASES[DEFAULT_RELEASE].triton_image
# The same APIs and header as the local launcher (serving/hardening.py, docs/hardening.md).
RESTRICTED_APIS = "model-repository,shared-memory,logging,trace"
API_KEY_HEADER = "triton-api-key"
K8S_VERSIONS = ("1.30.0", "1.37.0")   # the oldest and newest Kubernetes the manifests are checked against
CHECKOV = ROOT / ".cache" / "tools" / "checkov" / "bin" / "checkov"
BENCH = ROOT / "docs" / "kubernetes" / "bench-cpu-dev" / "bench.json"
CAPACITY = ROOT / "docs" / "kubernetes" / "capacity-cpu-dev.json"


def _kubectl() -> str:
    path = shutil.which("kubectl")
    if path is None:
        pytest.fail("kubectl (with its built-in kustomize) is not on PATH; install kubectl >= 1.27")
    return path


def _render(root: Path, name: str) -> subprocess.CompletedProcess:
    return subprocess.run([_kubectl(), "kustomize", str(root / name)], capture_output=True, text=True, timeout=60)


@pytest.fixture(scope="module")
def k8s_copy(tmp_path_factory) -> tuple[Path, str]:
    """deploy/k8s copied with the secrets a user creates (base/secrets/README.md): (root, api key)."""
    root = tmp_path_factory.mktemp("k8s") / "k8s"
    shutil.copytree(K8S, root, ignore=shutil.ignore_patterns("api-key", "s3.env"))
    key = "test-key-" + os.urandom(8).hex()
    (root / "base" / "secrets" / "api-key").write_text(key)
    shutil.copy(root / "base" / "secrets" / "s3.env.example", root / "base" / "secrets" / "s3.env")
    return root, key


@pytest.fixture(scope="module")
def rendered(k8s_copy) -> dict[str, list[dict]]:
    root, _ = k8s_copy
    out = {}
    for name in KUSTOMIZATIONS:
        proc = _render(root, name)
        assert proc.returncode == 0, f"kubectl kustomize {name} failed:\n{proc.stderr}"
        out[name] = [d for d in yaml.safe_load_all(proc.stdout) if d]
    return out


def _one(docs: list[dict], kind: str, name: str) -> dict:
    found = [d for d in docs if d["kind"] == kind and d["metadata"]["name"].startswith(name)]
    assert len(found) == 1, f"expected one {kind} {name}, found {[d['metadata']['name'] for d in found]}"
    return found[0]


def _triton(docs: list[dict]) -> dict:
    return _one(docs, "Deployment", "triton")["spec"]["template"]["spec"]["containers"][0]


def _pod_specs(docs: list[dict]) -> list[tuple[str, dict]]:
    return [(f"{d['kind']}/{d['metadata']['name']}", d["spec"]["template"]["spec"])
            for d in docs if d["kind"] in ("Deployment", "Job", "StatefulSet", "DaemonSet")]


# --- rendering and validation --------------------------------------------------------------------

def test_every_kustomization_renders_to_the_expected_objects(rendered):
    for overlay in ("overlays/gpu", "overlays/cpu"):
        kinds = sorted(d["kind"] for d in rendered[overlay])
        assert kinds == sorted(["Namespace", "ServiceAccount", "ConfigMap", "Secret", "Secret", "Service",
                                "Deployment", "PodDisruptionBudget", "HorizontalPodAutoscaler",
                                "NetworkPolicy"]), kinds
        assert {d["metadata"].get("namespace") for d in rendered[overlay] if d["kind"] != "Namespace"} == {"triton"}
    kinds = sorted(d["kind"] for d in rendered["locust"])
    assert kinds.count("Job") == 2 and "Service" in kinds and "ConfigMap" in kinds and "PersistentVolumeClaim" in kinds


def test_a_missing_secret_file_stops_the_render_and_names_it(tmp_path):
    root = tmp_path / "k8s"
    shutil.copytree(K8S, root, ignore=shutil.ignore_patterns("api-key", "s3.env"))
    proc = _render(root, "overlays/cpu")
    assert proc.returncode != 0
    assert "secrets/api-key" in proc.stderr


@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_schemas_strict(rendered, version):
    import kubernetes_validate

    for name, docs in rendered.items():
        for doc in docs:
            try:
                kubernetes_validate.validate(doc, version, strict=True)
            except kubernetes_validate.ValidationError as err:
                pytest.fail(f"{name}: {doc['kind']}/{doc['metadata']['name']} is invalid for Kubernetes "
                            f"{version}: {err.message} at {list(err.path)}")


def test_checkov_finds_nothing_unexplained(rendered, tmp_path):
    if not CHECKOV.exists():
        pytest.fail(f"checkov is missing at {CHECKOV}: run scripts/test.sh (it installs requirements-checkov.txt "
                    "into its own environment there)")
    for name, docs in rendered.items():
        (tmp_path / (name.replace("/", "-") + ".yaml")).write_text(yaml.safe_dump_all(docs))
    proc = subprocess.run([str(CHECKOV), "-d", str(tmp_path), "--framework", "kubernetes", "--skip-download",
                           "--compact", "-o", "json"], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "BC_SKIP_MAPPING": "TRUE"})
    report = json.loads(proc.stdout)
    results = report["results"]
    failed = [(f["check_id"], f["resource"]) for f in results["failed_checks"]]
    assert failed == [], f"checkov findings: {failed}"
    assert report["summary"]["passed"] > 100
    # Every suppression says why (the annotation's text after "="), and only the one known check is suppressed.
    for skipped in results["skipped_checks"]:
        assert len(skipped["check_result"].get("suppress_comment", "")) > 40, skipped["check_id"]
    assert {s["check_id"] for s in results["skipped_checks"]} == {"CKV_K8S_43"}
    assert proc.returncode == 0, proc.stderr[-2000:]


# --- the facts that matter -----------------------------------------------------------------------

def test_triton_image_is_the_release_and_named_in_one_place(rendered):
    for overlay in ("overlays/gpu", "overlays/cpu"):
        assert _triton(rendered[overlay])["image"] == TRITON_IMAGE
    mentions = [str(p.relative_to(K8S)) for p in K8S.rglob("*") if p.is_file()
                and re.search(r"tritonserver:|\b\d\d\.\d\d-py3\b", p.read_text(errors="replace"))]
    assert mentions == ["base/kustomization.yaml"], mentions


@pytest.mark.parametrize("overlay", ["overlays/gpu", "overlays/cpu"])
def test_probes_ports_and_scrape(rendered, overlay):
    docs = rendered[overlay]
    c = _triton(docs)
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert ports == {"http": 8000, "grpc": 8001, "metrics": 8002}
    for probe, path in (("startupProbe", "/v2/health/ready"), ("readinessProbe", "/v2/health/ready"),
                        ("livenessProbe", "/v2/health/live")):
        assert c[probe]["httpGet"] == {"path": path, "port": "http"}, probe
    # Startup allows minutes for the repository download and model loading.
    assert c["startupProbe"]["periodSeconds"] * c["startupProbe"]["failureThreshold"] >= 300
    pod = _one(docs, "Deployment", "triton")["spec"]["template"]
    ann = pod["metadata"]["annotations"]
    assert ann["prometheus.io/scrape"] == "true" and int(ann["prometheus.io/port"]) == ports["metrics"]
    assert ann["prometheus.io/path"] == "/metrics"
    svc = _one(docs, "Service", "triton")["spec"]
    assert {p["name"]: (p["port"], p["targetPort"]) for p in svc["ports"]} == {"http": (8000, "http"),
                                                                              "grpc": (8001, "grpc")}
    assert svc["type"] == "ClusterIP"


def test_every_pod_is_locked_down_and_limited(rendered):
    for name, docs in rendered.items():
        for what, spec in _pod_specs(docs):
            for host in ("hostNetwork", "hostPID", "hostIPC"):
                assert not spec.get(host), f"{name} {what}: {host}"
            assert spec["automountServiceAccountToken"] is False, what
            sc = spec["securityContext"]
            assert sc["runAsNonRoot"] is True and sc["runAsUser"] >= 10000, what
            assert sc["seccompProfile"]["type"] == "RuntimeDefault", what
            assert not any("hostPath" in v for v in spec.get("volumes", [])), what
            for c in spec["containers"]:
                csc = c["securityContext"]
                assert csc["allowPrivilegeEscalation"] is False and csc["readOnlyRootFilesystem"] is True, what
                assert csc["capabilities"]["drop"] == ["ALL"] and "add" not in csc["capabilities"], what
                assert not csc.get("privileged"), what
                for kind in ("requests", "limits"):
                    assert {"cpu", "memory"} <= set(c["resources"][kind]), f"{what}: {kind}"


def test_dev_shm_is_a_memory_volume_and_tmp_is_writable(rendered):
    docs = rendered["overlays/gpu"]
    spec = _one(docs, "Deployment", "triton")["spec"]["template"]["spec"]
    mounts = {m["mountPath"]: m["name"] for m in _triton(docs)["volumeMounts"]}
    volumes = {v["name"]: v for v in spec["volumes"]}
    assert volumes[mounts["/dev/shm"]]["emptyDir"]["medium"] == "Memory"
    assert "emptyDir" in volumes[mounts["/tmp"]]


@pytest.mark.parametrize("overlay", ["overlays/gpu", "overlays/cpu"])
def test_restricted_apis_keyed_from_a_secret_and_a_64_mib_stack(rendered, k8s_copy, overlay):
    docs = rendered[overlay]
    c = _triton(docs)
    script = c["command"][2]
    assert c["command"][:2] == ["/bin/bash", "-c"]
    # The limit is raised before tritonserver starts, in the process that execs it.
    assert script.index("ulimit -s 65536") < script.index("exec tritonserver")
    assert f'--http-restricted-api="$apis:{API_KEY_HEADER}=$key"' in script
    assert f'--grpc-restricted-protocol="$apis:{API_KEY_HEADER}=$key"' in script
    assert f"apis={RESTRICTED_APIS}\n" in script
    # The key comes from the Secret's file, mounted read-only; it appears in no other object.
    mounts = {m["mountPath"]: m for m in c["volumeMounts"]}
    assert 'key="$(cat /etc/triton/api-key/api-key)"' in script and mounts["/etc/triton/api-key"]["readOnly"]
    volumes = {v["name"]: v for v in _one(docs, "Deployment", "triton")["spec"]["template"]["spec"]["volumes"]}
    secret = volumes[mounts["/etc/triton/api-key"]["name"]]["secret"]["secretName"]
    _, key = k8s_copy
    assert base64.b64decode(_one(docs, "Secret", secret)["data"]["api-key"]).decode() == key
    others = [d for d in docs if d["kind"] != "Secret"]
    assert key not in json.dumps(others)
    # Nothing but the secret files' instructions and example is committed next to them.
    tracked = subprocess.run(["git", "ls-files", "deploy/k8s/base/secrets"], cwd=ROOT, capture_output=True,
                             text=True).stdout.split()
    assert sorted(Path(t).name for t in tracked) == [".gitignore", "README.md", "s3.env.example"]


def test_gpu_overlay_asks_for_a_gpu_node_and_cpu_overlay_for_none(rendered):
    gpu = rendered["overlays/gpu"]
    c = _triton(gpu)
    assert c["resources"]["limits"]["nvidia.com/gpu"] == "1" == c["resources"]["requests"]["nvidia.com/gpu"]
    spec = _one(gpu, "Deployment", "triton")["spec"]["template"]["spec"]
    assert spec["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in spec["tolerations"]
    cpu = rendered["overlays/cpu"]
    assert "nvidia.com/gpu" not in json.dumps(cpu)
    assert "--allow-gpu-metrics=false" in _triton(cpu)["args"]
    for overlay, target in (("overlays/gpu", "gpu"), ("overlays/cpu", "cpu")):
        cm = _one(rendered[overlay], "ConfigMap", "triton-model-repository")
        assert re.fullmatch(rf"s3://[^/]+/.+/{target}", cm["data"]["MODEL_REPOSITORY"])
        ref = _triton(rendered[overlay])["env"][0]["valueFrom"]["configMapKeyRef"]
        assert ref["name"] == cm["metadata"]["name"]      # the generated (hashed) name, resolved


def test_network_policy_admits_only_clients_and_prometheus(rendered):
    docs = rendered["overlays/cpu"]
    pol = _one(docs, "NetworkPolicy", "triton")["spec"]
    assert pol["podSelector"]["matchLabels"] == {"app.kubernetes.io/name": "triton"}
    rules = {r["from"][0]["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"]:
             sorted(p["port"] for p in r["ports"]) for r in pol["ingress"]}
    assert rules == {"triton-clients": ["grpc", "http"], "monitoring": ["metrics"]}
    assert all(len(r["from"]) == 1 for r in pol["ingress"])
    # The Locust run lives in the namespace admitted above.
    assert {d["metadata"].get("namespace") for d in rendered["locust"] if d["kind"] != "Namespace"} == {"triton-clients"}


def test_pdb_and_hpa_keep_a_replica_serving(rendered):
    docs = rendered["overlays/gpu"]
    pdb = _one(docs, "PodDisruptionBudget", "triton")["spec"]
    hpa = _one(docs, "HorizontalPodAutoscaler", "triton")["spec"]
    labels = _one(docs, "Deployment", "triton")["spec"]["template"]["metadata"]["labels"]
    assert pdb["selector"]["matchLabels"].items() <= labels.items()
    assert hpa["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "triton"}
    assert hpa["minReplicas"] > pdb["maxUnavailable"] and hpa["maxReplicas"] > hpa["minReplicas"]


def test_hpa_metric_is_served_by_the_adapter_rules_and_its_target_comes_from_the_capacity_model(rendered):
    sys.path.insert(0, str(ROOT))
    from benchmarks.capacity import load_points, plan

    hpa = _one(rendered["overlays/gpu"], "HorizontalPodAutoscaler", "triton")["spec"]
    (metric,) = hpa["metrics"]
    values = yaml.safe_load((K8S / "monitoring" / "prometheus-adapter-values.yaml").read_text())
    rules = {r["name"]["as"]: r for r in values["rules"]["custom"]}
    assert metric["type"] == "Pods" and metric["pods"]["metric"]["name"] in rules
    rule = rules[metric["pods"]["metric"]["name"]]
    assert rule["resources"]["overrides"]["pod"]["resource"] == "pod"
    assert "nv_inference_request_duration_us" in rule["seriesQuery"]
    # The committed worked example reproduces from the committed benchmark, and the HPA uses its target.
    example = json.loads(CAPACITY.read_text())
    assert example["machine"]
    points = load_points(json.loads(BENCH.read_text()), example["protocol"], example["precision"],
                         example["batch_size"])
    again = plan(points, example["target_images_per_s"], example["sla_p99_ms"], example["headroom"])
    assert again["hpa_average_value"] == example["hpa_average_value"] == metric["pods"]["target"]["averageValue"]
    assert again["replicas"] == example["replicas"]


def test_locust_master_and_workers_agree_and_gate_on_the_sla(rendered):
    docs = rendered["locust"]
    master = _one(docs, "Job", "locust-master")
    workers = _one(docs, "Job", "locust-workers")
    mc = master["spec"]["template"]["spec"]["containers"][0]
    wc = workers["spec"]["template"]["spec"]["containers"][0]
    expect = int({e["name"]: e["value"] for e in mc["env"]}["LOCUST_EXPECT_WORKERS"])
    assert expect == workers["spec"]["parallelism"] == workers["spec"]["completions"] >= 2
    assert "--master" in mc["args"] and "--headless" in mc["args"]
    assert master["spec"]["backoffLimit"] == 0            # a missed SLA fails the Job, never retried
    results = {m["mountPath"] for m in mc["volumeMounts"]}
    assert "/results" in results and "--csv=/results/run" in mc["args"] and "--html=/results/report.html" in mc["args"]
    svc = _one(docs, "Service", "locust-master")
    assert f"--master-host={svc['metadata']['name']}" in wc["args"]
    assert f"--master-port={svc['spec']['ports'][0]['port']}" in wc["args"]
    assert svc["spec"]["selector"].items() <= master["spec"]["template"]["metadata"]["labels"].items()
    cm = _one(docs, "ConfigMap", "locust")["data"]
    assert cm["TRITON_GRPC_URL"] == "triton.triton.svc:8001" and cm["TRITON_HTTP_URL"] == "triton.triton.svc:8000"
    assert float(cm["TRITON_SLA_P95_MS"]) > 0 and float(cm["TRITON_SLA_MAX_FAILURE_RATIO"]) < 1
    for c in (mc, wc):
        assert c["envFrom"] == [{"configMapRef": {"name": _one(docs, "ConfigMap", "locust")["metadata"]["name"]}}]


def test_locust_settings_are_options_the_locustfile_and_locust_know():
    import importlib.util

    # Locust's own option table, read as text: importing locust would monkey-patch this process (gevent).
    package = Path(importlib.util.find_spec("locust").submodule_search_locations[0])
    known_locust = set(re.findall(r'env_var="(LOCUST_[A-Z_]+)"', (package / "argument_parser.py").read_text()))
    assert {"LOCUST_USERS", "LOCUST_RUN_TIME", "LOCUST_EXPECT_WORKERS"} <= known_locust
    scenario = "".join(p.read_text() for p in (ROOT / "load_tests").glob("*.py"))
    names = [line.split("=", 1)[0] for line in (K8S / "locust" / "locust.env").read_text().splitlines()
             if line and not line.startswith("#")]
    assert names
    for name in names:
        assert name in (known_locust if name.startswith("LOCUST_") else scenario), name
    # The image holds what the locustfile imports.
    dockerfile = (K8S / "locust" / "Dockerfile").read_text()
    for folder in ("contract", "builders", "clients", "load_tests"):
        assert f"COPY {folder}/ /app/{folder}/" in dockerfile and (ROOT / folder).is_dir()
    assert "ENV PYTHONPATH=/app" in dockerfile   # the locustfile no longer edits sys.path
    assert "-c requirements.lock" in dockerfile


def test_capacity_model_arithmetic_and_refusals():
    sys.path.insert(0, str(ROOT))
    from benchmarks.capacity import CapacityError, load_points, plan

    def point(c, rps, p99, server_ms, protocol="grpc", stable=True):
        return {"protocol": protocol, "precision": "fp32", "batch_size": 4, "concurrency": c, "stable": stable,
                "inferences_per_s": rps, "images_per_s": 4 * rps, "latency_ms": {"p99": p99},
                "server_latency_ms": server_ms}

    bench = {"points": [point(1, 25, 10, 36), point(2, 45, 18, 40), point(4, 50, 40, 72),
                        point(8, 51, 90, 150, stable=False), point(1, 20, 12, 40, protocol="http")]}
    with pytest.raises(CapacityError, match="several protocol"):
        load_points(bench)
    points = load_points(bench, protocol="grpc")
    assert [p["concurrency"] for p in points] == [1, 2, 4]          # the unstable point is left out
    assert points[1]["inflight"] == pytest.approx(45 * 0.040)         # Little's law: 1.8 requests
    # SLA 20 ms: concurrency 2 (180 images/s) is the best point meeting it; 80 % of it per replica.
    result = plan(points, target_images_per_s=1000, sla_p99_ms=20, headroom=0.8)
    assert result["operating_point"]["concurrency"] == 2
    assert result["replicas"] == 7 and result["replicas_n_plus_1"] == 8       # ceil(1000 / 144)
    assert result["hpa_average_value"] == "1440m" and not result["notes"]
    # Met only at the highest measured concurrency: said so.
    assert plan(points, 1000, 50)["notes"]
    with pytest.raises(CapacityError, match="lowest p99 is 10.00 ms at concurrency 1"):
        plan(points, 1000, 5)
    with pytest.raises(CapacityError, match="headroom"):
        plan(points, 1000, 20, headroom=1.5)

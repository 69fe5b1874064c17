"""The builder image: docker/Dockerfile.builder linted by hadolint, and its requirements file."""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILE = ROOT / "docker" / "Dockerfile.builder"
REQUIREMENTS = ROOT / "docker" / "requirements-gpu.txt"


def _pins(path: Path) -> dict[str, str]:
    pins = {}
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, sep, version = line.partition("==")
            assert sep, f"{path.name}: {line!r} is not pinned with =="
            pins[re.sub(r"[-_.]+", "-", name.split("[")[0]).lower()] = version
    return pins


def test_hadolint_passes():
    hadolint = Path(sys.executable).parent / "hadolint"
    if not hadolint.exists():
        pytest.fail(f"hadolint is missing from {hadolint.parent}: pip install -r requirements-dev.txt")
    proc = subprocess.run([str(hadolint), "--failure-threshold", "info", str(DOCKERFILE)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    # The linter must really be reading the file: a known violation fails it.
    bad = subprocess.run([str(hadolint), "-"], input="FROM ubuntu\nRUN pip install torch\n",
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode != 0 and "DL3013" in bad.stdout, bad.stdout + bad.stderr


def test_builder_image_installs_only_the_gpu_build_dependencies_at_the_locked_versions():
    gpu = _pins(REQUIREMENTS)
    lock = _pins(ROOT / "requirements.lock")
    for needed in ("torch", "onnx", "onnxruntime", "nvidia-dali-cuda130", "pydantic", "tritonclient"):
        assert needed in gpu
    for unwanted in ("locust", "nvidia-pytriton", "gevent", "flask", "matplotlib", "tensorrt"):
        assert unwanted not in gpu, f"{unwanted} does not belong in the builder image"
    differ = {n: (v, lock[n]) for n, v in gpu.items() if n in lock and lock[n] != v}
    assert differ == {}, f"requirements-gpu.txt and requirements.lock disagree: {differ}"


def test_dockerfile_builds_from_the_release_tensorrt_image_as_the_host_user():
    from contract.releases import DEFAULT_RELEASE

    text = DOCKERFILE.read_text()
    assert f"ARG TRITON_RELEASE={DEFAULT_RELEASE}\n" in text
    assert "FROM nvcr.io/nvidia/tensorrt:${TRITON_RELEASE}-py3" in text
    assert "USER ${HOST_UID}:${HOST_GID}" in text and "chown" not in text
    assert "-r /tmp/requirements-gpu.txt" in text
    # Only the requirements file goes into the build context; the checkout is mounted at run time.
    assert (ROOT / ".dockerignore").read_text().split("\n")[-3:-1] == ["*", "!docker/requirements-gpu.txt"]

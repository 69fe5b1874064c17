"""The pipeline definition under the DALI of each Triton release it is served with.

dali_backend serializes `dali.py` with the DALI inside the tritonserver image, not the one that
built the repository. For the default release of the matrix (contract/releases.py) and the oldest
one, a side environment gets exactly that DALI version (the cuda120 wheel, which runs on a CPU) and:
the gpu variant must autoserialize, and the cpu variant must give the main DALI's output on real
photos within one pixel level. The environments are cached under ~/.cache/triton-image-toolkit
(each ~1.2 GB, a few minutes to create the first time).
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest

from contract import layout
from contract.images import pack_batch
from contract.preprocess import CpuPreprocessor, write_definition
from contract.releases import DEFAULT_RELEASE, RELEASES
from contract.spec import Input

pytestmark = pytest.mark.slow

CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "triton-image-toolkit"
_OLDEST = min(RELEASES.values(), key=lambda r: tuple(int(p) for p in r.name.split(".")))
DALI_VERSIONS = sorted({RELEASES[DEFAULT_RELEASE].dali_version, _OLDEST.dali_version})

# Runs inside the side environment: what dali_backend does at load (import the file, serialize
# the @autoserialize pipeline), then the cpu variant on the images.
_SIDE_SCRIPT = r"""
import importlib.util, json, os, sys, tempfile
import numpy as np
import nvidia.dali as dali
from nvidia.dali import Pipeline
from nvidia.dali._utils.autoserialize import invoke_autoserialize

args = json.loads(sys.argv[1])

def autoserialize(path, name):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    with tempfile.TemporaryDirectory() as tmp:
        invoke_autoserialize(module, os.path.join(tmp, "model.dali"))
        return open(os.path.join(tmp, "model.dali"), "rb").read()

gpu = autoserialize(args["gpu"], "gpu_definition")
pipe = Pipeline.deserialize(serialized_pipeline=autoserialize(args["cpu"], "cpu_definition"), device_id=None,
                            num_threads=2, batch_size=args["batch"])
pipe.build()
rows = np.load(args["rows"])      # packed as clients send them (contract.images.pack_batch)
pipe.feed_input("DALI_INPUT_0", list(rows))
(out,) = pipe.run()
np.save(args["out"], np.stack([np.asarray(out[i]) for i in range(len(rows))]))
print(json.dumps({"dali": dali.__version__, "gpu_serialized_bytes": len(gpu)}))
"""


def _side_env(version: str) -> Path:
    """A venv with nvidia-dali-cuda120==version and numpy 1.26.4; returns its python.

    Made in a staging folder and renamed into place, so an interrupted install is never reused
    (only `bin/python` is called, which does not depend on the venv's folder name)."""
    env = CACHE / f"dali-{version}-py{sys.version_info.major}.{sys.version_info.minor}"
    if (env / "bin" / "python").is_file():
        return env / "bin" / "python"
    CACHE.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".dali-{version}-", dir=CACHE))
    try:
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(staging)], check=True)
        subprocess.run([str(staging / "bin" / "python"), "-m", "pip", "install", "-q", "--disable-pip-version-check",
                        "--only-binary=:all:", f"nvidia-dali-cuda120=={version}", "numpy==1.26.4"],
                       check=True, timeout=1500)
        staging.rename(env)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return env / "bin" / "python"


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> list[Path]:
    from builders.parity_photos import write_photo_set

    return sorted(write_photo_set(tmp_path_factory.mktemp("photos")).rglob("*.jpg"))


def test_matrix_dali_versions_are_installable_ones():
    # PyPI's real DALI wheels start at 1.53.0; older versions are download stubs.
    for version in DALI_VERSIONS:
        assert tuple(int(p) for p in version.split(".")[:2]) >= (1, 53), version


@pytest.mark.parametrize("version", DALI_VERSIONS)
@pytest.mark.parametrize("resize,crop", [(256, 224), (36, 32)])
def test_definition_runs_under_release_dali(version, resize, crop, photos, tmp_path):
    inp = Input(resize=resize, crop=crop)
    cpu = write_definition(inp, "cpu", tmp_path / "cpu" / layout.DALI_DEFINITION, 64)
    gpu = write_definition(inp, "gpu", tmp_path / "gpu" / layout.DALI_DEFINITION, 64, hw_decoder_load=1.0)
    out, rows = tmp_path / "side.npy", tmp_path / "rows.npy"
    packed = pack_batch([f.read_bytes() for f in photos])
    np.save(rows, packed)
    args = {"cpu": str(cpu), "gpu": str(gpu), "rows": str(rows), "out": str(out), "batch": 64}
    proc = subprocess.run([str(_side_env(version)), "-c", _SIDE_SCRIPT, json.dumps(args)],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report["dali"] == version and report["gpu_serialized_bytes"] > 0
    side = np.load(out)
    main = CpuPreprocessor(cpu)(list(packed))
    levels = np.abs(side - main) * 255.0 * np.asarray(inp.std)[None, :, None, None]
    assert side.shape == main.shape and levels.max() <= 1.01, f"DALI {version} vs main: max {levels.max():.2f} levels"

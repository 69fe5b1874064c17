"""Everything tritonserver needs before it starts: the binary and libraries of the nvidia-pytriton
wheel, the backend folder (python backend, the stub for this Python, the stand-ins of
serving/backends/) and the environment the stubs need. serving.server_process launches with them.
"""
from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import os
import shutil
import sys
import tempfile
from pathlib import Path

from contract.errors import ToolkitError

PROJECT_ROOT = Path(__file__).resolve().parents[1]
STANDINS = Path(__file__).resolve().parent / "backends"
STANDIN_BACKENDS = ("dali", "onnxruntime", "pytorch")


class ServerError(ToolkitError, RuntimeError):
    """tritonserver could not be prepared, did not start, or did not become ready."""


# --- locating the pieces ------------------------------------------------------------------------

def pytriton_root() -> Path:
    # Only the package's folder is needed (binary, stubs, python backend). Locating it without
    # importing it skips pytriton/__init__.py, which imports pytriton's own client and runtime
    # dependencies (tritonclient.http with gevent, pyzmq, wrapt, typing_inspect) that serving a
    # repository never uses, so a bare host (the GPU machine) needs only the wheel's files.
    spec = importlib.util.find_spec("pytriton")
    if spec is None or not spec.submodule_search_locations:
        raise ServerError("the nvidia-pytriton package is not installed in this environment; it ships the "
                          "tritonserver binary (pip install nvidia-pytriton==0.7.0)")
    return Path(next(iter(spec.submodule_search_locations))).resolve()


def server_binary() -> Path:
    path = pytriton_root() / "tritonserver" / "bin" / "tritonserver"
    if not path.is_file():
        raise ServerError(f"tritonserver binary not found at {path}; reinstall nvidia-pytriton")
    return path


def server_libs() -> Path:
    # Wheel installs keep the server's shared libraries next to the package (auditwheel layout);
    # pytriton's own launcher puts the same folder on LD_LIBRARY_PATH (pytriton.utils.distribution).
    root = pytriton_root()
    for candidate in (root.parent / "nvidia_pytriton.libs", root / "tritonserver" / "external_libs"):
        if candidate.is_dir():
            return candidate
    raise ServerError(f"tritonserver's libraries (nvidia_pytriton.libs) not found next to {root}")


def _env_bin() -> Path:
    """bin/ of the environment this Python runs in (the stub sees its packages only via PATH)."""
    return Path(sys.prefix) / "bin" if sys.prefix != sys.base_prefix else Path(sys.executable).parent


def check_numpy() -> None:
    """Raise ServerError unless numpy 1.x is installed (the python backend stub is built against it)."""
    try:
        major = int(importlib.metadata.version("numpy").split(".")[0])
    except importlib.metadata.PackageNotFoundError:
        raise ServerError("numpy is not installed; the python backend stub needs numpy 1.x") from None
    if major >= 2:
        # With numpy 2 the stub (built against 1.x) hands the model empty tensors, silently.
        raise ServerError(f"numpy {importlib.metadata.version('numpy')} is installed; Triton 2.51's python "
                          "backend stub needs numpy < 2 (pip install 'numpy<2')")


def default_cache_dir() -> Path:
    if os.environ.get("TRITON_TOOLKIT_CACHE"):
        return Path(os.environ["TRITON_TOOLKIT_CACHE"])
    local = PROJECT_ROOT / ".cache"
    if os.access(PROJECT_ROOT, os.W_OK):
        return local
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "triton-image-toolkit"


def prepare_backend_dir(cache_dir: Path | None = None) -> Path:
    """Assemble the backend folder: python backend + stub for this Python + the two stand-ins.

    The folder's name is a hash of everything in it, so an edited stand-in or another Python gets
    a fresh folder, and concurrent launchers never write into a folder another server reads.
    """
    source = pytriton_root() / "tritonserver"
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    stub = source / "python_backend_stubs" / version / "triton_python_backend_stub"
    if not stub.is_file():
        have = sorted(p.name for p in (source / "python_backend_stubs").iterdir())
        raise ServerError(f"nvidia-pytriton has no python backend stub for Python {version} (it has {have}); "
                          "use one of those Python versions for the environment")
    python_files = [p for p in (source / "backends" / "python").iterdir() if p.is_file()]
    standin_files = [STANDINS / b / "model.py" for b in STANDIN_BACKENDS]
    for f in standin_files:
        if not f.is_file():
            raise ServerError(f"stand-in backend {f} is missing")

    digest = hashlib.sha256()
    for f in sorted(python_files) + [stub] + standin_files:
        st = f.stat()
        digest.update(f"{f}:{st.st_size}:{st.st_mtime_ns}".encode())
    base = Path(cache_dir) if cache_dir else default_cache_dir() / "triton_backends"
    target = base / digest.hexdigest()[:16]
    if (target / ".complete").exists():
        return target

    base.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=base))
    try:
        (staging / "python").mkdir()
        for f in python_files:
            shutil.copy2(f, staging / "python" / f.name)
        shutil.copy2(stub, staging / "python" / "triton_python_backend_stub")
        os.chmod(staging / "python" / "triton_python_backend_stub", 0o755)
        for b, f in zip(STANDIN_BACKENDS, standin_files):
            (staging / b).mkdir()
            shutil.copy2(f, staging / b / "model.py")
        (staging / ".complete").touch()
        try:
            staging.rename(target)
        except OSError:
            if not (target / ".complete").exists():  # lost a race to a half-built folder? unlikely
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def server_env() -> dict[str, str]:
    env = os.environ.copy()
    # The stub embeds Python in isolated mode: it finds this environment's packages (numpy, DALI,
    # onnxruntime) only when the environment's bin/ is first on PATH.
    env["PATH"] = f"{_env_bin()}{os.pathsep}{env.get('PATH', '')}"
    # The copied libtriton_python.so loses its $ORIGIN-relative RPATH to the wheel's libraries.
    libs = str(server_libs())
    env["LD_LIBRARY_PATH"] = f"{env['LD_LIBRARY_PATH']}{os.pathsep}{libs}" if env.get("LD_LIBRARY_PATH") else libs
    env.pop("PYTHONHOME", None)
    return env

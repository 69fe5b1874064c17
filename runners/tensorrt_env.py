"""Is TensorRT usable here? The one place that imports TensorRT to find out.

The builder (builders.engine) and the TensorRT runner both ask; TensorRT is imported lazily, so
this module imports on machines without it, and callers that need it get EngineUnavailable,
whose message says why and where to build instead.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from contract.errors import ToolkitError

if TYPE_CHECKING:
    from types import ModuleType

DOCKER_HINT = ("Build and serve the gpu target inside NVIDIA's containers instead: "
               "`docker compose up` (builder: TensorRT container, then Triton; see docs/gpu.md).")


class EngineUnavailable(ToolkitError, RuntimeError):
    """TensorRT or a CUDA GPU is missing here; the message says which and where to build instead."""



def import_tensorrt() -> tuple[ModuleType | None, str]:
    try:
        import tensorrt as trt
    except ImportError as err:
        return None, f"the TensorRT Python package is not installed ({err})"
    # `tensorrt-stubs` installs a bare `tensorrt/` folder of .pyi files, which imports as an
    # empty namespace package: only a real build has Builder and a version.
    if not hasattr(trt, "Builder") or not hasattr(trt, "__version__"):
        return None, "only TensorRT type stubs are installed (tensorrt-stubs), not TensorRT itself"
    return trt, ""


def gpu_info() -> dict[str, str] | None:
    """Name and compute capability ("9.0") of CUDA device 0, or None without a usable GPU."""
    try:
        import torch
    except ImportError:
        return None
    if not torch.cuda.is_available():
        return None
    major, minor = torch.cuda.get_device_capability(0)
    return {"name": torch.cuda.get_device_name(0), "compute_capability": f"{major}.{minor}"}


def tensorrt_available() -> tuple[bool, str]:
    """(True, "TensorRT x on GPU") or (False, why not) — the reason engine tests skip with."""
    trt, why = import_tensorrt()
    if trt is None:
        return False, why
    gpu = gpu_info()
    if gpu is None:
        return False, f"TensorRT {trt.__version__} is installed but no CUDA GPU is visible"
    return True, f"TensorRT {trt.__version__} on {gpu['name']} (sm {gpu['compute_capability']})"


def require_tensorrt() -> None:
    """Raise EngineUnavailable, saying why, unless TensorRT and a GPU are usable here.

    Callers then `import tensorrt as trt` themselves, so mypy checks their calls against
    tensorrt-stubs (a module passed around as a value would be typed Any).
    """
    ok, why = tensorrt_available()
    if not ok:
        raise EngineUnavailable(f"Cannot build or run TensorRT plans here: {why}. {DOCKER_HINT}")


def tensorrt_major(version: str) -> int:
    return int(version.split(".")[0])

"""What every plan build shares: the plan's file name, its provenance record, atomic writes."""
from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

from contract.errors import ToolkitError
from runners.tensorrt_env import gpu_info

if TYPE_CHECKING:
    from contract.spec import Engine

DEFAULT_PLAN = "model.plan"


class EngineBuildError(ToolkitError, RuntimeError):
    """TensorRT was present but refused the ONNX or the build failed; the message carries its errors."""


def plan_filename(compute_capability: str | None, hardware_compatible: bool = False) -> str:
    """File name of a plan inside the version folder.

    A plan runs only on the compute capability it was built on, so plans for several GPU
    architectures coexist as model_sm<cc>.plan, selected by Triton's cc_model_filenames
    ("9.0" -> model_sm90.plan). A hardware-compatible plan runs on every Ampere+ GPU: model.plan.
    """
    if hardware_compatible or not compute_capability:
        return DEFAULT_PLAN
    return f"model_sm{compute_capability.replace('.', '')}.plan"


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def common_info(plan_path: Path, precision: str, engine_spec: Engine, max_batch: int, input_name: str,
                 chw: Sequence[int], timing_cache_path: Path, cache_reused: bool, version: str,
                 seconds: float) -> dict[str, Any]:
    gpu = gpu_info() or {}
    return {
        "precision": precision, "plan": str(plan_path), "plan_bytes": plan_path.stat().st_size,
        "plan_sha256": sha256(plan_path), "tensorrt_version": version,
        "gpu_name": gpu.get("name"), "compute_capability": gpu.get("compute_capability"),
        "profile": {"input": input_name, "min": [engine_spec.min_batch, *chw],
                    "opt": [engine_spec.opt_batch, *chw], "max": [max_batch, *chw]},
        "max_batch_size": max_batch, "workspace_mib": engine_spec.workspace_mib,
        "version_compatible": engine_spec.version_compatible,
        "hardware_compatibility": "ampere+" if engine_spec.hardware_compatible else "none",
        "timing_cache": str(timing_cache_path), "timing_cache_reused": cache_reused,
        "build_seconds": round(seconds, 2),
    }


def write_atomic(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)

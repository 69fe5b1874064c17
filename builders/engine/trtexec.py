"""The trtexec builder (`engine.builder = "trtexec"`): the same settings as the Python API build,
as an argument list, and trtexec's performance summary parsed into numbers."""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

from builders.engine.common import EngineBuildError, common_info
from builders.engine.inspection import write_inspection
from runners.tensorrt_env import DOCKER_HINT, EngineUnavailable, gpu_info, import_tensorrt, tensorrt_major

if TYPE_CHECKING:
    from contract.spec import Engine

TRTEXEC_CANDIDATES = ("trtexec", "/usr/src/tensorrt/bin/trtexec")


_STAT_LINE = re.compile(r"\]\s*(?P<name>[A-Za-z0-9 /-]+?):\s*min = (?P<body>.*)$")
_STAT_ITEM = re.compile(r"(?P<key>min|max|mean|median|percentile\((?P<pct>[\d.]+)%\))\s*=\s*"
                        r"(?P<val>[-+0-9.eE]+)\s*(?P<unit>ms|s|us)")
_UNIT_TO_MS = {"ms": 1.0, "s": 1000.0, "us": 0.001}


def parse_trtexec_output(text: str) -> dict[str, Any]:
    """trtexec's performance summary as numbers (times in ms, throughput in queries/s).

    Lines look like `[I] GPU Compute Time: min = 0.34 ms, max = ..., mean = ..., median = ...,
    percentile(90%) = ..., percentile(99%) = ... ms`. trtexec counts one batch as one query, so
    images/s = throughput_qps × batch. Missing lines are simply absent.
    """
    lines = text.splitlines()
    start = next((i for i, ln in enumerate(lines) if "=== Performance summary ===" in ln), None)
    summary = lines[start + 1:] if start is not None else lines
    out: dict[str, Any] = {"passed": "&&&& PASSED" in text}
    version = re.search(r"\[TensorRT v(\d+)\]", text)
    if version:  # v100300 -> 10.3.0 (major*10000 + minor*100 + patch)
        v = int(version.group(1))
        out["tensorrt_version"] = f"{v // 10000}.{v // 100 % 100}.{v % 100}"
    for line in summary:
        if "=== " in line and "Performance summary" not in line:
            break  # the next section (e.g. "=== Explanations of the performance metrics ===")
        m = re.search(r"Throughput:\s*([-+0-9.eE]+)\s*qps", line)
        if m:
            out["throughput_qps"] = float(m.group(1))
            continue
        m = re.search(r"Total (Host Walltime|GPU Compute Time):\s*([-+0-9.eE]+)\s*s\b", line)
        if m:
            out["total_host_walltime_s" if m.group(1) == "Host Walltime" else "total_gpu_compute_s"] = float(m.group(2))
            continue
        m = _STAT_LINE.search(line)
        if not m:
            continue
        stats: dict[str, float] = {}
        for item in _STAT_ITEM.finditer("min = " + m.group("body")):
            key = f"p{float(item.group('pct')):g}" if item.group("pct") else item.group("key")  # p90, p99.9
            stats[key] = float(item.group("val")) * _UNIT_TO_MS[item.group("unit")]
        name = re.sub(r"[^a-z0-9]+", "_", m.group("name").strip().lower()).strip("_")
        out[f"{name}_ms"] = stats
    return out


def find_trtexec() -> str | None:
    for candidate in TRTEXEC_CANDIDATES:
        found = shutil.which(candidate)
        if found:
            return found
    return None


def _shape(input_name: str, batch: int, chw: Sequence[int]) -> str:
    return f"{input_name}:" + "x".join(str(d) for d in (batch, *chw))


def trtexec_command(trtexec: str, onnx_path: Path, plan_path: Path, precision: str, engine_spec: Engine,
                    max_batch: int, input_name: str, input_shape_chw: Sequence[int],
                    timing_cache_path: Path, trt_major: int, layer_info_path: Path) -> list[str]:
    """The trtexec argument list that matches the Python builder's settings (never a shell string).

    Strongly typed like the Python builder: TensorRT 11 is always strongly typed (and removed
    --fp16/--int8); on 10 --stronglyTyped is passed, so the ONNX variant alone sets precision.
    fp32 gets --noTF32 (TF32 is on by default). The benchmark runs at the opt batch, the one the
    profile is tuned for.
    """
    cmd = [trtexec, f"--onnx={onnx_path}", f"--saveEngine={plan_path}",
           f"--minShapes={_shape(input_name, engine_spec.min_batch, input_shape_chw)}",
           f"--optShapes={_shape(input_name, engine_spec.opt_batch, input_shape_chw)}",
           f"--maxShapes={_shape(input_name, max_batch, input_shape_chw)}",
           f"--shapes={_shape(input_name, engine_spec.opt_batch, input_shape_chw)}",
           f"--memPoolSize=workspace:{engine_spec.workspace_mib}M",
           f"--timingCacheFile={timing_cache_path}",
           "--profilingVerbosity=detailed", f"--exportLayerInfo={layer_info_path}",
           "--percentile=90,95,99"]
    if trt_major < 11:
        cmd.append("--stronglyTyped")
    if precision == "fp32":
        cmd.append("--noTF32")
    if engine_spec.version_compatible:
        cmd.append("--versionCompatible")
    if engine_spec.hardware_compatible:
        cmd.append("--hardwareCompatibilityLevel=ampere+")
    return cmd


def _trtexec_version(trtexec: str) -> str | None:
    # Prefer the Python package's version (same container); else ask trtexec itself.
    trt, _ = import_tensorrt()
    if trt is not None:
        return str(trt.__version__)
    try:
        proc = subprocess.run([trtexec, "--help"], capture_output=True, text=True, timeout=60, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return parse_trtexec_output(proc.stdout + proc.stderr).get("tensorrt_version")


def build_plan_trtexec(onnx_path: Path, plan_path: Path, precision: str, engine_spec: Engine, max_batch: int,
                       input_name: str, input_shape_chw: Sequence[int], timing_cache_path: Path) -> dict[str, Any]:
    trtexec = find_trtexec()
    if trtexec is None:
        raise EngineUnavailable("engine.builder = 'trtexec' but no trtexec binary is on PATH or in "
                                f"/usr/src/tensorrt/bin. {DOCKER_HINT}")
    if gpu_info() is None:
        raise EngineUnavailable(f"trtexec needs a CUDA GPU and none is visible. {DOCKER_HINT}")
    if engine_spec.int8_implicit_calibrator and precision == "int8":
        raise ValueError("engine.int8_implicit_calibrator needs engine.builder = 'python' "
                         "(trtexec cannot calibrate from images)")
    version = _trtexec_version(trtexec) or "unknown"
    major = tensorrt_major(version) if version[0].isdigit() else 10
    layer_info = plan_path.with_name(plan_path.stem + ".trtexec_layers.json")
    timing_cache_path.parent.mkdir(parents=True, exist_ok=True)
    cmd = trtexec_command(trtexec, onnx_path, plan_path, precision, engine_spec, max_batch, input_name,
                          input_shape_chw, timing_cache_path, major, layer_info)
    cache_reused = timing_cache_path.exists()
    started = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - started
    log = proc.stdout + proc.stderr
    if proc.returncode != 0 or not plan_path.exists():
        tail = "\n".join(log.splitlines()[-30:])
        raise EngineBuildError(f"trtexec failed (exit {proc.returncode}) for {onnx_path}:\n{tail}")
    plan_path.with_name(plan_path.stem + ".trtexec.log").write_text(log)
    perf = parse_trtexec_output(log)
    if "throughput_qps" in perf:
        perf["images_per_s"] = perf["throughput_qps"] * engine_spec.opt_batch
        perf["batch"] = engine_spec.opt_batch
    inspected, summary = write_inspection(plan_path, layer_info.read_text() if layer_info.exists() else "")
    layer_info.unlink(missing_ok=True)
    info = common_info(plan_path, precision, engine_spec, max_batch, input_name, input_shape_chw,
                        timing_cache_path, cache_reused, version, seconds)
    info.update(builder="trtexec", command=[os.path.basename(cmd[0]), *cmd[1:]],
                typing="strong", trtexec=perf,
                inspector=str(inspected), layer_summary=summary)
    return info

"""Engine stage (gpu target): ONNX variant -> TensorRT plan, for TensorRT 10.x and 11.x.

Precision lives in the ONNX variant: an fp16 ONNX with FP32 I/O, an int8 ONNX
with explicit Q/DQ nodes. Every network is built strongly typed (the only mode of TensorRT 11;
on 10 the weak-typing APIs are deprecated since 10.12 and may pick FP32 kernels for an fp16
graph), so the graph decides. The one exception: on 10, int8 can instead come from implicit
calibration (IInt8EntropyCalibrator2 with a cache file) of the fp32 ONNX, which needs weak typing
and the INT8 flag. "fp32" plans are built without TF32 (on by default in TensorRT), so fp32
means IEEE fp32 math.

Two builders share one entry point, :func:`build_plan`: the Python API (default) and trtexec
(`engine.builder = "trtexec"`), with the same profile, precision, workspace and timing cache.

TensorRT is imported lazily everywhere: this package imports, and its pure helpers
(:func:`parse_trtexec_output`, :func:`trtexec_command`, :func:`summarize_layers`,
:func:`check_onnx_for_tensorrt`) run, on machines without TensorRT or a GPU. Callers that need
TensorRT get :class:`EngineUnavailable`, whose message says why and points to docker compose.

By concern: whether TensorRT is usable here (runners.tensorrt_env, shared with the TensorRT
runner), ONNX checks (onnx_checks, run by the plan stage before TensorRT sees the file), the
Python API build (api), trtexec (trtexec), the inspector summary (inspection), the plan against
its ONNX (validation), and what they share (common). This module is their public surface.
"""
from __future__ import annotations

from builders.engine.api import CalibrationFeed, build_plan, builder_settings
from builders.engine.common import DEFAULT_PLAN, EngineBuildError, plan_filename
from builders.engine.inspection import summarize_layers
from builders.engine.onnx_checks import check_onnx_for_tensorrt
from builders.engine.trtexec import parse_trtexec_output, trtexec_command
from builders.engine.validation import validate_plan
from runners.tensorrt_env import DOCKER_HINT, EngineUnavailable, gpu_info, require_tensorrt, tensorrt_available

__all__ = ["CalibrationFeed", "DEFAULT_PLAN", "DOCKER_HINT", "EngineBuildError", "EngineUnavailable",
           "build_plan", "builder_settings", "check_onnx_for_tensorrt", "gpu_info", "parse_trtexec_output",
           "plan_filename", "require_tensorrt", "summarize_layers", "tensorrt_available", "trtexec_command",
           "validate_plan"]

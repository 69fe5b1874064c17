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

TensorRT is imported lazily everywhere: this module imports, and its pure helpers
(:func:`parse_trtexec_output`, :func:`trtexec_command`, :func:`summarize_layers`,
:func:`check_onnx_for_tensorrt`) run, on machines without TensorRT or a GPU. Callers that need
TensorRT get :class:`EngineUnavailable`, whose message says why and points to docker compose.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import subprocess
import time
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, Sequence

import numpy as np

if TYPE_CHECKING:
    from types import ModuleType

    import tensorrt

    from builders.spec import Engine

DOCKER_HINT = ("Build and serve the gpu target inside NVIDIA's containers instead: "
               "`docker compose up` (builder: TensorRT container, then Triton; see docs/gpu.md).")
DEFAULT_PLAN = "model.plan"
TRTEXEC_CANDIDATES = ("trtexec", "/usr/src/tensorrt/bin/trtexec")
log = logging.getLogger(__name__)


class EngineUnavailable(RuntimeError):
    """TensorRT or a CUDA GPU is missing here; the message says which and where to build instead."""


class EngineBuildError(RuntimeError):
    """TensorRT was present but refused the ONNX or the build failed; the message carries its errors."""


# ---------------------------------------------------------------- what is installed


def _import_tensorrt() -> tuple[ModuleType | None, str]:
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
    trt, why = _import_tensorrt()
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


def plan_filename(compute_capability: str | None, hardware_compatible: bool = False) -> str:
    """File name of a plan inside the version folder.

    A plan runs only on the compute capability it was built on, so plans for several GPU
    architectures coexist as model_sm<cc>.plan, selected by Triton's cc_model_filenames
    ("9.0" -> model_sm90.plan). A hardware-compatible plan runs on every Ampere+ GPU: model.plan.
    """
    if hardware_compatible or not compute_capability:
        return DEFAULT_PLAN
    return f"model_sm{compute_capability.replace('.', '')}.plan"


def builder_settings(precision: str, trt_major: int, implicit_calibrator: bool,
                     version_compatible: bool) -> dict[str, Any]:
    """How a plan of `precision` is built: {"strongly_typed", "set": [...], "clear": [...]}.

    Names are trt.BuilderFlag members, so this runs without TensorRT. Strong typing everywhere
    except the TensorRT 10 implicit calibrator (weak typing + INT8); TF32 cleared for fp32;
    VERSION_COMPATIBLE when asked for (Triton then needs version-compatible=true).
    """
    if implicit_calibrator and trt_major >= 11:
        raise ValueError("engine.int8_implicit_calibrator needs TensorRT 10 (11 removed the calibrator)")
    strongly_typed = not (implicit_calibrator and precision == "int8")
    set_flags = [] if strongly_typed else ["INT8"]
    if version_compatible:
        set_flags.append("VERSION_COMPATIBLE")
    return {"strongly_typed": strongly_typed, "set": set_flags,
            "clear": ["TF32"] if precision == "fp32" else []}


# ---------------------------------------------------------------- ONNX checks (run everywhere)

_QUANT_OPS_TRT_REJECTS = {"DynamicQuantizeLinear", "QLinearConv", "QLinearMatMul", "ConvInteger",
                          "MatMulInteger"}


def check_onnx_for_tensorrt(onnx_path: Path, precision: str, input_name: str | None = None) -> list[str]:
    """Problems that would stop TensorRT's ONNX parser or change the precision; [] when fine.

    Checks (docs/design.md, TensorRT): opset >= 13, a dynamic batch axis on the input, FP32 I/O, an fp16
    variant that really holds fp16 weights, and Q/DQ that TensorRT accepts (symmetric int8 with
    zero points 0, positive scales, per-tensor activations, per-channel weights on the
    output-channel axis, no dynamic or QOperator-style quantization).
    """
    import onnx
    from onnx import TensorProto, numpy_helper

    model = onnx.load(str(onnx_path))
    graph = model.graph
    problems: list[str] = []
    opset = max((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), default=0)
    if opset < 13:
        problems.append(f"opset {opset} < 13: TensorRT needs opset >= 13 for per-channel Q/DQ")

    inits = {i.name: i for i in graph.initializer}
    real_inputs = [i for i in graph.input if i.name not in inits]
    for vi in list(real_inputs) + list(graph.output):
        if vi.type.tensor_type.elem_type != TensorProto.FLOAT:
            problems.append(f"I/O tensor {vi.name!r} is {TensorProto.DataType.Name(vi.type.tensor_type.elem_type)}, "
                            "expected FLOAT (fp16/int8 variants keep FP32 I/O)")
    for vi in real_inputs:
        if input_name is not None and vi.name != input_name:
            problems.append(f"input {vi.name!r} is not the expected {input_name!r}")
        dims = vi.type.tensor_type.shape.dim
        if not dims or dims[0].HasField("dim_value"):
            problems.append(f"input {vi.name!r} has no dynamic batch axis (dim 0 must be symbolic "
                            "for an optimization profile)")

    ops = Counter(n.op_type for n in graph.node)
    if precision == "fp16" and not any(i.data_type == TensorProto.FLOAT16 for i in inits.values()):
        problems.append("fp16 variant holds no FLOAT16 initializers: it is still an fp32 graph")
    if precision != "int8":
        if ops["QuantizeLinear"] or ops["DequantizeLinear"]:
            problems.append(f"{precision} variant contains Q/DQ nodes")
        return problems

    rejected = sorted(op for op in _QUANT_OPS_TRT_REJECTS if ops[op])
    if rejected:
        problems.append(f"int8 variant uses {rejected}: TensorRT takes only QuantizeLinear/DequantizeLinear")
    if not ops["QuantizeLinear"] or not ops["DequantizeLinear"]:
        problems.append("int8 variant has no QuantizeLinear/DequantizeLinear nodes (explicit quantization)")

    consumers: dict[str, list[Any]] = {}
    for n in graph.node:
        for name in n.input:
            consumers.setdefault(name, []).append(n)
    for n in graph.node:
        if n.op_type not in ("QuantizeLinear", "DequantizeLinear"):
            continue
        scale = numpy_helper.to_array(inits[n.input[1]]) if n.input[1] in inits else None
        zero = numpy_helper.to_array(inits[n.input[2]]) if len(n.input) > 2 and n.input[2] in inits else None
        where = f"{n.op_type} {n.name or n.output[0]!r}"
        if scale is not None and not np.all(scale > 0):
            problems.append(f"{where}: scales must be positive")
        source = inits.get(n.input[0])
        if n.op_type == "DequantizeLinear" and source is not None and source.data_type == TensorProto.INT32:
            problems.append(f"{where}: int32 quantized bias; TensorRT's Q/DQ takes int8 (quantize with "
                            "extra_options QuantizeBias=False and keep biases float)")
            continue
        if zero is not None:
            if zero.dtype != np.int8:
                problems.append(f"{where}: zero point type {zero.dtype} (TensorRT needs int8, symmetric)")
            elif np.any(zero != 0):
                problems.append(f"{where}: zero points must be 0 (symmetric quantization)")
        per_channel = scale is not None and scale.size > 1
        is_weight = n.op_type == "DequantizeLinear" and n.input[0] in inits
        if per_channel and not is_weight:
            problems.append(f"{where}: activations must be quantized per tensor")
        if per_channel and is_weight:
            axis = next((a.i for a in n.attribute if a.name == "axis"), 1)
            weight = inits[n.input[0]]
            rank = len(weight.dims)
            axis = axis % rank if rank else axis
            for c in consumers.get(n.output[0], []):
                trans_b = next((a.i for a in c.attribute if a.name == "transB"), 0)
                want = {"Conv": 0, "ConvTranspose": 1, "MatMul": rank - 1,
                        "Gemm": 0 if trans_b else 1}.get(c.op_type)
                if want is not None and axis != want:
                    problems.append(f"{where}: per-channel weight axis {axis}, but {c.op_type} "
                                    f"needs its output-channel axis {want}")
    return problems


def _onnx_has_qdq(onnx_path: Path) -> bool:
    import onnx

    return any(n.op_type == "QuantizeLinear" for n in onnx.load(str(onnx_path), load_external_data=False).graph.node)


# ---------------------------------------------------------------- engine inspector summary


def _tensor_precision(tensor: dict[str, Any]) -> str:
    # TensorRT 10 writes one "Format/Datatype" string ("Channel major FP16 format ...",
    # "Thirty-two wide channel vectorized row major Int8 format", "Float"); 11 splits it into
    # "DataType" ("Half", "Int8", ...) and "Format".
    text = str(_key(tensor, "DataType") or _key(tensor, "Format/Datatype") or "").lower()
    for needle, name in (("int8", "int8"), ("fp8", "fp8"), ("int4", "int4"), ("bf16", "bf16"),
                         ("bfloat16", "bf16"), ("fp16", "fp16"), ("half", "fp16"), ("fp32", "fp32"),
                         ("float", "fp32"), ("int32", "int32"), ("int64", "int64"), ("bool", "bool")):
        if needle in text:
            return name
    return "unknown"


def _key(mapping: dict[str, Any], name: str, default: Any = None) -> Any:
    # The inspector's JSON keys differ in case between TensorRT versions ("LayerType" in 10,
    # "layerType"/"layer_type" spellings elsewhere): match ignoring case and underscores.
    if name in mapping:
        return mapping[name]
    wanted = name.replace("_", "").lower()
    for key, value in mapping.items():
        if isinstance(key, str) and key.replace("_", "").lower() == wanted:
            return value
    return default


def summarize_layers(engine_information: dict[str, Any]) -> dict[str, Any]:
    """Layer count and precision histogram from IEngineInspector's JSON (TensorRT 10 or 11).

    A layer's precision is that of its first input whose type is known (what its kernel reads),
    falling back to its outputs; reformat layers are counted separately, since they only
    convert between precisions/layouts and show where graph optimization could not fuse.
    """
    layers = [la for la in _key(engine_information, "Layers", []) or [] if isinstance(la, dict)]
    precisions: Counter[str] = Counter()
    types: Counter[str] = Counter()
    for layer in layers:
        kind = str(_key(layer, "LayerType", "unknown"))
        types[kind] += 1
        if kind == "Reformat":
            continue
        tensors = list(_key(layer, "Inputs", []) or []) + list(_key(layer, "Outputs", []) or [])
        known = [p for p in (_tensor_precision(t) for t in tensors if isinstance(t, dict)) if p != "unknown"]
        precisions[known[0] if known else "unknown"] += 1
    return {"layers": len(layers), "reformat_layers": types.get("Reformat", 0),
            "precisions": dict(sorted(precisions.items())), "layer_types": dict(types.most_common())}


def _write_inspection(plan_path: Path, engine_information_json: str) -> tuple[Path, dict[str, Any]]:
    info = json.loads(engine_information_json) if engine_information_json.strip() else {}
    summary = summarize_layers(info)
    out = plan_path.with_name(plan_path.stem + ".layers.json")
    out.write_text(json.dumps({"summary": summary, "engine_information": info}, indent=1))
    return out, summary


# ---------------------------------------------------------------- trtexec


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
    trt, _ = _import_tensorrt()
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
    inspected, summary = _write_inspection(plan_path, layer_info.read_text() if layer_info.exists() else "")
    layer_info.unlink(missing_ok=True)
    info = _common_info(plan_path, precision, engine_spec, max_batch, input_name, input_shape_chw,
                        timing_cache_path, cache_reused, version, seconds)
    info.update(builder="trtexec", command=[os.path.basename(cmd[0]), *cmd[1:]],
                typing="strong", trtexec=perf,
                inspector=str(inspected), layer_summary=summary)
    return info


# ---------------------------------------------------------------- Python API builder


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _common_info(plan_path: Path, precision: str, engine_spec: Engine, max_batch: int, input_name: str,
                 chw: Sequence[int], timing_cache_path: Path, cache_reused: bool, version: str,
                 seconds: float) -> dict[str, Any]:
    gpu = gpu_info() or {}
    return {
        "precision": precision, "plan": str(plan_path), "plan_bytes": plan_path.stat().st_size,
        "plan_sha256": _sha256(plan_path), "tensorrt_version": version,
        "gpu_name": gpu.get("name"), "compute_capability": gpu.get("compute_capability"),
        "profile": {"input": input_name, "min": [engine_spec.min_batch, *chw],
                    "opt": [engine_spec.opt_batch, *chw], "max": [max_batch, *chw]},
        "max_batch_size": max_batch, "workspace_mib": engine_spec.workspace_mib,
        "version_compatible": engine_spec.version_compatible,
        "hardware_compatibility": "ampere+" if engine_spec.hardware_compatible else "none",
        "timing_cache": str(timing_cache_path), "timing_cache_reused": cache_reused,
        "build_seconds": round(seconds, 2),
    }


def _write_atomic(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def _calibration_batches(images: np.ndarray, batch: int) -> Iterator[np.ndarray]:
    # Full batches only: the calibration profile has one fixed shape.
    for start in range(0, len(images) - batch + 1, batch):
        yield np.ascontiguousarray(images[start:start + batch], dtype=np.float32)


class CalibrationFeed:
    """The batches a calibrator hands TensorRT, and any error raised while making one.

    TensorRT's bindings swallow an exception raised inside get_batch (calibration just stops
    early, from fewer images, silently). The feed catches it, logs it, ends calibration, and
    :meth:`raise_if_failed` re-raises it after the build. `upload` turns a host batch into
    device pointers (CUDA tensors on a GPU host).
    """

    def __init__(self, images: np.ndarray, batch: int, upload: Any) -> None:
        self._batches = _calibration_batches(images, batch)
        self._upload = upload
        self.batches_fed = 0
        self.error: BaseException | None = None

    def next_pointers(self) -> list[int]:
        if self.error is not None:
            return []
        try:
            chunk = next(self._batches, None)
            if chunk is None:
                return []  # no more data: calibration ends
            pointers = list(self._upload(chunk))
        except Exception as err:  # noqa: BLE001 - re-raised by raise_if_failed after the build
            log.exception("calibration batch %d failed; calibration stops", self.batches_fed)
            self.error = err
            return []
        self.batches_fed += 1
        return pointers

    def raise_if_failed(self) -> None:
        if self.error is not None:
            raise EngineBuildError(f"int8 calibration failed at batch {self.batches_fed}: "
                                   f"{type(self.error).__name__}: {self.error}") from self.error


def _entropy_calibrator(images: np.ndarray, batch: int, cache_path: Path) -> Any:
    """A TensorRT 10 IInt8EntropyCalibrator2 feeding preprocessed NCHW float32 images.

    The cache file makes the next build skip calibration (TensorRT reads it back first); delete it
    after changing the calibration images. Device buffers are torch CUDA tensors, kept alive until
    TensorRT asks for the next batch.
    """
    import tensorrt as trt
    import torch

    class EntropyCalibrator(trt.IInt8EntropyCalibrator2):
        def __init__(self) -> None:
            trt.IInt8EntropyCalibrator2.__init__(self)
            self._device: torch.Tensor | None = None
            self.feed = CalibrationFeed(images, batch, self._upload)

        def _upload(self, chunk: np.ndarray) -> list[int]:
            self._device = torch.from_numpy(chunk).cuda()
            torch.cuda.synchronize()
            return [int(self._device.data_ptr())]

        def get_batch_size(self) -> int:
            return batch

        def get_batch(self, names: list[str]) -> list[int]:
            return self.feed.next_pointers()

        def read_calibration_cache(self) -> bytes | None:  # None: no cache yet, calibrate
            return cache_path.read_bytes() if cache_path.exists() else None

        def write_calibration_cache(self, cache: Any) -> None:
            _write_atomic(cache_path, bytes(cache))

    return EntropyCalibrator()


def build_plan(onnx_path: Path, plan_path: Path, precision: str, engine_spec: Engine, max_batch: int,
               input_name: str, input_shape_chw: Sequence[int], timing_cache_path: Path,
               calib_images: np.ndarray | None = None, calib_cache_path: Path | None = None) -> dict[str, Any]:
    """Build one plan and return what the manifest records about it.

    onnx_path is the variant for `precision` (fp32 / fp16 / Q/DQ int8); for int8 with
    engine_spec.int8_implicit_calibrator (TensorRT 10 only) it is the fp32 ONNX and
    calib_images (N×C×H×W float32, preprocessed) drive IInt8EntropyCalibrator2. One
    optimization profile: min_batch / opt_batch / max_batch (Triton's max_batch_size must equal
    max_batch). Raises EngineUnavailable without TensorRT or a GPU, EngineBuildError when
    TensorRT rejects the ONNX.
    """
    onnx_path, plan_path, timing_cache_path = Path(onnx_path), Path(plan_path), Path(timing_cache_path)
    if precision not in ("fp32", "fp16", "int8"):
        raise ValueError(f"precision {precision!r}: allowed fp32, fp16, int8")
    if not engine_spec.min_batch <= engine_spec.opt_batch <= max_batch:
        raise ValueError(f"profile needs min_batch ({engine_spec.min_batch}) <= opt_batch "
                         f"({engine_spec.opt_batch}) <= max_batch ({max_batch})")
    if engine_spec.builder == "trtexec":
        return build_plan_trtexec(onnx_path, plan_path, precision, engine_spec, max_batch, input_name,
                                  input_shape_chw, timing_cache_path)
    require_tensorrt()
    import tensorrt as trt

    major = tensorrt_major(trt.__version__)
    implicit = precision == "int8" and engine_spec.int8_implicit_calibrator
    if implicit:
        if not hasattr(trt, "IInt8EntropyCalibrator2"):
            raise EngineUnavailable(f"TensorRT {trt.__version__} has no IInt8EntropyCalibrator2 (removed in 11): "
                                    "set engine.int8_implicit_calibrator = false to use the Q/DQ ONNX")
        if calib_images is None or len(calib_images) < 1:
            raise ValueError("engine.int8_implicit_calibrator needs calib_images (N×C×H×W float32)")
        if _onnx_has_qdq(onnx_path):
            raise ValueError(f"{onnx_path} already has Q/DQ nodes: implicit calibration takes the fp32 ONNX")

    settings = builder_settings(precision, major, implicit, engine_spec.version_compatible)
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    # Strong typing (the only mode in 11, where the flag is still accepted): the ONNX variant
    # decides precision. Weak typing only for 10's implicit calibrator, which needs it.
    strongly_typed = settings["strongly_typed"]
    flags = 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED) if strongly_typed else 0
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "\n".join(f"  {parser.get_error(i)}" for i in range(parser.num_errors))
        raise EngineBuildError(f"TensorRT {trt.__version__} could not parse {onnx_path}:\n{errors}")

    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, engine_spec.workspace_mib << 20)
    # DETAILED keeps per-layer precision and tactics in the plan for the inspector summary.
    config.profiling_verbosity = trt.ProfilingVerbosity.DETAILED
    chw = list(input_shape_chw)
    profile = builder.create_optimization_profile()
    profile.set_shape(input_name, trt.Dims([engine_spec.min_batch, *chw]), trt.Dims([engine_spec.opt_batch, *chw]),
                      trt.Dims([max_batch, *chw]))
    config.add_optimization_profile(profile)

    # BuilderFlag.INT8 exists only up to TensorRT 10: set only on the implicit-calibrator path.
    # VERSION_COMPATIBLE puts a lean runtime in the plan (Triton: version-compatible=true).
    for name in settings["set"]:
        config.set_flag(getattr(trt.BuilderFlag, name))
    for name in settings["clear"]:
        if hasattr(trt.BuilderFlag, name):  # TF32: on by default; fp32 plans clear it
            config.clear_flag(getattr(trt.BuilderFlag, name))
    flag_names = list(settings["set"]) + [f"-{name}" for name in settings["clear"]]
    if engine_spec.hardware_compatible:
        config.hardware_compatibility_level = trt.HardwareCompatibilityLevel.AMPERE_PLUS

    calibration: dict[str, Any] | None = None
    calibrator: Any = None
    if implicit:
        assert calib_images is not None
        cache_path = Path(calib_cache_path or plan_path.with_name(plan_path.stem + ".calib.cache"))
        batch = max(1, min(engine_spec.opt_batch, max_batch, len(calib_images)))
        calib_profile = builder.create_optimization_profile()
        fixed = trt.Dims([batch, *chw])
        calib_profile.set_shape(input_name, fixed, fixed, fixed)
        config.set_calibration_profile(calib_profile)
        calibration = {"method": "IInt8EntropyCalibrator2", "cache": str(cache_path),
                       "cache_reused": cache_path.exists(), "images": int(len(calib_images) // batch * batch)}
        calibrator = _entropy_calibrator(calib_images, batch, cache_path)
        config.int8_calibrator = calibrator
    elif precision == "int8":
        calibration = {"method": "explicit Q/DQ in the ONNX"}

    cache_bytes = timing_cache_path.read_bytes() if timing_cache_path.exists() else b""
    # Always attach a cache (empty on the first build) so it can be saved for the next build.
    timing_cache = config.create_timing_cache(cache_bytes)
    accepted = timing_cache is not None and config.set_timing_cache(timing_cache, False)
    if not accepted:  # a cache from another TensorRT version or GPU: start afresh
        config.set_timing_cache(config.create_timing_cache(b""), False)
    cache_reused = bool(cache_bytes) and accepted

    started = time.perf_counter()
    serialized = builder.build_serialized_network(network, config)
    seconds = time.perf_counter() - started
    if calibrator is not None:
        calibrator.feed.raise_if_failed()  # an error inside get_batch, which the bindings swallowed
    if serialized is None:
        raise EngineBuildError(f"TensorRT {trt.__version__} failed to build {onnx_path} ({precision}); "
                               "see the TensorRT log above")
    plan = bytes(memoryview(serialized))
    _write_atomic(plan_path, plan)
    _write_atomic(timing_cache_path, bytes(memoryview(config.get_timing_cache().serialize())))

    inspected, summary = _inspect(logger, plan, plan_path, input_name, [engine_spec.opt_batch, *chw],
                                  engine_spec.version_compatible)
    info = _common_info(plan_path, precision, engine_spec, max_batch, input_name, chw, timing_cache_path,
                        cache_reused, str(trt.__version__), seconds)
    info.update(builder="python", typing="strong" if strongly_typed else "weak", builder_flags=flag_names,
                calibration=calibration, inspector=str(inspected), layer_summary=summary)
    return info


def _inspect(logger: tensorrt.ILogger, plan: bytes, plan_path: Path, input_name: str, opt_shape: list[int],
             version_compatible: bool) -> tuple[Path, dict[str, Any]]:
    import tensorrt as trt

    runtime = trt.Runtime(logger)
    # A version-compatible plan carries its own lean runtime (host code) that must be allowed to load.
    runtime.engine_host_code_allowed = version_compatible
    engine = runtime.deserialize_cuda_engine(plan)
    if engine is None:
        raise EngineBuildError(f"the plan just built could not be deserialized: {plan_path}")
    inspector = engine.create_engine_inspector()
    # With dynamic shapes, formats read "N/A due to dynamic shapes" unless a context with
    # concrete shapes is attached: inspect at the opt batch.
    context = engine.create_execution_context()
    context.set_input_shape(input_name, opt_shape)
    inspector.execution_context = context
    return _write_inspection(plan_path, inspector.get_engine_information(trt.LayerInformationFormat.JSON))


# ---------------------------------------------------------------- validation after a build


def validate_plan(plan_path: Path, onnx_path: Path, images: np.ndarray, input_name: str | None = None,
                  version_compatible: bool = False, bench_batches: Sequence[int] = (),
                  bench_iterations: int = 50) -> dict[str, Any]:
    """Run the plan (TensorRT runtime) and the same ONNX (ONNX Runtime, CPU) on `images`.

    Returns max/mean abs logit difference and top-1 agreement (ONNX Runtime is the reference)
    and, for each batch in bench_batches, a trtexec-style latency / throughput figure of the
    plan alone. Raises EngineUnavailable without TensorRT or a GPU.
    """
    from runners.compare import compare_logits, run_batches
    from runners.onnxruntime_runner import OnnxRuntimeRunner
    from runners.tensorrt_runner import TensorRTRunner

    images = np.ascontiguousarray(images, dtype=np.float32)
    trt_runner = TensorRTRunner(plan_path, version_compatible=version_compatible)
    with trt_runner:
        name = input_name or trt_runner.input_names[0]
        output = trt_runner.output_names[0]
        step = trt_runner.max_batch(name)
        got = run_batches(trt_runner, name, images, output, batch=step)
        bench = [trt_runner.benchmark(b, bench_iterations) for b in bench_batches if b <= step]
    with OnnxRuntimeRunner(onnx_path) as ort_runner:
        want = run_batches(ort_runner, name, images, output, batch=step)
    result = compare_logits(want, got, f"onnxruntime:{Path(onnx_path).name}", trt_runner.name).as_dict()
    result["benchmark"] = bench
    return result

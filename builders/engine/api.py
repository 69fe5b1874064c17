"""The Python API builder (default): strongly typed networks, one optimization profile, a timing
cache, and TensorRT 10's implicit entropy calibrator for int8 where asked."""
from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, Sequence

import numpy as np

from builders.engine.common import EngineBuildError, common_info, write_atomic
from builders.engine.inspection import inspect_plan
from builders.engine.onnx_checks import onnx_has_qdq
from builders.engine.trtexec import build_plan_trtexec
from contract.layout import PRECISIONS
from runners.tensorrt_env import EngineUnavailable, require_tensorrt, tensorrt_major

if TYPE_CHECKING:
    from contract.spec import Engine

log = logging.getLogger(__name__)


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
            write_atomic(cache_path, bytes(cache))

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
    if precision not in PRECISIONS:
        raise ValueError(f"precision {precision!r}: allowed {', '.join(PRECISIONS)}")
    if not engine_spec.min_batch <= engine_spec.opt_batch <= max_batch:
        raise ValueError(f"profile needs min_batch ({engine_spec.min_batch}) <= opt_batch "
                         f"({engine_spec.opt_batch}) <= max_batch ({max_batch})")
    if engine_spec.builder == "trtexec":
        return build_plan_trtexec(onnx_path, plan_path, precision, engine_spec, max_batch, input_name,
                                  input_shape_chw, timing_cache_path)
    require_tensorrt()
    import tensorrt as trt

    implicit = precision == "int8" and engine_spec.int8_implicit_calibrator
    if implicit:
        _check_implicit_inputs(trt, onnx_path, calib_images)
    settings = builder_settings(precision, tensorrt_major(trt.__version__), implicit, engine_spec.version_compatible)
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = _parse_onnx(trt, builder, logger, onnx_path, settings["strongly_typed"])
    chw = list(input_shape_chw)
    config, flag_names = _builder_config(trt, builder, settings, engine_spec, input_name, chw, max_batch)

    calibration: dict[str, Any] | None = None
    calibrator: Any = None
    if implicit:
        assert calib_images is not None
        cache_path = Path(calib_cache_path or plan_path.with_name(plan_path.stem + ".calib.cache"))
        calibration, calibrator = _attach_calibrator(trt, builder, config, calib_images, cache_path, engine_spec,
                                                     input_name, chw, max_batch)
    elif precision == "int8":
        calibration = {"method": "explicit Q/DQ in the ONNX"}
    cache_reused = _attach_timing_cache(config, timing_cache_path)

    started = time.perf_counter()
    serialized = builder.build_serialized_network(network, config)
    seconds = time.perf_counter() - started
    if calibrator is not None:
        calibrator.feed.raise_if_failed()  # an error inside get_batch, which the bindings swallowed
    if serialized is None:
        raise EngineBuildError(f"TensorRT {trt.__version__} failed to build {onnx_path} ({precision}); "
                               "see the TensorRT log above")
    plan = bytes(memoryview(serialized))
    write_atomic(plan_path, plan)
    write_atomic(timing_cache_path, bytes(memoryview(config.get_timing_cache().serialize())))

    inspected, summary = inspect_plan(logger, plan, plan_path, input_name, [engine_spec.opt_batch, *chw],
                                      engine_spec.version_compatible)
    info = common_info(plan_path, precision, engine_spec, max_batch, input_name, chw, timing_cache_path,
                       cache_reused, str(trt.__version__), seconds)
    info.update(builder="python", typing="strong" if settings["strongly_typed"] else "weak",
                builder_flags=flag_names, calibration=calibration, inspector=str(inspected), layer_summary=summary)
    return info


def _check_implicit_inputs(trt: Any, onnx_path: Path, calib_images: np.ndarray | None) -> None:
    """What TensorRT 10's implicit calibrator needs: the class, images, and the fp32 (no Q/DQ) ONNX."""
    if not hasattr(trt, "IInt8EntropyCalibrator2"):
        raise EngineUnavailable(f"TensorRT {trt.__version__} has no IInt8EntropyCalibrator2 (removed in 11): "
                                "set engine.int8_implicit_calibrator = false to use the Q/DQ ONNX")
    if calib_images is None or len(calib_images) < 1:
        raise ValueError("engine.int8_implicit_calibrator needs calib_images (N×C×H×W float32)")
    if onnx_has_qdq(onnx_path):
        raise ValueError(f"{onnx_path} already has Q/DQ nodes: implicit calibration takes the fp32 ONNX")


def _parse_onnx(trt: Any, builder: Any, logger: Any, onnx_path: Path, strongly_typed: bool) -> Any:
    """The network parsed from `onnx_path`; EngineBuildError with the parser's errors when it fails."""
    # Strong typing (the only mode in 11, where the flag is still accepted): the ONNX variant
    # decides precision. Weak typing only for 10's implicit calibrator, which needs it.
    flags = 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED) if strongly_typed else 0
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "\n".join(f"  {parser.get_error(i)}" for i in range(parser.num_errors))
        raise EngineBuildError(f"TensorRT {trt.__version__} could not parse {onnx_path}:\n{errors}")
    return network


def _builder_config(trt: Any, builder: Any, settings: dict[str, Any], engine_spec: Engine, input_name: str,
                    chw: list[int], max_batch: int) -> tuple[Any, list[str]]:
    """The builder config (workspace, the one optimization profile, flags) and the flags' names as
    the manifest records them ("-TF32" for a cleared flag)."""
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, engine_spec.workspace_mib << 20)
    # DETAILED keeps per-layer precision and tactics in the plan for the inspector summary.
    config.profiling_verbosity = trt.ProfilingVerbosity.DETAILED
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
    if engine_spec.hardware_compatible:
        config.hardware_compatibility_level = trt.HardwareCompatibilityLevel.AMPERE_PLUS
    return config, list(settings["set"]) + [f"-{name}" for name in settings["clear"]]


def _attach_calibrator(trt: Any, builder: Any, config: Any, calib_images: np.ndarray, cache_path: Path,
                       engine_spec: Engine, input_name: str, chw: list[int],
                       max_batch: int) -> tuple[dict[str, Any], Any]:
    """Set the entropy calibrator and its fixed-shape profile on `config`; returns what the
    manifest records about the calibration and the calibrator (kept alive through the build)."""
    batch = max(1, min(engine_spec.opt_batch, max_batch, len(calib_images)))
    calib_profile = builder.create_optimization_profile()
    fixed = trt.Dims([batch, *chw])
    calib_profile.set_shape(input_name, fixed, fixed, fixed)
    config.set_calibration_profile(calib_profile)
    calibration = {"method": "IInt8EntropyCalibrator2", "cache": str(cache_path),
                   "cache_reused": cache_path.exists(), "images": int(len(calib_images) // batch * batch)}
    calibrator = _entropy_calibrator(calib_images, batch, cache_path)
    config.int8_calibrator = calibrator
    return calibration, calibrator


def _attach_timing_cache(config: Any, timing_cache_path: Path) -> bool:
    """Attach the timing cache at `timing_cache_path` (empty when missing or from another TensorRT
    or GPU, so it can be saved for the next build); True when the saved one was reused."""
    cache_bytes = timing_cache_path.read_bytes() if timing_cache_path.exists() else b""
    timing_cache = config.create_timing_cache(cache_bytes)
    accepted = timing_cache is not None and config.set_timing_cache(timing_cache, False)
    if not accepted:  # a cache from another TensorRT version or GPU: start afresh
        config.set_timing_cache(config.create_timing_cache(b""), False)
    return bool(cache_bytes) and accepted

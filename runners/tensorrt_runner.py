"""TensorRT runner: runs a serialized plan with the TensorRT runtime (same interface as the others).

    with TensorRTRunner("model_repository/gpu/digits_fp16_infer/1/model_sm90.plan") as runner:
        logits = runner.infer({"input": batch})["logits"]

Device buffers are torch CUDA tensors (their data_ptr() is what set_tensor_address takes), and
inference uses the name-based API of TensorRT 10/11: set_input_shape, set_tensor_address,
execute_async_v3 on a torch stream. TensorRT is imported on activate(), so this module imports
anywhere; activate() raises runners.tensorrt_env.EngineUnavailable where TensorRT or a GPU is missing.
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from runners.base import Runner

if TYPE_CHECKING:
    import tensorrt
    import torch


def _dims(dims: tensorrt.Dims) -> list[int]:
    # Dims iterates at run time through __getitem__/__len__; spelled out so type checkers agree.
    return [int(dims[i]) for i in range(len(dims))]


class TensorRTRunner(Runner):
    """Runs one plan. version_compatible: the plan was built version-compatible (it carries a
    lean runtime, host code that TensorRT loads only when allowed)."""

    def __init__(self, plan_path: Path, version_compatible: bool = False, name: str | None = None):
        super().__init__()
        self.plan_path = Path(plan_path)
        self.version_compatible = version_compatible
        self.name = name or f"tensorrt:{self.plan_path.name}"
        self.input_names: list[str] = []
        self.output_names: list[str] = []
        self._runtime: tensorrt.Runtime | None = None
        self._engine: tensorrt.ICudaEngine | None = None
        self._context: tensorrt.IExecutionContext | None = None
        self._stream: torch.cuda.Stream | None = None
        self._dtypes: dict[str, Any] = {}

    def _activate(self) -> None:
        from runners.tensorrt_env import DOCKER_HINT, require_tensorrt

        require_tensorrt()
        import tensorrt as trt
        import torch

        logger = trt.Logger(trt.Logger.WARNING)
        self._runtime = trt.Runtime(logger)
        self._runtime.engine_host_code_allowed = self.version_compatible
        engine = self._runtime.deserialize_cuda_engine(self.plan_path.read_bytes())
        if engine is None:
            # The usual cause: a plan from another TensorRT version or GPU architecture.
            raise RuntimeError(f"TensorRT {trt.__version__} could not load {self.plan_path}: plans run only on "
                               "the TensorRT version and compute capability they were built with "
                               f"(see the TensorRT error above). Rebuild it there. {DOCKER_HINT}")
        self._engine = engine
        self._context = engine.create_execution_context()
        self._stream = torch.cuda.Stream()
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        self.input_names = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        self.output_names = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]
        # numpy dtype -> torch dtype through an empty array, which covers every type both know.
        self._dtypes = {n: torch.from_numpy(np.empty(0, dtype=trt.nptype(engine.get_tensor_dtype(n)))).dtype
                        for n in names}

    def _deactivate(self) -> None:
        # Context before engine before runtime: the order TensorRT objects depend on each other.
        self._context = None
        self._engine = None
        self._runtime = None
        self._stream = None

    def max_batch(self, input_name: str) -> int:
        """The largest batch profile 0 accepts for this input."""
        assert self._engine is not None, "activate() first"
        return int(self._engine.get_tensor_profile_shape(input_name, 0)[2][0])

    def _run(self, inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        import torch

        assert self._context is not None and self._stream is not None
        for name, tensor in inputs.items():
            if not self._context.set_input_shape(name, tuple(tensor.shape)):
                raise ValueError(f"{self.name}: input {name!r} shape {tuple(tensor.shape)} is outside the "
                                 f"plan's optimization profile (max batch {self.max_batch(name)})")
            self._context.set_tensor_address(name, tensor.data_ptr())
        outputs = {}
        for name in self.output_names:
            shape = tuple(_dims(self._context.get_tensor_shape(name)))
            outputs[name] = torch.empty(shape, dtype=self._dtypes[name], device="cuda")
            self._context.set_tensor_address(name, outputs[name].data_ptr())
        if not self._context.execute_async_v3(self._stream.cuda_stream):
            raise RuntimeError(f"{self.name}: execute_async_v3 failed (see the TensorRT error above)")
        return outputs

    def _infer(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        import torch

        missing = set(self.input_names) - set(feed)
        if missing:
            raise KeyError(f"{self.name}: missing inputs {sorted(missing)}; the plan takes {self.input_names}")
        assert self._stream is not None
        with torch.cuda.stream(self._stream):  # copies, kernels and readback on one stream, in order
            inputs = {n: torch.from_numpy(np.ascontiguousarray(feed[n])).to("cuda", dtype=self._dtypes[n])
                      for n in self.input_names}
            outputs = self._run(inputs)
            host = {n: t.cpu() for n, t in outputs.items()}
        self._stream.synchronize()
        return {n: t.numpy() for n, t in host.items()}

    def benchmark(self, batch: int, iterations: int = 50, warmup: int = 10) -> dict[str, float]:
        """trtexec-style GPU compute time of the plan alone at one batch size (inputs already on
        the device, timed with CUDA events): latency percentiles in ms and images/s."""
        import torch

        assert self._stream is not None
        with torch.cuda.stream(self._stream):
            inputs = {}
            for n in self.input_names:
                assert self._engine is not None
                shape = _dims(self._engine.get_tensor_shape(n))  # -1 marks the batch axis
                shape[0] = batch
                inputs[n] = torch.randn(shape, device="cuda").to(self._dtypes[n])
            times = []
            for i in range(warmup + iterations):
                start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                start.record(self._stream)
                self._run(inputs)
                end.record(self._stream)
                end.synchronize()
                if i >= warmup:
                    times.append(start.elapsed_time(end))
        ms = np.array(times)
        return {"batch": batch, "iterations": iterations, "median_ms": float(np.median(ms)),
                "p90_ms": float(np.percentile(ms, 90)), "p99_ms": float(np.percentile(ms, 99)),
                "images_per_s": float(batch * 1000.0 / np.mean(ms))}

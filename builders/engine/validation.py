"""After a build: the plan against its ONNX on the same images (ONNX Runtime is the reference)."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np


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

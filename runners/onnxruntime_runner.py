"""ONNX Runtime runner (CPU execution provider)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from runners.base import Runner


class OnnxRuntimeRunner(Runner):
    """Runs an ONNX file. threads: intra-op threads, 0 lets ONNX Runtime choose."""

    def __init__(self, model_path: Path, threads: int = 0, name: str | None = None):
        super().__init__()
        self.model_path = Path(model_path)
        self.threads = threads
        self.name = name or f"onnxruntime:{self.model_path.name}"
        self.session = None

    def _activate(self) -> None:
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = self.threads
        opts.log_severity_level = 3  # keep fp16 cast warnings out of the build output
        self.session = ort.InferenceSession(str(self.model_path), opts, providers=["CPUExecutionProvider"])

    def _deactivate(self) -> None:
        self.session = None

    def _infer(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        names = [o.name for o in self.session.get_outputs()]
        return dict(zip(names, self.session.run(names, feed)))

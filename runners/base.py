"""One small interface for every runtime, after Polygraphy's runners.

    with OnnxRuntimeRunner("model.onnx") as runner:
        outputs = runner.infer({"input": batch})      # name -> array

A runner is inactive until `activate()` (or `with`), when it loads what it needs; `deactivate()`
frees it. Comparisons (runners.compare) then work the same for PyTorch, ONNX Runtime, TensorRT
and a served Triton model.
"""
from __future__ import annotations

import numpy as np


class Runner:
    """Base class: subclasses set `name` and implement `_activate`, `_infer`, `_deactivate`."""

    name: str = "runner"

    def __init__(self) -> None:
        self.is_active = False

    def activate(self) -> None:
        if not self.is_active:
            self._activate()
            self.is_active = True

    def deactivate(self) -> None:
        if self.is_active:
            self._deactivate()
            self.is_active = False

    def infer(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run one batch. feed maps input names to arrays; returns output names to arrays."""
        if not self.is_active:
            raise RuntimeError(f"{self.name}: call activate() (or use `with`) before infer()")
        return self._infer(feed)

    def __enter__(self) -> "Runner":
        self.activate()
        return self

    def __exit__(self, *exc) -> None:
        self.deactivate()

    def _activate(self) -> None:
        pass

    def _deactivate(self) -> None:
        pass

    def _infer(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        raise NotImplementedError

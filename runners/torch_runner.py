"""PyTorch runner: an nn.Module in eval mode on the CPU."""
from __future__ import annotations

import numpy as np
import torch

from runners.base import Runner


class TorchRunner(Runner):
    """Runs `model` with one named input and one named output (the names the ONNX export uses)."""

    def __init__(self, model: torch.nn.Module, input_name: str = "input", output_name: str = "logits",
                 name: str = "pytorch"):
        super().__init__()
        self.model, self.input_name, self.output_name, self.name = model, input_name, output_name, name

    def _activate(self) -> None:
        self.model.eval()

    @torch.inference_mode()
    def _infer(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        out = self.model(torch.from_numpy(np.ascontiguousarray(feed[self.input_name])))
        return {self.output_name: out.numpy()}

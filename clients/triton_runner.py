"""Triton runner: a served model behind the same Runner interface as PyTorch, ONNX Runtime and TensorRT.

    with TritonRunner("digits_fp32", url="127.0.0.1:8000", protocol="http") as runner:
        logits = runner.infer({"IMAGE": pack_batch(jpegs)})["LOGITS"]

The feed is what the ensemble takes: zero-padded encoded images, uint8 [N, bytes] (one request =
one batch, at most the model's max_batch_size). So runners.compare works unchanged on a served
ensemble; only the input differs from the in-process runners (bytes instead of a float tensor).
"""
from __future__ import annotations

import numpy as np

from contract import layout
from runners.base import Runner


class TritonRunner(Runner):
    """Sends each feed as one request through clients.triton.TritonClient (HTTP or gRPC)."""

    def __init__(self, model: str, url: str | None = None, protocol: str = "http", timeout_s: float = 30.0,
                 shared_memory: bool = False, name: str | None = None, client_kw: dict | None = None):
        """client_kw: further TritonClient arguments (retries, api_key, TLS files; clients.connection.client_options)."""
        super().__init__()
        self.client_kw = dict(client_kw or {}, timeout_s=timeout_s)
        self.model, self.url, self.protocol = model, url, protocol
        self.timeout_s, self.shared_memory = timeout_s, shared_memory
        self.name = name or f"triton-{protocol}:{model}"
        self.client = None
        self.input_name, self.output_name = layout.ENSEMBLE_INPUT, layout.ENSEMBLE_OUTPUT

    def _activate(self) -> None:
        from clients.triton import TritonClient

        self.client = TritonClient(self.url, self.protocol, shared_memory=self.shared_memory, **self.client_kw)
        try:
            # Fail at activation, not on the first batch: unknown model / server down are reported here.
            info = self.client.model_info(self.model)
        except BaseException:
            self.client.close()
            self.client = None
            raise
        self.input_name, self.output_name = info.input_name, info.output_name

    def _deactivate(self) -> None:
        if self.client is not None:
            self.client.close()
            self.client = None

    @property
    def max_batch_size(self) -> int:
        assert self.client is not None, "activate() first"
        return self.client.model_info(self.model).max_batch_size

    def _infer(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if self.input_name not in feed:
            raise KeyError(f"{self.name}: the feed has {sorted(feed)}; this model takes {self.input_name!r} "
                           "(uint8 [N, bytes] zero-padded encoded images, contract.images.pack_batch)")
        pred = self.client.infer(self.model, feed[self.input_name], top_k=0)
        return {self.output_name: pred.logits}

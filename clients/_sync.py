"""The blocking client, TritonClient. Private to clients.triton (its public API); see that module."""
from __future__ import annotations

import threading
import time
from typing import Sequence

import numpy as np

from clients._base import ClientBase, as_padded
from clients.errors import ServerUnavailable, TritonClientError, is_connection_error, is_timeout
from clients.served_models import index_rows, metadata_dict, normalize_statistics
from clients.results import ModelInfo, Prediction, concat_predictions, config_dict, model_info_from_config
from clients.results import parse_labels, softmax_top_k


class TritonClient(ClientBase):
    """Blocking client; protocol "http" or "grpc" (same API, same results). Not for concurrent use
    from several threads when shared_memory=True (one pair of regions per client); otherwise a
    client per thread is the simplest safe choice."""

    def __init__(self, url: str | None = None, protocol: str = "http", **kw):
        super().__init__(url, protocol, **kw)
        if protocol == "http":
            self._client = self._mod.InferenceServerClient(self.url, verbose=self.verbose,
                                                           connection_timeout=self.timeout_s,
                                                           network_timeout=self.timeout_s, **self._tls_kw())
        else:
            self._client = self._mod.InferenceServerClient(self.url, verbose=self.verbose, **self._tls_kw())
        self._lock = threading.Lock()

    def _call(self, fn, *args, model: str | None = None, retry: bool = True, **kwargs):
        start = time.monotonic()
        attempt = 0
        while True:
            try:
                return fn(*args, **kwargs, **self._kw())
            except Exception as err:  # noqa: BLE001 - translated below, never swallowed
                waited = time.monotonic() - start
                if retry and is_connection_error(err) and attempt < self.retries and \
                        waited + self._backoff(attempt) < self.timeout_s:
                    time.sleep(self._backoff(attempt))
                    attempt += 1
                    continue
                index = None
                if model and not is_connection_error(err) and not is_timeout(err):
                    index = self._safe_index()
                raise self._translate(err, model, index, attempt + 1, waited) from None

    def _safe_index(self) -> list[dict] | None:
        try:
            return self.repository_index()
        except Exception:  # the index only improves the message; the original error still stands
            return None

    # -- server ---------------------------------------------------------------------------------

    def wait_until_ready(self, timeout_s: float | None = None) -> None:
        """Block until the server is ready, retrying with backoff within the timeout; raises with the reason."""
        start = time.monotonic()
        deadline = start + (self.timeout_s if timeout_s is None else timeout_s)
        attempt = 0
        while True:
            try:
                if self._call(self._client.is_server_live, retry=False) and \
                        self._call(self._client.is_server_ready, retry=False):
                    self._ready_checked = True
                    return
                last: BaseException | None = None
            except ServerUnavailable as err:
                last = err
            pause = self._backoff(attempt)
            if attempt >= self.retries or time.monotonic() + pause >= deadline:
                break
            time.sleep(pause)
            attempt += 1
        if last is not None:
            raise self._unavailable(getattr(last, "detail", last), attempt + 1, time.monotonic() - start)
        raise self._not_ready_server(self._safe_index() or [])

    def server_metadata(self) -> dict:
        return metadata_dict(self._call(self._client.get_server_metadata))

    def repository_index(self) -> list[dict]:
        return index_rows(self._call(self._client.get_model_repository_index, **self._json_kw()), self.protocol)

    def model_config(self, model: str) -> dict:
        return config_dict(self._call(self._client.get_model_config, model, model=model, **self._json_kw()))

    def model_info(self, model: str) -> ModelInfo:
        if model not in self._infos:
            if not self._ready_checked:
                self.wait_until_ready()
            self._infos[model] = model_info_from_config(model, self.model_config(model))
        return self._infos[model]

    def labels(self, model: str, sample: np.ndarray | None = None) -> list[str]:
        """The model's class labels as the server has them (see the module docstring)."""
        if model not in self._labels:
            info = self.model_info(model)
            if sample is None:
                raise TritonClientError("labels are read with one classification request; pass an image")
            inputs, outputs = self._plain_io(info, sample[:1], class_count=info.num_classes)
            result = self._call(self._client.infer, model, inputs, outputs=outputs, model=model)
            self._labels[model] = parse_labels(result, info)
        return self._labels[model]

    def statistics(self, model: str = "") -> dict[str, dict[str, int]]:
        return normalize_statistics(self._call(self._client.get_inference_statistics, model, model=model or None,
                                               **self._json_kw()))

    # -- inference ------------------------------------------------------------------------------

    def infer(self, model: str, images: Sequence[bytes] | np.ndarray, top_k: int = 5) -> Prediction:
        """One request: all images in one batch (at most the model's max_batch_size)."""
        batch = as_padded(images)
        info = self.model_info(model)
        self._check_batch(model, info, batch)
        labels = self.labels(model, batch) if top_k > 0 else None
        with self._lock:
            self._maybe_shm()
            start = time.perf_counter()
            inputs, outputs = self._inputs_outputs(info, batch)   # stages the batch into shm, if used
            if self._shm is not None:
                self._sync_shm()   # a grown region must be (re)registered before the request names it
            result = self._call(self._client.infer, model, inputs, outputs=outputs, model=model)
            logits = self._logits(result, info, batch.shape[0])
            latency = time.perf_counter() - start
        return Prediction(model, logits, softmax_top_k(logits, labels, top_k), latency)

    def preprocess(self, model: str, images: Sequence[bytes] | np.ndarray, config: dict | None = None) -> np.ndarray:
        """The output tensor of a preprocessing model (`<name>_preprocess`: encoded images in,
        float32 [N, 3, crop, crop] out), in one request: what the ensemble hands its network.
        config: the model's config (model_config), to save asking the server for it per request."""
        batch = as_padded(images)
        config = config or self.model_config(model)
        inp = self._mod.InferInput(config["input"][0]["name"], list(batch.shape), "UINT8")
        inp.set_data_from_numpy(batch)
        out_name = config["output"][0]["name"]
        result = self._call(self._client.infer, model, [inp], outputs=[self._mod.InferRequestedOutput(out_name)],
                            model=model)
        return result.as_numpy(out_name)

    def infer_many(self, model: str, images: Sequence[bytes], batch_size: int | None = None,
                   top_k: int = 5) -> Prediction:
        """Any number of images, sent in requests of `batch_size` (default: max_batch_size)."""
        size = self._chunk_size(model, self.model_info(model), batch_size, len(images))
        parts = [self.infer(model, images[i: i + size], top_k) for i in range(0, len(images), size)]
        return concat_predictions(model, parts)

    def _sync_shm(self) -> None:
        assert self._shm is not None
        for name in self._shm.stale:
            self._call(self._client.unregister_system_shared_memory, name)
        self._shm.stale.clear()
        for name, key, size in self._shm.pending:
            self._call(self._client.register_system_shared_memory, name, key, size)
        self._shm.pending.clear()

    def close(self) -> None:
        if self._shm is not None:
            for name in self._shm.registered():
                try:
                    self._client.unregister_system_shared_memory(name, **self._kw())
                except Exception:  # server gone: it dropped the registration with itself
                    pass
            self._shm.destroy()
            self._shm = None
        self._client.close()

    def __enter__(self) -> "TritonClient":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

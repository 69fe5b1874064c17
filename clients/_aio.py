"""The asyncio client, AsyncTritonClient. Private to clients.triton (its public API); see that module."""
from __future__ import annotations

import asyncio
import time
from typing import Sequence

import numpy as np

from clients._base import ClientBase, as_padded
from clients.errors import ServerUnavailable, TritonClientError, is_connection_error, is_timeout
from clients.served_models import index_rows, metadata_dict, normalize_statistics
from clients.results import ModelInfo, Prediction, concat_predictions, config_dict, model_info_from_config
from clients.results import parse_labels, softmax_top_k


class AsyncTritonClient(ClientBase):
    """The same API as TritonClient with `await`, over tritonclient.http.aio / tritonclient.grpc.aio.
    Many requests may be in flight at once (asyncio.gather); with shared_memory=True they are
    serialized, since they share one pair of regions."""

    _aio = True

    def __init__(self, url: str | None = None, protocol: str = "http", **kw):
        super().__init__(url, protocol, **kw)
        if protocol == "http":
            # conn_timeout becomes aiohttp's total timeout per request.
            self._client = self._mod.InferenceServerClient(self.url, verbose=self.verbose,
                                                           conn_timeout=self.timeout_s, **self._tls_kw())
        else:
            self._client = self._mod.InferenceServerClient(self.url, verbose=self.verbose, **self._tls_kw())
        self._lock = asyncio.Lock()

    async def _call(self, fn, *args, model: str | None = None, retry: bool = True, **kwargs):
        start = time.monotonic()
        attempt = 0
        while True:
            try:
                return await asyncio.wait_for(fn(*args, **kwargs, **self._kw()), self.timeout_s + 1.0)
            except Exception as err:  # noqa: BLE001 - translated below, never swallowed
                waited = time.monotonic() - start
                if retry and is_connection_error(err) and attempt < self.retries and \
                        waited + self._backoff(attempt) < self.timeout_s:
                    await asyncio.sleep(self._backoff(attempt))
                    attempt += 1
                    continue
                index = None
                if model and not is_connection_error(err) and not is_timeout(err):
                    index = await self._safe_index()
                raise self._translate(err, model, index, attempt + 1, waited) from None

    async def _safe_index(self) -> list[dict] | None:
        try:
            return await self.repository_index()
        except Exception:  # the index only improves the message
            return None

    async def wait_until_ready(self, timeout_s: float | None = None) -> None:
        start = time.monotonic()
        deadline = start + (self.timeout_s if timeout_s is None else timeout_s)
        attempt = 0
        while True:
            try:
                if await self._call(self._client.is_server_live, retry=False) and \
                        await self._call(self._client.is_server_ready, retry=False):
                    self._ready_checked = True
                    return
                last: BaseException | None = None
            except ServerUnavailable as err:
                last = err
            pause = self._backoff(attempt)
            if attempt >= self.retries or time.monotonic() + pause >= deadline:
                break
            await asyncio.sleep(pause)
            attempt += 1
        if last is not None:
            raise self._unavailable(getattr(last, "detail", last), attempt + 1, time.monotonic() - start)
        raise self._not_ready_server(await self._safe_index() or [])

    async def server_metadata(self) -> dict:
        return metadata_dict(await self._call(self._client.get_server_metadata))

    async def repository_index(self) -> list[dict]:
        return index_rows(await self._call(self._client.get_model_repository_index, **self._json_kw()),
                          self.protocol)

    async def model_config(self, model: str) -> dict:
        return config_dict(await self._call(self._client.get_model_config, model, model=model, **self._json_kw()))

    async def model_info(self, model: str) -> ModelInfo:
        if model not in self._infos:
            if not self._ready_checked:
                await self.wait_until_ready()
            self._infos[model] = model_info_from_config(model, await self.model_config(model))
        return self._infos[model]

    async def labels(self, model: str, sample: np.ndarray | None = None) -> list[str]:
        if model not in self._labels:
            info = await self.model_info(model)
            if sample is None:
                raise TritonClientError("labels are read with one classification request; pass an image")
            inputs, outputs = self._plain_io(info, sample[:1], class_count=info.num_classes)
            result = await self._call(self._client.infer, model, inputs, outputs=outputs, model=model)
            self._labels[model] = parse_labels(result, info)
        return self._labels[model]

    async def statistics(self, model: str = "") -> dict[str, dict[str, int]]:
        return normalize_statistics(await self._call(self._client.get_inference_statistics, model,
                                                     model=model or None, **self._json_kw()))

    async def infer(self, model: str, images: Sequence[bytes] | np.ndarray, top_k: int = 5) -> Prediction:
        batch = as_padded(images)
        info = await self.model_info(model)
        self._check_batch(model, info, batch)
        labels = await self.labels(model, batch) if top_k > 0 else None
        self._maybe_shm()
        if self._shm is None:
            start = time.perf_counter()
            inputs, outputs = self._inputs_outputs(info, batch)
            result = await self._call(self._client.infer, model, inputs, outputs=outputs, model=model)
            logits = self._logits(result, info, batch.shape[0])
        else:
            async with self._lock:
                start = time.perf_counter()
                inputs, outputs = self._inputs_outputs(info, batch)
                await self._sync_shm()   # a grown region must be (re)registered before the request names it
                result = await self._call(self._client.infer, model, inputs, outputs=outputs, model=model)
                logits = self._logits(result, info, batch.shape[0])
        return Prediction(model, logits, softmax_top_k(logits, labels, top_k), time.perf_counter() - start)

    async def infer_many(self, model: str, images: Sequence[bytes], batch_size: int | None = None,
                         top_k: int = 5, concurrency: int = 4) -> Prediction:
        """Like TritonClient.infer_many, with up to `concurrency` requests in flight."""
        size = self._chunk_size(model, await self.model_info(model), batch_size, len(images))
        sem = asyncio.Semaphore(concurrency)

        async def one(chunk):
            async with sem:
                return await self.infer(model, chunk, top_k)

        parts = await asyncio.gather(*(one(images[i: i + size]) for i in range(0, len(images), size)))
        return concat_predictions(model, list(parts))

    async def _sync_shm(self) -> None:
        assert self._shm is not None
        for name in self._shm.stale:
            await self._call(self._client.unregister_system_shared_memory, name)
        self._shm.stale.clear()
        for name, key, size in self._shm.pending:
            await self._call(self._client.register_system_shared_memory, name, key, size)
        self._shm.pending.clear()

    async def close(self) -> None:
        if self._shm is not None:
            for name in self._shm.registered():
                try:
                    await self._client.unregister_system_shared_memory(name, **self._kw())
                except Exception:  # server gone: nothing registered any more
                    pass
            self._shm.destroy()
            self._shm = None
        await self._client.close()

    async def __aenter__(self) -> "AsyncTritonClient":
        return self

    async def __aexit__(self, *exc) -> None:
        await self.close()

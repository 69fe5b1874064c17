"""A small client for the toolkit's Triton ensembles, over HTTP or gRPC, sync or asyncio.

    with TritonClient("127.0.0.1:8000", protocol="http") as client:
        pred = client.infer("digits_fp32", [open("a.jpg", "rb").read()], top_k=3)
        pred.logits            # float32 [N, num_classes]
        pred.top_k[0]          # [Top(label="7", score=0.98, index=7, logit=9.4), ...]

    async with AsyncTritonClient("127.0.0.1:8001", protocol="grpc") as client:
        pred = await client.infer("digits_fp32", images, top_k=3)     # same result

One request is one batch: encoded images are zero-padded to the longest (contract.images.pad_batch;
JPEG/PNG decoders stop at their end marker, so the padding changes nothing) and sent as the ensemble's
UINT8 [N, bytes] input; `infer_many` splits a longer list into requests of at most max_batch_size.

Top-k: the client always fetches the raw logits and computes top-k itself (softmax scores), with the
labels the server serves (the output's label_filename). The labels are read once per model through
Triton's classification extension (one small request with class_count = num_classes, parsed from
"score:index:label"). Why not class_count on every request: with it Triton returns only the formatted
strings (6 decimals), not the logits that verify and the runners compare.

Errors are rewritten into TritonClientError subclasses whose message says what to do: the server
cannot be reached (URL, how to start the local server), is not ready (which models failed and why),
the model is unknown (lists the available ones), or a batch is larger than max_batch_size.
Connection failures are retried with exponential backoff within `timeout_s`; other errors are not,
since repeating a rejected request cannot help.

This module holds the two clients and what they share (_Common); the pieces that need no server
connection live beside it: clients.errors (the exceptions, classifying transport errors),
clients.results (Prediction/Top/ModelInfo, top-k, parsing config and labels), clients.repository
(index/statistics normalization, model naming), clients.connection (URL, protocol, CLI flags) and
clients.shm (the shared memory regions). All their public names are importable from here too.
"""
from __future__ import annotations

import asyncio
import os
import threading
import time
from typing import Sequence

import numpy as np

from contract.images import pad_batch
# Everything below was defined in this module before it was split; callers import it from here
# (load_tests.locustfile even the underscored helpers), so all of it stays importable as before.
from clients.hints import wrong_protocol
from clients.connection import (API_KEY_ENV, API_KEY_HEADER, DEFAULT_PORTS, LOCAL_SERVER_HINT,  # noqa: F401
                                PROTOCOLS, add_connection_arguments, normalize_url, read_api_key, split_url)
from clients.connection import tritonclient_module as _modules
from clients.errors import (ApiRestricted, BatchTooLarge, ConnectionLost, ModelNotReady, RequestTimeout, ServerNotReady,  # noqa: F401
                            ServerUnavailable, TritonClientError, UnknownModel)
from clients.errors import is_connection_error as _is_connection_error
from clients.errors import is_connection_lost as _is_connection_lost
from clients.errors import is_restricted as _is_restricted
from clients.errors import is_timeout as _is_timeout
from clients.errors import message as _message
from clients.repository import (ensemble_name, index_rows, metadata_dict, normalize_statistics,  # noqa: F401
                                served_base_models, served_precisions)
from clients.results import ModelInfo, Prediction, Top, parse_labels, softmax_top_k  # noqa: F401
from clients.results import concat_predictions as _concat
from clients.results import config_dict as _config_dict
from clients.results import model_info_from_config as _model_info
from clients.shm import ShmRegions as _ShmRegions


def as_padded(images: Sequence[bytes] | np.ndarray) -> np.ndarray:
    """Encoded images -> uint8 [N, L]; an already padded 2-D uint8 array passes through."""
    if isinstance(images, np.ndarray):
        if images.dtype != np.uint8 or images.ndim != 2:
            raise ValueError(f"a padded batch must be uint8 [N, bytes]; got {images.dtype} {list(images.shape)}")
        return np.ascontiguousarray(images)
    return pad_batch(list(images))


# --- shared by the sync and asyncio clients: configuration, error wording, request building -----

class _Common:
    """Configuration, error wording and request building shared by both clients."""

    _aio = False

    def __init__(self, url: str | None = None, protocol: str = "http", *, timeout_s: float = 30.0,
                 retries: int = 4, backoff_s: float = 0.25, shared_memory: bool = False, verbose: bool = False,
                 api_key: str | None = None, ca_cert: str | None = None, client_cert: str | None = None,
                 client_key: str | None = None):
        """url: host:port, http(s)://host:port or grpc(s)://host:port (https/grpcs: TLS); timeout_s: the
        longest wait for readiness and for each answer; retries: attempts after the first while the server
        is unreachable (within timeout_s); api_key: value of the restricted-API header (default:
        $TRITON_API_KEY, else the local launcher's key file for this port); ca_cert/client_cert/client_key:
        PEM files for TLS (CA to trust; client certificate and key for mutual TLS)."""
        self.protocol = protocol
        self.url, self.tls = split_url(url, protocol)
        if (ca_cert or client_cert or client_key) and not self.tls:
            raise TritonClientError(f"TLS options (--ca-cert/--client-cert/--client-key) given, but {url or self.url!r} "
                                    f"is a plain-text address; use {'https' if protocol == 'http' else 'grpcs'}://"
                                    f"{self.url} to connect with TLS")
        if bool(client_cert) != bool(client_key):
            raise TritonClientError("--client-cert and --client-key go together (certificate and its private key)")
        for f in (ca_cert, client_cert, client_key):
            if f and not open(f, "rb").read(1):
                raise TritonClientError(f"TLS file {f} is empty")
        self.ca_cert, self.client_cert, self.client_key = ca_cert, client_cert, client_key
        key = api_key or os.environ.get(API_KEY_ENV) or read_api_key(self.url)
        # Triton's gRPC endpoint looks for the key under this prefix (its HTTP endpoint does not).
        header = f"triton-grpc-protocol-{API_KEY_HEADER}" if protocol == "grpc" else API_KEY_HEADER
        self._headers = {header: key} if key else None
        self.timeout_s = float(timeout_s)
        self.retries = int(retries)
        self.backoff_s = float(backoff_s)
        self.use_shared_memory = bool(shared_memory)
        self.verbose = verbose
        self._mod = _modules(protocol, self._aio)
        self._infos: dict[str, ModelInfo] = {}
        self._labels: dict[str, list[str]] = {}
        self._ready_checked = False
        self._shm: _ShmRegions | None = None

    # -- words ----------------------------------------------------------------------------------

    def _lost(self, err: BaseException, model: str | None) -> ConnectionLost:
        return ConnectionLost(
            f"the connection to the server at {self.url} ({self.protocol}) closed while the request"
            f"{' to ' + repr(model) if model else ''} was in flight ({_message(err)}): the server crashed, "
            "restarted or was stopped, and this request has no result. It was not retried (a request that "
            "crashes the server would crash it again). Check the server log and that the server is running "
            "(the local launcher prints why it exited), then send again.")

    def _unavailable(self, err: BaseException | str, attempts: int, waited: float) -> ServerUnavailable:
        wrong = wrong_protocol(err if isinstance(err, str) else _message(err), self.protocol, self.url)
        if wrong is not None:
            return wrong
        exc = ServerUnavailable(
            f"cannot reach a Triton server at {self.url} over {self.protocol} ({_message(err)}; "
            f"{attempts} attempt(s) in {waited:.1f} s). Is it running, and is {'HTTP' if self.protocol == 'http' else 'gRPC'} on that port "
            f"(HTTP default {DEFAULT_PORTS['http']}, gRPC {DEFAULT_PORTS['grpc']})? {LOCAL_SERVER_HINT}")
        exc.detail = _message(err) if isinstance(err, BaseException) else err  # type: ignore[attr-defined]
        return exc

    def _timeout(self, what: str) -> RequestTimeout:
        return RequestTimeout(f"{what} at {self.url} ({self.protocol}) got no answer within {self.timeout_s:g} s; the "
                              "server may be overloaded or stuck. Raise --timeout, send smaller batches, or check "
                              "the server log.")

    @staticmethod
    def _describe_index(index: list[dict]) -> tuple[list[str], list[str]]:
        ready = sorted(m["name"] for m in index if m.get("state") == "READY")
        broken = [f"{m['name']} ({m.get('state') or 'not loaded'}: {m.get('reason') or 'no reason given'})"
                  for m in index if m.get("state") != "READY"]
        return ready, broken

    def _unknown_model(self, model: str, index: list[dict]) -> UnknownModel:
        ready, broken = self._describe_index(index)
        ensembles = [n for n in ready if not n.endswith(("_infer", "_preprocess"))]
        msg = f"the server at {self.url} has no model {model!r}."
        msg += (f" Models you can call: {', '.join(ensembles)}" if ensembles else " It serves no ensembles.")
        others = [n for n in ready if n not in ensembles]
        if others:
            msg += f" (their parts: {', '.join(others)})"
        if broken:
            msg += f". Not loaded: {'; '.join(broken)}"
        return UnknownModel(msg + ".")

    def _not_ready_model(self, model: str, index: list[dict]) -> ModelNotReady:
        entry = [m for m in index if m["name"] == model]
        reason = (entry[0].get("reason") or entry[0].get("state") or "not loaded") if entry else "not loaded"
        parts = [m for m in index if m["name"] != model and m.get("state") != "READY"]
        extra = "".join(f"; {m['name']}: {m.get('reason') or m.get('state')}" for m in parts)
        return ModelNotReady(f"model {model!r} on {self.url} is not ready: {reason}{extra}. Check the server log; "
                             "an ensemble is ready only when all its parts loaded.")

    def _not_ready_server(self, index: list[dict]) -> ServerNotReady:
        _, broken = self._describe_index(index)
        return ServerNotReady(f"the server at {self.url} is live but not ready after {self.timeout_s:g} s"
                              + (f"; not loaded: {'; '.join(broken)}" if broken else " (models still loading?)")
                              + ". Check the server log; wait, or fix the failing model.")

    def _too_large(self, model: str, n: int, max_batch: int) -> BatchTooLarge:
        return BatchTooLarge(f"{n} images in one request, but {model!r} takes at most max_batch_size={max_batch} "
                             f"per request; send at most {max_batch} per request (--batch-size {max_batch}) or use "
                             "infer_many(), which splits the list.")

    def _translate(self, err: BaseException, model: str | None, index: list[dict] | None,
                   attempts: int = 1, waited: float = 0.0) -> BaseException:
        """A tritonclient/transport error -> TritonClientError with words (or err itself if unknown)."""
        if isinstance(err, TritonClientError):
            return err
        wrong = wrong_protocol(_message(err), self.protocol, self.url)
        if wrong is not None:
            return wrong
        if _is_restricted(err):
            return ApiRestricted(
                f"the server at {self.url} restricts this API ({_message(err)}) and "
                + ("the key sent is not its key" if self._headers else "no key was sent")
                + f": pass the key the local launcher printed with --api-key or ${API_KEY_ENV} (clients on the "
                "server's machine read it from its key file), or start the server with --open-apis (docs/hardening.md).")
        if _is_connection_lost(err):
            return self._lost(err, model)
        if _is_timeout(err):
            return self._timeout(f"request to {model!r}" if model else "request")
        if _is_connection_error(err):
            return self._unavailable(err, attempts, waited)
        text = _message(err)
        low = text.lower()
        if model and ("unknown model" in low or "not found" in low) and index is not None:
            if not any(m["name"] == model for m in index):
                return self._unknown_model(model, index)
            return self._not_ready_model(model, index)
        if model and ("not ready" in low or "unavailable" in low) and index is not None:
            return self._not_ready_model(model, index)
        if "batch-size must be <=" in low or "batch size must be <=" in low or "max_batch_size is" in low:
            info = self._infos.get(model or "")
            limit = info.max_batch_size if info else "?"
            return BatchTooLarge(f"{text}. {model!r} takes at most max_batch_size={limit} images per request; "
                                 "send smaller batches (--batch-size) or use infer_many().")
        return TritonClientError(f"{model or 'server'}: {text}")

    def _backoff(self, attempt: int) -> float:
        return min(self.backoff_s * (2 ** attempt), 2.0)

    # gRPC takes a per-call deadline; HTTP has it on the connection (set in the clients' __init__).
    # The restricted-API key goes with every call: cheaper than knowing which APIs are restricted.
    def _kw(self) -> dict:
        kw = {"client_timeout": self.timeout_s} if self.protocol == "grpc" else {}
        if self._headers:
            # A fresh dict per call: tritonclient's HTTP infer adds its own entries to the dict it is
            # given (Inference-Header-Content-Length), which must not leak into the next request.
            kw["headers"] = dict(self._headers)
        return kw

    def _tls_kw(self) -> dict:
        """Constructor arguments of the tritonclient client for TLS (none for plain text)."""
        if not self.tls:
            return {}
        if self.protocol == "grpc":
            return {"ssl": True, "root_certificates": self.ca_cert, "private_key": self.client_key,
                    "certificate_chain": self.client_cert}
        if self._aio:
            import ssl

            ctx = ssl.create_default_context(cafile=self.ca_cert)
            if self.client_cert:
                ctx.load_cert_chain(self.client_cert, self.client_key)
            return {"ssl": True, "ssl_context": ctx}
        opts = {"ca_certs": self.ca_cert} if self.ca_cert else {}
        if self.client_cert:
            opts.update(certfile=self.client_cert, keyfile=self.client_key)
        return {"ssl": True, "ssl_options": opts}

    # gRPC answers with protobuf messages unless asked for JSON; HTTP always gives JSON.
    def _json_kw(self) -> dict:
        return {"as_json": True} if self.protocol == "grpc" else {}

    # -- requests -------------------------------------------------------------------------------

    def _inputs_outputs(self, info: ModelInfo, batch: np.ndarray, class_count: int = 0):
        mod = self._mod
        inp = mod.InferInput(info.input_name, list(batch.shape), "UINT8")
        out = mod.InferRequestedOutput(info.output_name, class_count=class_count)
        if self._shm is not None and class_count == 0:
            self._shm.stage(batch, info.num_classes)
            inp.set_shared_memory(self._shm.in_name, batch.nbytes)
            out.set_shared_memory(self._shm.out_name, batch.shape[0] * info.num_classes * 4)
        else:
            inp.set_data_from_numpy(batch)
        return [inp], [out]

    def _plain_io(self, info: ModelInfo, batch: np.ndarray, class_count: int):
        """Inputs/outputs in the request body even with shared memory on: the labels request asks
        for classification strings, which the float32 output region cannot hold."""
        shm, self._shm = self._shm, None
        try:
            return self._inputs_outputs(info, batch, class_count)
        finally:
            self._shm = shm

    def _logits(self, result, info: ModelInfo, n: int) -> np.ndarray:
        if self._shm is not None:
            return self._shm.read(n, info.num_classes)
        arr = result.as_numpy(info.output_name)
        if arr is None:
            raise TritonClientError(f"{info.name}: the response has no output {info.output_name!r}")
        return arr.astype(np.float32, copy=False)

    def _check_batch(self, model: str, info: ModelInfo, batch: np.ndarray) -> None:
        if info.max_batch_size and batch.shape[0] > info.max_batch_size:
            raise self._too_large(model, batch.shape[0], info.max_batch_size)

    def _chunk_size(self, model: str, info: ModelInfo, batch_size: int | None, n: int) -> int:
        """Images per request for infer_many: batch_size, else max_batch_size, else all n at once."""
        size = batch_size or info.max_batch_size or n
        if info.max_batch_size and size > info.max_batch_size:
            raise self._too_large(model, size, info.max_batch_size)
        return size

    def _maybe_shm(self) -> None:
        if self.use_shared_memory and self._shm is None:
            if self.url.split(":")[0] not in ("127.0.0.1", "localhost", "[::1]"):
                raise TritonClientError(f"system shared memory works only with a server on this machine; "
                                        f"{self.url} is not local. Drop --shared-memory.")
            self._shm = _ShmRegions()


# --- sync client ----------------------------------------------------------------------------------

class TritonClient(_Common):
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
                if retry and _is_connection_error(err) and attempt < self.retries and \
                        waited + self._backoff(attempt) < self.timeout_s:
                    time.sleep(self._backoff(attempt))
                    attempt += 1
                    continue
                index = None
                if model and not _is_connection_error(err) and not _is_timeout(err):
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
        return _config_dict(self._call(self._client.get_model_config, model, model=model, **self._json_kw()))

    def model_info(self, model: str) -> ModelInfo:
        if model not in self._infos:
            if not self._ready_checked:
                self.wait_until_ready()
            self._infos[model] = _model_info(model, self.model_config(model))
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
        return _concat(model, parts)

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


# --- asyncio client -------------------------------------------------------------------------------

class AsyncTritonClient(_Common):
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
                if retry and _is_connection_error(err) and attempt < self.retries and \
                        waited + self._backoff(attempt) < self.timeout_s:
                    await asyncio.sleep(self._backoff(attempt))
                    attempt += 1
                    continue
                index = None
                if model and not _is_connection_error(err) and not _is_timeout(err):
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
        return _config_dict(await self._call(self._client.get_model_config, model, model=model, **self._json_kw()))

    async def model_info(self, model: str) -> ModelInfo:
        if model not in self._infos:
            if not self._ready_checked:
                await self.wait_until_ready()
            self._infos[model] = _model_info(model, await self.model_config(model))
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
        return _concat(model, list(parts))

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


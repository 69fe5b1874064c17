"""What the sync and asyncio clients share: configuration, the wording of errors, and building
requests and reading answers. Private to clients.triton (its public API); see that module.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from clients.connection import DEFAULT_PORTS, LOCAL_SERVER_HINT, auth_headers, split_url, tls_kwargs
from clients.connection import tritonclient_module
from clients.errors import (ApiRestricted, BatchTooLarge, ConnectionLost, ModelNotReady, RequestTimeout,
                            ServerNotReady, ServerUnavailable, TritonClientError, UnknownModel, is_connection_error,
                            is_connection_lost, is_restricted, is_timeout, message)
from clients.user_errors import wrong_protocol
from clients.results import ModelInfo
from clients.shm import ShmRegions
from contract.auth import API_KEY_ENV
from contract.images import pack_batch


def as_padded(images: Sequence[bytes] | np.ndarray) -> np.ndarray:
    """Encoded images -> uint8 [N, L]; an already padded 2-D uint8 array passes through."""
    if isinstance(images, np.ndarray):
        if images.dtype != np.uint8 or images.ndim != 2:
            raise ValueError(f"a padded batch must be uint8 [N, bytes]; got {images.dtype} {list(images.shape)}")
        return np.ascontiguousarray(images)
    return pack_batch(list(images))


class ClientBase:
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
        self._headers = auth_headers(self.url, protocol, api_key)
        self.timeout_s = float(timeout_s)
        self.retries = int(retries)
        self.backoff_s = float(backoff_s)
        self.use_shared_memory = bool(shared_memory)
        self.verbose = verbose
        self._mod = tritonclient_module(protocol, self._aio)
        self._infos: dict[str, ModelInfo] = {}
        self._labels: dict[str, list[str]] = {}
        self._ready_checked = False
        self._shm: ShmRegions | None = None

    # -- words ----------------------------------------------------------------------------------

    def _lost(self, err: BaseException, model: str | None) -> ConnectionLost:
        return ConnectionLost(
            f"the connection to the server at {self.url} ({self.protocol}) closed while the request"
            f"{' to ' + repr(model) if model else ''} was in flight ({message(err)}): the server crashed, "
            "restarted or was stopped, and this request has no result. It was not retried (a request that "
            "crashes the server would crash it again). Check the server log and that the server is running "
            "(the local launcher prints why it exited), then send again.")

    def _unavailable(self, err: BaseException | str, attempts: int, waited: float) -> ServerUnavailable:
        wrong = wrong_protocol(err if isinstance(err, str) else message(err), self.protocol, self.url)
        if wrong is not None:
            return wrong
        exc = ServerUnavailable(
            f"cannot reach a Triton server at {self.url} over {self.protocol} ({message(err)}; "
            f"{attempts} attempt(s) in {waited:.1f} s). Is it running, and is {'HTTP' if self.protocol == 'http' else 'gRPC'} on that port "
            f"(HTTP default {DEFAULT_PORTS['http']}, gRPC {DEFAULT_PORTS['grpc']})? {LOCAL_SERVER_HINT}")
        exc.detail = message(err) if isinstance(err, BaseException) else err  # type: ignore[attr-defined]
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
        wrong = wrong_protocol(message(err), self.protocol, self.url)
        if wrong is not None:
            return wrong
        if is_restricted(err):
            return ApiRestricted(
                f"the server at {self.url} restricts this API ({message(err)}) and "
                + ("the key sent is not its key" if self._headers else "no key was sent")
                + f": pass the key the local launcher printed with --api-key or ${API_KEY_ENV} (clients on the "
                "server's machine read it from its key file), or start the server with --open-apis (docs/hardening.md).")
        if is_connection_lost(err):
            return self._lost(err, model)
        if is_timeout(err):
            return self._timeout(f"request to {model!r}" if model else "request")
        if is_connection_error(err):
            return self._unavailable(err, attempts, waited)
        text = message(err)
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
        return tls_kwargs(self.protocol, self._aio, self.ca_cert, self.client_cert, self.client_key)

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
            self._shm = ShmRegions()

"""A small client for the toolkit's Triton ensembles, over HTTP or gRPC, sync or asyncio.

    with TritonClient("127.0.0.1:8000", protocol="http") as client:
        pred = client.infer("digits_fp32", [open("a.jpg", "rb").read()], top_k=3)
        pred.logits            # float32 [N, num_classes]
        pred.top_k[0]          # [Top(label="7", score=0.98, index=7, logit=9.4), ...]

    async with AsyncTritonClient("127.0.0.1:8001", protocol="grpc") as client:
        pred = await client.infer("digits_fp32", images, top_k=3)     # same result

One request is one batch: encoded images are zero-padded to the longest (builders.preprocess.pad_batch;
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
"""
from __future__ import annotations

import asyncio
import itertools
import os
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Iterable, Sequence

import numpy as np

from builders import layout
from builders.preprocess import pad_batch

PROTOCOLS = ("http", "grpc")
DEFAULT_PORTS = {"http": 8000, "grpc": 8001}
LOCAL_SERVER_HINT = ("Start the local server with `python -m serving.local_server --repository "
                     "model_repository/cpu` (HTTP port 8000, gRPC 8001) or `docker compose up`, "
                     "or pass the server's address with --url.")


# --- errors -------------------------------------------------------------------------------------

class TritonClientError(RuntimeError):
    """Something a user can act on; the message says what."""


class ServerUnavailable(TritonClientError):
    """The server could not be reached (refused, unreachable, timed out) within the retries."""


class ServerNotReady(TritonClientError):
    """The server answers but is not ready (models loading or failed)."""


class UnknownModel(TritonClientError):
    """The model is not in the server's repository."""


class ModelNotReady(TritonClientError):
    """The model exists but is not loaded (see the reason)."""


class BatchTooLarge(TritonClientError):
    """More images in one request than the model's max_batch_size."""


class RequestTimeout(TritonClientError):
    """The server took longer than the timeout to answer."""


# --- results ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Top:
    label: str
    score: float          # softmax probability over the classes
    index: int
    logit: float


@dataclass
class Prediction:
    """The answer to one request (or several, concatenated by infer_many)."""

    model: str
    logits: np.ndarray                       # float32 [N, num_classes]
    top_k: list[list[Top]] = field(default_factory=list)   # per image, best first; empty if top_k=0
    latency_s: float = 0.0                   # client-side wall time of the request(s)

    def top1(self) -> list[str]:
        return [row[0].label for row in self.top_k]


@dataclass(frozen=True)
class ModelInfo:
    """What the client needs from a model's config."""

    name: str
    max_batch_size: int
    input_name: str
    output_name: str
    num_classes: int
    platform: str              # "ensemble", "onnxruntime_onnx", "tensorrt_plan", or the backend name
    steps: tuple[str, ...]     # composing models of an ensemble, in order; empty otherwise


def softmax_top_k(logits: np.ndarray, labels: Sequence[str] | None, k: int) -> list[list[Top]]:
    """Top-k per row of logits, with softmax scores. Labels default to the class index."""
    if k <= 0:
        return []
    k = min(k, logits.shape[1])
    shifted = logits.astype(np.float64) - logits.max(axis=1, keepdims=True)
    probs = np.exp(shifted)
    probs /= probs.sum(axis=1, keepdims=True)
    # argsort on -logits with a stable sort: ties keep class order, like Triton's classification.
    order = np.argsort(-logits, axis=1, kind="stable")[:, :k]
    out = []
    for r, row in enumerate(order):
        out.append([Top(labels[i] if labels and i < len(labels) else str(i), float(probs[r, i]), int(i),
                        float(logits[r, i])) for i in row])
    return out


def normalize_url(url: str | None, protocol: str) -> str:
    """host:port as tritonclient wants it; accepts http://host:port and a bare host (default port)."""
    if protocol not in PROTOCOLS:
        raise ValueError(f"protocol must be one of {PROTOCOLS}, got {protocol!r}")
    if not url:
        return f"127.0.0.1:{DEFAULT_PORTS[protocol]}"
    for scheme in ("http://", "https://", "grpc://"):
        if url.startswith(scheme):
            url = url[len(scheme):]
    url = url.rstrip("/")
    host_part = url.rsplit("]", 1)[-1]  # an IPv6 literal [::1] has colons of its own
    if ":" not in host_part:
        url = f"{url}:{DEFAULT_PORTS[protocol]}"
    return url


def as_padded(images: Sequence[bytes] | np.ndarray) -> np.ndarray:
    """Encoded images -> uint8 [N, L]; an already padded 2-D uint8 array passes through."""
    if isinstance(images, np.ndarray):
        if images.dtype != np.uint8 or images.ndim != 2:
            raise ValueError(f"a padded batch must be uint8 [N, bytes]; got {images.dtype} {list(images.shape)}")
        return np.ascontiguousarray(images)
    return pad_batch(list(images))


# --- protocol plumbing shared by the sync and asyncio clients -------------------------------------

def _modules(protocol: str, aio: bool):
    if protocol == "http":
        if aio:
            import tritonclient.http.aio as mod
        else:
            import tritonclient.http as mod
    else:
        if aio:
            import tritonclient.grpc.aio as mod
        else:
            import tritonclient.grpc as mod
    return mod


def _is_connection_error(err: BaseException) -> bool:
    """True when the request did not reach a server (worth retrying)."""
    if isinstance(err, (ConnectionError, OSError)) and not isinstance(err, TimeoutError):
        return True
    try:
        import aiohttp

        if isinstance(err, aiohttp.ClientConnectionError) and not isinstance(err, aiohttp.ServerTimeoutError):
            return True
    except ImportError:  # aiohttp comes with tritonclient[http]; without it there is no aio HTTP client
        pass
    from tritonclient.utils import InferenceServerException

    if isinstance(err, InferenceServerException):
        status = str(err.status() or "")
        text = str(err.message() or "")
        return "UNAVAILABLE" in status or "failed to connect" in text.lower() or "connection refused" in text.lower()
    return False


def _is_timeout(err: BaseException) -> bool:
    if isinstance(err, (TimeoutError, asyncio.TimeoutError)):
        return True
    name = type(err).__name__.lower()
    if "timeout" in name:
        return True
    from tritonclient.utils import InferenceServerException

    if isinstance(err, InferenceServerException):
        return "DEADLINE_EXCEEDED" in str(err.status() or "") or "timed out" in str(err.message() or "").lower()
    return False


def _message(err: BaseException) -> str:
    from tritonclient.utils import InferenceServerException

    if isinstance(err, InferenceServerException):
        return str(err.message() or err.status() or type(err).__name__)
    return str(err) or type(err).__name__


def _config_dict(raw: Any) -> dict:
    # HTTP returns the config itself; gRPC with as_json=True wraps it in {"config": ...}.
    return raw.get("config", raw) if isinstance(raw, dict) else raw


def _model_info(name: str, cfg: dict) -> ModelInfo:
    inputs, outputs = cfg.get("input", []), cfg.get("output", [])
    if len(inputs) != 1 or len(outputs) != 1:
        raise TritonClientError(f"model {name!r} has {len(inputs)} inputs and {len(outputs)} outputs; this client "
                                f"sends one image input and reads one logits output (the toolkit's ensembles: "
                                f"{layout.ENSEMBLE_INPUT} -> {layout.ENSEMBLE_OUTPUT})")
    dims = [int(d) for d in outputs[0].get("dims", [])]
    steps = tuple(s.get("model_name", "") for s in cfg.get("ensemble_scheduling", {}).get("step", []))
    platform = cfg.get("platform") or cfg.get("backend") or ""
    return ModelInfo(name, int(cfg.get("max_batch_size", 0)), inputs[0]["name"], outputs[0]["name"],
                     dims[-1] if dims else 0, platform, steps)


def normalize_statistics(raw: Any) -> dict[str, dict[str, int]]:
    """Triton's statistics (either protocol) -> {model: {"inference_count", "execution_count",
    "success_count", "success_ns", "queue_ns", "compute_input_ns", ...}} with ints (gRPC's JSON
    gives 64-bit counters as strings and omits zero ones)."""
    out = {}
    for m in raw.get("model_stats", []):
        s = m.get("inference_stats", {})
        row = {"inference_count": int(m.get("inference_count", 0) or 0),
               "execution_count": int(m.get("execution_count", 0) or 0)}
        for key in ("success", "fail", "queue", "compute_input", "compute_infer", "compute_output"):
            row[f"{key}_count"] = int(s.get(key, {}).get("count", 0) or 0)
            row[f"{key}_ns"] = int(s.get(key, {}).get("ns", 0) or 0)
        # Several versions of one model add up; the toolkit serves version 1 only.
        prev = out.get(m["name"])
        out[m["name"]] = {k: v + (prev or {}).get(k, 0) for k, v in row.items()}
    return out


class _Common:
    """Configuration, error wording and request building shared by both clients."""

    _aio = False

    def __init__(self, url: str | None = None, protocol: str = "http", *, timeout_s: float = 30.0,
                 retries: int = 4, backoff_s: float = 0.25, shared_memory: bool = False, verbose: bool = False):
        self.protocol = protocol
        self.url = normalize_url(url, protocol)
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

    def _unavailable(self, err: BaseException | str, attempts: int, waited: float) -> ServerUnavailable:
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

    def _logits(self, result, info: ModelInfo, n: int) -> np.ndarray:
        if self._shm is not None:
            return self._shm.read(n, info.num_classes)
        arr = result.as_numpy(info.output_name)
        if arr is None:
            raise TritonClientError(f"{info.name}: the response has no output {info.output_name!r}")
        return arr.astype(np.float32, copy=False)

    @staticmethod
    def _parse_labels(result, info: ModelInfo) -> list[str]:
        labels = [str(i) for i in range(info.num_classes)]
        for entry in result.as_numpy(info.output_name).reshape(-1):
            text = entry.decode() if isinstance(entry, bytes) else str(entry)
            parts = text.split(":", 2)  # score:index[:label]; a label may itself hold ':'
            if len(parts) == 3 and parts[1].isdigit() and int(parts[1]) < len(labels):
                labels[int(parts[1])] = parts[2]
        return labels

    def _check_batch(self, model: str, info: ModelInfo, batch: np.ndarray) -> None:
        if info.max_batch_size and batch.shape[0] > info.max_batch_size:
            raise self._too_large(model, batch.shape[0], info.max_batch_size)

    def _maybe_shm(self) -> None:
        if self.use_shared_memory and self._shm is None:
            if self.url.split(":")[0] not in ("127.0.0.1", "localhost", "[::1]"):
                raise TritonClientError(f"system shared memory works only with a server on this machine; "
                                        f"{self.url} is not local. Drop --shared-memory.")
            self._shm = _ShmRegions()


class _ShmRegions:
    """One input and one output system shared memory region, grown on demand and registered with
    the server under unique names. Reused across requests: creating and registering a region costs
    more than the copy it saves, so only reuse makes shared memory pay off for large batches."""

    _ids = itertools.count()

    def __init__(self):
        import tritonclient.utils.shared_memory as shm

        self._shm = shm
        tag = f"tic_{os.getpid()}_{next(self._ids)}"
        self.in_name, self.out_name = f"{tag}_in", f"{tag}_out"
        self._keys = {self.in_name: f"/{tag}_in", self.out_name: f"/{tag}_out"}
        self._handles: dict[str, Any] = {}
        self._sizes: dict[str, int] = {}
        self.pending: list[tuple[str, str, int]] = []  # (name, key, size) to (re)register with the server
        self.stale: list[str] = []                     # names to unregister first

    def _ensure(self, name: str, size: int) -> None:
        if self._sizes.get(name, 0) >= size:
            return
        size = max(size, 2 * self._sizes.get(name, 0), 1 << 16)
        if name in self._handles:
            self.stale.append(name)
            self._shm.destroy_shared_memory_region(self._handles.pop(name))
        self._handles[name] = self._shm.create_shared_memory_region(name, self._keys[name], size)
        self._sizes[name] = size
        self.pending.append((name, self._keys[name], size))

    def stage(self, batch: np.ndarray, num_classes: int) -> None:
        self._ensure(self.in_name, batch.nbytes)
        self._ensure(self.out_name, batch.shape[0] * num_classes * 4)
        self._shm.set_shared_memory_region(self._handles[self.in_name], [batch])

    def read(self, n: int, num_classes: int) -> np.ndarray:
        return self._shm.get_contents_as_numpy(self._handles[self.out_name], np.float32, [n, num_classes]).copy()

    def registered(self) -> list[str]:
        return [n for n in self._handles]

    def destroy(self) -> None:
        for h in self._handles.values():
            try:
                self._shm.destroy_shared_memory_region(h)
            except Exception:  # already gone (e.g. the server unlinked it); nothing left to free
                pass
        self._handles.clear()
        self._sizes.clear()


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
                                                           network_timeout=self.timeout_s)
        else:
            self._client = self._mod.InferenceServerClient(self.url, verbose=self.verbose)
        self._lock = threading.Lock()

    # gRPC takes a per-call deadline; HTTP has it on the connection (set above).
    def _kw(self) -> dict:
        return {"client_timeout": self.timeout_s} if self.protocol == "grpc" else {}

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
            if time.monotonic() + pause >= deadline:
                break
            time.sleep(pause)
            attempt += 1
        if last is not None:
            raise self._unavailable(getattr(last, "detail", last), attempt + 1, time.monotonic() - start)
        raise self._not_ready_server(self._safe_index() or [])

    def server_metadata(self) -> dict:
        meta = self._call(self._client.get_server_metadata)
        if not isinstance(meta, dict):  # gRPC message
            meta = {"name": meta.name, "version": meta.version, "extensions": list(meta.extensions)}
        return meta

    def repository_index(self) -> list[dict]:
        if self.protocol == "grpc":
            raw = self._call(self._client.get_model_repository_index, as_json=True).get("models", [])
        else:
            raw = self._call(self._client.get_model_repository_index)
        return [{"name": m.get("name"), "version": m.get("version"), "state": m.get("state"),
                 "reason": m.get("reason", "")} for m in raw]

    def model_config(self, model: str) -> dict:
        kw = {"as_json": True} if self.protocol == "grpc" else {}
        return _config_dict(self._call(self._client.get_model_config, model, model=model, **kw))

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
            self._labels[model] = self._parse_labels(result, info)
        return self._labels[model]

    def _plain_io(self, info, batch, class_count):
        shm, self._shm = self._shm, None
        try:
            return self._inputs_outputs(info, batch, class_count)
        finally:
            self._shm = shm

    def statistics(self, model: str = "") -> dict[str, dict[str, int]]:
        kw = {"as_json": True} if self.protocol == "grpc" else {}
        return normalize_statistics(self._call(self._client.get_inference_statistics, model, model=model or None, **kw))

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

    def infer_many(self, model: str, images: Sequence[bytes], batch_size: int | None = None,
                   top_k: int = 5) -> Prediction:
        """Any number of images, sent in requests of `batch_size` (default: max_batch_size)."""
        info = self.model_info(model)
        size = batch_size or info.max_batch_size or len(images)
        if info.max_batch_size and size > info.max_batch_size:
            raise self._too_large(model, size, info.max_batch_size)
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
                                                           conn_timeout=self.timeout_s)
        else:
            self._client = self._mod.InferenceServerClient(self.url, verbose=self.verbose)
        self._lock = asyncio.Lock()

    def _kw(self) -> dict:
        return {"client_timeout": self.timeout_s} if self.protocol == "grpc" else {}

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
            if time.monotonic() + pause >= deadline:
                break
            await asyncio.sleep(pause)
            attempt += 1
        if last is not None:
            raise self._unavailable(getattr(last, "detail", last), attempt + 1, time.monotonic() - start)
        raise self._not_ready_server(await self._safe_index() or [])

    async def server_metadata(self) -> dict:
        meta = await self._call(self._client.get_server_metadata)
        if not isinstance(meta, dict):
            meta = {"name": meta.name, "version": meta.version, "extensions": list(meta.extensions)}
        return meta

    async def repository_index(self) -> list[dict]:
        if self.protocol == "grpc":
            raw = (await self._call(self._client.get_model_repository_index, as_json=True)).get("models", [])
        else:
            raw = await self._call(self._client.get_model_repository_index)
        return [{"name": m.get("name"), "version": m.get("version"), "state": m.get("state"),
                 "reason": m.get("reason", "")} for m in raw]

    async def model_config(self, model: str) -> dict:
        kw = {"as_json": True} if self.protocol == "grpc" else {}
        return _config_dict(await self._call(self._client.get_model_config, model, model=model, **kw))

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
            shm, self._shm = self._shm, None
            try:
                inputs, outputs = self._inputs_outputs(info, sample[:1], class_count=info.num_classes)
            finally:
                self._shm = shm
            result = await self._call(self._client.infer, model, inputs, outputs=outputs, model=model)
            self._labels[model] = self._parse_labels(result, info)
        return self._labels[model]

    async def statistics(self, model: str = "") -> dict[str, dict[str, int]]:
        kw = {"as_json": True} if self.protocol == "grpc" else {}
        return normalize_statistics(await self._call(self._client.get_inference_statistics, model,
                                                     model=model or None, **kw))

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
        info = await self.model_info(model)
        size = batch_size or info.max_batch_size or len(images)
        if info.max_batch_size and size > info.max_batch_size:
            raise self._too_large(model, size, info.max_batch_size)
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


def _concat(model: str, parts: Iterable[Prediction]) -> Prediction:
    parts = list(parts)
    return Prediction(model, np.concatenate([p.logits for p in parts]),
                      [row for p in parts for row in p.top_k], sum(p.latency_s for p in parts))


def ensemble_name(model: str, precision: str | None) -> str:
    """`digits` + `fp16` -> `digits_fp16`; a full ensemble name passes through."""
    if precision and not model.endswith(f"_{precision}"):
        return layout.ensemble_model(model, precision)
    return model


# --- command-line helpers shared by clients.infer, clients.verify and clients.bench ----------------

def add_connection_arguments(parser, protocol_choices: bool = True) -> None:
    """--url, --protocol, --timeout, --retries: the same flags on every command."""
    parser.add_argument("--url", default=None,
                        help="server address host:port (default: 127.0.0.1:8000 for http, 127.0.0.1:8001 for grpc)")
    if protocol_choices:
        parser.add_argument("--protocol", choices=PROTOCOLS, default="http",
                            help="HTTP/REST or gRPC; both give the same results (default: %(default)s)")
    parser.add_argument("--timeout", type=float, default=30.0,
                        help="seconds to wait for the server (connection retries included) and per request "
                             "(default: %(default)s)")
    parser.add_argument("--retries", type=int, default=4,
                        help="connection attempts after the first, with exponential backoff, while the server "
                             "is unreachable (default: %(default)s)")


def served_base_models(index: list[dict]) -> list[str]:
    """Model names (`digits`) that have a ready preprocessing model on the server."""
    suffix = "_preprocess"
    return sorted(m["name"][: -len(suffix)] for m in index
                  if m["name"].endswith(suffix) and m.get("state") == "READY")


def served_precisions(index: list[dict], model: str) -> list[str]:
    """Precisions whose ensemble `<model>_<precision>` is ready (engine `<...>_infer` next to it)."""
    ready = {m["name"] for m in index if m.get("state") == "READY"}
    prefix = f"{model}_"
    return sorted(n[len(prefix):] for n in ready
                  if n.startswith(prefix) and f"{n}_infer" in ready and not n.endswith(("_infer", "_preprocess")))

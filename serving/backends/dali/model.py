# Over 400 lines on purpose: the python backend loads this file alone, so it cannot import helpers.
"""Stand-in for Triton's DALI backend, as a Python-based backend (`<backend-dir>/dali/model.py`).

Every model whose config says `backend: "dali"` loads through this file, unchanged, and finds its
pipeline as dali_backend does (src/dali_model.h, LoadModel): first a serialized pipeline at
`<version>/<default_model_filename or model.dali>`; else, when that file name ends in .py, the
pipeline definition in it; else the definition in `<version>/dali.py`. A definition is imported
and its one @autoserialize pipeline serialized with the DALI installed here, at load time, exactly
as the real backend does with its own DALI; so a repository does not depend on the DALI version
that built it. The serialized pipeline is kept in memory: rebuilding the repository on disk never
breaks a running model.

What a user can observe matches the real backend: inputs are fed to the `external_source` of the
same name, outputs are the pipeline's outputs by position, the pipeline's batch size is the
config's max_batch_size and its worker threads the `num_threads` parameter; with a KIND_GPU
instance the outputs stay in GPU memory and go to the next ensemble step as GPU tensors (DLPack).
Where this stand-in goes further: one bad image fails only its own request (a DALI pipeline error
otherwise takes down every request in the batch), with an INVALID_ARG error (HTTP 400, gRPC
INVALID_ARGUMENT) that names the image and the reason; and a pixel budget (config parameters
`max_image_pixels`, `max_request_pixels`) is checked from the image headers before anything is
decoded, so a small file that declares a huge image costs nothing; max_request_pixels also bounds
each pipeline run, whatever dynamic batching merged, and a JPEG too short for the size it declares
is refused as truncated.

This file is copied into the backend folder the launcher owns; it imports nothing from the
project, since the python backend stub loads it outside the project's import path.
"""
from __future__ import annotations

import importlib.util
import json
import os
import re
import sys
import tempfile
import uuid
from pathlib import Path

import numpy as np
import triton_python_backend_utils as pb_utils

# Leading bytes of the formats DALI's CPU decoder reads. Checking them up front turns the usual
# mistakes (sending a file name, text, an empty or all-padding buffer) into a precise message
# without spending a pipeline run, which after any decode error has to be rebuilt.
_SIGNATURES = (
    (b"\xff\xd8\xff", "JPEG"),
    (b"\x89PNG\r\n\x1a\n", "PNG"),
    (b"BM", "BMP"),
    (b"II*\x00", "TIFF"),
    (b"MM\x00*", "TIFF"),
    (b"\x00\x00\x00\x0cjP  \r\n\x87\n", "JPEG 2000"),
    (b"\xffO\xffQ", "JPEG 2000"),
    (b"P1", "PNM"), (b"P2", "PNM"), (b"P3", "PNM"), (b"P4", "PNM"), (b"P5", "PNM"), (b"P6", "PNM"),
)
# The executor dali_backend builds every pipeline with (its src/dali_executor/dali_pipeline.h,
# DaliPipeline::CreatePipeline: daliCreatePipeline(..., separated_execution=0, prefetch_queue_depth=1,
# ...), which DALI's c_api.cc runs on the pipelined, asynchronous executor). Pipeline.deserialize()
# without these is DALI's simple synchronous executor, about half as fast on the GPU. The same
# settings as contract.preprocess.backend_executor() (this file cannot import it; a test compares).
# DALI_USE_EXEC2=1 in the server's environment makes DALI's C++ executor factory replace that
# executor by the dynamic one (DALI's docs, "Environment variables"): the stand-in does the same.
_BACKEND_EXECUTOR = {"exec_pipelined": True, "exec_async": True, "prefetch_queue_depth": 1,
                     "exec_dynamic": os.environ.get("DALI_USE_EXEC2", "0").strip() not in ("", "0")}
_SUPPORTED = "JPEG, PNG, BMP, TIFF, PNM, JPEG 2000, WebP"
# A request row: b"LEN:" + the image's byte count (uint32, little endian) + the bytes + padding;
# the pipeline (dali.py, exact_bytes) trims to it. The same bytes as contract/images.py.
_LENGTH_MARKER = np.frombuffer(b"LEN:", dtype=np.uint8)
_PREFIX_BYTES = 8
_PACKED_HINT = ("each row must be b'LEN:' + the image's byte count (uint32, little endian) + the image's bytes, "
                "zero-padded to the longest row (contract.images.pack_batch); only a request of one image may "
                "send the bare file")


class _RequestError(Exception):
    """A problem with one request (bad input: INVALID_ARG); becomes that request's error response."""


def _error(message: str, invalid_input: bool = True):
    code = pb_utils.TritonError.INVALID_ARG if invalid_input else pb_utils.TritonError.INTERNAL
    return pb_utils.InferenceResponse(error=pb_utils.TritonError(message, code))


def _autoserialize(definition: Path) -> bytes:
    """What dali_backend runs at load (model_provider.h): import the file as a module and serialize
    its one @autoserialize pipeline with the DALI installed here. The marked pipeline is looked up
    among the module's own top-level names rather than by invoke_autoserialize's walk through every
    imported module (which touches lazy attributes: optree's jax integration imported jax and
    aborted the process on a host whose jax needs numpy 2)."""
    name = f"autoserialize_mod_{uuid.uuid4().hex}"
    spec = importlib.util.spec_from_file_location(name, str(definition))
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
        marked = [v for v in vars(module).values() if callable(v) and getattr(v, "_is_autoserialize", False)]
        if len(marked) != 1:
            raise ValueError(f"{len(marked)} @autoserialize pipelines at the top level of {definition.name}; "
                             "exactly one is needed")
        with tempfile.TemporaryDirectory(prefix="dali-autoserialize-") as tmp:
            target = os.path.join(tmp, "model.dali")
            marked[0]().serialize(filename=target)
            return Path(target).read_bytes()
    finally:
        sys.modules.pop(name, None)


def _image_format(sample: np.ndarray) -> str | None:
    head = sample[:16].tobytes()
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "WebP"
    for magic, name in _SIGNATURES:
        if head.startswith(magic):
            return name
    return None


def _exact(row: np.ndarray) -> np.ndarray:
    """The image bytes of a request row, as the pipeline trims it: after the length prefix, as many
    as it declares (checked by _exact_rows), or the whole row without one."""
    if len(row) >= _PREFIX_BYTES and (row[:4] == _LENGTH_MARKER).all():
        return row[_PREFIX_BYTES: _PREFIX_BYTES + int(row[4:8].view("<u4")[0])]
    return row


def _jpeg_cut_short(row: np.ndarray) -> bool:
    """True for a JPEG with no end-of-image marker (FF D9) near its end: the file was cut short.
    Inside entropy-coded data FF is always followed by 00 or a restart marker, so FF D9 only ends
    an image; the window (the last 4 KiB, at most half the file) leaves room for bytes some writers
    append after the marker and keeps out an EXIF thumbnail's own end marker near the start.
    Needed because nvJPEG's hardware decoder fills a truncated JPEG with grey without an error
    (measured on an H200, docs/local_server.md), while libjpeg-turbo on the cpu target fails."""
    window = min(4096, len(row) // 2)
    return window > 0 and row[-window:].tobytes().find(b"\xff\xd9") < 0


def _jpeg_min_bytes(row: np.ndarray, h: int, w: int) -> int:
    """A floor under the bytes of a Huffman-coded JPEG of h x w pixels: every 8x8 block of the first
    component costs at least one bit in the first scan (baseline, progressive and lossless alike),
    and that component has at least one block per 32x32 pixels (sampling factors go up to 4).
    A shorter file is truncated, and libjpeg would "decode" the rest as grey: a 632-byte header
    declaring 7000x7000 costs 147 MB and 0.2 s of decoding. 0 where no floor applies (not a JPEG,
    arithmetic coding, or no frame header found)."""
    data, pos = row.tobytes(), 2
    if not data.startswith(b"\xff\xd8"):
        return 0
    while pos + 4 <= len(data) and data[pos] == 0xFF:
        marker, seg = data[pos + 1], int.from_bytes(data[pos + 2: pos + 4], "big")
        if marker in (0xC0, 0xC1, 0xC2, 0xC3):     # SOF0-3: Huffman coding
            return -(-h // 32) * -(-w // 32) // 8
        if marker in (0xDA, 0xD9) or 0xC5 <= marker <= 0xCF and marker not in (0xC8, 0xCC):
            return 0                                # scan data, end, or an arithmetic/differential frame
        pos += 2 + seg
    return 0


def _first_over_image_limit(sizes: list[tuple[int, int]], max_image_pixels: int) -> int | None:
    """The index of the first (height, width) in `sizes` above max_image_pixels pixels (0: no
    limit), or None when every image is within it."""
    if max_image_pixels:
        for i, (h, w) in enumerate(sizes):
            if h * w > max_image_pixels:
                return i
    return None


def _over_request_limit(total_pixels: int, max_request_pixels: int) -> bool:
    """Whether a request (or a pipeline run) of total_pixels is above max_request_pixels (0: no limit)."""
    return bool(max_request_pixels) and total_pixels > max_request_pixels


def _plan_runs(work: list[tuple[int, int, int]], max_batch_size: int, max_request_pixels: int) -> list[list[int]]:
    """Pipeline runs for `work`, (request index, images, pixels) per request: whole requests,
    smallest pixel count first (a small request is not kept waiting behind large ones), each run at
    most max_batch_size images and max_request_pixels pixels (0: no limit); a request alone is
    always its own run (its own size was checked against both when it arrived).
    Returns the request indices of each run, in run order."""
    runs, current, size, pixels = [], [], 0, 0
    for r, n, p in sorted(work, key=lambda item: item[2]):
        if current and (size + n > max_batch_size or _over_request_limit(pixels + p, max_request_pixels)):
            runs.append(current)
            current, size, pixels = [], 0, 0
        current.append(r)
        size, pixels = size + n, pixels + p
    if current:
        runs.append(current)
    return runs


def _dims_match(shape, dims) -> bool:
    return len(shape) == len(dims) and all(d == -1 or d == s for s, d in zip(shape, dims))


def _last_lines(err: Exception) -> str:
    """The cause of a DALI error, without the pipeline-definition traceback DALI wraps it in."""
    text = str(err)
    op = re.search(r"operator `(?:nvidia\.dali\.)?([\w.]+)`", text)
    cause = text.split("encountered:", 1)[-1]
    lines = [ln.strip() for ln in cause.splitlines() if ln.strip() and "no longer valid" not in ln
             and not ln.strip().startswith("Critical error in pipeline")]
    cause = " ".join(lines[-2:]) or type(err).__name__
    return f"{op.group(1)}: {cause}" if op else cause


def _cause(err: Exception) -> str:
    """A decode failure's cause in words; DALI's nvImageCodec messages are sometimes bare codes
    ("nvImageCodec failure: '#3'") or end in nothing ("Failed to decode sample #0 :")."""
    text = _last_lines(err).strip()
    if re.search(r"(failure: '#\d+'|sample #\d+ :?)$", text) or text.endswith(":"):
        return f"the decoder gave no reason ({text!r})"
    return text


class TritonPythonModel:
    def initialize(self, args):
        self.config = json.loads(args["model_config"])
        self.name = args["model_name"]
        self.max_batch_size = int(self.config.get("max_batch_size", 0))
        if self.max_batch_size < 1:
            raise pb_utils.TritonModelException(
                f"{self.name}: max_batch_size is {self.max_batch_size}; a DALI model needs max_batch_size >= 1 "
                "(it is the pipeline's batch size)")
        self.inputs = self.config["input"]
        self.outputs = self.config["output"]
        for inp in self.inputs:
            if inp["data_type"] != "TYPE_UINT8" or len(inp["dims"]) != 1:
                raise pb_utils.TritonModelException(
                    f"{self.name}: input {inp['name']!r} is {inp['data_type']} {inp['dims']}; this stand-in feeds "
                    "encoded images and takes TYPE_UINT8 with dims [-1]")
        self.out_dtypes = [pb_utils.triton_string_to_numpy(o["data_type"]) for o in self.outputs]

        params = self.config.get("parameters", {})
        threads = params.get("num_threads", {}).get("string_value", "")
        self.num_threads = int(threads) if threads.strip() else (os.cpu_count() or 1)

        self.max_image_pixels = self._int_param(params, "max_image_pixels")
        self.max_request_pixels = self._int_param(params, "max_request_pixels")

        self.device_id = None
        if args.get("model_instance_kind", "CPU") == "GPU":
            from nvidia.dali.backend import GetCUDADeviceCount

            gpus = GetCUDADeviceCount()
            if gpus < 1:
                raise pb_utils.TritonModelException(
                    f"{self.name}: instance_group is KIND_GPU but this machine has no CUDA GPU; "
                    "serve the cpu target's repository (KIND_CPU, CPU-only pipeline) instead")
            self.device_id = int(args.get("model_instance_device_id", 0))
        # GPU outputs stay on the GPU (DLPack), unless TOOLKIT_DALI_HOST_OUTPUTS=1 asks for host
        # copies (to measure what keeping them on the device saves).
        self._device_outputs = (self.device_id is not None
                                and os.environ.get("TOOLKIT_DALI_HOST_OUTPUTS", "") not in ("1", "true", "yes"))
        self.pipe = None
        self._peek = None
        self._warm_sample = None   # one image that decoded, for re-warming a rebuilt GPU pipeline
        version_dir = Path(args["model_repository"]) / str(args["model_version"])
        self._serialized, self.dali_file = self._load_model_file(version_dir)
        self._input_names = [i["name"] for i in self.inputs]
        self._input_desc = ", ".join(f"{i['name']} (UINT8, [batch, bytes])" for i in self.inputs)

    def _int_param(self, params: dict, key: str) -> int:
        text = params.get(key, {}).get("string_value", "").strip()
        if not text:
            return 0
        try:
            value = int(text)
        except ValueError:
            raise pb_utils.TritonModelException(f"{self.name}: parameter {key} = {text!r} is not an integer") from None
        if value < 0:
            raise pb_utils.TritonModelException(f"{self.name}: parameter {key} = {value} must be >= 0 (0: no limit)")
        return value

    def _load_model_file(self, version_dir: Path) -> tuple[bytes, Path]:
        """Find, serialize if needed and build the pipeline as dali_backend does (the first location
        that loads wins); the serialized pipeline is kept in memory for later rebuilds."""
        default = version_dir / (self.config.get("default_model_filename") or "model.dali")
        fallback = version_dir / "dali.py"
        tried = []
        for path, serialized in ((default, default.suffix != ".py"), (fallback, False)):
            if not path.is_file():
                tried.append(f"{path.name}: missing")
                continue
            try:
                self.dali_file = path
                self._serialized = path.read_bytes() if serialized else _autoserialize(path)
                self._build()
                return self._serialized, path
            except (Exception, SystemExit) as err:  # noqa: BLE001 - report every location, as the backend does
                detail = str(err) if isinstance(err, pb_utils.TritonModelException) else _last_lines(err)
                tried.append(f"{path.name}: {type(err).__name__}: {detail}")
        where = "CPU" if self.device_id is None else f"GPU {self.device_id}"
        raise pb_utils.TritonModelException(
            f"{self.name}: could not build a DALI pipeline on {where} from {version_dir} ({'; '.join(tried)}). The "
            "DALI backend loads a serialized <version>/model.dali, or autoserializes the pipeline definition "
            "<version>/dali.py")

    def _build(self):
        from nvidia.dali import Pipeline

        try:
            pipe = Pipeline.deserialize(serialized_pipeline=self._serialized, device_id=self.device_id,
                                        num_threads=self.num_threads, batch_size=self.max_batch_size,
                                        **_BACKEND_EXECUTOR)
            pipe.build()
        except Exception as err:
            where = "CPU" if self.device_id is None else f"GPU {self.device_id}"
            raise pb_utils.TritonModelException(
                f"{self.name}: could not build {self.dali_file} on {where}: {_last_lines(err)} "
                "(a pipeline with the 'mixed' decoder needs a GPU; the cpu target's pipeline runs anywhere)"
            ) from None
        self.pipe = pipe
        if self._peek is None and (self.max_image_pixels or self.max_request_pixels):
            self._peek = self._peek_pipeline()

    def _peek_pipeline(self):
        # The image sizes from the headers only (DALI's own parser, the one its decoder uses):
        # nothing is decoded, so checking the pixel budget costs microseconds per image.
        from nvidia.dali import fn, pipeline_def, types

        @pipeline_def(batch_size=self.max_batch_size, num_threads=1, device_id=None, prefetch_queue_depth=1)
        def peek():
            data = fn.external_source(name="encoded", dtype=types.UINT8, ndim=1, no_copy=True)
            return fn.peek_image_shape(data, dtype=types.INT64, adjust_orientation=False)

        pipe = peek()
        pipe.build()
        return pipe

    # --- validation -----------------------------------------------------------------------------

    def _samples(self, request) -> tuple[dict[str, list[np.ndarray]], int]:
        """(the request's images per input, each a 1-D uint8 array; the pixels they declare, 0 without
        a budget); raises _RequestError."""
        per_input, count, pixels = {}, None, 0
        for inp in self.inputs:
            name = inp["name"]
            tensor = pb_utils.get_input_tensor_by_name(request, name)
            if tensor is None:
                raise _RequestError(f"{self.name}: the request has no input {name!r}; this model takes {self._input_desc}")
            arr = tensor.as_numpy()
            if arr.dtype != np.uint8:
                raise _RequestError(f"{self.name}: input {name!r} is {arr.dtype}; send the encoded image bytes as UINT8")
            if arr.ndim != 2:
                raise _RequestError(
                    f"{self.name}: input {name!r} has shape {list(arr.shape)}; expected [batch, bytes] "
                    "(one row per image: contract.images.pack_batch)")
            n, length = arr.shape
            if n < 1 or length < 1:
                raise _RequestError(f"{self.name}: input {name!r} is empty (shape {list(arr.shape)}); send at least one "
                                    "encoded image")
            if n > self.max_batch_size:
                raise _RequestError(f"{self.name}: {n} images in one request; max_batch_size is {self.max_batch_size}")
            if count is not None and n != count:
                raise _RequestError(f"{self.name}: inputs have different batch sizes ({count} and {n})")
            count = n
            exact = self._exact_rows(name, arr)
            for i, row in enumerate(exact):
                if not row.any():
                    raise _RequestError(f"{self.name}: image {i} of {n} is empty ({len(row)} bytes, all zero)")
                if _image_format(row) is None:
                    head = " ".join(f"{b:02x}" for b in row[:8])
                    raise _RequestError(
                        f"{self.name}: image {i} of {n} is not an encoded image (starts with bytes {head}); "
                        f"send the file's bytes, formats: {_SUPPORTED}")
                if _image_format(row) == "JPEG" and _jpeg_cut_short(row):
                    raise _RequestError(
                        f"{self.name}: image {i} of {n} (JPEG, {len(row)} bytes) could not be decoded: it has no "
                        "end-of-image marker near its end, the file is truncated; nothing was decoded")
            if self._peek is not None:
                pixels += self._check_pixels(exact)
            per_input[name] = list(arr)     # fed as sent: the pipeline trims each row itself
        return per_input, pixels

    def _exact_rows(self, name: str, arr: np.ndarray) -> list[np.ndarray]:
        """Each row's image bytes (`_exact`); raises _RequestError for a multi-image request with a
        bare row (its padding would be decoded as part of the image) or a length past the row."""
        n, length = arr.shape
        tagged = (arr[:, :4] == _LENGTH_MARKER).all(axis=1) if length >= _PREFIX_BYTES else np.zeros(n, bool)
        if n > 1 and not tagged.all():
            i = int(np.argmin(tagged))
            raise _RequestError(f"{self.name}: image {i} of {n} in input {name!r} has no length prefix, so where its "
                                f"bytes end cannot be told from padding; {_PACKED_HINT}")
        if tagged.any():
            declared = arr[:, 4:8].copy().view("<u4")[:, 0].astype(np.int64)
            over = tagged & ((declared < 1) | (declared > length - _PREFIX_BYTES))
            if over.any():
                i = int(np.argmax(over))
                raise _RequestError(
                    f"{self.name}: image {i} of {n} in input {name!r} declares {declared[i]} bytes, but its row holds "
                    f"{length - _PREFIX_BYTES} after the length prefix; {_PACKED_HINT}")
        return [_exact(row) for row in arr]

    def _peek_shapes(self, rows: list[np.ndarray]) -> list[tuple[int, int]]:
        self._peek.feed_input("encoded", rows)
        (shapes,) = self._peek.run()
        dims = [np.asarray(shapes[i]) for i in range(len(rows))]     # (H, W, C) per image
        return [(int(d[0]), int(d[1])) for d in dims]

    def _check_pixels(self, rows: list[np.ndarray]) -> int:
        """The pixel budget, from the headers: the request's pixels, or _RequestError naming the image
        and the limit."""
        n = len(rows)
        try:
            sizes = self._peek_shapes(rows)
        except Exception:
            self._peek = self._peek_pipeline()   # unusable after an error, like any DALI pipeline
            for i, row in enumerate(rows):
                try:
                    self._peek_shapes([row])
                except Exception as err:
                    self._peek = self._peek_pipeline()
                    raise _RequestError(
                        f"{self.name}: image {i} of {n} ({_image_format(row) or 'unknown format'}, {len(row)} bytes) "
                        f"could not be decoded: its header cannot be read ({_cause(err)}); the file "
                        "is truncated or damaged") from None
            raise
        over = _first_over_image_limit(sizes, self.max_image_pixels)
        for i, (h, w) in enumerate(sizes):
            if i == over:
                raise _RequestError(
                    f"{self.name}: image {i} of {n} is {w}x{h} = {h * w:,} pixels, above the limit of "
                    f"{self.max_image_pixels:,} pixels per image (config parameter max_image_pixels); nothing was "
                    "decoded. Downscale the image before sending it")
            floor = _jpeg_min_bytes(rows[i], h, w)
            if len(rows[i]) < floor:
                raise _RequestError(
                    f"{self.name}: image {i} of {n} (JPEG, {len(rows[i])} bytes) declares {w}x{h} pixels, which need "
                    f"at least {floor:,} bytes of coded data (one bit per 32x32 pixels); the file is truncated or a "
                    "decompression bomb, nothing was decoded")
        total = sum(h * w for h, w in sizes)
        if _over_request_limit(total, self.max_request_pixels):
            raise _RequestError(
                f"{self.name}: the {n} images of this request hold {total:,} pixels together, above the limit of "
                f"{self.max_request_pixels:,} pixels per request (config parameter max_request_pixels); nothing was "
                "decoded. Send fewer or smaller images per request")
        return total

    def _check_outputs(self, outs: list) -> str | None:
        """Why the pipeline's outputs do not fit the config (a server-side problem), or None."""
        if len(outs) != len(self.outputs):
            return f"{self.name}: the pipeline has {len(outs)} outputs but the config lists {len(self.outputs)}"
        for arr, cfg, dtype in zip(outs, self.outputs, self.out_dtypes):
            # numpy arrays (host) or torch CUDA tensors (device outputs): compare by type name.
            if (str(arr.dtype).removeprefix("torch.") != np.dtype(dtype).name
                    or not _dims_match(tuple(arr.shape[1:]), cfg["dims"])):
                return (f"{self.name}: the pipeline gives {cfg['name']} as {arr.dtype} {list(arr.shape[1:])}, the "
                        f"config says {cfg['data_type']} {cfg['dims']}; rebuild the repository so both agree")
        return None

    # --- running --------------------------------------------------------------------------------

    def _run(self, batch: dict[str, list[np.ndarray]]) -> list:
        """The pipeline's outputs for `batch`: numpy arrays, or torch CUDA tensors for GPU outputs
        of a KIND_GPU instance (handed to the next step as GPU tensors, as dali_backend does)."""
        for name, samples in batch.items():
            self.pipe.feed_input(name, samples)
        outs = self.pipe.run()
        result = []
        for out in outs:
            if hasattr(out, "as_cpu"):       # a GPU output
                if self._device_outputs and out.is_dense_tensor():
                    result.append(self._gpu_tensor(out))
                    continue
                out = out.as_cpu()
            if out.is_dense_tensor():
                result.append(out.as_array())
            else:
                result.append(np.stack([np.asarray(out[i]) for i in range(len(out))]))
        return result

    def _gpu_tensor(self, out):
        import torch

        # DALI works on its own stream and reuses its output buffers on the next run, and the
        # python backend hands the tensor on without waiting for any stream. So: wait for DALI's
        # work (the device holds nothing else of this process), copy the batch device to device
        # (about 0.05 ms for 128 x 3 x 224 x 224 float32 on an H100/H200) so DALI's buffer is free for
        # its next run, and wait for that copy on its own stream before the tensor leaves this
        # process. (Without the waits the next step read unfinished data: ResNet-50 logits off by
        # up to 61 on an H100.) Nothing is kept alive past the response: the backend copies GPU
        # outputs into Triton's buffers before the next execute (served logits stayed exact with
        # no keep-alive list, docs/gpu_ensemble.md).
        torch.cuda.synchronize(self.device_id)
        stream = torch.cuda.current_stream(self.device_id)
        copy = torch.from_dlpack(out.as_tensor()).clone()
        stream.synchronize()
        return copy

    def _run_or_rebuild(self, batch):
        try:
            outs = self._run(batch)
        except Exception:
            # A DALI pipeline is unusable after any error ("no longer valid"); a rebuild takes ~1 ms.
            self._build()
            self._rewarm()
            raise
        if self._warm_sample is None and self.device_id is not None:
            self._warm_sample = next(iter(batch.values()))[0].copy()
        return outs

    def _rewarm(self):
        """Run one max_batch_size batch through a rebuilt GPU pipeline before anything else.

        The first batch a GPU pipeline runs sets how much of every later batch its hardware JPEG
        decoder takes: after a first batch of 1, batch 128 ran at the rate of no hardware decoder
        (about a fifth; docs/gpu.md, "The first batch"). The model's warm-up (largest batch first)
        covers the pipeline built at load; this covers the ones rebuilt after a bad image. (The
        real dali_backend rebuilds too, with no warm-up: docs/gpu.md says what that means.)"""
        if self._warm_sample is None or self.device_id is None:
            return
        try:
            self._run({name: [self._warm_sample] * self.max_batch_size for name in self._input_names})
        except Exception:   # noqa: BLE001 - a failed warm-up only costs speed; start clean
            self._build()

    def _find_bad_image(self, samples: dict[str, list[np.ndarray]], err: Exception) -> tuple[str, bool]:
        """(message, the input is to blame) for a request whose pipeline run failed."""
        n = len(next(iter(samples.values())))
        for i in range(n):
            one = {k: v[i:i + 1] for k, v in samples.items()}
            try:
                self._run_or_rebuild(one)
            except Exception as bad:
                image = _exact(next(iter(one.values()))[0])
                return (f"{self.name}: image {i} of {n} ({_image_format(image) or 'unknown format'}, {len(image)} "
                        f"bytes) could not be decoded: {_cause(bad)}; the file is truncated, damaged or in an "
                        f"encoding the decoder does not support", True)
        return f"{self.name}: the pipeline failed on this request: {_last_lines(err)}", False

    def execute(self, requests):
        responses = [None] * len(requests)
        work = []
        for r, request in enumerate(requests):
            try:
                work.append((r, *self._samples(request)))
            except _RequestError as err:
                responses[r] = _error(str(err))

        # Pack whole requests into pipeline runs of at most max_batch_size images and, since
        # dynamic batching merges requests, at most max_request_pixels pixels: the budget bounds
        # what one run decodes, not only what one request declares. Smallest requests first, so
        # a small request batched with large ones is not kept waiting behind them.
        samples_of = {r: samples for r, samples, _ in work}
        sizes = [(r, len(next(iter(samples.values()))), p) for r, samples, p in work]
        chunks = [[(r, samples_of[r]) for r in run]
                  for run in _plan_runs(sizes, self.max_batch_size, self.max_request_pixels)]

        for chunk in chunks:
            batch = {inp["name"]: [s for _, samples in chunk for s in samples[inp["name"]]] for inp in self.inputs}
            try:
                outs = self._run_or_rebuild(batch)
            except Exception:
                # One damaged image kills the whole pipeline run: rerun request by request so
                # the others still get their answer.
                for r, samples in chunk:
                    try:
                        outs = self._run_or_rebuild(samples)
                    except Exception as err:
                        msg, invalid_input = self._find_bad_image(samples, err)
                        responses[r] = _error(msg, invalid_input)
                        continue
                    responses[r] = self._respond(outs)
                continue
            start = 0
            for r, samples in chunk:
                n = len(next(iter(samples.values())))
                responses[r] = self._respond([o[start:start + n] for o in outs])
                start += n
        return responses

    def _respond(self, outs: list):
        problem = self._check_outputs(outs)
        if problem:
            return _error(problem, invalid_input=False)
        tensors = []
        for cfg, arr in zip(self.outputs, outs):
            if isinstance(arr, np.ndarray):
                tensors.append(pb_utils.Tensor(cfg["name"], np.ascontiguousarray(arr)))
            else:
                from torch.utils.dlpack import to_dlpack

                tensors.append(pb_utils.Tensor.from_dlpack(cfg["name"], to_dlpack(arr.contiguous())))
        return pb_utils.InferenceResponse(output_tensors=tensors)

    def finalize(self):
        self.pipe = None
        self._peek = None

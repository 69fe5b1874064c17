"""Stand-in for Triton's DALI backend, as a Python-based backend (`<backend-dir>/dali/model.py`).

Every model whose config says `backend: "dali"` loads through this file, unchanged: it runs the
model's own serialized pipeline (`<version>/model.dali`) with DALI, as the real backend does.

What a user can observe matches the real backend: inputs are fed to the `external_source` of the
same name, outputs are the pipeline's outputs by position, the pipeline's batch size is the
config's max_batch_size and its worker threads the `num_threads` parameter. Where this stand-in
goes further: one bad image fails only its own request (a DALI pipeline error otherwise takes
down every request in the batch), with a message that names the image.

This file is copied into the backend folder the launcher owns; it imports nothing from the
project, since the python backend stub loads it outside the project's import path.
"""
from __future__ import annotations

import json
import os
import re
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
_JPEG_SOI = np.frombuffer(b"\xff\xd8\xff", dtype=np.uint8)
_SUPPORTED = "JPEG, PNG, BMP, TIFF, PNM, JPEG 2000, WebP"


class _RequestError(Exception):
    """A problem with one request; becomes that request's error response."""


def _image_format(sample: np.ndarray) -> str | None:
    head = sample[:16].tobytes()
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "WebP"
    for magic, name in _SIGNATURES:
        if head.startswith(magic):
            return name
    return None


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

        version_dir = Path(args["model_repository"]) / str(args["model_version"])
        filename = self.config.get("default_model_filename") or "model.dali"
        self.dali_file = version_dir / filename
        if not self.dali_file.is_file():
            raise pb_utils.TritonModelException(
                f"{self.name}: serialized pipeline {self.dali_file} not found; the DALI backend loads "
                f"<model>/<version>/{filename}")

        self.device_id = None
        if args.get("model_instance_kind", "CPU") == "GPU":
            from nvidia.dali.backend import GetCUDADeviceCount

            gpus = GetCUDADeviceCount()
            if gpus < 1:
                raise pb_utils.TritonModelException(
                    f"{self.name}: instance_group is KIND_GPU but this machine has no CUDA GPU; "
                    "serve the cpu target's repository (KIND_CPU, CPU-only pipeline) instead")
            self.device_id = int(args.get("model_instance_device_id", 0))
        self.pipe = None
        self._build()
        self._input_desc = ", ".join(f"{i['name']} (UINT8, [batch, bytes])" for i in self.inputs)

    def _build(self):
        from nvidia.dali import Pipeline

        try:
            pipe = Pipeline.deserialize(filename=str(self.dali_file), device_id=self.device_id,
                                        num_threads=self.num_threads, batch_size=self.max_batch_size)
            pipe.build()
        except Exception as err:
            where = "CPU" if self.device_id is None else f"GPU {self.device_id}"
            raise pb_utils.TritonModelException(
                f"{self.name}: could not build {self.dali_file} on {where}: {_last_lines(err)} "
                "(a pipeline with the 'mixed' decoder needs a GPU; the cpu target's model.dali runs anywhere)"
            ) from None
        self.pipe = pipe

    # --- validation -----------------------------------------------------------------------------

    def _samples(self, request) -> dict[str, list[np.ndarray]]:
        """The request's images per input, each a 1-D uint8 array; raises _RequestError."""
        per_input, count = {}, None
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
                    "(one row of zero-padded encoded bytes per image)")
            n, length = arr.shape
            if n < 1 or length < 1:
                raise _RequestError(f"{self.name}: input {name!r} is empty (shape {list(arr.shape)}); send at least one "
                                    "encoded image")
            if n > self.max_batch_size:
                raise _RequestError(f"{self.name}: {n} images in one request; max_batch_size is {self.max_batch_size}")
            if count is not None and n != count:
                raise _RequestError(f"{self.name}: inputs have different batch sizes ({count} and {n})")
            count = n
            # Vectorized first pass (one numpy call per check, not one per image); the slow
            # per-image path runs only to name an offending image.
            empty = ~arr.any(axis=1)
            if empty.any():
                i = int(np.argmax(empty))
                raise _RequestError(f"{self.name}: image {i} of {n} is empty (all {length} bytes are zero padding)")
            jpeg = (arr[:, :3] == _JPEG_SOI).all(axis=1) if length >= 3 else np.zeros(n, bool)
            for i in np.flatnonzero(~jpeg):
                if _image_format(arr[i]) is None:
                    head = " ".join(f"{b:02x}" for b in arr[i, :8])
                    raise _RequestError(
                        f"{self.name}: image {i} of {n} is not an encoded image (starts with bytes {head}); "
                        f"send the file's bytes, formats: {_SUPPORTED}")
            rows = list(arr)
            per_input[name] = rows
        return per_input

    def _check_outputs(self, outs: list[np.ndarray]) -> None:
        if len(outs) != len(self.outputs):
            raise _RequestError(f"{self.name}: the pipeline has {len(outs)} outputs but the config lists "
                                f"{len(self.outputs)}")
        for arr, cfg, dtype in zip(outs, self.outputs, self.out_dtypes):
            if arr.dtype != dtype or not _dims_match(arr.shape[1:], cfg["dims"]):
                raise _RequestError(
                    f"{self.name}: the pipeline gives {cfg['name']} as {arr.dtype} {list(arr.shape[1:])}, the config "
                    f"says {cfg['data_type']} {cfg['dims']}; rebuild the repository so both agree")

    # --- running --------------------------------------------------------------------------------

    def _run(self, batch: dict[str, list[np.ndarray]]) -> list[np.ndarray]:
        for name, samples in batch.items():
            self.pipe.feed_input(name, samples)
        outs = self.pipe.run()
        result = []
        for out in outs:
            if hasattr(out, "as_cpu"):
                out = out.as_cpu()
            if out.is_dense_tensor():
                result.append(out.as_array())
            else:
                result.append(np.stack([np.asarray(out[i]) for i in range(len(out))]))
        return result

    def _run_or_rebuild(self, batch):
        try:
            return self._run(batch)
        except Exception:
            # A DALI pipeline is unusable after any error ("no longer valid"); a rebuild takes ~1 ms.
            self._build()
            raise

    def _find_bad_image(self, samples: dict[str, list[np.ndarray]], err: Exception) -> str:
        n = len(next(iter(samples.values())))
        for i in range(n):
            try:
                self._run_or_rebuild({k: v[i:i + 1] for k, v in samples.items()})
            except Exception as one:
                return (f"{self.name}: image {i} of {n} could not be decoded/preprocessed "
                        f"(truncated or damaged file?): {_last_lines(one)}")
        return f"{self.name}: the pipeline failed on this request: {_last_lines(err)}"

    def execute(self, requests):
        responses = [None] * len(requests)
        work = []
        for r, request in enumerate(requests):
            try:
                work.append((r, self._samples(request)))
            except _RequestError as err:
                responses[r] = pb_utils.InferenceResponse(error=pb_utils.TritonError(str(err)))

        # Pack whole requests into pipeline batches of at most max_batch_size images.
        chunks, current, size = [], [], 0
        for r, samples in work:
            n = len(next(iter(samples.values())))
            if current and size + n > self.max_batch_size:
                chunks.append(current)
                current, size = [], 0
            current.append((r, samples))
            size += n
        if current:
            chunks.append(current)

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
                        msg = self._find_bad_image(samples, err)
                        responses[r] = pb_utils.InferenceResponse(error=pb_utils.TritonError(msg))
                        continue
                    responses[r] = self._respond(outs)
                continue
            start = 0
            for r, samples in chunk:
                n = len(next(iter(samples.values())))
                responses[r] = self._respond([o[start:start + n] for o in outs])
                start += n
        return responses

    def _respond(self, outs: list[np.ndarray]):
        try:
            self._check_outputs(outs)
        except _RequestError as err:
            return pb_utils.InferenceResponse(error=pb_utils.TritonError(str(err)))
        return pb_utils.InferenceResponse(output_tensors=[
            pb_utils.Tensor(cfg["name"], np.ascontiguousarray(arr)) for cfg, arr in zip(self.outputs, outs)])

    def finalize(self):
        self.pipe = None

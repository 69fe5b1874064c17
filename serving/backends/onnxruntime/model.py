"""Stand-in for Triton's ONNX Runtime backend, as a Python-based backend
(`<backend-dir>/onnxruntime/model.py`).

Triton maps `platform: "onnxruntime_onnx"` to the backend named `onnxruntime`, so every such
model loads through this file with its config unchanged. It runs `<version>/<default_model_filename>`
with ONNX Runtime's CPUExecutionProvider, `intra_op_thread_count` as the intra-op thread count,
and the requests of one dynamic batch concatenated into one session run, as the real backend does.
A malformed request fails alone, with a message that says what was expected.

Copied into the launcher's backend folder; imports nothing from the project.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import triton_python_backend_utils as pb_utils

# ONNX Runtime's type strings for the config's data types.
_ORT_TYPES = {
    "TYPE_BOOL": "tensor(bool)", "TYPE_UINT8": "tensor(uint8)", "TYPE_UINT16": "tensor(uint16)",
    "TYPE_UINT32": "tensor(uint32)", "TYPE_UINT64": "tensor(uint64)", "TYPE_INT8": "tensor(int8)",
    "TYPE_INT16": "tensor(int16)", "TYPE_INT32": "tensor(int32)", "TYPE_INT64": "tensor(int64)",
    "TYPE_FP16": "tensor(float16)", "TYPE_FP32": "tensor(float)", "TYPE_FP64": "tensor(double)",
}


class _RequestError(Exception):
    """A problem with one request; becomes that request's error response."""


def _dims_match(shape, dims) -> bool:
    return len(shape) == len(dims) and all(d == -1 or d == s for s, d in zip(shape, dims))


def _short(err: Exception) -> str:
    text = " ".join(str(err).split())
    return text if len(text) < 400 else text[:400] + "..."


class TritonPythonModel:
    def initialize(self, args):
        import onnxruntime as ort

        self.config = json.loads(args["model_config"])
        self.name = args["model_name"]
        self.max_batch_size = int(self.config.get("max_batch_size", 0))
        self.batched = self.max_batch_size > 0
        if args.get("model_instance_kind", "CPU") == "GPU":
            raise pb_utils.TritonModelException(
                f"{self.name}: instance_group is KIND_GPU, but this ONNX Runtime stand-in runs on CPU only; "
                "use the cpu target's repository (KIND_CPU)")

        self.inputs = self.config["input"]
        self.outputs = self.config["output"]
        self.in_dtypes = {i["name"]: pb_utils.triton_string_to_numpy(i["data_type"]) for i in self.inputs}
        self.out_dtypes = {o["name"]: pb_utils.triton_string_to_numpy(o["data_type"]) for o in self.outputs}

        filename = self.config.get("default_model_filename") or "model.onnx"
        model_file = Path(args["model_repository"]) / str(args["model_version"]) / filename
        if not model_file.is_file():
            raise pb_utils.TritonModelException(f"{self.name}: model file {model_file} not found")

        opts = ort.SessionOptions()
        threads = self.config.get("parameters", {}).get("intra_op_thread_count", {}).get("string_value", "")
        # 0 (or unset) lets ONNX Runtime choose, as in the real backend.
        opts.intra_op_num_threads = int(threads) if threads.strip() else 0
        # ONNX Runtime's workers spin after each run by default. Here they share the cores with the
        # DALI stand-in's process, and spinning halves the ensemble's throughput on a 2-core machine
        # (measured: benchmarks/bench_local.py); a config parameter of the same name overrides it.
        spin = self.config.get("parameters", {}).get("session.intra_op.allow_spinning", {}).get("string_value", "0")
        opts.add_session_config_entry("session.intra_op.allow_spinning", spin)
        # The model is read into memory once and the session built from those bytes: nothing on disk
        # is used after load, so a rebuild that swaps or deletes the repository folder never breaks
        # a running server (models with external data files are not produced by the builder).
        try:
            model_bytes = model_file.read_bytes()
        except OSError as err:
            raise pb_utils.TritonModelException(f"{self.name}: cannot read {model_file}: {err}") from None
        try:
            self.session = ort.InferenceSession(model_bytes, sess_options=opts,
                                                providers=["CPUExecutionProvider"])
        except Exception as err:
            raise pb_utils.TritonModelException(f"{self.name}: ONNX Runtime cannot load {model_file}: {_short(err)}") from None
        self._check_model()
        self.output_names = [o["name"] for o in self.outputs]
        self._input_desc = ", ".join(
            f"{i['name']} ({i['data_type'][5:]}, {([-1] if self.batched else []) + list(i['dims'])})" for i in self.inputs)

    def _check_model(self):
        """The config must agree with the ONNX file, as the real backend checks at load time."""
        model_in = {i.name: i for i in self.session.get_inputs()}
        model_out = {o.name: o for o in self.session.get_outputs()}
        for kind, cfgs, found in (("input", self.inputs, model_in), ("output", self.outputs, model_out)):
            for cfg in cfgs:
                node = found.get(cfg["name"])
                if node is None:
                    raise pb_utils.TritonModelException(
                        f"{self.name}: config {kind} {cfg['name']!r} is not an {kind} of the ONNX model "
                        f"(it has {sorted(found)})")
                if _ORT_TYPES.get(cfg["data_type"]) != node.type:
                    raise pb_utils.TritonModelException(
                        f"{self.name}: config {kind} {cfg['name']!r} is {cfg['data_type']}, the ONNX model has {node.type}")
        missing = sorted(set(model_in) - {i["name"] for i in self.inputs})
        if missing:
            raise pb_utils.TritonModelException(f"{self.name}: ONNX model inputs {missing} are not in the config")

    def _read(self, request) -> dict[str, np.ndarray]:
        arrays, count = {}, None
        for cfg in self.inputs:
            name = cfg["name"]
            tensor = pb_utils.get_input_tensor_by_name(request, name)
            if tensor is None:
                raise _RequestError(f"{self.name}: the request has no input {name!r}; this model takes {self._input_desc}")
            arr = tensor.as_numpy()
            want = self.in_dtypes[name]
            if arr.dtype != want:
                raise _RequestError(f"{self.name}: input {name!r} is {arr.dtype}; expected {np.dtype(want).name}")
            dims = list(cfg["dims"])
            item = arr.shape[1:] if self.batched else arr.shape
            if (self.batched and arr.ndim < 1) or not _dims_match(item, dims):
                expect = ([-1] if self.batched else []) + dims
                raise _RequestError(f"{self.name}: input {name!r} has shape {list(arr.shape)}; expected {expect} "
                                    "(-1: any size)")
            if self.batched:
                n = arr.shape[0]
                if n < 1:
                    raise _RequestError(f"{self.name}: input {name!r} has batch size 0; send at least one item")
                if n > self.max_batch_size:
                    raise _RequestError(f"{self.name}: batch of {n}; max_batch_size is {self.max_batch_size}")
                if count is not None and n != count:
                    raise _RequestError(f"{self.name}: inputs have different batch sizes ({count} and {n})")
                count = n
            arrays[name] = arr
        return arrays

    def _infer(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        outs = self.session.run(self.output_names, feeds)
        return [np.asarray(o, dtype=self.out_dtypes[n]) for n, o in zip(self.output_names, outs)]

    def _respond(self, outs):
        return pb_utils.InferenceResponse(output_tensors=[
            pb_utils.Tensor(n, np.ascontiguousarray(o)) for n, o in zip(self.output_names, outs)])

    def _error(self, msg):
        return pb_utils.InferenceResponse(error=pb_utils.TritonError(msg))

    def _one(self, feeds):
        try:
            return self._respond(self._infer(feeds))
        except Exception as err:
            return self._error(f"{self.name}: ONNX Runtime failed on this request: {_short(err)}")

    def execute(self, requests):
        responses = [None] * len(requests)
        valid = []
        for r, request in enumerate(requests):
            try:
                valid.append((r, self._read(request)))
            except _RequestError as err:
                responses[r] = self._error(str(err))
        if not self.batched:
            for r, feeds in valid:
                responses[r] = self._one(feeds)
            return responses

        # Requests concatenate only where their per-item shapes agree (dims of -1 may differ).
        groups: dict[tuple, list] = {}
        for r, feeds in valid:
            key = tuple((k, v.shape[1:]) for k, v in sorted(feeds.items()))
            groups.setdefault(key, []).append((r, feeds))
        for members in groups.values():
            chunk, size = [], 0
            for r, feeds in members + [(None, None)]:
                n = 0 if feeds is None else next(iter(feeds.values())).shape[0]
                if chunk and (feeds is None or size + n > self.max_batch_size):
                    self._run_chunk(chunk, responses)
                    chunk, size = [], 0
                if feeds is not None:
                    chunk.append((r, feeds))
                    size += n
        return responses

    def _run_chunk(self, chunk, responses):
        if len(chunk) == 1:
            r, feeds = chunk[0]
            responses[r] = self._one(feeds)
            return
        names = list(chunk[0][1])
        feeds = {k: np.concatenate([f[k] for _, f in chunk]) for k in names}
        try:
            outs = self._infer(feeds)
        except Exception:
            # Find the culprit: each request alone, so only a bad one fails.
            for r, f in chunk:
                responses[r] = self._one(f)
            return
        start = 0
        for r, f in chunk:
            n = next(iter(f.values())).shape[0]
            responses[r] = self._respond([o[start:start + n] for o in outs])
            start += n

    def finalize(self):
        self.session = None

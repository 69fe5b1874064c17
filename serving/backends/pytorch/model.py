"""Stand-in for Triton's PyTorch (LibTorch) backend, as a Python-based backend
(`<backend-dir>/pytorch/model.py`).

Triton maps `platform: "pytorch_libtorch"` to the backend named `pytorch`, so every such model
loads through this file with its config unchanged. It runs `<version>/<default_model_filename>`
(model.pt) with torch.jit on the instance's device, as the real backend does: KIND_GPU -> the
instance's GPU (cuda:<device id>), KIND_CPU -> the CPU. Inputs bind to the script's arguments by
position (`INPUT__0`, `INPUT__1`, ... by their index, other names in config order), outputs the
same way. The requests of one dynamic batch run as one call.

GPU tensors stay on the GPU: inputs are taken through DLPack (a GPU tensor from the DALI step
arrives as one when the config sets FORCE_CPU_ONLY_INPUT_TENSORS = "no"), and outputs of a GPU
instance go back as GPU tensors (`pb_utils.Tensor.from_dlpack`), so an ensemble passes device
memory from step to step. A malformed request fails alone, with a message that says what was expected.

Copied into the launcher's backend folder; imports nothing from the project.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import triton_python_backend_utils as pb_utils

_INDEXED = re.compile(r"^.+__(\d+)$")


class _RequestError(Exception):
    """A problem with one request; becomes that request's error response."""


def _short(err: Exception) -> str:
    text = " ".join(str(err).split())
    return text if len(text) < 400 else text[:400] + "..."


def _by_position(entries: list[dict]) -> list[dict]:
    """Config tensors in argument order: <name>__<index> by index, else as listed."""
    indexed = [(_INDEXED.match(e["name"]), e) for e in entries]
    if all(m for m, _ in indexed):
        return [e for _, e in sorted(indexed, key=lambda me: int(me[0].group(1)))]
    return list(entries)


class TritonPythonModel:
    def initialize(self, args):
        import torch

        self.torch = torch
        self.config = json.loads(args["model_config"])
        self.name = args["model_name"]
        self.max_batch_size = int(self.config.get("max_batch_size", 0))
        self.batched = self.max_batch_size > 0
        self.inputs = _by_position(self.config["input"])
        self.outputs = _by_position(self.config["output"])
        self.in_dtypes = {i["name"]: self._torch_dtype(i["data_type"]) for i in self.inputs}
        self.out_dtypes = {o["name"]: self._torch_dtype(o["data_type"]) for o in self.outputs}

        if args.get("model_instance_kind", "CPU") == "GPU":
            if not torch.cuda.is_available():
                raise pb_utils.TritonModelException(
                    f"{self.name}: instance_group is KIND_GPU but torch sees no CUDA GPU; serve the cpu "
                    "target's repository (KIND_CPU) instead")
            self.device = torch.device("cuda", int(args.get("model_instance_device_id", 0)))
            torch.cuda.set_device(self.device)
        else:
            self.device = torch.device("cpu")
        params = self.config.get("parameters", {})
        threads = params.get("INTRA_OP_THREAD_COUNT", {}).get("string_value", "").strip()
        if threads:  # the real backend's parameter of the same name
            torch.set_num_threads(int(threads))

        filename = self.config.get("default_model_filename") or "model.pt"
        model_file = Path(args["model_repository"]) / str(args["model_version"]) / filename
        if not model_file.is_file():
            raise pb_utils.TritonModelException(f"{self.name}: model file {model_file} not found")
        try:
            self.module = torch.jit.load(str(model_file), map_location=self.device).eval()
        except Exception as err:
            raise pb_utils.TritonModelException(
                f"{self.name}: torch.jit cannot load {model_file}: {_short(err)}") from None
        self._input_desc = ", ".join(
            f"{i['name']} ({i['data_type'][5:]}, {([-1] if self.batched else []) + list(i['dims'])})"
            for i in self.inputs)
        self.gpu_inputs = 0      # inputs that arrived in GPU memory (for the benchmark's evidence)
        self.host_inputs = 0

    def _torch_dtype(self, triton_type: str):
        t = self.torch
        table = {"TYPE_FP32": t.float32, "TYPE_FP16": t.float16, "TYPE_FP64": t.float64,
                 "TYPE_INT64": t.int64, "TYPE_INT32": t.int32, "TYPE_INT16": t.int16, "TYPE_INT8": t.int8,
                 "TYPE_UINT8": t.uint8, "TYPE_BOOL": t.bool, "TYPE_BF16": t.bfloat16}
        if triton_type not in table:
            raise pb_utils.TritonModelException(f"{self.name}: data type {triton_type} is not supported here")
        return table[triton_type]

    # --- requests --------------------------------------------------------------------------------

    def _read(self, request) -> list:
        """The request's inputs as torch tensors on self.device, in argument order."""
        tensors, count = [], None
        for cfg in self.inputs:
            name = cfg["name"]
            tensor = pb_utils.get_input_tensor_by_name(request, name)
            if tensor is None:
                raise _RequestError(f"{self.name}: the request has no input {name!r}; this model takes {self._input_desc}")
            if tensor.is_cpu():
                self.host_inputs += 1
            else:
                self.gpu_inputs += 1
            # Zero-copy either way; a GPU tensor stays on its GPU.
            value = self.torch.utils.dlpack.from_dlpack(tensor.to_dlpack())
            want = self.in_dtypes[name]
            if value.dtype != want:
                raise _RequestError(f"{self.name}: input {name!r} is {value.dtype}; expected {want}")
            dims = list(cfg["dims"])
            item = list(value.shape[1:] if self.batched else value.shape)
            if len(item) != len(dims) or any(d != -1 and d != s for s, d in zip(item, dims)):
                expect = ([-1] if self.batched else []) + dims
                raise _RequestError(f"{self.name}: input {name!r} has shape {list(value.shape)}; expected {expect} "
                                    "(-1: any size)")
            if self.batched:
                n = value.shape[0]
                if n < 1 or n > self.max_batch_size:
                    raise _RequestError(f"{self.name}: batch of {n}; allowed 1..{self.max_batch_size}")
                if count is not None and n != count:
                    raise _RequestError(f"{self.name}: inputs have different batch sizes ({count} and {n})")
                count = n
            tensors.append(value.to(self.device, non_blocking=True))
        return tensors

    def _run(self, args: list) -> list:
        with self.torch.inference_mode():
            out = self.module(*args)
        outs = list(out) if isinstance(out, (tuple, list)) else [out]
        if len(outs) != len(self.outputs):
            raise RuntimeError(f"the script returns {len(outs)} outputs, the config lists {len(self.outputs)}")
        return [o.to(self.out_dtypes[c["name"]]) for o, c in zip(outs, self.outputs)]

    def _respond(self, outs: list):
        # The python backend passes GPU tensors on without waiting for torch's stream: finish first.
        for device in {o.device for o in outs if o.is_cuda}:
            self.torch.cuda.current_stream(device).synchronize()
        tensors = []
        for cfg, out in zip(self.outputs, outs):
            out = out.contiguous()
            if out.is_cuda:
                # Stays in GPU memory: the next ensemble step (or the server's response path) takes it from there.
                tensors.append(pb_utils.Tensor.from_dlpack(cfg["name"], self.torch.utils.dlpack.to_dlpack(out)))
            else:
                tensors.append(pb_utils.Tensor(cfg["name"], out.numpy()))
        return pb_utils.InferenceResponse(output_tensors=tensors)

    def _error(self, msg: str):
        return pb_utils.InferenceResponse(error=pb_utils.TritonError(msg))

    def _one(self, args: list):
        try:
            return self._respond(self._run(args))
        except Exception as err:
            return self._error(f"{self.name}: TorchScript failed on this request: {_short(err)}")

    def execute(self, requests):
        responses = [None] * len(requests)
        valid = []
        for r, request in enumerate(requests):
            try:
                valid.append((r, self._read(request)))
            except _RequestError as err:
                responses[r] = self._error(str(err))
        if not self.batched or len(valid) <= 1:
            for r, args in valid:
                responses[r] = self._one(args)
            return responses
        # One call for the whole dynamic batch where per-item shapes agree (dims of -1 may differ).
        groups: dict[tuple, list] = {}
        for r, args in valid:
            groups.setdefault(tuple(tuple(a.shape[1:]) for a in args), []).append((r, args))
        for members in groups.values():
            if len(members) == 1:
                r, args = members[0]
                responses[r] = self._one(args)
                continue
            joined = [self.torch.cat([a[i] for _, a in members]) for i in range(len(self.inputs))]
            try:
                outs = self._run(joined)
            except Exception:
                for r, args in members:  # find the culprit: each request alone
                    responses[r] = self._one(args)
                continue
            start = 0
            for r, args in members:
                n = args[0].shape[0]
                responses[r] = self._respond([o[start:start + n] for o in outs])
                start += n
        return responses

    def finalize(self):
        self.module = None

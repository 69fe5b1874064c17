"""Names shared by the builder, the local server, the clients and the load tests.

One place decides what the repository looks like, so a client never guesses a model or tensor name:

    <output>/manifest.json
    <output>/<target>/<name>_preprocess/{config.pbtxt, 1/dali.py}            DALI backend (autoserialized)
    <output>/<target>/<name>_<precision>_infer/{config.pbtxt, labels.txt, 1/model.onnx | 1/model.plan}
    <output>/<target>/<name>_<precision>/{config.pbtxt, labels.txt, 1/}       the ensemble users call
    <output>/<target>/<name>_<precision>_torch_infer/{config.pbtxt, labels.txt, 1/model.pt}  TorchScript
    <output>/<target>/<name>_<precision>_torch/{config.pbtxt, labels.txt, 1/}  DALI -> TorchScript

The network backend is a second naming dimension beside the precision: the default backend
(TensorRT on the gpu target, ONNX Runtime on the cpu target) has no suffix, the PyTorch backend's
twin (`torch`, TorchScript on Triton's pytorch_libtorch platform) adds `_torch`.
"""
from __future__ import annotations

from enum import StrEnum


class _Name(StrEnum):
    # repr as the plain string, so a list of members prints as ['fp32', 'fp16'] in messages.
    def __repr__(self) -> str:
        return repr(self.value)


class Precision(_Name):
    """A network precision. Members are strings ("fp32" == Precision.FP32), so names built from
    them (`digits_fp16`) and JSON written from them read the same as before."""

    FP32 = "fp32"
    FP16 = "fp16"
    INT8 = "int8"


class Target(_Name):
    """Which repository: gpu (DALI on the GPU, TensorRT) or cpu (DALI on the CPU, ONNX Runtime)."""

    CPU = "cpu"
    GPU = "gpu"


PRECISIONS = tuple(Precision)     # in this order everywhere: fp32 is the reference
TARGETS = tuple(Target)

# Tensor names. The DALI backend names outputs DALI_OUTPUT_<i> by position, and its
# external_source name must equal the config's input name.
ENSEMBLE_INPUT = "IMAGE"          # TYPE_UINT8 [-1]: encoded image bytes, zero-padded in a request
ENSEMBLE_OUTPUT = "LOGITS"        # TYPE_FP32 [num_classes]
DALI_INPUT = "DALI_INPUT_0"
DALI_OUTPUT = "DALI_OUTPUT_0"     # TYPE_FP32 [3, crop, crop]
ENGINE_INPUT = "input"            # name of the ONNX/TensorRT input
ENGINE_OUTPUT = "logits"          # name of the ONNX/TensorRT output
# Triton's PyTorch backend binds TorchScript arguments and results by position, named <name>__<index>.
TORCH_INPUT = "INPUT__0"
TORCH_OUTPUT = "OUTPUT__0"

DEFAULT_BACKEND = "default"       # TensorRT (gpu target) or ONNX Runtime (cpu target)
TORCH_BACKEND = "torch"           # TorchScript on Triton's PyTorch (LibTorch) backend
# Names a user may give for a backend (clients' --backend) -> the naming dimension above.
BACKEND_ALIASES = {"default": DEFAULT_BACKEND, "tensorrt": DEFAULT_BACKEND, "onnxruntime": DEFAULT_BACKEND,
                   "torch": TORCH_BACKEND, "pytorch": TORCH_BACKEND, "torchscript": TORCH_BACKEND}
TORCH_PRECISIONS = (Precision.FP32, Precision.FP16)  # TorchScript variants; int8 stays with TensorRT/ONNX Runtime

LABELS_FILE = "labels.txt"
# The pipeline definition dali_backend autoserializes at load (its fallback file name, so no
# default_model_filename is needed in the config).
DALI_DEFINITION = "dali.py"
MANIFEST_FILE = "manifest.json"


def preprocess_model(name: str) -> str:
    return f"{name}_preprocess"


def backend_name(backend: str | None) -> str:
    """A user's backend name (None, tensorrt, onnxruntime, torch, ...) -> DEFAULT_BACKEND or TORCH_BACKEND;
    raises ValueError naming the allowed values."""
    if backend is None:
        return DEFAULT_BACKEND
    key = str(backend).strip().lower()
    if key not in BACKEND_ALIASES:
        raise ValueError(f"unknown backend {backend!r}; allowed: {', '.join(BACKEND_ALIASES)}")
    return BACKEND_ALIASES[key]


def backend_suffix(backend: str | None) -> str:
    """'' for the default backend, '_torch' for the PyTorch twin."""
    return "" if backend_name(backend) == DEFAULT_BACKEND else f"_{TORCH_BACKEND}"


def engine_model(name: str, precision: str, backend: str | None = None) -> str:
    """The network's Triton model; backend: None/'tensorrt'/'onnxruntime' (default) or 'torch'."""
    return f"{name}_{precision}{backend_suffix(backend)}_infer"


def ensemble_model(name: str, precision: str, backend: str | None = None) -> str:
    """The ensemble users call; backend as in engine_model."""
    return f"{name}_{precision}{backend_suffix(backend)}"


def engine_io(backend: str | None = None) -> tuple[str, str]:
    """(input, output) tensor names of the network model for `backend`."""
    if backend_name(backend) == TORCH_BACKEND:
        return TORCH_INPUT, TORCH_OUTPUT
    return ENGINE_INPUT, ENGINE_OUTPUT

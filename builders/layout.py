"""Names shared by the builder, the local server, the clients and the load tests.

One place decides what the repository looks like, so a client never guesses a model or tensor name:

    <output>/manifest.json
    <output>/<target>/<name>_preprocess/{config.pbtxt, 1/dali.py}            DALI backend (autoserialized)
    <output>/<target>/<name>_<precision>_infer/{config.pbtxt, labels.txt, 1/model.onnx | 1/model.plan}
    <output>/<target>/<name>_<precision>/{config.pbtxt, labels.txt, 1/}       the ensemble users call
"""
from __future__ import annotations

# Tensor names. The DALI backend names outputs DALI_OUTPUT_<i> by position, and its
# external_source name must equal the config's input name.
ENSEMBLE_INPUT = "IMAGE"          # TYPE_UINT8 [-1]: encoded image bytes, zero-padded in a request
ENSEMBLE_OUTPUT = "LOGITS"        # TYPE_FP32 [num_classes]
DALI_INPUT = "DALI_INPUT_0"
DALI_OUTPUT = "DALI_OUTPUT_0"     # TYPE_FP32 [3, crop, crop]
ENGINE_INPUT = "input"            # name of the ONNX/TensorRT input
ENGINE_OUTPUT = "logits"          # name of the ONNX/TensorRT output

LABELS_FILE = "labels.txt"
# The pipeline definition dali_backend autoserializes at load (its fallback file name, so no
# default_model_filename is needed in the config).
DALI_DEFINITION = "dali.py"
MANIFEST_FILE = "manifest.json"


def preprocess_model(name: str) -> str:
    return f"{name}_preprocess"


def engine_model(name: str, precision: str) -> str:
    return f"{name}_{precision}_infer"


def ensemble_model(name: str, precision: str) -> str:
    return f"{name}_{precision}"

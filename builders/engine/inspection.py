"""What TensorRT made of the network: the engine inspector's layers, summarized by precision."""
from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any

from builders.engine.common import EngineBuildError

if TYPE_CHECKING:
    import tensorrt


def _tensor_precision(tensor: dict[str, Any]) -> str:
    # TensorRT 10 writes one "Format/Datatype" string ("Channel major FP16 format ...",
    # "Thirty-two wide channel vectorized row major Int8 format", "Float"); 11 splits it into
    # "DataType" ("Half", "Int8", ...) and "Format".
    text = str(_key(tensor, "DataType") or _key(tensor, "Format/Datatype") or "").lower()
    for needle, name in (("int8", "int8"), ("fp8", "fp8"), ("int4", "int4"), ("bf16", "bf16"),
                         ("bfloat16", "bf16"), ("fp16", "fp16"), ("half", "fp16"), ("fp32", "fp32"),
                         ("float", "fp32"), ("int32", "int32"), ("int64", "int64"), ("bool", "bool")):
        if needle in text:
            return name
    return "unknown"


def _key(mapping: dict[str, Any], name: str, default: Any = None) -> Any:
    # The inspector's JSON keys differ in case between TensorRT versions ("LayerType" in 10,
    # "layerType"/"layer_type" spellings elsewhere): match ignoring case and underscores.
    if name in mapping:
        return mapping[name]
    wanted = name.replace("_", "").lower()
    for key, value in mapping.items():
        if isinstance(key, str) and key.replace("_", "").lower() == wanted:
            return value
    return default


def summarize_layers(engine_information: dict[str, Any]) -> dict[str, Any]:
    """Layer count and precision histogram from IEngineInspector's JSON (TensorRT 10 or 11).

    A layer's precision is that of its first input whose type is known (what its kernel reads),
    falling back to its outputs; reformat layers are counted separately, since they only
    convert between precisions/layouts and show where graph optimization could not fuse.
    """
    layers = [la for la in _key(engine_information, "Layers", []) or [] if isinstance(la, dict)]
    precisions: Counter[str] = Counter()
    types: Counter[str] = Counter()
    for layer in layers:
        kind = str(_key(layer, "LayerType", "unknown"))
        types[kind] += 1
        if kind == "Reformat":
            continue
        tensors = list(_key(layer, "Inputs", []) or []) + list(_key(layer, "Outputs", []) or [])
        known = [p for p in (_tensor_precision(t) for t in tensors if isinstance(t, dict)) if p != "unknown"]
        precisions[known[0] if known else "unknown"] += 1
    return {"layers": len(layers), "reformat_layers": types.get("Reformat", 0),
            "precisions": dict(sorted(precisions.items())), "layer_types": dict(types.most_common())}


def write_inspection(plan_path: Path, engine_information_json: str) -> tuple[Path, dict[str, Any]]:
    info = json.loads(engine_information_json) if engine_information_json.strip() else {}
    summary = summarize_layers(info)
    out = plan_path.with_name(plan_path.stem + ".layers.json")
    out.write_text(json.dumps({"summary": summary, "engine_information": info}, indent=1))
    return out, summary


def inspect_plan(logger: tensorrt.ILogger, plan: bytes, plan_path: Path, input_name: str, opt_shape: list[int],
             version_compatible: bool) -> tuple[Path, dict[str, Any]]:
    import tensorrt as trt

    runtime = trt.Runtime(logger)
    # A version-compatible plan carries its own lean runtime (host code) that must be allowed to load.
    runtime.engine_host_code_allowed = version_compatible
    engine = runtime.deserialize_cuda_engine(plan)
    if engine is None:
        raise EngineBuildError(f"the plan just built could not be deserialized: {plan_path}")
    inspector = engine.create_engine_inspector()
    # With dynamic shapes, formats read "N/A due to dynamic shapes" unless a context with
    # concrete shapes is attached: inspect at the opt batch.
    context = engine.create_execution_context()
    context.set_input_shape(input_name, opt_shape)
    inspector.execution_context = context
    return write_inspection(plan_path, inspector.get_engine_information(trt.LayerInformationFormat.JSON))

"""What the server reports about its models, made protocol-neutral, and the toolkit's model naming.

HTTP answers with JSON; gRPC with protobuf messages, or JSON (as_json=True) that wraps lists in an
outer object and writes 64-bit counters as strings. The clients pass the raw answer here so callers
see the same dicts over either protocol.
"""
from __future__ import annotations

from typing import Any

from contract import layout


def index_rows(raw: Any, protocol: str) -> list[dict]:
    """A repository index (gRPC as_json or HTTP) -> [{"name", "version", "state", "reason"}]."""
    if protocol == "grpc":
        raw = raw.get("models", [])
    return [{"name": m.get("name"), "version": m.get("version"), "state": m.get("state"),
             "reason": m.get("reason", "")} for m in raw]


def metadata_dict(meta: Any) -> dict:
    """Server metadata as a dict; HTTP already gives one, gRPC a message."""
    if not isinstance(meta, dict):
        meta = {"name": meta.name, "version": meta.version, "extensions": list(meta.extensions)}
    return meta


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


def ensemble_name(model: str, precision: str | None, backend: str | None = None) -> str:
    """`digits` + `fp16` -> `digits_fp16` (backend torch: `digits_fp16_torch`); a full ensemble name
    passes through."""
    if precision and not model.endswith(layout.ensemble_model("", precision, backend)):
        return layout.ensemble_model(model, precision, backend)
    return model


def add_backend_argument(parser) -> None:
    """--backend for the clients: which network backend's ensembles to call (naming: contract.layout)."""
    parser.add_argument("--backend", default=layout.DEFAULT_BACKEND, type=_backend_arg,
                        help="network backend: tensorrt/onnxruntime (the default ensembles <model>_<precision>) or "
                             "torch (the PyTorch-backend twin <model>_<precision>_torch) (default: %(default)s)")


def _backend_arg(value: str) -> str:
    import argparse

    try:
        return layout.backend_name(value)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def served_base_models(index: list[dict]) -> list[str]:
    """Model names (`digits`) that have a ready preprocessing model on the server."""
    suffix = "_preprocess"
    return sorted(m["name"][: -len(suffix)] for m in index
                  if m["name"].endswith(suffix) and m.get("state") == "READY")


def served_precisions(index: list[dict], model: str, backend: str | None = None) -> list[str]:
    """Precisions whose ensemble `<model>_<precision>` (backend torch: `<model>_<precision>_torch`) is
    ready, with its engine `<ensemble>_infer` next to it."""
    ready = {m["name"] for m in index if m.get("state") == "READY"}
    prefix, suffix = f"{model}_", layout.backend_suffix(backend)
    found = []
    for n in ready:
        if not (n.startswith(prefix) and n.endswith(suffix) and f"{n}_infer" in ready):
            continue
        precision = n[len(prefix): len(n) - len(suffix)]
        # Precisions hold no underscore, so another backend's ensembles (digits_fp32_torch) stay out.
        if precision and "_" not in precision:
            found.append(precision)
    return sorted(found)

"""What the clients return (Prediction, Top, ModelInfo) and the pure functions that build them
from the server's answers: model config -> ModelInfo, classification strings -> labels, logits ->
softmax top-k. Nothing here talks to a server, so the sync and asyncio clients share all of it.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable, Sequence

import numpy as np

from clients.errors import TritonClientError
from contract import layout


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


def concat_predictions(model: str, parts: Iterable[Prediction]) -> Prediction:
    """infer_many's answer: the per-request predictions in order, latencies summed."""
    parts = list(parts)
    return Prediction(model, np.concatenate([p.logits for p in parts]),
                      [row for p in parts for row in p.top_k], sum(p.latency_s for p in parts))


def config_dict(raw: Any) -> dict:
    # HTTP returns the config itself; gRPC with as_json=True wraps it in {"config": ...}.
    return raw.get("config", raw) if isinstance(raw, dict) else raw


def model_info_from_config(name: str, cfg: dict) -> ModelInfo:
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


def parse_labels(result, info: ModelInfo) -> list[str]:
    """Labels from a classification response (class_count = num_classes); unnamed classes keep their index."""
    labels = [str(i) for i in range(info.num_classes)]
    for entry in result.as_numpy(info.output_name).reshape(-1):
        text = entry.decode() if isinstance(entry, bytes) else str(entry)
        parts = text.split(":", 2)  # score:index[:label]; a label may itself hold ':'
        if len(parts) == 3 and parts[1].isdigit() and int(parts[1]) < len(labels):
            labels[int(parts[1])] = parts[2]
    return labels

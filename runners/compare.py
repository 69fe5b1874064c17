"""Run several runners on the same batches and compare their outputs, after Polygraphy's comparator."""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Iterable, Sequence

import numpy as np

from runners.base import Runner


@dataclass(frozen=True)
class Comparison:
    """How closely `candidate` reproduces `reference` on one output tensor of classifier logits."""

    reference: str
    candidate: str
    max_abs_diff: float
    mean_abs_diff: float
    top1_agreement: float      # share of images whose argmax class is the same
    samples: int

    def as_dict(self) -> dict:
        return asdict(self)


def run_batches(runner: Runner, input_name: str, x: np.ndarray, output_name: str,
                batch: int = 64) -> np.ndarray:
    """Push x through an active runner in batches; returns the concatenated output."""
    return np.concatenate([runner.infer({input_name: x[i: i + batch]})[output_name]
                           for i in range(0, len(x), batch)])


def compare_logits(reference: np.ndarray, candidate: np.ndarray, reference_name: str = "reference",
                   candidate_name: str = "candidate") -> Comparison:
    if reference.shape != candidate.shape:
        raise ValueError(f"{candidate_name} output shape {candidate.shape} differs from "
                         f"{reference_name} {reference.shape}")
    diff = np.abs(reference.astype(np.float64) - candidate.astype(np.float64))
    return Comparison(reference_name, candidate_name, float(diff.max()), float(diff.mean()),
                      float((reference.argmax(1) == candidate.argmax(1)).mean()), len(reference))


def accuracy(logits: np.ndarray, targets: Sequence[int]) -> float:
    return float((logits.argmax(1) == np.asarray(targets)).mean())


def compare_runners(runners: Iterable[Runner], input_name: str, x: np.ndarray, output_name: str,
                    batch: int = 64) -> tuple[dict[str, np.ndarray], list[Comparison]]:
    """Run every runner on x; compare each with the first. Returns (outputs by name, comparisons)."""
    outputs: dict[str, np.ndarray] = {}
    for r in runners:
        with r:
            outputs[r.name] = run_batches(r, input_name, x, output_name, batch)
    names = list(outputs)
    ref = names[0]
    return outputs, [compare_logits(outputs[ref], outputs[n], ref, n) for n in names[1:]]

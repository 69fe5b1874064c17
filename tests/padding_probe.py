"""Test helper for exact bytes: the zero-padded request format that came before the length prefix,
and the batch-neighbour probe, a truncated JPEG that padding hides."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from contract.preprocess import CpuPreprocessor


def zero_padded(encoded: Sequence[bytes]) -> np.ndarray:
    """The old request format: bare files zero-padded to the longest (no length prefix)."""
    out = np.zeros((len(encoded), max(map(len, encoded))), np.uint8)
    for i, e in enumerate(encoded):
        out[i, : len(e)] = np.frombuffer(e, np.uint8)
    return out


def fails(definition: Path, rows) -> bool:
    """Whether the cpu `definition` refuses `rows` (a new pipeline each time: a failed run leaves
    a DALI pipeline unusable)."""
    try:
        CpuPreprocessor(definition)(rows)
    except RuntimeError:
        return True
    return False


def truncated_hidden_by_padding(definition: Path, candidates: Sequence[bytes], larger: bytes) -> bytes | None:
    """A cut of one of `candidates` that fails alone but decodes beside `larger` in the old padded
    format, or None when no cut does."""
    for image in candidates:
        for keep in (0.95, 0.9, 0.85, 0.8, 0.75, 0.7):
            cut = image[: int(len(image) * keep)]
            if not fails(definition, list(zero_padded([cut, larger]))) and fails(definition, [np.frombuffer(cut, np.uint8)]):
                return cut
    return None

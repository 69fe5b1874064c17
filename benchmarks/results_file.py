"""Where a benchmark's raw results go: one JSON file, written whole or not at all.

Every figure the docs quote comes from such a file (tests/test_docs_figures.py), so a run that is
interrupted must leave the previous file intact rather than half of a new one."""
from __future__ import annotations

import json
from pathlib import Path

from builders.triton_config import write_text_atomic


def write_result(path: Path, data: dict, indent: int = 2, quiet: bool = False) -> Path:
    """Write `data` as JSON to `path` (its folder made if missing) by an atomic replace; unless
    `quiet`, print "wrote <path>"."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(path, json.dumps(data, indent=indent) + "\n")
    if not quiet:
        print(f"wrote {path}")
    return path

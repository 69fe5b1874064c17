"""The mutation check's mutants still point at code that exists: a refactor that moves a mutated
line (or a test it relies on) would otherwise leave `scripts/mutation_check.py` reporting stale
mutants, and its committed score would describe code that is gone."""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _mutants():
    spec = importlib.util.spec_from_file_location("mutation_check", ROOT / "scripts" / "mutation_check.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is made
    spec.loader.exec_module(module)
    return module.MUTANTS


def test_every_mutant_line_and_test_file_exists():
    problems = []
    for m in _mutants():
        text = (ROOT / m.path).read_text(encoding="utf-8") if (ROOT / m.path).is_file() else None
        if text is None:
            problems.append(f"{m.name}: {m.path} does not exist")
            continue
        count = text.count(m.old)
        if count == 0 or (m.nth is None and count != 1) or (m.nth is not None and m.nth >= count):
            problems.append(f"{m.name}: {m.old!r} occurs {count} time(s) in {m.path}")
        for arg in m.tests:
            if arg.startswith("tests/") and not (ROOT / arg.split("::")[0]).is_file():
                problems.append(f"{m.name}: test file {arg} does not exist")
    assert problems == []

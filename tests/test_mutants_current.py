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


def _tool_groups():
    import tomllib

    return tomllib.loads((ROOT / "scripts" / "mutation_tool.toml").read_text())["group"]


def _functions(path: Path) -> set[str]:
    """mutmut's names for the functions and methods of a module: x_<name>, xǁ<Class>ǁ<name>."""
    import ast

    tree = ast.parse(path.read_text(encoding="utf-8"))
    out = set()
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            out.add(f"x_{node.name}")
        elif isinstance(node, ast.ClassDef):
            out |= {f"xǁ{node.name}ǁ{f.name}" for f in node.body if isinstance(f, (ast.FunctionDef, ast.AsyncFunctionDef))}
    return out


def test_mutation_tool_configuration_names_what_exists():
    """scripts/mutation_tool.toml (mutmut's groups): every module, test file and function pattern
    it names exists, and each mutant it calls equivalent still replaces a line of its module."""
    from fnmatch import fnmatch

    groups = _tool_groups()
    assert {g["name"] for g in groups} >= {"contract", "clients-stats-results", "dali-limits", "int8-builder",
                                           "config-search-writeback"}
    problems = []
    for g in groups:
        modules = {m[:-3].replace("/", "."): ROOT / m for m in g["mutate"]}
        for name, path in modules.items():
            if not path.is_file():
                problems.append(f"{g['name']}: {path} does not exist")
        for t in g["tests"]:
            if not (ROOT / t).is_file():
                problems.append(f"{g['name']}: test file {t} does not exist")
        names = {f"{mod}.{fn}" for mod, path in modules.items() if path.is_file() for fn in _functions(path)}
        for pattern in g["functions"]:
            if not any(fnmatch(n + "__mutmut_1", pattern) for n in names):
                problems.append(f"{g['name']}: no function matches {pattern!r}")
        for e in g.get("equivalent", []):
            mod = e["mutant"].rsplit(".", 1)[0]
            if mod not in modules or e["line"] not in modules[mod].read_text(encoding="utf-8"):
                problems.append(f"{g['name']}: equivalent mutant {e['mutant']}: its line {e['line']!r} is gone")
            if not e.get("why"):
                problems.append(f"{g['name']}: equivalent mutant {e['mutant']} gives no reason")
    assert problems == []

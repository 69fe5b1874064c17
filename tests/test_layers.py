"""The import structure: layers, no circles, modules small enough to read in one sitting.

Every import statement of the project's modules (top level, inside functions and under
TYPE_CHECKING alike: each is a dependency) is read from the source with `ast`, so the check
needs nothing installed and sees imports that a run would only reach on some paths.

Layers, bottom to top (contract/__init__.py says what each holds):

    contract -> runners -> builders -> clients -> serving -> benchmarks -> load_tests -> report | scripts | examples

benchmarks/ is the measuring room: the load driver, statistics, the bench, in-process references,
config search, soak and capacity sit there, above the client library and the server, so neither of
those imports measuring code.

A module may import its own package and any package below it, never one above, and packages
on the same layer do not import each other.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LAYERS = {"contract": 0, "runners": 1, "builders": 2, "clients": 3, "serving": 4,
          "benchmarks": 5, "load_tests": 6, "report": 7, "scripts": 7, "examples": 7}
MAX_LINES = 400
REASON = "# Over 400 lines"


def _module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def project_modules(root: Path = ROOT) -> dict[str, Path]:
    """Dotted name -> file, for every Python file of the layered packages."""
    out = {}
    for package in LAYERS:
        for path in sorted((root / package).rglob("*.py")):
            out[_module_name(path, root)] = path
    return out


def imports_of(path: Path, name: str, modules: dict[str, Path]) -> set[str]:
    """The project modules `path` (module `name`) imports. `from pkg import x` names the module
    pkg.x where that is one, else pkg itself; relative imports are resolved against `name`."""
    is_package = path.name == "__init__.py"
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = name.split(".")[: len(name.split(".")) - node.level + (1 if is_package else 0)]
                base = ".".join(anchor + ([base] if base else []))
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]
        else:
            continue
        for target in targets:
            # `import a.b.c` depends on the deepest project module it names.
            while target and target not in modules:
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add(target)
    return found


def import_graph(modules: dict[str, Path]) -> dict[str, set[str]]:
    return {name: imports_of(path, name, modules) for name, path in modules.items()}


def layer_violations(graph: dict[str, set[str]]) -> list[str]:
    bad = []
    for src, targets in graph.items():
        for dst in targets:
            a, b = src.split(".")[0], dst.split(".")[0]
            if a != b and LAYERS[b] >= LAYERS[a]:
                bad.append(f"{src} ({a}, layer {LAYERS[a]}) imports {dst} ({b}, layer {LAYERS[b]})")
    return sorted(bad)


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


# ---------------------------------------------------------------- the checker itself


def _tree(tmp_path: Path, files: dict[str, str]) -> dict[str, set[str]]:
    for rel, text in files.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(text)
    mods = project_modules(tmp_path)
    return {name: imports_of(path, name, mods) for name, path in mods.items()}


def test_the_checker_sees_a_circle_and_an_upward_import(tmp_path):
    graph = _tree(tmp_path, {
        "contract/__init__.py": "",
        "contract/a.py": "from clients.b import thing\n",        # up two layers
        "clients/__init__.py": "",
        "clients/b.py": "def f():\n    from clients import c\n",  # inside a function still counts
        "clients/c.py": "from . import b\n",                      # relative: a circle b <-> c
    })
    assert graph["contract.a"] == {"clients.b"}
    assert layer_violations(graph) == ["contract.a (contract, layer 0) imports clients.b (clients, layer 3)"]
    assert cycles(graph) == [["clients.b", "clients.c"]]


def test_the_checker_passes_a_clean_tree(tmp_path):
    graph = _tree(tmp_path, {
        "contract/__init__.py": "", "contract/a.py": "import json\n",
        "builders/__init__.py": "", "builders/b.py": "from contract import a\nfrom contract.a import x\n",
    })
    assert graph["builders.b"] == {"contract.a"}
    assert layer_violations(graph) == [] and cycles(graph) == []


# ---------------------------------------------------------------- the project


@pytest.fixture(scope="module")
def graph():
    return import_graph(project_modules())


def test_no_module_imports_from_a_layer_above_it(graph):
    assert layer_violations(graph) == []


def test_no_import_circles(graph):
    assert cycles(graph) == []


def test_contract_imports_no_other_package(graph):
    assert {d for s, ds in graph.items() if s.startswith("contract") for d in ds
            if not d.startswith("contract")} == set()


def test_long_modules_say_why_on_their_first_line():
    long = {}
    for name, path in project_modules().items():
        lines = path.read_text(encoding="utf-8").splitlines()
        if len(lines) > MAX_LINES and not lines[0].startswith(REASON):
            long[name] = len(lines)
    assert long == {}, f"over {MAX_LINES} lines without a first line '{REASON} ...: why': {long}"


def package_map(graph: dict[str, set[str]]) -> list[str]:
    """One line per package, bottom layer first: its modules, lines, and the packages it imports
    (with how many module-to-module imports)."""
    modules = project_modules()
    lines = []
    for package in sorted(LAYERS, key=lambda p: (LAYERS[p], p)):
        names = [n for n in graph if n.split(".")[0] == package]
        if not names:
            continue
        size = sum(len(modules[n].read_text(encoding="utf-8").splitlines()) for n in names)
        uses: dict[str, int] = {}
        for n in names:
            for d in graph[n]:
                if d.split(".")[0] != package:
                    uses[d.split(".")[0]] = uses.get(d.split(".")[0], 0) + 1
        used = ", ".join(f"{p} ({k})" for p, k in sorted(uses.items(), key=lambda kv: (LAYERS[kv[0]], kv[0])))
        lines.append(f"layer {LAYERS[package]}  {package:<11} {len(names):>3} modules {size:>6} lines"
                     f"  -> {used or '(nothing of the project)'}")
    return lines


if __name__ == "__main__":  # python tests/test_layers.py: the module map, circles and violations
    g = import_graph(project_modules())
    print("\n".join(package_map(g)))
    print(f"circles: {cycles(g) or 'none'}")
    print(f"imports up a layer: {layer_violations(g) or 'none'}")

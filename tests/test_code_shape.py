"""The shape of the code: functions short enough to read in one sitting, exits only where a command
ends, every call to Triton through the client library.

Read from the source with `ast` (nothing imported), over the same packages tests/test_layers.py
layers. Each rule has a checker test on a small tree that breaks it, so a checker that saw
nothing would fail here rather than pass the project.
"""
from __future__ import annotations

import ast
from pathlib import Path

from tests.test_layers import project_modules

MAX_FUNCTION_LINES = 80
# Locust runs this file itself (locust -f): its init hook is that command's entry, and stopping
# the run with an exit code there is Locust's documented way to refuse a bad command line.
COMMAND_FILES = {"load_tests.locustfile"}


def long_functions(modules: dict[str, Path], limit: int = MAX_FUNCTION_LINES) -> dict[str, int]:
    """'module.function' -> lines, for every function (methods and nested ones too) over `limit`."""
    found = {}
    for name, path in modules.items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lines = node.end_lineno - node.lineno + 1
                if lines > limit:
                    found[f"{name}.{node.name}:{node.lineno}"] = lines
    return found


def _is_exit(node: ast.AST) -> bool:
    """`raise SystemExit(...)`, `raise SystemExit` or a call of `sys.exit(...)`/`exit(...)`."""
    if isinstance(node, ast.Raise) and node.exc is not None:
        exc = node.exc.func if isinstance(node.exc, ast.Call) else node.exc
        return isinstance(exc, ast.Name) and exc.id == "SystemExit"
    if isinstance(node, ast.Call):
        f = node.func
        return ((isinstance(f, ast.Attribute) and f.attr == "exit" and isinstance(f.value, ast.Name)
                 and f.value.id == "sys") or (isinstance(f, ast.Name) and f.id == "exit"))
    return False


def exits_below_commands(modules: dict[str, Path]) -> list[str]:
    """Where an exit is raised outside a command's edge: allowed at module level (the
    `if __name__ == "__main__":` line) and inside a function named `main`, nowhere else."""
    found = []
    for name, path in modules.items():
        if name in COMMAND_FILES:
            continue

        def visit(node: ast.AST, inside: list[str]) -> None:
            if _is_exit(node) and inside and "main" not in inside:
                found.append(f"{name}:{node.lineno} in {'.'.join(inside)}")
            for child in ast.iter_child_nodes(node):
                scope = [*inside, child.name] if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)) else inside
                visit(child, scope)

        visit(ast.parse(path.read_text(encoding="utf-8")), [])
    return found


def direct_triton_clients(modules: dict[str, Path]) -> list[str]:
    """Modules outside clients/ that construct tritonclient's InferenceServerClient themselves."""
    found = []
    for name, path in modules.items():
        if name.split(".")[0] == "clients":
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Call):
                f = node.func
                called = f.attr if isinstance(f, ast.Attribute) else getattr(f, "id", None)
                if called == "InferenceServerClient":
                    found.append(f"{name}:{node.lineno}")
    return found


# ---------------------------------------------------------------- the checkers themselves


def _tree(tmp_path: Path, files: dict[str, str]) -> dict[str, Path]:
    for rel, text in files.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(text)
    return project_modules(tmp_path)


def test_the_checkers_see_a_long_function_an_exit_in_a_library_and_a_direct_client(tmp_path):
    long_body = "".join(f"    x{i} = {i}\n" for i in range(MAX_FUNCTION_LINES))
    mods = _tree(tmp_path, {
        "builders/a.py": f"def long():\n{long_body}\ndef short():\n    return 1\n",
        "builders/b.py": ("import sys\ndef helper():\n    raise SystemExit(2)\n"
                          "def other():\n    sys.exit(1)\n"
                          "def main():\n    raise SystemExit(0)\n"
                          "if __name__ == '__main__':\n    sys.exit(main())\n"),
        "benchmarks/c.py": "import tritonclient.grpc as g\ndef f():\n    return g.InferenceServerClient('x')\n",
        "clients/d.py": "import tritonclient.grpc as g\nc = g.InferenceServerClient('x')\n",
    })
    assert long_functions(mods) == {"builders.a.long:1": MAX_FUNCTION_LINES + 1}
    assert exits_below_commands(mods) == ["builders.b:3 in helper", "builders.b:5 in other"]
    assert direct_triton_clients(mods) == ["benchmarks.c:3"]


# ---------------------------------------------------------------- the project


def test_no_function_is_longer_than_the_limit():
    assert long_functions(project_modules()) == {}


def test_only_commands_exit():
    assert exits_below_commands(project_modules()) == []


def test_every_call_to_triton_goes_through_the_client_library():
    assert direct_triton_clients(project_modules()) == []

"""The console scripts, the Python versions the metadata claims, no sys.path edits, and the
help each command prints."""
from __future__ import annotations

import ast
import importlib
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
SCRIPTS = PYPROJECT["project"]["scripts"]
ENV = {**os.environ, "PYTHONPATH": str(ROOT)}


def _project_modules():
    for path in sorted(ROOT.rglob("*.py")):
        rel = path.relative_to(ROOT)
        if rel.parts[0] in ("tests", ".venv", ".cache", "model_repository", "results") or rel.parts[0].startswith("."):
            continue
        yield rel, path


def test_every_console_script_target_imports_and_is_callable():
    assert len(SCRIPTS) >= 15
    prefixes = {name.split("-", 1)[0] for name in SCRIPTS}
    assert prefixes == {"tik"}, prefixes
    packages = PYPROJECT["tool"]["setuptools"]["packages"]["find"]["include"]
    for name, target in SCRIPTS.items():
        module, _, func = target.partition(":")
        assert func == "main", (name, target)
        # the module's package is part of the distribution, so the installed command finds it
        assert f"{module.split('.')[0]}*" in packages, (name, module)
        assert callable(getattr(importlib.import_module(module), func)), name


@pytest.mark.parametrize("name", ["tik-build", "tik-infer", "tik-capacity", "tik-soak", "tik-compare-bench"])
def test_console_script_entry_runs_help(name):
    """What the installed command runs (`main()` of its module) prints its usage and exits 0."""
    module = SCRIPTS[name].partition(":")[0]
    code = f"import sys; sys.argv = [{name!r}, '--help']; from {module} import main; sys.exit(main())"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=ENV,
                       cwd="/", timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "usage:" in r.stdout.lower()


def test_no_module_outside_tests_edits_sys_path():
    offenders = []
    for rel, path in _project_modules():
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and node.attr == "path" and \
                    isinstance(node.value, ast.Name) and node.value.id == "sys":
                offenders.append(f"{rel}:{node.lineno}")
    assert not offenders, offenders


def test_build_all_runs_as_a_file_path_as_the_readme_says():
    """`python builders/build_all.py` (not -m) still finds the project's packages without sys.path
    edits: the package is installed (here PYTHONPATH stands in for the editable install)."""
    r = subprocess.run([sys.executable, str(ROOT / "builders" / "build_all.py"), "--help"],
                       capture_output=True, text=True, env=ENV, cwd=ROOT, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "--spec" in r.stdout


def test_requires_python_matches_what_the_code_and_pins_need():
    spec = PYPROJECT["project"]["requires-python"]
    lower = re.search(r">=\s*3\.(\d+)", spec)
    upper = re.search(r"<\s*3\.(\d+)", spec)
    assert lower and upper, spec
    # tomllib (contract/spec.py) is 3.11+; numpy 1.26 (requirements.lock) has wheels up to 3.12.
    assert int(lower.group(1)) >= 11
    assert int(upper.group(1)) <= 13
    assert "numpy==1.26" in (ROOT / "requirements.lock").read_text()
    assert f"{sys.version_info.major}.{sys.version_info.minor}" in [
        f"3.{m}" for m in range(int(lower.group(1)), int(upper.group(1)))]
    readme = (ROOT / "README.md").read_text()
    assert f"Python 3.{lower.group(1)}" in readme and f"3.{int(upper.group(1)) - 1}" in readme


def test_tik_locust_help_lists_the_scenario_options():
    """Locust prints --help before it imports a locustfile; tik-locust's help has both."""
    r = subprocess.run([sys.executable, "-m", "load_tests.cli", "--help"], capture_output=True,
                       text=True, env=ENV, cwd="/", timeout=180)
    assert r.returncode == 0, r.stderr[-2000:]
    for flag in ("--headless", "--users", "--batch-size", "--precision", "--sla-p95-ms", "--load-shape"):
        assert flag in r.stdout, flag


def test_tik_locust_passes_the_projects_locustfile_unless_given_one():
    from load_tests.cli import LOCUSTFILE, locust_argv

    assert LOCUSTFILE.is_file()
    assert locust_argv(["--headless", "-u", "2"]) == ["-f", str(LOCUSTFILE), "--headless", "-u", "2"]
    assert locust_argv(["-f", "other.py", "--headless"]) == ["-f", "other.py", "--headless"]
    assert locust_argv(["--locustfile=other.py"]) == ["--locustfile=other.py"]

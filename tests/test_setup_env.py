"""scripts/setup.sh's shared environment: keyed by what defines it, and every checkout runs its own code.

The pinned dependencies are installed once per machine (scripts/shared_env.sh); a checkout's .venv
sees them through a .pth file and holds only this checkout's editable install and commands.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
KEY_INPUTS = ["scripts/setup.sh", "scripts/shared_env.sh", "requirements.lock", "requirements-dev.txt"]


def _key(tree: Path, python: str = sys.executable) -> str:
    r = subprocess.run(["bash", str(tree / "scripts" / "setup.sh"), "--env-key"], capture_output=True,
                       text=True, env={**os.environ, "PYTHON": python}, timeout=60)
    assert r.returncode == 0, r.stderr
    key = r.stdout.strip()
    assert len(key) == 16 and int(key, 16) >= 0, key
    return key


@pytest.fixture
def tree(tmp_path) -> Path:
    """A copy of what the key is computed from."""
    for rel in KEY_INPUTS:
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(ROOT / rel, tmp_path / rel)
    return tmp_path


def test_key_is_stable_for_the_same_inputs(tree):
    assert _key(tree) == _key(tree) == _key(ROOT)


@pytest.mark.parametrize("changed", ["requirements.lock", "requirements-dev.txt"])
def test_a_changed_pin_makes_a_new_environment(tree, changed):
    before = _key(tree)
    path = tree / changed
    path.write_text(path.read_text().replace("==", "==0.", 1))
    assert _key(tree) != before


def test_the_recipe_version_is_part_of_the_key(tree):
    before = _key(tree)
    path = tree / "scripts" / "shared_env.sh"
    path.write_text(path.read_text().replace("ENV_RECIPE=1", "ENV_RECIPE=2"))
    assert _key(tree) != before


def _made_by_setup() -> Path:
    venv = Path(sys.prefix)
    if not (venv / "triton-image-toolkit-env").is_file():
        pytest.skip(f"{venv} was not made by this scripts/setup.sh (a linked or older .venv)")
    return venv


SHARED_ENV_SCRIPT = """
set -euo pipefail
. "$1"
PYTHON=python3
half_done() { "$1/bin/python" -c 'open("'"$1"'/half", "w")' && false; }
whole() { touch "$1/whole"; }
if env=$(shared_env demo k1 half_done); then echo "reused $env"; exit 3; fi
[ ! -e "$ENV_CACHE/demo-k1" ] || { echo "left behind"; exit 4; }
env=$(shared_env demo k1 whole)
[ -f "$env/whole" ] && [ -f "$env/.complete" ] && echo "made $env"
"""


def test_a_failed_install_is_neither_kept_nor_reused(tmp_path):
    """An install that fails part-way makes shared_env fail and leaves nothing marked complete,
    so the next setup makes the environment again (set -e does not reach into $(...))."""
    r = subprocess.run(["bash", "-c", SHARED_ENV_SCRIPT, "script", str(ROOT / "scripts" / "shared_env.sh")],
                       capture_output=True, text=True, timeout=300, env={**os.environ, "TIK_ENV_CACHE": str(tmp_path)})
    assert r.returncode == 0, r.stdout + r.stderr
    assert "failed" in r.stderr and r.stdout.startswith("made ")


def test_this_venv_imports_this_checkouts_code():
    """Without PYTHONPATH and outside the checkout, the package resolves to this checkout."""
    venv = _made_by_setup()
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    r = subprocess.run([str(venv / "bin" / "python"), "-c", "import builders, torch; print(builders.__file__)"],
                       capture_output=True, text=True, cwd="/", env=env, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    assert Path(r.stdout.strip()).resolve() == ROOT / "builders" / "__init__.py"
    assert (venv / "triton-image-toolkit-env").read_text().split()[1] == str(ROOT)


@pytest.mark.parametrize("command", ["tik-build", "pytest", "pip", "locust"])
def test_commands_run_with_this_venvs_interpreter(command):
    """The shared environment's Python commands are re-pointed at .venv's python (which sees this
    checkout's code); left on the shared interpreter they would not."""
    venv = _made_by_setup()
    first = (venv / "bin" / command).read_text().splitlines()[0]
    assert first == f"#!{venv}/bin/python", first

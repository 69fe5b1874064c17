"""The stage cache is keyed by what makes an artifact, not only by its inputs.

A tiny two-stage chain (stage "a" in one module, stage "b" taking a's file in another) is built by
separate processes, like two runs of the build, with the code, a tool's installed version and the
toolkit's version changed in between. No stage is mocked: the chain runs for real through
builders.stages, and "installed versions" are real .dist-info folders on the path.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from builders.stages import code_hash

ROOT = Path(__file__).resolve().parents[1]

MOD_A = '''\
"""Stage a: writes a number."""
from dataclasses import dataclass
from pathlib import Path


@dataclass
class Out:
    path: Path


def make(workdir, n):
    (workdir / "a.txt").write_text(str(n * 2))
    return Out(workdir / "a.txt")
'''

MOD_B = '''\
from mod_a import Out


def use(workdir, a):
    (workdir / "b.txt").write_text(a.read_text() + "!")
    return Out(workdir / "b.txt")
'''

RUNNER = textwrap.dedent('''\
    import json, sys
    from pathlib import Path
    from builders.stages import BuildContext, Stage, made_by
    import mod_a, mod_b

    ctx = BuildContext(Path(sys.argv[1]))
    A = Stage("a", mod_a.Out, mod_a.make, tools=("faketool",))
    B = Stage("b", mod_a.Out, mod_b.use)
    a = A(ctx, n=21)
    b = B(ctx, a=a.path)
    print(json.dumps({"ran": [r.name for r in ctx.records if not r.cached], "b": b.path.read_text(),
                      "made_by": made_by(("mod_a",), ("faketool",))}))
''')


def _dist(site: Path, name: str, version: str) -> None:
    """Install (as far as importlib.metadata can tell) distribution `name` at `version`."""
    for old in site.glob(f"{name.replace('-', '_')}-*.dist-info"):
        for f in old.iterdir():
            f.unlink()
        old.rmdir()
    info = site / f"{name.replace('-', '_')}-{version}.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")


@pytest.fixture
def chain(tmp_path):
    """(run, mods): run() builds the chain in a new process and returns what ran and b's text."""
    mods, site, cache = tmp_path / "mods", tmp_path / "site", tmp_path / "cache"
    mods.mkdir()
    (mods / "mod_a.py").write_text(MOD_A)
    (mods / "mod_b.py").write_text(MOD_B)
    _dist(site, "faketool", "1.0")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), str(mods), str(ROOT)]),
           "PYTHONDONTWRITEBYTECODE": "1"}

    def run() -> dict:
        # Not from the checkout: `pip install -e .` leaves an .egg-info there, and `python -c` puts
        # the working directory first on sys.path, ahead of the fake installed distributions.
        done = subprocess.run([sys.executable, "-c", RUNNER, str(cache)], env=env, capture_output=True,
                              text=True, timeout=120, cwd=tmp_path)
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout.strip().splitlines()[-1])

    return run, mods, site


def test_logic_edit_reruns_the_stage_and_what_follows(chain):
    run, mods, _ = chain
    first = run()
    assert first["ran"] == ["a", "b"] and first["b"] == "42!"
    assert run()["ran"] == []
    # Layout, comments and docstrings are not logic: still cached.
    src = (mods / "mod_a.py").read_text()
    (mods / "mod_a.py").write_text(src.replace('"""Stage a: writes a number."""', '"""Stage a, reworded."""')
                                   .replace("    return Out(", "    # a comment\n\n    return  Out("))
    assert run() == {**first, "ran": []}
    # A one-character logic edit to a's module reruns a, and b because a's output changed.
    (mods / "mod_a.py").write_text(src.replace("n * 2", "n * 3"))
    edited = run()
    assert edited["ran"] == ["a", "b"] and edited["b"] == "63!"
    assert edited["made_by"] != first["made_by"]      # caches named by made_by move on too
    assert run()["ran"] == []


def test_edit_downstream_reruns_only_downstream(chain):
    run, mods, _ = chain
    assert run()["ran"] == ["a", "b"]
    (mods / "mod_b.py").write_text(MOD_B.replace('"!"', '"?"'))
    again = run()
    assert again["ran"] == ["b"] and again["b"] == "42?"


def test_tool_upgrade_reruns_the_stage_that_uses_it(chain):
    run, _, site = chain
    first = run()
    assert first["ran"] == ["a", "b"]
    _dist(site, "faketool", "2.0")
    # a's output is byte-identical after the rerun, so b (which does not use the tool) stays cached.
    upgraded = run()
    assert upgraded["ran"] == ["a"] and upgraded["made_by"] != first["made_by"]


def test_toolkit_upgrade_reruns_every_stage(chain):
    run, _, site = chain
    assert run()["ran"] == ["a", "b"]
    _dist(site, "triton-image-toolkit", "99.0")   # first on the path: shadows the installed one
    assert run()["ran"] == ["a", "b"]


def test_prune_keeps_what_a_build_used_and_removes_what_none_did(chain, tmp_path):
    """A cache hit renews an entry's last use, so pruning after a rebuild removes only the entry
    that the current code no longer reaches (a's old key), and the chain still runs from cache."""
    import time

    from builders.stages import prune_cache

    run, mods, _site = chain
    run()
    cache = tmp_path / "cache"
    old_a = {p.name for p in (cache / "a").iterdir()}
    (mods / "mod_a.py").write_text(MOD_A.replace("n * 2", "n * 3"))
    run()                                                   # a: new key; b: new input, new key
    a_now = {p.name for p in (cache / "a").iterdir()} - old_a
    day_ago = time.time() - 86400
    for entry in [*(cache / "a").iterdir(), *(cache / "b").iterdir()]:
        os.utime(entry / "output.json", (day_ago, day_ago))
    assert run()["ran"] == []                               # hits renew a's and b's current entries
    other = cache / "calibration" / "made-by"               # not a stage entry: no mark of its use
    other.mkdir(parents=True)
    os.utime(other, (day_ago, day_ago))
    removed = prune_cache(cache, 3600)
    assert other.is_dir()
    assert {p.parent.name for p in removed} == {"a", "b"} and {p.name for p in removed if p.parent.name == "a"} == old_a
    assert {p.name for p in (cache / "a").iterdir()} == a_now
    assert run()["ran"] == []


def test_code_hash_ignores_layout_and_comments_not_logic():
    base = 'def f(x):\n    """Doc."""\n    return x + 1  # one\n'
    assert code_hash(base) == code_hash('def f( x ):\n\n    # why\n    return (x+1)\n')
    assert code_hash(base) != code_hash('def f(x):\n    return x - 1\n')
    assert code_hash(base) != code_hash('def f(x):\n    return x + 2\n')


def test_every_build_stage_names_real_code_and_tools():
    from builders import pipeline

    stages = [v for v in vars(pipeline).values() if type(v).__name__ == "Stage"]
    assert len(stages) >= 8
    for stage in stages:
        made_by = stage.provenance()          # raises if a named module has no source
        assert "builders.pipeline" in made_by["code"]
        assert made_by["toolkit"]
    assert any(name.startswith("nvidia-dali") and v != "absent"
               for name, v in pipeline.PREPROCESS.provenance()["tools"].items())
    assert pipeline.TRAIN.provenance()["tools"]["torch"] != "absent"

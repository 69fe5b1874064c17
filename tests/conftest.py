"""Shared fixtures: one real build of the built-in demo per test session.

The build uses the default spec (build.toml), so the session also checks what the README's
first command produces; its output lives in a temporary folder, never in the checkout, and its
stage cache is kept between sessions on one machine (see build_cache; TOOLKIT_TEST_FRESH_CACHE=1
builds everything from scratch, TOOLKIT_TEST_CACHE=DIR uses DIR).
"""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Iterator

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


# The stage cache kept between test sessions on one machine. A stage's key covers its inputs, its
# code and its tools' versions (builders/stages.py), so a change rebuilds exactly what it touches
# and the tests check what the changed code builds; what nothing changed is not built again
# (the demo build alone is over two minutes on two cores). Entries unused for a week are pruned.
SHARED_CACHE = (Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "triton-image-toolkit"
                / "test-build-cache")
SHARED_CACHE_UNUSED_S = 7 * 24 * 3600


@pytest.fixture(scope="session")
def build_cache(tmp_path_factory) -> Iterator[Path]:
    """The stage cache of this session's builds: TOOLKIT_TEST_CACHE's folder if set; a fresh one
    with TOOLKIT_TEST_FRESH_CACHE=1, or when another session on this machine holds the shared
    one (tests delete entries of it); else the shared one, held for the session."""
    if os.environ.get("TOOLKIT_TEST_CACHE"):
        yield Path(os.environ["TOOLKIT_TEST_CACHE"]).resolve()
        return
    if os.environ.get("TOOLKIT_TEST_FRESH_CACHE") == "1":
        yield tmp_path_factory.mktemp("build-cache")
        return
    import fcntl

    from builders.stages import prune_cache

    SHARED_CACHE.mkdir(parents=True, exist_ok=True)
    with open(SHARED_CACHE.with_name("test-build-cache.lock"), "w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield tmp_path_factory.mktemp("build-cache")
            return
        prune_cache(SHARED_CACHE, SHARED_CACHE_UNUSED_S)
        yield SHARED_CACHE


@pytest.fixture(scope="session")
def demo_build(tmp_path_factory, build_cache):
    """The BuildResult of a full demo build (its data splits lie in the stage cache)."""
    from builders.build import build
    from contract.spec import load_spec

    out = tmp_path_factory.mktemp("built") / "model_repository"
    spec = load_spec(ROOT / "build.toml").model_copy(update={"output": out})
    return build(spec, cache_dir=build_cache, quiet=True)


@pytest.fixture(scope="session")
def built_repo(demo_build) -> Path:
    """Output folder of a full demo build: cpu/, gpu/ (no plans here), source/, data/, manifest.json."""
    return Path(demo_build.spec.output)


@pytest.fixture(scope="session")
def demo_data(demo_build):
    """The demo's train/val/calibration ImageFolders (DataSplits, in the stage cache)."""
    return demo_build.models[0].data


@pytest.fixture(scope="session")
def repo_root(built_repo) -> Path:
    """The repository every server-side test module serves (its cpu/ target)."""
    return built_repo


@pytest.fixture(scope="session")
def manifest(built_repo) -> dict:
    """The manifest as written (paths relative to built_repo); contract.manifest.load_manifest resolves them."""
    return json.loads((built_repo / "manifest.json").read_text())


@pytest.fixture(scope="session")
def val_images(built_repo) -> list[tuple[bytes, int]]:
    """(encoded JPEG, class index) for the demo's validation split, as the repository bundles it."""
    from contract.images import load_image_folder
    from contract.manifest import load_manifest

    images = load_image_folder(load_manifest(built_repo).models["digits"].val)
    return [(f.read_bytes(), t) for f, t in zip(images.files, images.targets)]

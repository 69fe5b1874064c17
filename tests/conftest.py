"""Shared fixtures: one real build of the built-in demo per test session.

The build uses the default spec (build.toml), so the session also checks what the README's
first command produces; output and cache live in a temporary folder, never in the checkout.
While developing, TOOLKIT_TEST_CACHE=.cache/build reuses the stage cache: a rerun builds in seconds.
"""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


@pytest.fixture(scope="session")
def build_cache(tmp_path_factory) -> Path:
    """A fresh stage cache, or TOOLKIT_TEST_CACHE's folder for quick local reruns (CI leaves it unset)."""
    if os.environ.get("TOOLKIT_TEST_CACHE"):
        return Path(os.environ["TOOLKIT_TEST_CACHE"]).resolve()
    return tmp_path_factory.mktemp("build-cache")


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

"""The release matrix (contract/releases.py): lookups, the TensorRT guard, and agreement with
docker-compose.yml and docs/gpu.md."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from contract import releases
from contract.releases import DEFAULT_RELEASE, RELEASES, TensorRTMismatch, UnknownRelease

ROOT = Path(__file__).resolve().parents[1]


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(p) for p in text.split("."))


def test_default_is_the_newest_release_with_installable_dali() -> None:
    assert DEFAULT_RELEASE in RELEASES
    assert DEFAULT_RELEASE == max(RELEASES, key=_version)
    for r in RELEASES.values():
        # Real DALI wheels on PyPI start at 1.53.0: every row must be testable off a GPU host.
        assert _version(r.dali_version) >= (1, 53, 0), r
        assert r.tensorrt_image == f"nvcr.io/nvidia/tensorrt:{r.name}-py3"
        assert r.triton_image == f"nvcr.io/nvidia/tritonserver:{r.name}-py3"


def test_unknown_release_names_the_supported_ones() -> None:
    with pytest.raises(UnknownRelease, match=r"'25\.01'.*supported: 26\.02"):
        releases.release("25.01")
    assert releases.release() is RELEASES[DEFAULT_RELEASE]
    assert releases.release(" 26.03 ").dali_version == "2.0.0"


def test_tensorrt_guard_compares_major_minor() -> None:
    target = releases.release("26.03")  # TensorRT 10.16
    releases.check_tensorrt("10.16.1.11", target)  # another patch of the same minor: fine
    with pytest.raises(TensorRTMismatch, match=r"TensorRT 10\.13\.3 is installed.*26\.03.*10\.16\.x"):
        releases.check_tensorrt("10.13.3", target)
    with pytest.raises(TensorRTMismatch):
        releases.check_tensorrt("11.0.0.114", target)
    with pytest.raises(ValueError, match="MAJOR.MINOR"):
        releases.check_tensorrt("unknown", target)


def test_docs_carry_the_same_matrix() -> None:
    assert releases.matrix_markdown() in (ROOT / "docs" / "gpu.md").read_text()


def test_compose_default_tag_is_the_default_release() -> None:
    text = (ROOT / "docker-compose.yml").read_text()
    defaults = set(re.findall(r"\$\{TRITON_RELEASE:-([0-9.]+)\}", text))
    assert defaults == {DEFAULT_RELEASE}

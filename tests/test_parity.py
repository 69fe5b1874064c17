"""Served equals trained: the DALI pipeline against torchvision's eval transform on real photos.

The photo set (builders/parity_photos.py) has what the demo's 48x48 squares hide: portrait, landscape,
square, tiny and large images, odd sides (crop anchors at .5), grayscale, 4:2:0/4:2:2/4:4:4 JPEGs.
Bounds: the issue's (mean <= 1 level and p99 <= 4 levels per image) and the builder's own, tighter,
measured tolerance (contract.preprocess.CPU_TOLERANCE). A deliberately wrong pipeline must fail
the build with the worst images named, and leave the previous repository in place.
"""
from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from contract import layout
from contract.images import pack_batch
from contract.preprocess import CpuPreprocessor, parity, reference_preprocess
from contract.preprocess import reference_transform, write_definition
from contract.spec import Input

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    from builders.parity_photos import write_photo_set

    return write_photo_set(tmp_path_factory.mktemp("photos") / "photos")


def _files(folder: Path) -> list[Path]:
    return sorted(folder.rglob("*.jpg"))


def _dali_vs_torchvision(folder: Path, inp: Input, tmp: Path, definition=None):
    files = _files(folder)
    encoded = [f.read_bytes() for f in files]
    definition = definition or write_definition(inp, "cpu", tmp / layout.DALI_DEFINITION, 64)
    out = CpuPreprocessor(definition)(list(pack_batch(encoded)))
    t = reference_transform(inp)
    ref = np.stack([reference_preprocess(e, inp, t) for e in encoded])
    return parity(out, ref, inp.std, [f.name for f in files])


def test_photo_set_covers_the_hard_cases(photos):
    from PIL import Image

    sizes, modes = set(), set()
    for f in _files(photos):
        with Image.open(f) as img:
            sizes.add(img.size)
            modes.add(img.mode)
    assert len(_files(photos)) == 40
    assert any(w > h for w, h in sizes) and any(w < h for w, h in sizes) and any(w == h for w, h in sizes)
    assert any(w % 2 for w, _ in sizes) and min(min(s) for s in sizes) < 36 and max(max(s) for s in sizes) >= 1280
    assert modes == {"RGB", "L"}


@pytest.mark.parametrize("resize,crop", [(256, 224), (36, 32)])
def test_dali_cpu_matches_torchvision_on_photos(photos, tmp_path, resize, crop):
    result = _dali_vs_torchvision(photos, Input(resize=resize, crop=crop), tmp_path)
    assert max(result.mean) <= 1.0 and max(result.p99) <= 4.0, result.worst()
    assert not result.failing, result.worst()
    # The measured state (contract.preprocess comments): one pixel level at most.
    assert max(result.max) <= 1.01, result.worst()


def test_square_resize_mode_matches_torchvision(photos, tmp_path):
    result = _dali_vs_torchvision(photos, Input(resize=240, crop=224, resize_mode="square"), tmp_path)
    assert not result.failing and max(result.max) <= 1.01, result.worst()


@pytest.mark.parametrize("slip", ["crop_anchor", "resize_rounding", "std_order"])
def test_parity_catches_geometry_and_constant_slips(photos, tmp_path, slip):
    """The kinds of slip the old PIL reference let through (geometry) or hid (channel order)."""
    inp = Input(resize=256, crop=224)
    path = write_definition(inp, "cpu", tmp_path / layout.DALI_DEFINITION, 64)
    text = path.read_text()
    if slip == "crop_anchor":      # DALI's own crop_pos rounding instead of torchvision's
        text = text.replace("return k + (d & k & 1)", "return k + (d & 1)")
    elif slip == "resize_rounding":   # round the long side instead of truncating
        text = text.replace("new_hw = (resize * hw) // fn.reductions.min(hw)",
                            "new_hw = (resize * hw + fn.reductions.min(hw) // 2) // fn.reductions.min(hw)")
    else:
        text = text.replace("'std': [0.229, 0.224, 0.225]", "'std': [0.225, 0.224, 0.229]")
    assert text != path.read_text()
    path.write_text(text)
    result = _dali_vs_torchvision(photos, inp, tmp_path, definition=path)
    assert result.failing, f"{slip}: not detected; worst {result.worst()}"


def _load_example():
    spec = importlib.util.spec_from_file_location("resnet18_photos", ROOT / "examples" / "resnet18_photos.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def resnet_photos(tmp_path_factory) -> tuple[Path, Path]:
    return _load_example().make(tmp_path_factory.mktemp("resnet18"))


def _resnet_spec(folder: Path, ckpt: Path, out: Path, precisions=("fp32",), **input_kw):
    from contract.spec import parse_spec

    return parse_spec({
        "output": str(out), "targets": ["cpu"],
        "models": [{"name": "photos", "precisions": list(precisions),
                    "source": {"kind": "torchvision", "arch": "resnet18", "checkpoint": str(ckpt)},
                    "data": {"val": str(folder), "calibration": str(folder)},
                    "input": {"resize": 256, "crop": 224, **input_kw},
                    "calibration": {"method": "max", "max_images": 40},
                    "triton": {"max_batch_size": 16, "preferred_batch_sizes": [8, 16]},
                    "engine": {"opt_batch": 8}}]})


@pytest.mark.slow
def test_mismatched_pipeline_fails_the_build_and_keeps_the_previous_repository(resnet_photos, tmp_path, monkeypatch):
    """The pipeline's resize changed behind the reference's back: the build exits with the worst
    images named, nothing is swapped in; --allow-preprocess-mismatch builds and records it."""
    from builders import build_all
    from builders.build import BuildError, build
    from contract import preprocess

    folder, ckpt = resnet_photos
    out = tmp_path / "repo"
    out.mkdir()
    (out / "sentinel").write_text("previous repository")
    real = preprocess.definition_params

    def shifted(inp, device, hw_decoder_load=0.65):
        return {**real(inp, device, hw_decoder_load), "resize": inp.resize + 8}   # 264, not 256: same output size

    monkeypatch.setattr(preprocess, "definition_params", shifted)
    spec = _resnet_spec(folder, ckpt, out)
    with pytest.raises(BuildError) as err:
        build(spec, cache_dir=tmp_path / "cache", quiet=True)
    msg = str(err.value)
    assert "differs from the torchvision transform" in msg and ("china_" in msg or "flower_" in msg), msg
    assert (out / "sentinel").read_text() == "previous repository" and not (out / "manifest.json").exists()

    # The same mismatch, let through on purpose: the manifest says so.
    args = build_all.parse_args(["--allow-preprocess-mismatch"])
    result = build(build_all.select(spec, args), cache_dir=tmp_path / "cache", quiet=True)
    pre = result.manifest["models"]["photos"]["preprocessing"]
    assert pre["outside_tolerance"] and pre["policy"].startswith("warn") and not pre["within_tolerance"]

"""serving.minirepo builds through the builder: its repository and manifest are the builder's.

The tiny spec (tiny_cnn, one epoch, cpu target) is run by builders.build.build into a temporary
folder with the session's stage cache, then read back with the one manifest reader.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from builders import triton_config
from contract import layout
from contract.images import load_image_folder, pack_batch
from contract.manifest import FORMAT_VERSION, load_manifest
from contract.spec import SpecError, parse_spec
from serving import minirepo


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, build_cache) -> Path:
    out = tmp_path_factory.mktemp("minirepo") / "repository"
    return minirepo.build(out, max_batch_size=16, precisions=("fp32", "int8"), cache_dir=build_cache)


def test_manifest_is_the_builders(tiny):
    m = load_manifest(tiny)
    assert m.format_version == FORMAT_VERSION
    entry = m.model("digits")
    assert entry.record["source"]["arch"] == "tiny_cnn"
    assert sorted(entry.record["precisions"]) == ["fp32", "int8"]
    assert m.record["targets"] == ["cpu"]
    # Every artifact the manifest lists is in the repository, and nothing of the gpu target is.
    assert m.record["artifacts"]
    for path in m.record["artifacts"]:
        assert path.startswith("cpu/") and (tiny / path).is_file(), path
    assert not (tiny / "gpu").exists()
    assert len(load_image_folder(entry.val)) == 64


def test_repository_holds_the_spec_models(tiny):
    served = sorted(p.name for p in (tiny / "cpu").iterdir())
    want = sorted([layout.preprocess_model("digits"), *[layout.ensemble_model("digits", p) for p in ("fp32", "int8")],
                   *[layout.engine_model("digits", p) for p in ("fp32", "int8")]])
    assert served == want
    config = triton_config.read_config(tiny / "cpu" / layout.ensemble_model("digits", "int8") / "config.pbtxt")
    assert config.max_batch_size == 16


def test_its_models_classify_the_bundled_images_better_than_chance(tiny):
    from benchmarks.bench_local import InProcess

    images = load_image_folder(load_manifest(tiny).model("digits").val)
    encoded = images.encoded()
    run = InProcess(tiny / "cpu", "digits", "fp32")
    logits = np.concatenate([run(list(pack_batch(encoded[i:i + 16]))) for i in range(0, len(encoded), 16)])
    assert logits.shape == (len(encoded), minirepo.NUM_CLASSES)
    correct = float(np.mean(logits.argmax(1) == np.array(images.targets)))
    assert correct > 0.15, f"top-1 {correct:.2f} on the bundled images: one epoch of training should beat chance (0.10)"


def test_spec_accepts_the_local_arch_and_names_the_allowed_ones(tmp_path):
    ckpt = tmp_path / "w.pt"
    ckpt.write_bytes(b"")
    data = {"val": str(tmp_path), "calibration": str(tmp_path)}
    spec = parse_spec({"models": [{"source": {"kind": "torchvision", "arch": "tiny_cnn", "checkpoint": str(ckpt)},
                                   "data": data}]})
    assert spec.models[0].source.arch == "tiny_cnn"
    with pytest.raises(SpecError, match="tiny_cnn"):
        parse_spec({"models": [{"source": {"kind": "torchvision", "arch": "tiny_cnnn", "checkpoint": str(ckpt)},
                                "data": data}]})


def test_typed_fields_read_what_the_builder_wrote(tiny):
    m = load_manifest(tiny)
    record = m.record
    assert m.tools == record["tools"] and m.created == record["created"] and m.targets == ["cpu"]
    onnx = {p: a for p, a in m.artifacts.items() if a.kind == "onnx"}
    assert sorted(a.precision for a in onnx.values()) == ["fp32", "int8"]
    for path, art in onnx.items():
        assert (art.target, art.model, art.bytes) == ("cpu", "digits", (tiny / path).stat().st_size)
    entry = m.model("digits")
    int8 = entry.precisions["int8"]
    # cpu serves the U8S8 model: its own figures, not the gpu target's S8S8 ones.
    assert int8.on("cpu").accuracy == record["models"]["digits"]["precisions"]["int8"]["targets"]["cpu"]["accuracy"]
    assert "U8S8" in int8.on("cpu").notes and "S8S8" in int8.on("gpu").notes
    assert entry.arch == "tiny_cnn" and entry.num_classes == 10 and entry.input_spec().crop == 32
    assert entry.built_precisions() == ["fp32", "int8"] and entry.built_precisions("torch") == []


def test_a_build_of_one_model_keeps_the_other_with_its_files(tmp_path, build_cache):
    out = tmp_path / "repository"
    minirepo.build(out, name="a", precisions=("fp32",), cache_dir=build_cache)
    minirepo.build(out, name="b", precisions=("fp32",), cache_dir=build_cache)
    m = load_manifest(out)   # checks that every path it records is there
    assert sorted(m.models) == ["a", "b"]
    assert {a.model for a in m.artifacts.values()} == {"a", "b"}
    assert all((out / path).is_file() for path in m.artifacts)
    kept = m.model("a")
    assert kept.checkpoint.is_file() and len(load_image_folder(kept.val)) == 64
    assert (out / "cpu" / layout.ensemble_model("a", "fp32") / "config.pbtxt").is_file()

"""Guards for one-line breakages the rest of the suite let through (issue 17), without a server.

- The repository swap keeps a complete repository at every step: with a failure injected between
  its two steps, the old repository is still there (as `<output>` or `<output>.previous`) and
  `recover` brings it back byte for byte.
- The int8 calibration cache is invalidated by each thing a calibration depends on (model
  weights, one pixel of one image, method, percentile) and reused when nothing changed.
- The clients' connection retries are on by default, in the library and in every command's flags.
"""
from __future__ import annotations

import argparse
import hashlib
from pathlib import Path

import numpy as np
import pytest

from builders.repository import previous_dir, recover, staging_dir, swap_in
from contract.spec import Calibration


def _tree(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def _repo(root: Path, tag: str) -> Path:
    (root / "cpu" / "m").mkdir(parents=True)
    (root / "cpu" / "m" / "config.pbtxt").write_text(f'name: "m"  # {tag}\n')
    (root / "manifest.json").write_text(f'{{"build": "{tag}"}}')
    return root


# --- repository swap ----------------------------------------------------------------------------

def test_swap_replaces_the_repository_and_cleans_up(tmp_path):
    out = _repo(tmp_path / "model_repository", "old")
    new = _tree(_repo(staging_dir(out), "new"))
    swap_in(staging_dir(out), out)
    assert _tree(out) == new
    assert not staging_dir(out).exists() and not previous_dir(out).exists()


def test_swap_interrupted_between_its_steps_keeps_the_old_repository(tmp_path, monkeypatch):
    """Fault injection: the step that moves staging into place fails. A swap that deletes the old
    repository first (delete-then-rename) has nothing left to recover; rename-then-rename does."""
    out = _repo(tmp_path / "model_repository", "old")
    old = _tree(out)
    staging = _repo(staging_dir(out), "new")
    real_rename = Path.rename

    def rename(self, target):
        if Path(self) == staging:
            raise OSError("injected: killed before staging took the repository's place")
        return real_rename(self, target)

    monkeypatch.setattr(Path, "rename", rename)
    with pytest.raises(OSError, match="injected"):
        swap_in(staging, out)
    monkeypatch.setattr(Path, "rename", real_rename)
    # At this moment a complete old repository exists under one of the two names.
    assert (out.exists() and _tree(out) == old) or (previous_dir(out).exists() and _tree(previous_dir(out)) == old)
    recover(out)      # what the next build does first
    assert _tree(out) == old
    assert not previous_dir(out).exists() and not staging_dir(out).exists()


def test_swap_never_deletes_before_the_new_repository_is_in_place(tmp_path, monkeypatch):
    """Every deletion during a swap happens after `<output>` holds the new repository."""
    import shutil

    out = _repo(tmp_path / "model_repository", "old")
    new = _tree(_repo(staging_dir(out), "new"))
    seen = []
    real_rmtree = shutil.rmtree

    def rmtree(path, *a, **kw):
        seen.append(out.exists() and _tree(out) == new)
        return real_rmtree(path, *a, **kw)

    monkeypatch.setattr(shutil, "rmtree", rmtree)
    swap_in(staging_dir(out), out)
    assert seen and all(seen), "a folder was deleted before the new repository was in place"


# --- preprocessing parity verdict ---------------------------------------------------------------

@pytest.mark.parametrize("stats,fails", [
    ((0.2, 1.0, 1.0), False),
    ((0.6, 1.0, 1.0), True),     # many pixels one level off: the mean alone is over
    ((0.2, 2.0, 2.0), True),     # a region off: p99 over, max within
    ((0.2, 1.0, 3.0), True),     # one pixel far off: max alone over
])
def test_parity_flags_an_image_over_any_one_bound(stats, fails):
    from contract.preprocess import CPU_TOLERANCE, Parity

    mean, p99, mx = stats
    result = Parity([0.1, mean], [1.0, p99], [1.0, mx], dict(CPU_TOLERANCE), ["ok.jpg", "x.jpg"])
    assert result.failing == ([1] if fails else [])


# --- int8 calibration cache ---------------------------------------------------------------------

@pytest.fixture(scope="module")
def tiny_onnx(tmp_path_factory) -> Path:
    """A conv + relu + linear classifier small enough to calibrate in a second."""
    import torch

    from builders.export import export_onnx

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.ReLU(),
                                torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(4, 3)).eval()
    return export_onnx(model, 8, tmp_path_factory.mktemp("tiny") / "model.onnx", 17)


def test_calibration_cache_is_reused_and_invalidated_by_what_it_depends_on(tiny_onnx, tmp_path):
    from builders.precision import calibration_key, to_int8

    rng = np.random.default_rng(0)
    x = rng.normal(size=(6, 3, 8, 8)).astype(np.float32)
    calib = Calibration(method="entropy")
    cache = tmp_path / "calibration"
    _, first, reused = to_int8(tiny_onnx, tmp_path / "a.onnx", x, calib, cache)
    assert not reused and first.is_file()
    _, again, reused = to_int8(tiny_onnx, tmp_path / "b.onnx", x.copy(), calib, cache)
    assert reused and again == first
    # Each dependency alone gives another key.
    one_pixel = x.copy()
    one_pixel[5, 2, 7, 7] += 0.5
    other_model = tmp_path / "other.onnx"
    import onnx

    m = onnx.load(str(tiny_onnx))
    w = m.graph.initializer[0]
    arr = onnx.numpy_helper.to_array(w).copy()
    arr.flat[0] += 0.25
    w.CopyFrom(onnx.numpy_helper.from_array(arr, w.name))
    onnx.save(m, str(other_model))
    base = calibration_key(tiny_onnx, x, calib)
    changed = {
        "one pixel": calibration_key(tiny_onnx, one_pixel, calib),
        "fewer images": calibration_key(tiny_onnx, x[:5], calib),
        "weights": calibration_key(other_model, x, calib),
        "method": calibration_key(tiny_onnx, x, Calibration(method="max")),
        "percentile": calibration_key(tiny_onnx, x, Calibration(method="percentile", percentile=99.9)),
    }
    same = [what for what, key in changed.items() if key == base]
    assert not same, f"calibration cache key ignores: {same}"
    assert len(set(changed.values())) == len(changed)
    # The percentile itself, with the method fixed.
    assert calibration_key(tiny_onnx, x, Calibration(method="percentile", percentile=99.99)) != changed["percentile"]
    # ... and a rebuild with a changed image calibrates again instead of reusing stale ranges.
    _, third, reused = to_int8(tiny_onnx, tmp_path / "c.onnx", one_pixel, calib, cache)
    assert not reused and third != first


# --- client retries -----------------------------------------------------------------------------

def test_connection_retries_are_on_by_default():
    from clients.connection import add_connection_arguments
    from clients.triton import TritonClient

    parser = argparse.ArgumentParser()
    add_connection_arguments(parser)
    assert parser.parse_args([]).retries >= 3, "commands give up on the first refused connection"
    # Both clients take their defaults from the shared base; the sync one, built, shows the value.
    assert TritonClient("127.0.0.1:1", "http").retries >= 3, "the client gives up on the first refused connection"


# --- figures in the manifest ----------------------------------------------------------------------

def test_manifest_agreement_and_accuracy_are_what_the_repository_gives(built_repo, manifest):
    """Recomputed from the repository's own files (DALI definition, ONNX models) on the validation
    images: the manifest's top-1 agreement with fp32 and accuracy per precision."""
    import onnxruntime as ort

    from contract import layout
    from contract.images import load_image_folder, pack_batch
    from contract.preprocess import CpuPreprocessor

    name = "digits"
    cpu = built_repo / "cpu"
    val = load_image_folder(built_repo / manifest["models"][name]["data"]["val"])   # relative to the manifest
    encoded, targets = val.encoded(), np.asarray(val.targets)
    pre = CpuPreprocessor(cpu / layout.preprocess_model(name) / "1" / layout.DALI_DEFINITION)
    x = np.concatenate([pre(list(pack_batch(encoded[i: i + 32]))) for i in range(0, len(encoded), 32)])
    top1 = {}
    for precision in manifest["models"][name]["precisions"]:
        sess = ort.InferenceSession(str(cpu / layout.engine_model(name, precision) / "1" / "model.onnx"),
                                    providers=["CPUExecutionProvider"])
        top1[precision] = sess.run([layout.ENGINE_OUTPUT], {layout.ENGINE_INPUT: x})[0].argmax(1)
    n = len(targets)
    for precision, ev in manifest["models"][name]["precisions"].items():
        # One image's worth of slack: ONNX Runtime's kernels may round a near-tie either way.
        assert abs(ev["top1_agreement_fp32"] - (top1[precision] == top1["fp32"]).mean()) <= 1 / n, precision
        assert abs(ev["accuracy"] - (top1[precision] == targets).mean()) <= 1 / n, precision

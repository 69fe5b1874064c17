"""The portable manifest: relative paths, format_version, bundled validation images, and a
repository that still verifies, benches and load-tests after it was moved to another folder."""
from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from contract import layout
from contract.manifest import (FORMAT_VERSION, ManifestError, absolute_paths, file_names_only, load_manifest, write_manifest)

ROOT = Path(__file__).resolve().parents[1]


# --- reader and writer ----------------------------------------------------------------------------

def _tiny(folder: Path, **entry) -> dict:
    (folder / "source").mkdir(parents=True, exist_ok=True)
    (folder / "source" / "m.pt").write_bytes(b"weights")
    (folder / "data" / "m" / "val" / "a").mkdir(parents=True, exist_ok=True)
    return {"models": {"m": {"checkpoint": "source/m.pt", "data": {"val": "data/m/val"}, **entry}}}


def test_written_manifest_loads_with_paths_resolved_against_its_folder(tmp_path):
    write_manifest(tmp_path / "a", _tiny(tmp_path / "a", labels=["x"]))
    moved = tmp_path / "elsewhere" / "b"
    moved.parent.mkdir()
    (tmp_path / "a").rename(moved)
    m = load_manifest(moved)                      # the folder ...
    assert load_manifest(moved / layout.MANIFEST_FILE).record == m.record   # ... or the file
    assert m.format_version == FORMAT_VERSION == json.loads((moved / "manifest.json").read_text())["format_version"]
    assert m.models["m"].checkpoint == moved / "source" / "m.pt" and m.models["m"].val == moved / "data/m/val"
    assert m.models["m"].labels == ["x"]
    with pytest.raises(ManifestError, match="'n' is not in .*it has \\['m'\\]"):
        m.model("n")


def test_writer_refuses_absolute_paths_and_files_outside_the_folder(tmp_path):
    record = _tiny(tmp_path, source={"onnx": str(tmp_path / "model.onnx")})
    with pytest.raises(ManifestError, match=r"absolute paths \(models\.m\.source\.onnx\)"):
        write_manifest(tmp_path, record)
    record = _tiny(tmp_path)
    record["models"]["m"]["checkpoint"] = "source/missing.pt"
    with pytest.raises(ManifestError, match="source/missing.pt.*does not exist"):
        write_manifest(tmp_path, record)
    assert not (tmp_path / layout.MANIFEST_FILE).exists()   # nothing half-written


@pytest.mark.parametrize("change, message", [
    (lambda r: r.pop("format_version"), "no format_version: it was written by an older builder"),
    (lambda r: r.update(format_version=99), "format_version 99; this toolkit reads 2"),
    (lambda r: r["models"]["m"]["data"].update(val="/srv/cache/val"), "records absolute paths .*data.val"),
    (lambda r: r["models"]["m"].update(checkpoint="../m.pt"), "not a path relative to the manifest's folder"),
    (lambda r: r["models"]["m"]["data"].update(val="data/other"), "data/other.*does not exist"),
])
def test_loader_names_what_is_wrong(tmp_path, change, message):
    write_manifest(tmp_path, _tiny(tmp_path))
    record = json.loads((tmp_path / layout.MANIFEST_FILE).read_text())
    change(record)
    (tmp_path / layout.MANIFEST_FILE).write_text(json.dumps(record))
    with pytest.raises(ManifestError, match=message):
        load_manifest(tmp_path)


def test_loader_errors_for_a_missing_or_broken_file(tmp_path):
    with pytest.raises(ManifestError, match="not found; build the repository"):
        load_manifest(tmp_path)
    (tmp_path / layout.MANIFEST_FILE).write_text("{")
    with pytest.raises(ManifestError, match="is not JSON"):
        load_manifest(tmp_path)


def test_file_names_only_keeps_provenance_without_directories():
    info = {"plan": "/cache/engine/k/model.plan", "command": ["trtexec", "--onnx=/cache/x/model.onnx", "--fp16"],
            "calibration": {"cache": "/cache/c.cache", "images": 512}, "note": "built on /dev/null-free host"}
    out = file_names_only(info)
    assert out == {"plan": "model.plan", "command": ["trtexec", "--onnx=model.onnx", "--fp16"],
                   "calibration": {"cache": "c.cache", "images": 512}, "note": "built on /dev/null-free host"}
    assert absolute_paths(info) == ["plan", "command[1]", "calibration.cache"] and absolute_paths(out) == []


def test_bundle_val_caps_the_copy_and_keeps_every_class(tmp_path):
    from builders.repository import bundle_val
    from contract.images import load_image_folder

    src = tmp_path / "val"
    for cls, n in (("a", 5), ("b", 1), ("c", 3)):
        (src / cls).mkdir(parents=True)
        for i in range(n):
            (src / cls / f"{i}.jpg").write_bytes(bytes([i]) * 10)
    rec = bundle_val(tmp_path / "repo", "m", src, 4)
    bundled = load_image_folder(tmp_path / "repo" / rec["val"])
    assert rec["val"] == "data/m/val" and rec["val_bundle"]["images"] == 4 and rec["val_bundle"]["of"] == 9
    assert bundled.classes == ("a", "b", "c")                       # class indices as in the full set
    assert sorted(str(f.relative_to(bundled.root)) for f in bundled.files) == ["a/0.jpg", "a/1.jpg", "b/0.jpg",
                                                                               "c/0.jpg"]
    assert bundle_val(tmp_path / "none", "m", src, 0) is None and not (tmp_path / "none").exists()


# --- the demo build -------------------------------------------------------------------------------

def test_built_manifest_is_portable(built_repo, manifest, build_cache):
    assert manifest["format_version"] == FORMAT_VERSION
    assert absolute_paths(manifest) == []
    text = json.dumps(manifest)
    assert str(build_cache) not in text and str(built_repo) not in text
    digits = load_manifest(built_repo).models["digits"]
    assert digits.checkpoint == built_repo / "source" / "digits.pt"
    assert digits.val == built_repo / "data" / "digits" / "val"
    bundle = manifest["models"]["digits"]["data"]["val_bundle"]
    # The demo's validation split (359 images) is under the default cap: all of it travels.
    assert bundle["images"] == bundle["of"] == len(list(digits.val.rglob("*.jpg"))) > 300
    assert bundle["selection"] == "all"


def _make_old(repo: Path) -> bytes:
    """Turn `repo`'s manifest into one an older builder wrote: no format_version, absolute paths."""
    record = json.loads((repo / layout.MANIFEST_FILE).read_text())
    record.pop("format_version")
    record["models"]["digits"]["data"]["val"] = str(repo / "data" / "digits" / "val")
    (repo / layout.MANIFEST_FILE).write_text(json.dumps(record))
    return (repo / layout.MANIFEST_FILE).read_bytes()


def test_clients_refuse_an_old_manifest_by_name(built_repo, tmp_path, capsys):
    from clients import verify

    repo = tmp_path / "old"
    shutil.copytree(built_repo, repo)
    _make_old(repo)
    # The manifest is read before the server is contacted: no server is needed to get this answer.
    assert verify.main(["--url", "127.0.0.1:9", "--manifest", str(repo)]) == 2
    assert "written by an older builder" in capsys.readouterr().err


def test_partial_build_over_an_old_manifest_says_so_and_keeps_it(built_repo, build_cache, tmp_path):
    from builders.build import BuildError, build
    from contract.spec import load_spec

    out = tmp_path / "old"
    shutil.copytree(built_repo, out)
    before = _make_old(out)
    spec = load_spec(ROOT / "build.toml").model_copy(update={"output": out, "targets": ("cpu",)})
    with pytest.raises(BuildError, match="older builder.* build every model and target"):
        build(spec, cache_dir=build_cache, quiet=True)   # the gpu/ target would have to be kept
    assert (out / layout.MANIFEST_FILE).read_bytes() == before


# --- moved repository against the local server ----------------------------------------------------

@pytest.fixture(scope="module")
def moved_repo(build_cache, tmp_path_factory) -> Path:
    """The demo built into folder A, then moved to B (other name, other parent), A deleted."""
    from builders.build import build
    from contract.spec import load_spec

    a = tmp_path_factory.mktemp("folder-a")
    build(load_spec(ROOT / "build.toml").model_copy(update={"output": a / "model_repository"}),
          cache_dir=build_cache, quiet=True)
    b = tmp_path_factory.mktemp("folder-b") / "parent" / "renamed_repo"
    b.parent.mkdir(parents=True)
    (a / "model_repository").rename(b)
    shutil.rmtree(a)
    return b


@pytest.fixture(scope="module")
def moved_server(moved_repo):
    pytest.importorskip("tritonclient.grpc")
    from serving.local_server import LocalTritonServer, free_port

    with LocalTritonServer(moved_repo / "cpu", http_port=free_port(), grpc_port=free_port(),
                           metrics_port=free_port(), timeout_s=180) as srv:
        yield srv


@pytest.mark.server
def test_moved_repository_verifies(moved_server, moved_repo, tmp_path, capsys):
    from clients import verify

    out = tmp_path / "verify.json"
    rc = verify.main(["--url", moved_server.http_url, "--protocol", "http", "--manifest", str(moved_repo),
                      "--json", str(out)])
    report = json.loads(out.read_text())
    assert rc == 0 and report["verdict"] == "PASS", capsys.readouterr().out[-3000:]
    assert {r["precision"] for r in report["results"]} == {"fp32", "fp16", "int8"}
    assert report["manifest"]["path"] == str(moved_repo / layout.MANIFEST_FILE)
    # The reference ran on the moved copy's checkpoint and bundled images.
    assert [r["images"] for r in report["results"]] == [359, 359, 359]
    assert report["preprocessing"]["digits"]["images"] == 359


@pytest.mark.server
def test_moved_repository_benches(moved_server, moved_repo, tmp_path, capsys):
    from benchmarks import bench

    rc = bench.main(["--url", moved_server.http_url, "--grpc-url", moved_server.grpc_url, "--manifest",
                     str(moved_repo / layout.MANIFEST_FILE), "--precision", "fp32", "--batch-size", "4",
                     "--window", "0.3", "--max-windows", "3", "--images", "32", "--out", str(tmp_path)])
    output = capsys.readouterr().out
    assert rc == 0, output[-3000:]
    report = json.loads((tmp_path / "bench.json").read_text())
    assert {p["protocol"] for p in report["points"]} == {"http", "grpc"}, report
    for p in report["points"]:
        assert p["server_requests"] > 0 and p["images_per_s"] > 0, p
    assert "preprocessing comparison skipped" not in output, output[-3000:]   # the moved dali.py was found


@pytest.mark.server
def test_moved_repository_load_tests(moved_server, moved_repo, tmp_path):
    cmd = [sys.executable, "-m", "locust", "-f", str(ROOT / "load_tests" / "locustfile.py"), "--headless",
           "--only-summary", "--http-url", moved_server.http_url, "--grpc-url", moved_server.grpc_url,
           "--manifest", str(moved_repo / layout.MANIFEST_FILE), "-u", "4", "-r", "4", "-t", "10s",
           "--precision", "fp32", "--batch-size", "2", "--csv", str(tmp_path / "run"),
           "--sla-p95-ms", "10000", "--sla-min-rps", "1"]
    try:
        # From another working directory: nothing may depend on where the repository was built.
        run = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    except subprocess.TimeoutExpired as err:
        pytest.fail(f"locust did not finish within 120 s:\n{(err.stdout or b'')[-3000:]!r}")
    output = run.stdout + run.stderr
    assert run.returncode == 0, output[-4000:]
    assert str(moved_repo / "data" / "digits" / "val") in output   # the bundled images were sent
    with open(tmp_path / "run_stats.csv") as f:
        total = next(r for r in csv.DictReader(f) if r["Name"] == "Aggregated")
    assert int(total["Request Count"]) > 0 and int(total["Failure Count"]) == 0

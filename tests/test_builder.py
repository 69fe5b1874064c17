"""The builder: spec validation, ONNX parity, Q/DQ structure, calibration cache, DALI parity,
generated configs and ensemble wiring, caching and the atomic repository write."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from builders.triton_config import read_config
from contract import layout
from contract.spec import SpecError, load_spec, parse_spec

ROOT = Path(__file__).resolve().parents[1]
PRECISIONS = ("fp32", "fp16", "int8")


# --- spec -----------------------------------------------------------------------------------------

def _spec_error(data: dict) -> str:
    with pytest.raises(SpecError) as err:
        parse_spec(data)
    return str(err.value)


def test_default_spec_is_the_demo():
    spec = load_spec(ROOT / "build.toml")
    (m,) = spec.models
    assert (m.name, m.source.kind, m.source.arch, m.input.crop) == ("digits", "demo", "mobilenet_v3_small", 32)
    assert set(spec.targets) == {"cpu", "gpu"} and set(m.precisions) == set(PRECISIONS)


def test_unknown_field_is_named():
    msg = _spec_error({"models": [{"precison": ["fp32"]}]})
    assert "models.0.precison" in msg and "Extra inputs are not permitted" in msg


def test_wrong_value_names_field_value_and_allowed():
    msg = _spec_error({"models": [{"calibration": {"method": "kl"}}]})
    assert "models.0.calibration.method" in msg and "'kl'" in msg
    assert "entropy" in msg and "percentile" in msg


def test_cross_field_rules():
    assert "crop" in _spec_error({"models": [{"input": {"resize": 32, "crop": 64}}]})
    assert "fp32" in _spec_error({"models": [{"precisions": ["int8"]}]})
    # Explicit values that conflict still fail (defaults follow max_batch_size: tests/test_newcomer.py).
    assert "preferred_batch_sizes" in _spec_error({"models": [{"triton": {"max_batch_size": 8,
                                                                         "preferred_batch_sizes": [16]}}]})
    assert "opt_batch" in _spec_error({"models": [{"triton": {"max_batch_size": 8}, "engine": {"opt_batch": 32}}]})
    assert "unique" in _spec_error({"models": [{"name": "a"}, {"name": "a"}]})
    assert "checkpoint" in _spec_error({"models": [{"source": {"kind": "torchvision"}}]})


def test_bad_toml_and_missing_file(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("models = [\n")
    with pytest.raises(SpecError, match="not valid TOML"):
        load_spec(bad)
    with pytest.raises(SpecError, match="not found"):
        load_spec(tmp_path / "missing.toml")


def test_cli_spec_error_writes_nothing(tmp_path):
    spec = tmp_path / "spec.toml"
    out = tmp_path / "repo"
    spec.write_text(f'output = "{out}"\n[[models]]\nname = "x"\n[models.input]\ncrop = 99\n')
    proc = subprocess.run([sys.executable, str(ROOT / "builders" / "build_all.py"), "--spec", str(spec),
                           "--cache-dir", str(tmp_path / "cache")], capture_output=True, text=True)
    assert proc.returncode == 2
    # The crop/resize rule is checked on the model (a timm or HF model may leave resize to its own
    # transform), so the location is the model and the message names the input fields.
    assert "models.0" in proc.stdout and "input.crop = 99" in proc.stdout
    assert not out.exists() and not (tmp_path / "cache").exists()


def test_help_documents_every_flag():
    proc = subprocess.run([sys.executable, str(ROOT / "builders" / "build_all.py"), "--help"],
                          capture_output=True, text=True, check=True)
    for flag in ("--spec", "--target", "--precision", "--model", "--output", "--force", "--verbose",
                 "--cache-dir", "--engine-builder"):
        assert flag in proc.stdout


# --- the demo build ---------------------------------------------------------------------------

def test_demo_meets_accuracy_targets(manifest):
    m = manifest["models"]["digits"]
    fp32 = m["precisions"]["fp32"]["accuracy"]
    assert m["export"]["pytorch_accuracy"] >= 0.90
    assert fp32 >= 0.90
    for target in ("cpu", "gpu"):  # U8S8 served on cpu, S8S8 Q/DQ as the gpu plans' source
        assert abs(m["precisions"]["int8"]["targets"][target]["accuracy"] - fp32) <= 0.01, target
    assert m["precisions"]["int8"]["targets"]["cpu"]["top1_agreement_fp32"] >= 0.99
    assert m["precisions"]["int8"]["accuracy"] == m["precisions"]["int8"]["targets"]["cpu"]["accuracy"]


def test_onnx_matches_pytorch(manifest):
    exp = manifest["models"]["digits"]["export"]
    assert exp["max_abs_diff"] < 1e-3
    assert exp["top1_agreement"] == 1.0


def test_fp32_onnx_interface(built_repo):
    model = onnx.load(built_repo / "cpu" / layout.engine_model("digits", "fp32") / "1" / "model.onnx")
    assert model.opset_import[0].version >= 17
    (inp,), (out,) = model.graph.input, model.graph.output
    assert (inp.name, out.name) == (layout.ENGINE_INPUT, layout.ENGINE_OUTPUT)
    dims = inp.type.tensor_type.shape.dim
    assert dims[0].dim_param and not dims[0].dim_value  # dynamic batch
    assert [d.dim_value for d in dims[1:]] == [3, 32, 32]


def test_fp16_keeps_fp32_io(built_repo):
    model = onnx.load(built_repo / "cpu" / layout.engine_model("digits", "fp16") / "1" / "model.onnx")
    assert model.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert model.graph.output[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert any(t.data_type == onnx.TensorProto.FLOAT16 for t in model.graph.initializer)


@pytest.fixture(scope="module")
def demo_model(demo_build):
    """The builder's in-memory result (ModelBuild) for the demo, from the session's build."""
    return demo_build.models[0]


def _zero_point_types(model: onnx.ModelProto) -> set:
    inits = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    return {inits[n.input[2]].dtype for n in model.graph.node if n.op_type == "QuantizeLinear" and len(n.input) > 2}


def test_gpu_target_gets_the_tensorrt_int8(demo_model, manifest):
    """The plan's source is the S8S8 Q/DQ model, never the cpu target's U8S8 one."""
    from builders.stages import hash_path

    gpu_onnx = demo_model.variants_for("gpu")["int8"].path
    (plan,) = [r for r in manifest["artifacts"].values()
               if r["target"] == "gpu" and r.get("precision") == "int8"]
    assert plan["onnx_sha256"] == hash_path(gpu_onnx)
    assert manifest["models"]["digits"]["precisions"]["int8"]["targets"]["gpu"]["onnx_sha256"] == hash_path(gpu_onnx)
    assert _zero_point_types(onnx.load(gpu_onnx)) == {np.dtype(np.int8)}


def test_cpu_target_serves_onnxruntime_int8(built_repo, demo_model, manifest):
    """U8S8 for ONNX Runtime: uint8 activations with zero points, int8 per-channel weights."""
    from builders.engine import check_onnx_for_tensorrt
    from builders.stages import hash_path

    served = built_repo / "cpu" / layout.engine_model("digits", "int8") / "1" / "model.onnx"
    assert hash_path(served) == hash_path(demo_model.variants_for("cpu")["int8"].path)
    assert hash_path(served) != hash_path(demo_model.variants_for("gpu")["int8"].path)
    model = onnx.load(served)
    inits = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    acts = [inits[n.input[2]] for n in model.graph.node if n.op_type == "QuantizeLinear" and len(n.input) > 2]
    assert acts and all(z.dtype == np.uint8 for z in acts)
    assert any(np.any(z != 0) for z in acts)  # asymmetric: some activation is not centred on 0
    weights = [inits[n.input[0]] for n in model.graph.node
               if n.op_type == "DequantizeLinear" and n.input[0] in inits and inits[n.input[0]].ndim == 4]
    assert len(weights) > 10 and all(w.dtype == np.int8 for w in weights)
    # per output channel, as on the gpu target: one scale per filter, on axis 0
    for n in model.graph.node:
        if n.op_type == "DequantizeLinear" and n.input[0] in inits and inits[n.input[0]].ndim == 4:
            axis = next((a.i for a in n.attribute if a.name == "axis"), 1)
            assert axis == 0 and inits[n.input[1]].shape == (inits[n.input[0]].shape[0],), n.name
    assert any("zero point" in p for p in check_onnx_for_tensorrt(served, "int8"))  # not TensorRT's shape
    notes = manifest["models"]["digits"]["precisions"]["int8"]["targets"]["cpu"]["notes"]
    assert "U8S8 QDQ" in notes and "reduce_range" in notes


def test_int8_qdq_is_what_tensorrt_takes(demo_model):
    model = onnx.load(demo_model.variants_for("gpu")["int8"].path)
    assert model.opset_import[0].version >= 13
    ops = {n.op_type for n in model.graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    assert not ops & {"DynamicQuantizeLinear", "QLinearConv", "ConvInteger", "MatMulInteger"}
    inits = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    zero_points = [inits[n.input[2]] for n in model.graph.node
                   if n.op_type in ("QuantizeLinear", "DequantizeLinear") and len(n.input) > 2]
    assert zero_points and all(np.all(z == 0) and z.dtype == np.int8 for z in zero_points)
    scales = [inits[n.input[1]] for n in model.graph.node if n.op_type == "DequantizeLinear"]
    assert all(np.all(s > 0) for s in scales)
    # Conv weights: per output channel on axis 0; activations: per tensor.
    conv_weights = {n.input[1] for n in model.graph.node if n.op_type == "Conv"}
    per_channel = 0
    for n in model.graph.node:
        if n.op_type != "DequantizeLinear" or n.output[0] not in conv_weights:
            continue
        w = inits[n.input[0]]
        axis = next((a.i for a in n.attribute if a.name == "axis"), 1)
        assert axis == 0 and inits[n.input[1]].shape == (w.shape[0],)
        per_channel += 1
    assert per_channel > 10
    from builders.engine import check_onnx_for_tensorrt

    assert check_onnx_for_tensorrt(demo_model.variants_for("gpu")["int8"].path, "int8") == []


def test_manifest_records_versions_hashes_and_figures(manifest, built_repo):
    assert {"torch", "onnx", "onnxruntime", "nvidia-dali-cuda130"} <= set(manifest["tools"])
    assert all(manifest["tools"][k] for k in ("torch", "onnx", "onnxruntime", "nvidia-dali-cuda130"))
    from builders.stages import hash_path

    present = {p: r for p, r in manifest["artifacts"].items() if "missing" not in r}
    assert len(present) == 9  # cpu: dali + 3 onnx + 2 TorchScript; gpu: dali + 2 TorchScript (plans need a GPU)
    for path, rec in present.items():
        assert hash_path(built_repo / path) == rec["sha256"]
    for p in PRECISIONS:
        ev = manifest["models"]["digits"]["precisions"][p]
        # fp32 is its own reference; the reduced precisions keep nearly every decision of the demo.
        # (tests/test_guards.py recomputes these figures from the repository's files.)
        assert ev["runnable"] and ev["top1_agreement_fp32"] >= (1.0 if p == "fp32" else 0.95), (p, ev)
    assert "docker compose" in manifest["models"]["digits"]["tensorrt"]["status"]


# --- DALI -----------------------------------------------------------------------------------------

def test_dali_cpu_matches_torchvision_transform(built_repo, val_images, manifest):
    from contract.images import pack_batch
    from contract.preprocess import CPU_TOLERANCE, CpuPreprocessor, parity, reference_preprocess
    from contract.spec import Input

    pre = manifest["models"]["digits"]["preprocessing"]
    assert pre["within_tolerance"] and pre["images"] == len(val_images) and pre["outside_tolerance"] == []
    assert "torchvision Resize(36), CenterCrop(32)" in pre["reference"]
    inp = Input(**manifest["models"]["digits"]["input"])
    dali = CpuPreprocessor(built_repo / "cpu" / layout.preprocess_model("digits") / "1" / layout.DALI_DEFINITION)
    encoded = [e for e, _ in val_images[:16]]
    padded = dali(list(pack_batch(encoded)))
    ragged = dali([np.frombuffer(e, np.uint8) for e in encoded])
    ref = np.stack([reference_preprocess(e, inp) for e in encoded])
    assert padded.shape == (16, 3, 32, 32) and padded.dtype == np.float32
    assert np.array_equal(padded, ragged)  # packed rows decode as the bare files
    result = parity(padded, ref, inp.std, [str(i) for i in range(16)])
    assert not result.failing
    # Measured: at most one pixel level anywhere (rounding inside the bilinear filter).
    assert max(result.max) <= 1.01 and max(result.mean) < CPU_TOLERANCE["mean"]


def test_pipeline_definitions_are_self_contained_and_autoserializable(built_repo):
    """dali.py imports only DALI (dali_backend imports it outside the project) and marks exactly one
    pipeline; the gpu variant decodes with the mixed (nvJPEG) decoder, the cpu one does not."""
    import ast

    from contract.preprocess import autoserialize

    for target in ("cpu", "gpu"):
        path = built_repo / target / layout.preprocess_model("digits") / "1" / layout.DALI_DEFINITION
        tree = ast.parse(path.read_text())
        imported = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        imported |= {n.module.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
        assert imported == {"nvidia"}, imported
        assert path.read_text().count("@_autoserialize") == 1
        serialized = autoserialize(path)
        assert (b"mixed" in serialized) == (target == "gpu")
    assert not list(built_repo.rglob("model.dali"))   # nothing tied to the build machine's DALI version


# --- configs and ensembles ---------------------------------------------------------------------

def _configs(target_dir: Path) -> dict:
    return {p.parent.name: read_config(p) for p in target_dir.glob("*/config.pbtxt")}


@pytest.mark.parametrize("target", ["cpu", "gpu"])
def test_configs_parse_and_ensembles_are_wired(built_repo, target):
    from tritonclient.grpc import model_config_pb2 as mc

    cfgs = _configs(built_repo / target)
    assert set(cfgs) == {layout.preprocess_model("digits")} | {
        f(p) for p in PRECISIONS for f in (lambda p: layout.engine_model("digits", p),
                                           lambda p: layout.ensemble_model("digits", p))} | {
        f("digits", p, "torch") for p in layout.TORCH_PRECISIONS for f in (layout.engine_model, layout.ensemble_model)}
    pre = cfgs[layout.preprocess_model("digits")]
    kind = mc.ModelInstanceGroup.KIND_GPU if target == "gpu" else mc.ModelInstanceGroup.KIND_CPU
    assert pre.backend == "dali" and pre.instance_group[0].kind == kind
    for name, cfg in cfgs.items():
        assert cfg.name == name
        if cfg.platform != "ensemble":
            continue
        assert (cfg.input[0].data_type, list(cfg.input[0].dims)) == (mc.TYPE_UINT8, [-1])
        assert cfg.output[0].label_filename and (built_repo / target / name / cfg.output[0].label_filename).is_file()
        assert (built_repo / target / name / "1").is_dir()
        produced = {i.name: (i.data_type, list(i.dims)) for i in cfg.input}
        for step in cfg.ensemble_scheduling.step:
            sub = cfgs[step.model_name]
            assert cfg.max_batch_size <= sub.max_batch_size
            sub_in = {i.name: (i.data_type, list(i.dims)) for i in sub.input}
            sub_out = {o.name: (o.data_type, list(o.dims)) for o in sub.output}
            assert set(step.input_map) == set(sub_in)
            for sub_name, ens_name in step.input_map.items():
                assert produced[ens_name] == sub_in[sub_name], (name, step.model_name, sub_name)
            assert set(step.output_map) <= set(sub_out)
            for sub_name, ens_name in step.output_map.items():
                produced[ens_name] = sub_out[sub_name]
        for out in cfg.output:
            assert produced[out.name] == (out.data_type, list(out.dims))
    engine = cfgs[layout.engine_model("digits", "int8")]
    assert engine.platform == ("tensorrt_plan" if target == "gpu" else "onnxruntime_onnx")


def test_labels_file_has_one_line_per_class(built_repo, manifest):
    labels = (built_repo / "cpu" / layout.ensemble_model("digits", "fp32") / layout.LABELS_FILE).read_text().split()
    assert labels == manifest["models"]["digits"]["labels"] and len(labels) == 10


# --- caching and atomic writes ----------------------------------------------------------------

def _small_spec(out: Path):
    return load_spec(ROOT / "build.toml").model_copy(update={"output": out, "targets": ("cpu",)})


def test_unchanged_rebuild_is_cached_and_does_not_recalibrate(built_repo, build_cache, tmp_path, monkeypatch):
    import shutil

    from builders import precision
    from builders.build import build

    def no_calibration(*a, **k):
        raise AssertionError("recalibrated although the calibration cache holds this model, data and method")

    monkeypatch.setattr(precision, "calibrate", no_calibration)
    result = build(_small_spec(tmp_path / "repo"), cache_dir=build_cache, quiet=True)
    assert all(r.cached for r in result.records)
    # Without their stage entries both int8 shapes are rebuilt, but from the one cached calibration.
    shutil.rmtree(build_cache / "int8")
    rebuilt = build(_small_spec(tmp_path / "repo"), cache_dir=build_cache, quiet=True)
    rerun = [r.name for r in rebuilt.records if not r.cached]
    assert {"int8[digits/tensorrt]", "int8[digits/onnxruntime]"} <= set(rerun)
    assert set(rerun) <= {"int8[digits/tensorrt]", "int8[digits/onnxruntime]", "evaluate[digits/int8]",
                          "evaluate[digits/int8-cpu]"}
    for target in ("cpu", "gpu"):
        assert "(reused)" in rebuilt.manifest["models"]["digits"]["precisions"]["int8"]["targets"][target]["notes"]


def test_calibration_is_shared_where_the_method_allows(demo_model):
    from builders.precision import calibration_key
    from contract.spec import Calibration

    fp32, x = demo_model.variants["fp32"].path, np.zeros((2, 3, 32, 32), np.float32)
    for method, shared in (("entropy", True), ("max", True), ("percentile", False)):
        c = Calibration(method=method)
        assert (calibration_key(fp32, x, c, symmetric=True) == calibration_key(fp32, x, c, symmetric=False)) is shared


def test_cpu_int8_options(monkeypatch):
    from builders import precision
    from contract.spec import Calibration

    for vnni, reduce in ((True, False), (False, True), (None, False)):
        monkeypatch.setattr(precision, "cpu_has_vnni", lambda v=vnni: v)
        opts = precision.cpu_int8_options(Calibration())
        assert opts["reduce_range"] is reduce and opts["reduce_range_reason"].startswith("auto")
    opts = precision.cpu_int8_options(Calibration(cpu_reduce_range=True, cpu_format="qoperator"))
    assert opts == {"quant_format": "qoperator", "reduce_range": True, "reduce_range_reason": "set in the spec"}
    assert "cpu_reduce_range" in _spec_error({"models": [{"calibration": {"cpu_reduce_range": "sometimes"}}]})
    assert "cpu_format" in _spec_error({"models": [{"calibration": {"cpu_format": "qlinear"}}]})


def test_reduce_range_keeps_weights_in_seven_bits(demo_model, build_cache, tmp_path):
    from builders.precision import to_int8
    from contract.spec import Calibration

    # Only an image's worth of data: the point is the weight range, which calibration does not touch.
    x = np.load(demo_model.preprocessing.val_tensors)[:1]
    path, _, _ = to_int8(demo_model.variants["fp32"].path, tmp_path / "rr.onnx", x, Calibration(method="max"),
                         tmp_path / "calib", "onnxruntime", "qdq", reduce_range=True)
    model = onnx.load(path)
    inits = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    weights = [inits[n.input[0]] for n in model.graph.node
               if n.op_type == "DequantizeLinear" and n.input[0] in inits and inits[n.input[0]].dtype == np.int8]
    assert weights and max(int(np.abs(w.astype(np.int32)).max()) for w in weights) <= 64


def test_failed_build_leaves_previous_repository(built_repo, build_cache, tmp_path, monkeypatch):
    from builders import build as build_module
    from builders.build import BuildError, build

    out = tmp_path / "repo"
    build(_small_spec(out), cache_dir=build_cache, quiet=True)
    before = (out / "manifest.json").read_bytes()

    calls = []

    def half_then_fail(root, target, *rest):
        calls.append(target)
        (root / target / "half-written").mkdir(parents=True)
        raise OSError("disk full (simulated)")

    monkeypatch.setattr(build_module, "write_target", half_then_fail)
    with pytest.raises(BuildError, match="disk full"):
        build(_small_spec(out), cache_dir=build_cache, quiet=True)
    assert calls and (out / "manifest.json").read_bytes() == before
    assert not (out / "cpu" / "half-written").exists()
    assert not out.with_name("repo.staging").exists()


def test_killed_build_leaves_previous_repository(built_repo, build_cache, tmp_path):
    import shutil
    import signal
    import time

    out = tmp_path / "repo"
    shutil.copytree(built_repo, out)
    before = (out / "manifest.json").read_bytes()
    spec = tmp_path / "spec.toml"
    # A fresh cache forces real work (data, training), during which the build is killed.
    spec.write_text(f'output = "{out}"\ntargets = ["cpu"]\n[[models]]\nname = "digits"\n')
    proc = subprocess.Popen([sys.executable, str(ROOT / "builders" / "build_all.py"), "--spec", str(spec),
                             "--cache-dir", str(tmp_path / "fresh-cache"), "-q"])
    deadline = time.time() + 60
    while time.time() < deadline and not list((tmp_path / "fresh-cache").glob("train/*.partial")):
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert (out / "manifest.json").read_bytes() == before
    assert (out / "cpu" / layout.ensemble_model("digits", "int8") / "config.pbtxt").is_file()


def test_interrupted_swap_is_recovered(tmp_path):
    from builders.repository import previous_dir, recover, staging_dir

    out = tmp_path / "model_repository"
    previous_dir(out).mkdir(parents=True)
    (previous_dir(out) / "manifest.json").write_text("{}")
    staging_dir(out).mkdir()
    recover(out)  # killed after `output -> previous`, before `staging -> output`
    assert json.loads((out / "manifest.json").read_text()) == {}
    assert not previous_dir(out).exists() and not staging_dir(out).exists()


def test_building_one_target_keeps_the_other(built_repo, build_cache, tmp_path):
    import shutil

    from builders.build import build

    out = tmp_path / "repo"
    shutil.copytree(built_repo, out)
    result = build(_small_spec(out), cache_dir=build_cache, quiet=True)  # targets = cpu only
    gpu_ensemble = out / "gpu" / layout.ensemble_model("digits", "int8") / "config.pbtxt"
    assert gpu_ensemble.is_file()
    assert (out / "gpu" / layout.preprocess_model("digits") / "1" / layout.DALI_DEFINITION).is_file()
    assert set(result.manifest["targets"]) == {"cpu", "gpu"}
    assert any(r["target"] == "gpu" for r in result.manifest["artifacts"].values())


# --- other model sources -----------------------------------------------------------------------

def _user_spec(tmp_path: Path, demo_data, source: dict):
    return parse_spec({"output": str(tmp_path / "repo"), "targets": ["cpu"], "models": [{
        "name": "mine", "precisions": ["fp32"], "source": source,
        "data": {"val": str(demo_data.val), "calibration": str(demo_data.calibration)},
        "triton": {"max_batch_size": 16, "preferred_batch_sizes": [16]}, "engine": {"opt_batch": 8}}]})


def test_torchvision_checkpoint_source(built_repo, manifest, demo_data, tmp_path):
    from builders.build import build

    spec = _user_spec(tmp_path, demo_data, {"kind": "torchvision", "arch": "mobilenet_v3_small",
                                           "checkpoint": str(built_repo / "source" / "digits.pt")})
    result = build(spec, cache_dir=tmp_path / "cache", quiet=True)
    m = result.manifest["models"]["mine"]
    assert m["export"]["top1_agreement"] == 1.0
    # Same weights, same images: the same accuracy as the demo's own fp32 model.
    assert m["precisions"]["fp32"]["accuracy"] == manifest["models"]["digits"]["precisions"]["fp32"]["accuracy"]
    assert (tmp_path / "repo" / "cpu" / "mine_fp32" / "config.pbtxt").is_file()


def test_checkpoint_for_another_architecture_is_refused(built_repo, demo_data, tmp_path):
    from builders.build import BuildError, build

    spec = _user_spec(tmp_path, demo_data, {"kind": "torchvision", "arch": "resnet18",
                                           "checkpoint": str(built_repo / "source" / "digits.pt")})
    with pytest.raises(BuildError, match="does not fit torchvision 'resnet18'") as err:
        build(spec, cache_dir=tmp_path / "cache", quiet=True)
    assert "looks like torchvision 'mobilenet_v3_small'" in str(err.value)
    assert not (tmp_path / "repo").exists()


def test_onnx_source(built_repo, demo_data, tmp_path):
    from builders.build import build

    onnx_file = built_repo / "cpu" / layout.engine_model("digits", "fp32") / "1" / "model.onnx"
    result = build(_user_spec(tmp_path, demo_data, {"kind": "onnx", "onnx": str(onnx_file)}),
                   cache_dir=tmp_path / "cache", quiet=True)
    m = result.manifest["models"]["mine"]
    assert m["export"] is None and m["precisions"]["fp32"]["accuracy"] >= 0.9


@pytest.mark.parametrize("precision", PRECISIONS)
def test_every_built_variant_passes_the_tensorrt_onnx_checks(demo_model, precision):
    """The gpu target's plans are built from these (int8: the S8S8 one, not the cpu target's U8S8)."""
    from builders.engine import check_onnx_for_tensorrt

    assert check_onnx_for_tensorrt(demo_model.variants_for("gpu")[precision].path, precision) == []


@pytest.mark.parametrize("target", ["cpu", "gpu"])
def test_models_warm_up_with_a_real_image(built_repo, target):
    from PIL import Image

    cfgs = _configs(built_repo / target)
    warmed = {name: cfg for name, cfg in cfgs.items() if cfg.model_warmup}
    assert set(warmed) == {n for n, c in cfgs.items() if c.platform != "ensemble"}
    for name, cfg in warmed.items():
        assert sorted(w.batch_size for w in cfg.model_warmup) == [1, cfg.max_batch_size]
        for w in cfg.model_warmup:
            (inp_name, inp), = w.inputs.items()
            assert inp_name == cfg.input[0].name
            data = (built_repo / target / name / "warmup" / inp.input_data_file).read_bytes()
            item = 1 if cfg.backend == "dali" else 4
            assert len(data) == item * int(np.prod(inp.dims))
            if cfg.backend == "dali":
                assert Image.open(built_repo / target / name / "warmup" / inp.input_data_file).format == "JPEG"


def test_plans_for_several_gpu_architectures_coexist(built_repo, build_cache, tmp_path):
    from builders.build import build
    from builders.repository import write_target
    from contract.manifest import Artifact

    (b,) = build(_small_spec(tmp_path / "repo"), cache_dir=build_cache, quiet=True).models
    # The writer only places plan files and lists them; these bytes stand for plans that a GPU
    # build made on an A100 (8.0) and later on an H100 (9.0).
    sm80, sm90 = tmp_path / "model_sm80.plan", tmp_path / "model_sm90.plan"
    sm80.write_bytes(b"plan built on sm80")
    sm90.write_bytes(b"plan built on sm90")
    first = write_target(tmp_path / "a100", "gpu", b, {"fp32": sm80}, "8.0")
    # The previous build's artifacts as the manifest reader gives them (contract.manifest.Artifact).
    write_target(tmp_path / "h100", "gpu", b, {"fp32": sm90}, "9.0", tmp_path / "a100",
                 {p: Artifact.from_record(p, r) for p, r in first.items()})
    eng = Path("gpu") / layout.engine_model("digits", "fp32")
    cfg = read_config(tmp_path / "h100" / eng / "config.pbtxt")
    assert dict(cfg.cc_model_filenames) == {"8.0": "model_sm80.plan", "9.0": "model_sm90.plan"}
    assert (tmp_path / "h100" / eng / "1" / "model_sm80.plan").read_bytes() == b"plan built on sm80"
    # A plan built from another ONNX is stale: it is not kept.
    stale = {p: Artifact.from_record(p, {**r, "onnx_sha256": "0" * 64}) for p, r in first.items()}
    write_target(tmp_path / "h100b", "gpu", b, {"fp32": sm90}, "9.0", tmp_path / "a100", stale)
    cfg = read_config(tmp_path / "h100b" / eng / "config.pbtxt")
    assert dict(cfg.cc_model_filenames) == {"9.0": "model_sm90.plan"}


def test_gpu_build_with_require_plans_fails_instead_of_leaving_empty_plan_folders(built_repo, build_cache, tmp_path):
    from builders.build import BuildError, build
    from builders.engine import tensorrt_available

    if tensorrt_available()[0]:
        pytest.skip("TensorRT and a GPU are here: plans would be built")
    out = tmp_path / "repo"
    spec = load_spec(ROOT / "build.toml").model_copy(update={"output": out, "targets": ("gpu",)})
    with pytest.raises(BuildError, match="--require-plans: no TensorRT plans can be built here"):
        build(spec, cache_dir=build_cache, quiet=True, require_plans=True)
    assert not out.exists()  # nothing half-written for Triton to start on
    # Without the flag (a CPU machine), the same build succeeds and says where plans come from;
    # the manifest names the release the gpu target is for.
    result = build(spec, cache_dir=build_cache, quiet=True, release="26.05")
    assert "docker compose" in result.plan_status["digits"]
    assert result.manifest["triton_release"] == {
        "name": "26.05", "tensorrt": "10.16.1.11", "dali_version": "2.1.0",
        "tensorrt_image": "nvcr.io/nvidia/tensorrt:26.05-py3",
        "triton_image": "nvcr.io/nvidia/tritonserver:26.05-py3"}


def test_config_writes_are_atomic(tmp_path):
    """write_text_atomic (config.pbtxt, and config search's dali.py edits in a live repository)
    leaves the old file whole when the write fails, and no temporary file behind either way."""
    from builders.triton_config import write_text_atomic

    path = tmp_path / "config.pbtxt"
    path.write_text("old")
    write_text_atomic(path, "new")
    assert path.read_text() == "new"
    with pytest.raises(TypeError):
        write_text_atomic(path, None)        # fails inside the write
    assert path.read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.pbtxt"]

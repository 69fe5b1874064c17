"""Engine stage: pure helpers everywhere; real TensorRT builds only where TensorRT and a GPU exist."""
from __future__ import annotations

import ast
import json
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from builders import engine
from builders.engine import (EngineUnavailable, check_onnx_for_tensorrt, parse_trtexec_output, plan_filename,
                             summarize_layers, tensorrt_available, trtexec_command)
from contract.spec import Engine

ROOT = Path(__file__).resolve().parents[1]
TRT_OK, TRT_WHY = tensorrt_available()
needs_tensorrt = pytest.mark.skipif(not TRT_OK, reason=f"needs TensorRT and a GPU: {TRT_WHY}")

# trtexec 10.x output as its sampleReporting prints it (trimmed build log), with --percentile=90,95,99.
TRTEXEC_SAMPLE = """\
&&&& RUNNING TensorRT.trtexec [TensorRT v101303] [b9] # trtexec --onnx=model.onnx --fp16 --percentile=90,95,99
[11/20/2026-10:00:00] [I] === Model Options ===
[11/20/2026-10:00:00] [I] Format: ONNX
[11/20/2026-10:00:01] [I] [TRT] Loaded engine size: 3 MiB
[11/20/2026-10:00:40] [I] Warmup completed 2710 queries over 200 ms
[11/20/2026-10:00:40] [I] Timing trace has 8019 queries over 3.00064 s
[11/20/2026-10:00:40] [I]
[11/20/2026-10:00:40] [I] === Trace details ===
[11/20/2026-10:00:40] [I] Trace averages of 10 runs:
[11/20/2026-10:00:40] [I] Average on 10 runs - GPU latency: 0.351 ms - Host latency: 0.374 ms (enqueue 0.013 ms)
[11/20/2026-10:00:40] [I]
[11/20/2026-10:00:40] [I] === Performance summary ===
[11/20/2026-10:00:40] [I] Throughput: 2672.4 qps
[11/20/2026-10:00:40] [I] Latency: min = 0.36377 ms, max = 0.52124 ms, mean = 0.374511 ms, median = 0.372559 ms, percentile(90%) = 0.38501 ms, percentile(95%) = 0.39209 ms, percentile(99%) = 0.412598 ms
[11/20/2026-10:00:40] [I] Enqueue Time: min = 0.0114746 ms, max = 0.0491943 ms, mean = 0.0136421 ms, median = 0.0130615 ms, percentile(90%) = 0.0151367 ms, percentile(95%) = 0.0170898 ms, percentile(99%) = 0.0249023 ms
[11/20/2026-10:00:40] [I] H2D Latency: min = 0.0107422 ms, max = 0.0244141 ms, mean = 0.0117093 ms, median = 0.0115967 ms, percentile(90%) = 0.0124512 ms, percentile(95%) = 0.0131836 ms, percentile(99%) = 0.0170898 ms
[11/20/2026-10:00:40] [I] GPU Compute Time: min = 0.339966 ms, max = 0.48999 ms, mean = 0.350241 ms, median = 0.348389 ms, percentile(90%) = 0.360352 ms, percentile(95%) = 0.366699 ms, percentile(99%) = 0.385986 ms
[11/20/2026-10:00:40] [I] D2H Latency: min = 0.0112305 ms, max = 0.0161133 ms, mean = 0.0125591 ms, median = 0.0124512 ms, percentile(90%) = 0.0133057 ms, percentile(95%) = 0.0137939 ms, percentile(99%) = 0.0146484 ms
[11/20/2026-10:00:40] [I] Total Host Walltime: 3.00064 s
[11/20/2026-10:00:40] [I] Total GPU Compute Time: 2.80858 s
[11/20/2026-10:00:40] [W] * GPU compute time is unstable, with coefficient of variance = 5.66%.
[11/20/2026-10:00:40] [I] Explanations of the performance metrics are printed in the verbose logs.
[11/20/2026-10:00:40] [I]
&&&& PASSED TensorRT.trtexec [TensorRT v101303] [b9] # trtexec --onnx=model.onnx --fp16 --percentile=90,95,99
"""


# ---------------------------------------------------------------- everywhere: trtexec


def test_parse_trtexec_output_reads_the_performance_summary():
    perf = parse_trtexec_output(TRTEXEC_SAMPLE)
    assert perf["passed"] is True
    assert perf["tensorrt_version"] == "10.13.3"
    assert perf["throughput_qps"] == pytest.approx(2672.4)
    gpu = perf["gpu_compute_time_ms"]
    assert gpu == pytest.approx({"min": 0.339966, "max": 0.48999, "mean": 0.350241, "median": 0.348389,
                                 "p90": 0.360352, "p95": 0.366699, "p99": 0.385986})
    assert perf["latency_ms"]["p99"] == pytest.approx(0.412598)
    assert perf["latency_ms"]["median"] == pytest.approx(0.372559)
    assert set(perf) >= {"enqueue_time_ms", "h2d_latency_ms", "d2h_latency_ms"}
    assert perf["total_host_walltime_s"] == pytest.approx(3.00064)
    assert perf["total_gpu_compute_s"] == pytest.approx(2.80858)
    # the per-run trace line before the summary is not mistaken for a summary statistic
    assert "average_on_10_runs_gpu_latency_ms" not in perf


def test_parse_trtexec_output_without_a_summary_or_with_seconds():
    assert parse_trtexec_output("&&&& FAILED TensorRT.trtexec [TensorRT v100300]") == {
        "passed": False, "tensorrt_version": "10.3.0"}
    perf = parse_trtexec_output("[I] Latency: min = 1 s, max = 2 s, mean = 1.5 s, median = 1.5 s\n")
    assert perf["latency_ms"] == {"min": 1000.0, "max": 2000.0, "mean": 1500.0, "median": 1500.0}


def _command(precision: str, major: int, **engine_fields) -> list[str]:
    spec = Engine(min_batch=1, opt_batch=16, workspace_mib=1024, **engine_fields)
    return trtexec_command("/usr/src/tensorrt/bin/trtexec", Path("m.onnx"), Path("1/model.plan"), precision, spec,
                           64, "input", (3, 32, 32), Path("cache/timing.cache"), major, Path("1/layers.json"))


def test_trtexec_command_matches_the_python_builder_settings():
    cmd = _command("fp16", 10, version_compatible=True, hardware_compatible=True)
    assert all(isinstance(a, str) for a in cmd)  # an argument list for subprocess, never a shell string
    assert cmd[:3] == ["/usr/src/tensorrt/bin/trtexec", "--onnx=m.onnx", "--saveEngine=1/model.plan"]
    for arg in ("--minShapes=input:1x3x32x32", "--optShapes=input:16x3x32x32", "--maxShapes=input:64x3x32x32",
                "--shapes=input:16x3x32x32", "--memPoolSize=workspace:1024M", "--timingCacheFile=cache/timing.cache",
                "--profilingVerbosity=detailed", "--exportLayerInfo=1/layers.json", "--stronglyTyped",
                "--versionCompatible", "--hardwareCompatibilityLevel=ampere+"):
        assert arg in cmd
    # Strongly typed on TensorRT 10 too: the fp16 / Q/DQ ONNX decides, no weak-typing flags.
    for precision in ("fp32", "fp16", "int8"):
        assert "--stronglyTyped" in _command(precision, 10)
        assert not {"--fp16", "--int8", "--best"} & set(_command(precision, 10))


def test_trtexec_fp32_is_built_without_tf32():
    assert "--noTF32" in _command("fp32", 10) and "--noTF32" in _command("fp32", 11)
    assert "--noTF32" not in _command("fp16", 10) and "--noTF32" not in _command("int8", 11)


def test_trtexec_command_on_tensorrt_11_leaves_precision_to_the_onnx():
    for precision in ("fp32", "fp16", "int8"):
        cmd = _command(precision, 11)
        assert not {"--fp16", "--int8", "--best", "--stronglyTyped"} & set(cmd), "11 is always strongly typed"
        assert "--versionCompatible" not in cmd


def test_python_builder_settings_strong_typing_tf32_and_version_compatibility():
    for major in (10, 11):
        fp32 = engine.builder_settings("fp32", major, implicit_calibrator=False, version_compatible=False)
        assert fp32 == {"strongly_typed": True, "set": [], "clear": ["TF32"]}
        for precision in ("fp16", "int8"):  # the fp16 ONNX / the Q/DQ ONNX, strongly typed
            got = engine.builder_settings(precision, major, implicit_calibrator=False, version_compatible=True)
            assert got == {"strongly_typed": True, "set": ["VERSION_COMPATIBLE"], "clear": []}
    # Weak typing survives only for TensorRT 10's implicit calibrator, which needs the INT8 flag.
    implicit = engine.builder_settings("int8", 10, implicit_calibrator=True, version_compatible=False)
    assert implicit == {"strongly_typed": False, "set": ["INT8"], "clear": []}
    assert engine.builder_settings("fp16", 10, implicit_calibrator=True, version_compatible=False)["strongly_typed"]
    with pytest.raises(ValueError, match="TensorRT 10"):
        engine.builder_settings("int8", 11, implicit_calibrator=True, version_compatible=False)


def test_calibration_feed_reraises_an_error_the_bindings_would_swallow(caplog):
    images = np.zeros((10, 3, 4, 4), dtype=np.float32)
    uploaded: list[int] = []

    def upload(chunk):
        if len(uploaded) == 2:
            raise RuntimeError("CUDA out of memory")
        uploaded.append(len(chunk))
        return [1000 + len(uploaded)]

    feed = engine.CalibrationFeed(images, 3, upload)
    assert feed.next_pointers() == [1001] and feed.next_pointers() == [1002]
    assert feed.next_pointers() == []          # the error ends calibration, as TensorRT sees it ...
    assert feed.next_pointers() == []
    assert "calibration batch 2 failed" in caplog.text
    with pytest.raises(engine.EngineBuildError, match="batch 2: RuntimeError: CUDA out of memory"):
        feed.raise_if_failed()                 # ... and the build raises it afterwards
    clean = engine.CalibrationFeed(images, 3, lambda chunk: [1])
    assert [clean.next_pointers() for _ in range(4)] == [[1], [1], [1], []]  # 3 full batches of 3
    clean.raise_if_failed()


def test_served_plans_start_at_batch_one():
    from contract.spec import SpecError, parse_spec

    with pytest.raises(SpecError, match=r"engine\.min_batch: min_batch = 4: served plans need 1"):
        parse_spec({"models": [{"engine": {"min_batch": 4}}]})
    assert parse_spec({"models": [{"engine": {"min_batch": 1}}]}).models[0].engine.min_batch == 1


# ---------------------------------------------------------------- everywhere: inspector and naming


def test_summarize_layers_reads_tensorrt_10_and_11_inspector_json():
    trt10 = {"Layers": [
        {"Name": "conv1 + relu", "LayerType": "CaskConvolution",
         "Inputs": [{"Name": "x", "Format/Datatype": "Thirty-two wide channel vectorized row major Int8 format"}],
         "Outputs": [{"Name": "y", "Format/Datatype": "Thirty-two wide channel vectorized row major Int8 format"}]},
        {"Name": "Reformatting CopyNode", "LayerType": "Reformat",
         "Inputs": [{"Format/Datatype": "Row major linear FP32"}], "Outputs": [{"Format/Datatype": "Int8"}]},
        {"Name": "fc", "LayerType": "CaskGemm", "Inputs": [{"Format/Datatype": "Channel major FP16 format where channel % 8 == 0"}],
         "Outputs": [{"Format/Datatype": "Row major linear FP32"}]},
        {"Name": "pool", "LayerType": "CaskPooling", "Inputs": [{"Format/Datatype": "Float"}], "Outputs": []},
    ], "Bindings": ["input", "logits"]}
    assert summarize_layers(trt10) == {"layers": 4, "reformat_layers": 1,
                                       "precisions": {"fp16": 1, "fp32": 1, "int8": 1},
                                       "layer_types": {"CaskConvolution": 1, "Reformat": 1, "CaskGemm": 1,
                                                       "CaskPooling": 1}}
    trt11 = {"Layers": [{"Name": "conv", "LayerType": "CaskConvolution",
                         "Inputs": [{"Name": "x", "DataType": "Half", "Format": "Channel major (kHWC8)"}],
                         "Outputs": [{"Name": "y", "DataType": "Half", "Format": "Channel major (kHWC8)"}]}],
             "I/O Tensors": [{"Name": "input", "IOMode": "Input", "DataType": "Float"}]}
    assert summarize_layers(trt11)["precisions"] == {"fp16": 1}
    assert summarize_layers({})["layers"] == 0
    # Key spelling differs between TensorRT versions: read "LayerType"/"Inputs" case-insensitively.
    spelled = {"layers": [{"name": "r", "layerType": "Reformat", "inputs": [{"dataType": "Float"}]},
                          {"name": "c", "layer_type": "CaskConvolution", "inputs": [{"data_type": "Half"}]}]}
    assert summarize_layers(spelled) == {"layers": 2, "reformat_layers": 1, "precisions": {"fp16": 1},
                                         "layer_types": {"Reformat": 1, "CaskConvolution": 1}}


def test_plan_filename_lets_architectures_coexist():
    assert plan_filename("9.0") == "model_sm90.plan"
    assert plan_filename("8.6") == "model_sm86.plan"
    assert plan_filename("8.6", hardware_compatible=True) == "model.plan"
    assert plan_filename(None) == "model.plan"


# ---------------------------------------------------------------- everywhere: without TensorRT


@pytest.mark.skipif(TRT_OK, reason="TensorRT and a GPU are present here")
def test_build_plan_without_tensorrt_says_why_and_points_to_compose(tmp_path):
    with pytest.raises(EngineUnavailable) as err:
        engine.build_plan(tmp_path / "m.onnx", tmp_path / "model.plan", "fp16", Engine(opt_batch=4), 8,
                          "input", (3, 32, 32), tmp_path / "timing.cache")
    message = str(err.value)
    assert TRT_WHY in message and "docker compose" in message
    assert not (tmp_path / "model.plan").exists()


@pytest.mark.skipif(TRT_OK, reason="TensorRT and a GPU are present here")
def test_runner_without_tensorrt_raises_on_activate(tmp_path):
    from runners.base import Runner
    from runners.tensorrt_runner import TensorRTRunner

    runner = TensorRTRunner(tmp_path / "model.plan")
    assert isinstance(runner, Runner) and runner.name == "tensorrt:model.plan"
    with pytest.raises(EngineUnavailable, match="docker compose"):
        runner.activate()
    assert runner.is_active is False


def test_type_stubs_alone_do_not_count_as_tensorrt():
    try:
        import tensorrt
    except ImportError:
        pytest.skip("tensorrt-stubs not installed (pip install -r requirements-dev.txt)")
    if hasattr(tensorrt, "Builder"):
        pytest.skip("a real TensorRT is installed here")
    ok, why = tensorrt_available()
    assert ok is False and "stubs" in why


def test_profile_must_be_ordered(tmp_path):
    with pytest.raises(ValueError, match="opt_batch"):
        engine.build_plan(tmp_path / "m.onnx", tmp_path / "p.plan", "fp32", Engine(min_batch=1, opt_batch=32), 16,
                          "input", (3, 32, 32), tmp_path / "t.cache")


# ---------------------------------------------------------------- everywhere: ONNX variants TensorRT accepts


class _Tiny:
    """A small conv classifier exported the way the builder exports (legacy exporter, dynamic batch)."""

    @staticmethod
    def export(path: Path, dynamic: bool = True) -> Path:
        import torch

        torch.manual_seed(0)
        model = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(),
                                    torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(8, 10)).eval()
        axes = {"input": {0: "batch"}, "logits": {0: "batch"}} if dynamic else None
        torch.onnx.export(model, (torch.randn(2, 3, 16, 16),), str(path), input_names=["input"],
                          output_names=["logits"], dynamic_axes=axes, opset_version=17, dynamo=False)
        return path


class _Reader:
    def __init__(self) -> None:
        rng = np.random.default_rng(0)
        self._data = iter([{"input": rng.standard_normal((4, 3, 16, 16), dtype=np.float32)} for _ in range(4)])

    def get_next(self):
        return next(self._data, None)


def _quantize(src: Path, dst: Path, symmetric: bool, quantize_bias: bool = False) -> Path:
    # docs/design.md's int8 settings; MinMax instead of Entropy only to keep the test fast.
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    quantize_static(str(src), str(dst), _Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=QuantType.QInt8 if symmetric else QuantType.QUInt8,
                    weight_type=QuantType.QInt8, calibrate_method=CalibrationMethod.MinMax,
                    extra_options={"ActivationSymmetric": symmetric, "WeightSymmetric": True,
                                   "QuantizeBias": quantize_bias})
    return dst


@pytest.fixture(scope="module")
def onnx_variants(tmp_path_factory):
    import onnx
    from onnxconverter_common import float16

    d = tmp_path_factory.mktemp("onnx")
    fp32 = _Tiny.export(d / "fp32.onnx")
    onnx.save(float16.convert_float_to_float16(onnx.load(str(fp32)), keep_io_types=True), str(d / "fp16.onnx"))
    return {"fp32": fp32, "fp16": d / "fp16.onnx", "int8": _quantize(fp32, d / "int8.onnx", symmetric=True),
            "int8_asymmetric": _quantize(fp32, d / "int8_u8.onnx", symmetric=False), "dir": d}


@pytest.mark.parametrize("precision", ["fp32", "fp16", "int8"])
def test_each_precision_variant_satisfies_the_tensorrt_parser(onnx_variants, precision):
    assert check_onnx_for_tensorrt(onnx_variants[precision], precision, input_name="input") == []


def test_onnx_check_names_what_tensorrt_would_reject(onnx_variants):
    problems = check_onnx_for_tensorrt(onnx_variants["int8_asymmetric"], "int8")
    assert any("zero point" in p for p in problems)
    int32_bias = _quantize(onnx_variants["fp32"], onnx_variants["dir"] / "int8_bias.onnx", True, quantize_bias=True)
    assert any("int32 quantized bias" in p for p in check_onnx_for_tensorrt(int32_bias, "int8"))
    assert any("no FLOAT16" in p for p in check_onnx_for_tensorrt(onnx_variants["fp32"], "fp16"))
    assert any("no QuantizeLinear" in p for p in check_onnx_for_tensorrt(onnx_variants["fp32"], "int8"))
    static = _Tiny.export(onnx_variants["dir"] / "static.onnx", dynamic=False)
    assert any("dynamic batch" in p for p in check_onnx_for_tensorrt(static, "fp32"))


# ---------------------------------------------------------------- everywhere: typing against tensorrt-stubs

TYPED_FILES = ["builders/engine", "runners/tensorrt_runner.py", "runners/tensorrt_env.py"]
MYPY_INI = """\
[mypy]
python_version = 3.11
ignore_missing_imports = True
follow_imports = silent
warn_unused_ignores = True

[mypy-tensorrt,tensorrt.*,tensorrt_bindings,tensorrt_bindings.*]
ignore_errors = True
"""
_SIGNATURE = re.compile(r"^(\s*def \w+)\((.*)\)(\s*->\s*.+)?:\s*$")


def _usable_stubs(dest: Path) -> Path:
    """A copy of tensorrt-stubs that mypy can read.

    The wheel puts bare .pyi files in site-packages/tensorrt without a py.typed marker, so mypy
    skips them and types every TensorRT call as Any; and a few generated signatures are not
    valid Python (a parameter named `in`, a required parameter after defaults), which stops mypy.
    The copy is put on MYPYPATH, with just those signatures loosened to (*args, **kwargs).
    """
    import tensorrt_bindings  # the stubs' package folder, also a bare namespace

    site = Path(next(iter(tensorrt_bindings.__path__))).parent
    for rel in ("tensorrt/__init__.pyi", "tensorrt_bindings/__init__.pyi", "tensorrt_bindings/tensorrt.pyi"):
        lines = (site / rel).read_text().splitlines()
        for i, line in enumerate(lines):
            m = _SIGNATURE.match(line)
            if not m:
                continue
            try:
                ast.parse(textwrap.dedent(line) + "\n    ...")
            except SyntaxError:
                lines[i] = f"{m.group(1)}(*args: typing.Any, **kwargs: typing.Any){m.group(3) or ''}:"
        (dest / rel).parent.mkdir(parents=True, exist_ok=True)
        (dest / rel).write_text("\n".join(lines) + "\n")
    return dest


def _mypy(tmp_path: Path, files: list[str]) -> subprocess.CompletedProcess:
    (tmp_path / "mypy.ini").write_text(MYPY_INI)
    env = {"MYPYPATH": str(tmp_path / "stubs"), "PATH": "/usr/bin:/bin"}
    return subprocess.run([sys.executable, "-m", "mypy", "--config-file", str(tmp_path / "mypy.ini"),
                           "--cache-dir", str(tmp_path / ".mypy_cache"), *files],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def stub_dir(tmp_path_factory):
    pytest.importorskip("mypy", reason="mypy not installed (pip install -r requirements-dev.txt)")
    try:
        import tensorrt_bindings  # noqa: F401
    except ImportError:
        pytest.skip("tensorrt-stubs not installed (pip install --no-deps -r requirements-dev.txt)")
    d = tmp_path_factory.mktemp("mypy")
    _usable_stubs(d / "stubs")
    return d


@pytest.mark.slow
def test_tensorrt_code_type_checks_against_tensorrt_stubs(stub_dir):
    # Canary first: a wrong call must fail, or the stubs are not in effect and a pass means nothing.
    canary = stub_dir / "canary.py"
    canary.write_text("import tensorrt as trt\n"
                      "cfg = trt.Builder(trt.Logger()).create_builder_config()\n"
                      "cfg.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, 'many')\n")
    proc = _mypy(stub_dir, [str(canary)])
    assert proc.returncode == 1 and "set_memory_pool_limit" in proc.stdout, proc.stdout + proc.stderr
    proc = _mypy(stub_dir, TYPED_FILES)
    assert proc.returncode == 0, proc.stdout + proc.stderr


# ---------------------------------------------------------------- TensorRT + GPU


@pytest.fixture(scope="module")
def built_plans(onnx_variants, tmp_path_factory):
    out = tmp_path_factory.mktemp("plans")
    spec = Engine(min_batch=1, opt_batch=4, workspace_mib=256)
    infos = {}
    for precision in ("fp32", "fp16", "int8"):
        infos[precision] = engine.build_plan(onnx_variants[precision], out / precision / "model.plan", precision,
                                             spec, 8, "input", (3, 16, 16), out / "timing.cache")
    return infos


@pytest.mark.tensorrt
@needs_tensorrt
def test_build_plan_per_precision_records_the_manifest_facts(built_plans):
    import tensorrt as trt

    for precision, info in built_plans.items():
        assert Path(info["plan"]).stat().st_size == info["plan_bytes"] > 0
        assert info["tensorrt_version"] == trt.__version__ and info["compute_capability"]
        assert info["profile"]["min"][0] == 1 and info["profile"]["opt"][0] == 4 and info["profile"]["max"][0] == 8
        summary = json.loads(Path(info["inspector"]).read_text())["summary"]
        assert summary["layers"] > 0 and summary == info["layer_summary"]
    assert built_plans["fp32"]["timing_cache_reused"] is False
    assert built_plans["int8"]["timing_cache_reused"] is True  # the cache file written by the fp32 build
    assert "int8" in built_plans["int8"]["layer_summary"]["precisions"]


@pytest.mark.tensorrt
@needs_tensorrt
def test_validate_plan_agrees_with_onnxruntime(built_plans, onnx_variants):
    images = np.random.default_rng(1).standard_normal((20, 3, 16, 16), dtype=np.float32)
    tolerance = {"fp32": 1e-3, "fp16": 5e-2, "int8": 0.5}
    for precision, info in built_plans.items():
        result = engine.validate_plan(Path(info["plan"]), onnx_variants[precision], images, bench_batches=(1, 8))
        assert result["samples"] == 20 and result["max_abs_diff"] < tolerance[precision], result
        assert [b["batch"] for b in result["benchmark"]] == [1, 8]


@pytest.mark.tensorrt
@needs_tensorrt
def test_tensorrt_runner_interface_and_profile_limits(built_plans):
    from runners.tensorrt_runner import TensorRTRunner

    x = np.zeros((3, 3, 16, 16), np.float32)
    with TensorRTRunner(Path(built_plans["fp32"]["plan"])) as runner:
        assert runner.input_names == ["input"] and runner.output_names == ["logits"]
        assert runner.infer({"input": x})["logits"].shape == (3, 10)
        with pytest.raises(ValueError, match="optimization profile"):
            runner.infer({"input": np.zeros((9, 3, 16, 16), np.float32)})
    assert runner.is_active is False


def test_the_plan_step_refuses_a_variant_tensorrt_would_reject(demo_build):
    """The ONNX checks run in the build's plan step on every machine, before TensorRT is needed:
    a gpu fp16 variant that is really the fp32 graph fails the build, naming model and precision."""
    import dataclasses

    from builders import build as build_module
    from builders.engine import EngineBuildError

    model = demo_build.models[0]
    # The real variants pass (the demo build above went through the same step).
    wrong = dataclasses.replace(model, variants={**model.variants, "fp16": model.variants["fp32"]},
                                target_variants={})
    with pytest.raises(EngineBuildError, match=r"digits/fp16: TensorRT would not take .*no FLOAT16"):
        build_module._plans_for(wrong, None, None, require_plans=False)

"""How DALI pipelines are run and warmed up (issue 22), checked without a GPU.

The GPU figures behind these choices (docs/gpu.md, docs/gpu_ensemble.md) come from
benchmarks/gpu_bounds.py and tests/test_gpu.py::test_batch_order_does_not_slow_the_max_batch on a
GPU host; here: the settings agree everywhere they are written, and they run.
"""
from __future__ import annotations

import ast
import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from builders import triton_config
from contract import layout
from contract.preprocess import EXECUTORS, backend_executor, load_pipeline, warmup_batch_sizes, write_definition
from contract.spec import Input, ModelSpec, Triton

ROOT = Path(__file__).resolve().parents[1]
STAND_IN = ROOT / "serving" / "backends" / "dali" / "model.py"


def _stand_in_executor(env_value: str | None) -> dict:
    """The stand-in's _BACKEND_EXECUTOR, evaluated from its source (the file imports Triton's stub
    module, which exists only inside the server) with DALI_USE_EXEC2 set to `env_value`."""
    tree = ast.parse(STAND_IN.read_text())
    node = next(n for n in tree.body if isinstance(n, ast.Assign) and getattr(n.targets[0], "id", "") == "_BACKEND_EXECUTOR")
    env = {} if env_value is None else {"DALI_USE_EXEC2": env_value}
    return eval(compile(ast.Expression(node.value), str(STAND_IN), "eval"), {"os": _FakeOs(env)})


class _FakeOs:
    def __init__(self, env: dict):
        self.environ = env


def test_stand_in_runs_pipelines_with_the_backends_executor(monkeypatch):
    monkeypatch.delenv("DALI_USE_EXEC2", raising=False)
    assert _stand_in_executor(None) == backend_executor() == {
        "exec_pipelined": True, "exec_async": True, "prefetch_queue_depth": 1, "exec_dynamic": False}


@pytest.mark.parametrize("value, dynamic", [("1", True), ("0", False), ("", False)])
def test_dali_use_exec2_selects_the_dynamic_executor_in_both_places(monkeypatch, value, dynamic):
    monkeypatch.setenv("DALI_USE_EXEC2", value)
    assert _stand_in_executor(value)["exec_dynamic"] is dynamic
    assert backend_executor()["exec_dynamic"] is dynamic


def test_warmup_runs_the_largest_batch_first():
    assert warmup_batch_sizes(128) == [128, 1]
    assert warmup_batch_sizes(1) == [1]
    spec = ModelSpec(name="m", triton=Triton(max_batch_size=32, preferred_batch_sizes=(8, 32)), engine={"opt_batch": 32})
    cfg = triton_config.preprocess_config(spec, "gpu", warmup_image_bytes=1000)
    assert [w.batch_size for w in cfg.model_warmup] == [32, 1]
    engine = triton_config.torchscript_config(spec, "gpu", "fp16", 10, warmup=True)
    assert [w.batch_size for w in engine.model_warmup] == [32, 1]


def _jpeg(seed: int, size=(40, 30)) -> np.ndarray:
    rng = np.random.default_rng(seed)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)).save(buf, "JPEG")
    return np.frombuffer(buf.getvalue(), dtype=np.uint8)


def test_every_executor_gives_the_same_tensors(tmp_path):
    """The backend's pipelined executor (and the dynamic one) compute what the simple one does,
    batch after batch of changing sizes (CPU variant: runs anywhere)."""
    dali = write_definition(Input(resize=36, crop=32), "cpu", tmp_path / layout.DALI_DEFINITION, 8)
    batches = [[_jpeg(i) for i in range(8)], [_jpeg(10)], [_jpeg(20 + i, (50, 70)) for i in range(5)]]
    results = {}
    for name in ("backend", *EXECUTORS):
        pipe = load_pipeline(dali, None, 2, 8, executor=name)
        outs = []
        for rows in batches:
            pipe.feed_input(layout.DALI_INPUT, rows)
            (out,) = pipe.run()
            outs.append(np.stack([np.asarray(out[i]) for i in range(len(rows))]))
        results[name] = outs
    for name in ("backend", "dynamic"):
        for got, want in zip(results[name], results["simple"]):
            assert got.shape == want.shape
            assert np.array_equal(got, want), name


def test_private_mps_names_the_missing_control_binary(monkeypatch):
    from serving.gpu_mps import private_mps

    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(RuntimeError, match="nvidia-cuda-mps-control"):
        with private_mps():
            pass


@pytest.mark.parametrize("args, words", [
    (["--seconds", "0"], "--seconds must be above 0"),
    (["--warmup-seconds", "-1"], "--warmup-seconds at least 0"),
])
def test_gpu_bounds_refuses_bad_timings_by_name(capsys, args, words):
    from benchmarks.gpu_bounds import parse_args

    with pytest.raises(SystemExit) as exit_:
        parse_args([*args, "--out", "unused.json"])
    assert exit_.value.code == 2 and words in capsys.readouterr().err
    assert parse_args(["--out", "x.json"]).warmup_seconds == 0.0   # the committed summary's way

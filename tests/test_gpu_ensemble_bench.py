"""benchmarks/gpu_ensemble_bench.py on the CPU (--device cpu: cpu target, KIND_CPU, tiny sizes): the
whole flow — repository from the builder's pieces, local server, multi-process gRPC load with shared
memory, Triton statistics, in-process reference, served vs in-process logits — runs and reports."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.server


def test_cpu_smoke_run_reports_everything(tmp_path):
    out = tmp_path / "bench"
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu_ensemble_bench.py"), "--device", "cpu",
                           "--seconds", "8", "--warmup", "4", "--out", str(out)], capture_output=True, text=True, timeout=600,
                          cwd=ROOT)   # longer windows: a loaded 2-core runner once counted no request in 4 s
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    demo = json.loads((out / "demo.json").read_text())
    assert demo["ensemble"] == "demo_fp16_torch" and demo["weights"].startswith("random")
    assert demo["logits"]["within_tolerance"] and all(c["top1_agreement"] == 1.0 for c in demo["logits"]["checks"])
    (point,) = demo["points"]
    assert point["requests"] > 0 and point["images_per_s"] > 0 and point["p99_ms"] >= point["p50_ms"] > 0
    assert point["client"]["shared_memory"] and point["client"]["processes"] == 1
    steps = point["steps"]
    assert steps["demo_preprocess"]["requests"] > 0 and steps["demo_fp16_torch_infer"]["requests"] > 0
    assert demo["in_process"]["8"] > 0
    assert "ran" in demo["perf_analyzer"]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["jpeg"]["size"] == "640x480" and summary["environment"]["device"] == "cpu"

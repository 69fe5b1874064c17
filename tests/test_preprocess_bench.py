"""The preprocessing benchmarks on this CPU machine: the same code paths as on a GPU host, with
the DALI CPU pipeline standing where the GPU one would (the GPU rows run in tests/test_gpu.py's
environment and by hand, docs/gpu_preprocess.md).

- benchmarks/preprocess_bench.py: DALI CPU and the DataLoader measured, the GPU row skipped with
  its reason, every ratio against the DataLoader.
- benchmarks/served_preprocess_bench.py --cpu-smoke: the served DALI model gives exactly the
  in-process output, and each served point says where a request's time went inside the server.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _run(args: list[str]) -> subprocess.CompletedProcess:
    done = subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    return done


def test_preprocess_bench_measures_dali_and_the_dataloader_and_names_what_it_skipped(tmp_path):
    _run(["benchmarks/preprocess_bench.py", "--out", str(tmp_path), "--images", "32", "--batch", "16",
          "--cpu-threads", "1", "--workers", "1", "--skip", "pil", "--min-time", "0.2", "--repeats", "1",
          "--gen-workers", "1"])
    result = json.loads((tmp_path / "results.json").read_text())
    rows = {r["backend"]: r for r in result["rows"]}
    assert set(rows) == {"DALI CPU", "DataLoader"}
    assert all(r["img_s"] > 0 and r["img_s_runs"] for r in rows.values())
    assert rows["DALI CPU"]["num_threads"] == 1 and rows["DALI CPU"]["batch"] == 16
    assert rows["DataLoader"]["ratio_vs_dataloader"] == 1.0
    assert rows["DALI CPU"]["ratio_vs_dataloader"] == round(rows["DALI CPU"]["img_s"] / rows["DataLoader"]["img_s"], 2)
    assert result["baseline"] == rows["DataLoader"]["label"]
    (gpu,) = result["skipped"]
    assert gpu["backend"] == "DALI GPU" and "GPU" in gpu["reason"]
    assert "best_gpu" not in result and (tmp_path / "preprocess_bench.png").stat().st_size > 0


def test_served_preprocessing_equals_in_process_and_accounts_for_the_server_time(tmp_path):
    out = tmp_path / "served.json"
    _run(["benchmarks/served_preprocess_bench.py", "--cpu-smoke", "--images", "32", "--out", str(out)])
    result = json.loads(out.read_text())
    assert result["target"] == "cpu"
    assert result["parity_vs_in_process"]["max_abs"] == 0.0
    assert result["parity_vs_in_process"]["shape"] == [16, 3, 224, 224]
    (point,) = result["served"]["points"]
    assert point["concurrency"] == 2 and point["img_s"] > 0 and point["requests"] > 0
    side = point["server_side"]
    assert side["requests"] > 0 and side["success_ms_per_request"] >= side["compute_infer_ms_per_request"] > 0
    on_host = result["in_process"]["output_on_device"]["img_s"]
    assert result["fraction"]["served_over_in_process_on_device"] == point["img_s"] / on_host

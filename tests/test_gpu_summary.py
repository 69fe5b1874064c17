"""benchmarks/gpu_summary.py: served / min(parts) and the exit code, from raw results of the shape
the two GPU benchmarks write (here: the committed H200 results, and edited copies of them)."""
from __future__ import annotations

import json
from pathlib import Path

from benchmarks.gpu_summary import main

ROOT = Path(__file__).resolve().parents[1]
BOUNDS = ROOT / "docs" / "gpu_ensemble" / "h200" / "bounds.json"
SERVED = ROOT / "docs" / "gpu_ensemble" / "h200" / "resnet50.json"


def _run(tmp_path, bounds: dict, served: dict) -> tuple[int, dict]:
    b, s, out = tmp_path / "b.json", tmp_path / "s.json", tmp_path / "out.json"
    b.write_text(json.dumps(bounds))
    s.write_text(json.dumps(served))
    rc = main(["--bounds", str(b), "--served", str(s), "--out", str(out)])
    return rc, json.loads(out.read_text())


def test_ratio_is_served_over_the_slower_part(tmp_path):
    bounds, served = json.loads(BOUNDS.read_text()), json.loads(SERVED.read_text())
    rc, s = _run(tmp_path, bounds, served)
    slower = min(bounds["dali_alone_img_s"], bounds["network_alone_img_s"])
    assert s["served_over_min_parts"] == served["best"]["images_per_s"] / slower
    assert s["gpu"] == bounds["environment"]["gpu"] and s["dali"] == bounds["environment"]["dali"]
    assert rc == 0


def test_below_target_exits_1(tmp_path):
    bounds, served = json.loads(BOUNDS.read_text()), json.loads(SERVED.read_text())
    served["best"]["images_per_s"] = 0.8 * min(bounds["dali_alone_img_s"], bounds["network_alone_img_s"])
    assert _run(tmp_path, bounds, served)[0] == 1
    served = json.loads(SERVED.read_text())
    bounds["batch_order_ratio"] = 0.5
    assert _run(tmp_path, bounds, served)[0] == 1

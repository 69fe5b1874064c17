"""serving.config_search end to end: a 2-point search on the demo's fp32 ensemble, a real local
server per candidate, write-back with backup and the manifest's live_configs record."""
from __future__ import annotations

import json
import shutil

from contract.manifest import load_manifest
from serving.config_search import space
from serving.config_search.__main__ import main


def test_two_point_search_writes_back(built_repo, tmp_path):
    top = tmp_path / "repo"
    shutil.copytree(built_repo, top)
    before = space.read_config(top / "cpu", "digits_fp32")
    out = tmp_path / "out"
    rc = main(["--repository", str(top / "cpu"), "--ensemble", "digits_fp32", "--sla-ms", "10000",
               "--concurrency", "2", "--knobs", "delay_us", "--models", "digits_fp32_infer",
               "--delays-us", "0", "--max-passes", "1", "--window", "0.3", "--max-windows", "3",
               "--images", "16", "--confirm-rounds", "1", "--out", str(out)])
    assert rc == 0
    record = json.loads((out / "config_search.json").read_text())
    assert len(record["trials"]) == 2   # the default and delay 0 of the engine
    assert all(t["score"]["feasible"] and not t["error"] for t in record["trials"])
    assert (out / "pareto.png").stat().st_size > 0
    assert record["confirmation"]["median_images_per_s"]["winner"] > 0
    live = load_manifest(top).live_configs["cpu"]
    assert live.ensemble == "digits_fp32"
    assert (top / live.previous / "digits_fp32_infer" / "config.pbtxt").is_file()
    after = space.read_config(top / "cpu", "digits_fp32")
    assert json.loads(json.dumps(space.config_json(after))) == record["winner"]
    assert (space.read_knobs(top / live.previous / "digits_fp32_infer") == before["digits_fp32_infer"])

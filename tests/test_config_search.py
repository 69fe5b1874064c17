"""benchmarks.config_search end to end: a 2-point search on the demo's fp32 ensemble, a real local
server per candidate, write-back with backup and the manifest's live_configs record."""
from __future__ import annotations

import dataclasses
import json
import shutil

from contract.manifest import load_manifest
from benchmarks.config_search import space
from benchmarks.config_search.__main__ import main


SLOW_DELAY_US = 300_000   # the copy's default: every request waits 0.3 s for a batch that never fills


def test_two_point_search_writes_back_the_winner_not_the_default(built_repo, tmp_path):
    """The copy's default is a misconfigured queue delay (0.3 s, against a 150 ms SLA at a
    concurrency that never fills a preferred batch), so the search's winner (delay 0) differs from
    the default, and what is written back can be told apart from what was there."""
    top = tmp_path / "repo"
    shutil.copytree(built_repo, top)
    infer = "digits_fp32_infer"
    knobs = space.read_config(top / "cpu", "digits_fp32")[infer]
    space.apply_knobs(top / "cpu" / infer, dataclasses.replace(knobs, delay_us=SLOW_DELAY_US))
    before = space.read_config(top / "cpu", "digits_fp32")
    out = tmp_path / "out"
    rc = main(["--repository", str(top / "cpu"), "--ensemble", "digits_fp32", "--sla-ms", "150",
               "--concurrency", "2", "--knobs", "delay_us", "--models", infer,
               "--delays-us", "0", "--max-passes", "1", "--window", "0.4", "--max-windows", "3",
               "--images", "16", "--confirm-rounds", "1", "--out", str(out)])
    assert rc == 0
    record = json.loads((out / "config_search.json").read_text())
    assert len(record["trials"]) == 2   # the default and delay 0 of the engine
    default, candidate = record["trials"]
    assert not default["error"] and not default["score"]["feasible"], default["score"]
    assert not candidate["error"] and candidate["score"]["feasible"], candidate["score"]
    assert (out / "pareto.png").stat().st_size > 0
    assert record["default"] != record["winner"]
    assert record["default"][infer]["delay_us"] == SLOW_DELAY_US and record["winner"][infer]["delay_us"] == 0
    live = load_manifest(top).live_configs["cpu"]
    assert live.ensemble == "digits_fp32"
    after = space.read_config(top / "cpu", "digits_fp32")
    assert json.loads(json.dumps(space.config_json(after))) == record["winner"]
    assert after[infer].delay_us == 0
    assert space.read_knobs(top / live.previous / infer) == before[infer]
    assert space.read_knobs(top / live.live / infer) == after[infer]
    # the confirmation measured what is live: the winner
    assert record["confirmation"]["median_images_per_s"]["winner"] > 0

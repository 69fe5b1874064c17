"""Config search's write-back on a small hand-written repository (an ensemble of two models, no
build, no server; tests/test_config_search.py runs the whole search against a served build):
what is written is the winner, distinguishable from the default on every knob; the backup holds
the default, the live copy the winner; the dry-run diff shows exactly that change."""
from __future__ import annotations

import dataclasses
import json
import re
import time
from datetime import datetime, timedelta, timezone

import pytest
from tritonclient.grpc import model_config_pb2 as mc

from builders import triton_config
from contract import layout
from contract.manifest import load_manifest, manifest_file, write_manifest
from benchmarks.config_search import space, writeback

STEPS = ("m_pre", "m_infer")


def _repo(tmp_path, dali: bool = False):
    """m_ens -> m_pre -> m_infer; with dali, m_pre has a DALI definition file (1/dali.py) too."""
    repo = tmp_path / "cpu"
    ens = mc.ModelConfig(name="m_ens", platform="ensemble", max_batch_size=8)
    for i, name in enumerate(STEPS):
        ens.ensemble_scheduling.step.add(model_name=name, model_version=-1)
        cfg = mc.ModelConfig(name=name, backend="python", max_batch_size=8)
        cfg.instance_group.add(kind=mc.ModelInstanceGroup.KIND_CPU, count=1)
        cfg.dynamic_batching.max_queue_delay_microseconds = 500 + i
        cfg.dynamic_batching.preferred_batch_size.extend([2, 4])
        triton_config.write_config(cfg, repo / name)
    triton_config.write_config(ens, repo / "m_ens")
    if dali:
        (repo / "m_pre" / "1").mkdir()
        (repo / "m_pre" / "1" / layout.DALI_DEFINITION).write_text("# the pipeline definition\n")
    return repo


def _winner(start):
    # every knob differs from the default, so a write-back of the default cannot pass for this
    return {m: dataclasses.replace(k, instances=k.instances + 2, delay_us=k.delay_us * 10 + 7, preferred=(8,))
            for m, k in start.items()}


def test_write_back_writes_the_winner_and_keeps_the_default(tmp_path):
    repo = _repo(tmp_path)
    start = space.read_config(repo, "m_ens")
    assert list(start) == list(STEPS)
    winner = _winner(start)
    out = writeback.write_back(repo, "m_ens", winner)
    assert space.read_config(repo, "m_ens") == winner != start
    top = repo.parent
    for m in STEPS:
        assert space.read_knobs(top / out["previous"] / m) == start[m]
        assert space.read_knobs(top / out["live"] / m) == winner[m]
    assert out["models"] == list(STEPS) and out["target"] == "cpu" and out["ensemble"] == "m_ens"
    assert out["previous"].startswith(f"{writeback.BACKUP_DIR}/cpu-") and out["previous"].endswith("/previous")
    assert out["live"] == out["previous"][: -len("previous")] + "live"
    assert out["folder"] == str(top) and out["manifest"] is None   # no manifest beside this repository
    assert not manifest_file(top).exists()
    # the backup lives beside the target, never inside it (Triton would take it for a model)
    assert sorted(p.name for p in repo.iterdir()) == sorted([*STEPS, "m_ens"])
    assert json.loads(json.dumps(space.config_json(winner)))["m_infer"]["delay_us"] == 5017


def test_a_second_write_back_in_the_same_second_is_refused(tmp_path):
    repo = _repo(tmp_path)
    start = space.read_config(repo, "m_ens")
    writeback.write_back(repo, "m_ens", _winner(start))
    with pytest.raises(FileExistsError, match="exists already"):
        writeback.write_back(repo, "m_ens", start)


def test_diff_shows_the_winner_and_changes_nothing(tmp_path):
    repo = _repo(tmp_path)
    start = space.read_config(repo, "m_ens")
    before = {m: (repo / m / "config.pbtxt").read_text() for m in STEPS}
    text = writeback.diff(repo, _winner(start))
    assert {m: (repo / m / "config.pbtxt").read_text() for m in STEPS} == before   # dry run: nothing written
    assert "--- a/m_pre/config.pbtxt" in text and "+++ b/m_infer/config.pbtxt" in text
    assert "-  max_queue_delay_microseconds: 501" in text and "+  max_queue_delay_microseconds: 5017" in text
    assert "+  count: 3" in text
    assert writeback.diff(repo, start).startswith("(no change: the winner is the configuration already")


@pytest.fixture
def local_time_off_utc(monkeypatch):
    """The process's local time 5:30 off UTC, so a stamp taken in local time shows."""
    monkeypatch.setenv("TZ", "Asia/Kolkata")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


def test_write_back_keeps_the_dali_definition_and_records_the_manifest(tmp_path, local_time_off_utc):
    repo = _repo(tmp_path, dali=True)
    write_manifest(tmp_path, {"format_version": 2, "models": {}})
    start = space.read_config(repo, "m_ens")
    out = writeback.write_back(repo, "m_ens", _winner(start))
    for which in ("previous", "live"):
        assert (tmp_path / out[which] / "m_pre" / "1" / layout.DALI_DEFINITION).read_text() == "# the pipeline definition\n"
        assert not (tmp_path / out[which] / "m_infer" / "1").exists()
    assert out["manifest"] == "manifest.json"
    live = load_manifest(tmp_path).live_configs["cpu"]
    assert (live.live, live.previous, live.ensemble, tuple(live.models)) == (out["live"], out["previous"], "m_ens", STEPS)
    # the folder is stamped with the UTC second: cpu-YYYYmmddTHHMMSSZ, and the record says when
    stamp = out["previous"].split("/")[1]
    assert re.fullmatch(r"cpu-\d{8}T\d{6}Z", stamp), stamp
    written = datetime.fromisoformat(out["written"])
    assert written.utcoffset() == timedelta(0) and abs(datetime.now(timezone.utc) - written) < timedelta(seconds=60)
    assert written.strftime("%Y%m%dT%H%M%SZ") >= stamp[4:]


def test_diff_of_a_dali_model_covers_its_definition(tmp_path):
    repo = _repo(tmp_path, dali=True)
    start = space.read_config(repo, "m_ens")
    text = writeback.diff(repo, _winner(start))
    files = [line for line in text.splitlines() if line.startswith(("--- ", "+++ "))]
    assert files == ["--- a/m_pre/config.pbtxt", "+++ b/m_pre/config.pbtxt",
                     "--- a/m_infer/config.pbtxt", "+++ b/m_infer/config.pbtxt"]   # dali.py unchanged: no hunk
    assert text.endswith("\n") and "\n\n" not in text                          # hunks joined as they are

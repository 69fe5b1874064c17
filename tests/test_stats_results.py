"""What a user reads off a benchmark and a prediction, against its definition: latency statistics
against numpy on skewed samples (where mean, median and the tail percentiles all differ), and
softmax scores against a softmax of each image's own logits. Pure functions: fast, no server.

Skewed data on purpose: on 1..10 the mean equals the median, so "avg computed as p50" passes; on
a sample with one slow request it does not. Hypothesis draws the samples (modest example counts:
this file runs in a few seconds).
"""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from benchmarks import stats
from clients.results import softmax_top_k

FAST = settings(max_examples=60, deadline=None)

# Latencies in seconds: mostly fast with a few slow ones (a skewed, long-tailed sample).
latencies = st.lists(st.floats(0.0005, 0.05), min_size=1, max_size=60).flatmap(
    lambda fast: st.lists(st.floats(0.5, 5.0), min_size=0, max_size=3).map(lambda slow: fast + slow))


def test_average_latency_is_the_mean_on_a_skewed_sample():
    # 9 requests of 1 ms and one of 1 s: the mean is 100.9 ms, the median 1 ms.
    out = stats.latency_ms([0.001] * 9 + [1.0])
    assert out["avg"] == pytest.approx(100.9)
    assert out["p50"] == pytest.approx(1.0)
    assert out["p99"] == pytest.approx(np.percentile([1.0] * 9 + [1000.0], 99))


def test_empty_window_has_no_statistics():
    assert stats.latency_ms([]) == {"avg": None, "p50": None, "p90": None, "p95": None, "p99": None}
    assert stats.throughput(5, 10, 0) == {"requests_per_s": 0.0, "images_per_s": 0.0}


@FAST
@given(latencies)
def test_latency_summary_matches_numpy(sample):
    ms = np.asarray(sample) * 1000.0
    out = stats.latency_ms(sample)
    assert out["avg"] == pytest.approx(float(np.mean(ms)), rel=1e-12)
    for q in stats.QUANTILES:
        assert out[f"p{q}"] == pytest.approx(float(np.percentile(ms, q)), rel=1e-12)
    # ordered as percentiles must be, and the mean pulled up by the slow tail
    assert out["p50"] <= out["p90"] <= out["p95"] <= out["p99"] <= ms.max()


@FAST
@given(latencies, st.floats(0, 100))
def test_percentile_matches_numpy_for_any_q(sample, q):
    assert stats.percentile(sample, q) == pytest.approx(float(np.percentile(sample, q)), rel=1e-12, abs=1e-15)


@pytest.mark.parametrize("q", [-0.1, 100.5])
def test_percentile_outside_0_100_is_refused(q):
    with pytest.raises(ValueError, match="between 0 and 100"):
        stats.percentile([1.0], q)


@FAST
@given(st.integers(0, 10_000), st.integers(0, 100_000), st.floats(0.01, 1000))
def test_throughput_is_counts_over_the_window(requests, images, seconds):
    out = stats.throughput(requests, images, seconds)
    assert out == {"requests_per_s": pytest.approx(requests / seconds), "images_per_s": pytest.approx(images / seconds)}


def test_summary_counts_what_it_was_given():
    out = stats.summary([0.01, 0.02, 0.5], images=12, seconds=2.0)
    assert (out["requests"], out["images"], out["seconds"]) == (3, 12, 2.0)
    assert out["requests_per_s"] == 1.5 and out["images_per_s"] == 6.0
    assert out["latency_ms"]["avg"] == pytest.approx(176.6666667)


def test_statistics_delta_and_per_request():
    before = {"m": {"success_count": 10, "success_ns": 10_000_000, "queue_ns": 1_000_000}}
    after = {"m": {"success_count": 14, "success_ns": 30_000_000, "queue_ns": 9_000_000},
             "new": {"success_count": 2, "success_ns": 4_000_000}}
    delta = stats.statistics_delta(before, after)
    assert delta == {"m": {"success_count": 4, "success_ns": 20_000_000, "queue_ns": 8_000_000},
                     "new": {"success_count": 2, "success_ns": 4_000_000}}
    assert stats.statistics_delta(before, after, models=["m"]).keys() == {"m"}
    per = stats.per_request_ms(delta["m"])
    assert per["success"] == pytest.approx(5.0) and per["queue"] == pytest.approx(2.0)
    assert per["compute_infer"] == 0.0
    assert stats.per_request_ms({})["success"] == 0.0   # no request: no division by zero


# --- scores ------------------------------------------------------------------------------------

def reference_softmax(row: np.ndarray) -> np.ndarray:
    """The definition, per image: exp(z_i) / sum_j exp(z_j) over that image's classes."""
    e = np.exp(row.astype(np.float64) - row.max())
    return e / e.sum()


logit_batches = st.tuples(st.integers(1, 6), st.integers(2, 12)).flatmap(
    lambda shape: hnp.arrays(np.float32, shape, elements=st.floats(-30, 30, width=32)))


def test_scores_of_one_image_sum_to_one_and_match_its_softmax():
    logits = np.array([[2.0, 1.0, 0.0], [0.0, 0.0, 5.0]], dtype=np.float32)
    rows = softmax_top_k(logits, ["a", "b", "c"], k=3)
    for r, row in enumerate(rows):
        assert sum(t.score for t in row) == pytest.approx(1.0)
        want = reference_softmax(logits[r])
        assert [t.score for t in row] == pytest.approx([want[t.index] for t in row])
    assert [t.label for t in rows[0]] == ["a", "b", "c"] and rows[1][0].label == "c"


@FAST
@given(logit_batches, st.integers(1, 15))
def test_top_k_matches_a_reference_softmax(logits, k):
    rows = softmax_top_k(logits, None, k)
    assert len(rows) == len(logits)
    for r, row in enumerate(rows):
        want = reference_softmax(logits[r])
        assert len(row) == min(k, logits.shape[1])
        assert [t.score for t in row] == pytest.approx([want[t.index] for t in row], rel=1e-9, abs=1e-12)
        assert [t.logit for t in row] == [float(logits[r, t.index]) for t in row]
        assert [t.label for t in row] == [str(t.index) for t in row]
        # best first; ties keep class order (a stable sort on -logit)
        keys = [(-t.logit, t.index) for t in row]
        assert keys == sorted(keys)
        # nothing outside the top k has a larger logit than the last one kept
        assert np.sum(logits[r] > row[-1].logit) <= len(row) - 1
    full = softmax_top_k(logits, None, logits.shape[1])
    for row in full:
        assert sum(t.score for t in row) == pytest.approx(1.0, rel=1e-9)


def test_top_k_zero_is_empty_and_labels_fall_back_to_the_index():
    logits = np.array([[0.0, 3.0, 1.0]], dtype=np.float32)
    assert softmax_top_k(logits, ["x"], 0) == []
    (row,) = softmax_top_k(logits, ["x"], 2)   # fewer labels than classes
    assert [(t.label, t.index) for t in row] == [("1", 1), ("2", 2)]


# --- edges the mutation tool found unpinned (docs/mutation.md) ---------------------------------

def test_percentile_takes_both_ends_and_computes_in_double_precision():
    assert stats.percentile([1.0, 2.0, 4.0], 100) == 4.0 and stats.percentile([1.0, 2.0, 4.0], 0) == 1.0
    assert stats.percentile([], 50) is None
    # float32 latencies (a numpy timer's array) are summarised in float64, not in float32
    a = np.array([0.1, 0.7, 0.3], np.float32)
    assert stats.percentile(a, 37) == float(np.percentile(a.astype(np.float64), 37))
    assert stats.latency_ms(a)["avg"] == float(np.mean(a.astype(np.float64) * 1000.0))


def test_statistics_of_a_named_model_missing_from_both_snapshots_are_empty():
    assert stats.statistics_delta({}, {"m": {"success_count": 1}}, models=["absent"]) == {"absent": {}}


def test_per_request_ms_divides_exactly_and_guards_zero_requests():
    assert stats.per_request_ms({"success_count": 4, "success_ns": 20_000_000})["success"] == 5.0
    assert stats.per_request_ms({"success_count": 0, "success_ns": 4_000_000})["success"] == 4.0


def test_scores_stay_finite_for_large_logits_and_rows_far_apart():
    # the shift by each row's own maximum is what keeps exp() finite (softmax is shift invariant)
    logits = np.array([[1000.0, 999.0, 990.0], [-1000.0, -999.0, -1002.0]], dtype=np.float32)
    for r, row in enumerate(softmax_top_k(logits, None, 3)):
        want = reference_softmax(logits[r])
        assert all(np.isfinite(t.score) for t in row)
        assert [t.score for t in row] == pytest.approx([want[t.index] for t in row])


def test_prediction_helpers():
    from clients.results import Prediction, Top, concat_predictions

    a = Prediction("m", np.zeros((1, 2), np.float32), [[Top("cat", 0.6, 1, 0.4)]], 0.25)
    b = Prediction("m", np.ones((2, 2), np.float32), [[Top("dog", 0.7, 0, 1.0)], [Top("cat", 0.5, 1, 1.0)]], 0.5)
    both = concat_predictions("m", [a, b])
    assert both.model == "m" and both.latency_s == 0.75 and both.logits.shape == (3, 2)
    assert np.array_equal(both.logits[1:], b.logits)
    assert both.top1() == ["cat", "dog", "cat"]


def test_model_info_from_a_config_in_either_protocols_wrapping():
    from clients.errors import TritonClientError
    from clients.results import config_dict, model_info_from_config

    cfg = {"max_batch_size": 8, "platform": "ensemble", "input": [{"name": "IMAGE"}],
           "output": [{"name": "LOGITS", "dims": ["1", "10"]}],
           "ensemble_scheduling": {"step": [{"model_name": "pre"}, {"model_name": "infer"}]}}
    assert config_dict({"config": cfg}) is cfg and config_dict(cfg) is cfg and config_dict("x") == "x"
    info = model_info_from_config("ens", cfg)
    assert (info.name, info.max_batch_size, info.input_name, info.output_name, info.num_classes, info.platform,
            info.steps) == ("ens", 8, "IMAGE", "LOGITS", 10, "ensemble", ("pre", "infer"))
    bare = model_info_from_config("b", {"backend": "dali", "input": [{"name": "x"}], "output": [{"name": "y"}]})
    assert (bare.max_batch_size, bare.num_classes, bare.platform, bare.steps) == (0, 0, "dali", ())
    # dims' last entry is the class count; a step without a name keeps an empty one
    deep = model_info_from_config("d", {**cfg, "output": [{"name": "y", "dims": [2, 5, 10]}], "platform": "",
                                        "ensemble_scheduling": {"step": [{}, {"model_name": "infer"}]}})
    assert (deep.num_classes, deep.steps, deep.platform) == (10, ("", "infer"), "")
    with pytest.raises(TritonClientError, match=r"'none' has 0 inputs and 0 outputs"):
        model_info_from_config("none", {})
    with pytest.raises(TritonClientError, match=r"'two' has 2 inputs and 1 outputs"):
        model_info_from_config("two", {**cfg, "input": [{"name": "a"}, {"name": "b"}]})


def test_labels_parsed_from_a_classification_response():
    """A real gRPC response message holding Triton's classification strings (score:index:label)."""
    from tritonclient.grpc import InferResult, service_pb2
    from tritonclient.utils import serialize_byte_tensor

    from clients.results import ModelInfo, parse_labels

    entries = [b"0.9:2:cat:tabby", b"0.1:0:dog", b"0.0:9:out-of-range", b"0.0:4:just-past", b"junk", b"0.0:x:bad"]
    response = service_pb2.ModelInferResponse(model_name="m")
    response.outputs.add(name="LOGITS", datatype="BYTES", shape=[1, len(entries)])
    response.raw_output_contents.append(serialize_byte_tensor(np.array(entries, dtype=object)).item())
    info = ModelInfo("m", 8, "IMAGE", "LOGITS", 4, "ensemble", ())
    assert parse_labels(InferResult(response), info) == ["dog", "1", "cat:tabby", "3"]

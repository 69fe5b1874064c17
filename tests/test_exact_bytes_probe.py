"""benchmarks/exact_bytes_probe.py times rewritten DALI definitions on a GPU host; here, on the CPU,
every case's rewrite must give exactly the tensors of the definition as written (so the probe
compares costs of the same work), and the rewrites must actually change the file."""
from __future__ import annotations

import numpy as np
import pytest

from benchmarks.exact_bytes_probe import CASES, PLUGIN_TRIMS, rewrite
from builders.synthetic_jpegs import make_jpegs
from contract.images import pack_batch
from contract.layout import DALI_INPUT
from contract.preprocess import load_pipeline, write_definition
from contract.spec import Input

BATCH = 8
# six landscape 640x480 (what the probe feeds; the "fixed" geometry holds for these only), two portrait
JPEGS = make_jpegs(6, 640, 480) + make_jpegs(2, 300, 500)
ROWS = {"bare": [np.frombuffer(j, np.uint8) for j in JPEGS], "packed": list(pack_batch(JPEGS))}


@pytest.fixture(scope="module")
def plugin(tmp_path_factory):
    """The ExactBytes library built against this DALI; skipped where there is no g++ or no CUDA
    runtime headers (benchmarks/exact_bytes_plugin/build.py says which)."""
    from benchmarks.exact_bytes_plugin.build import build

    try:
        return build(tmp_path_factory.mktemp("plugin") / "libexact_bytes.so")
    except FileNotFoundError as err:
        pytest.skip(f"cannot build the ExactBytes plugin here: {err}")


def _run(tmp_path, case=None, plugin=None):
    path = write_definition(Input(resize=256, crop=224), "cpu", tmp_path / f"{case['name'] if case else 'file'}.py",
                            BATCH, 2)
    if case:
        text = rewrite(path.read_text(), case["trim"], case["input_no_copy"], case["geometry"], plugin)
        path.write_text(text)
    pipe = load_pipeline(path, None, 2, BATCH)
    pipe.feed_input(DALI_INPUT, ROWS[case["rows"] if case else "packed"])
    out, = pipe.run()
    return [np.array(out[i]) for i in range(BATCH)]


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    return _run(tmp_path_factory.mktemp("reference"))


# pipelines and threads change how a case runs, not what it computes: one case per computation
DISTINCT = list({(c["trim"], c["rows"], c["input_no_copy"], c["geometry"]): c for c in reversed(CASES)}.values())


@pytest.mark.parametrize("case", DISTINCT, ids=[c["name"] for c in DISTINCT])
def test_every_probe_case_computes_what_the_file_computes(case, reference, tmp_path, request):
    got = _run(tmp_path, case, request.getfixturevalue("plugin") if case["trim"] in PLUGIN_TRIMS else None)
    n = 6 if case["geometry"] == "fixed" else BATCH
    for i in range(n):
        assert np.array_equal(got[i], reference[i]), f"{case['name']}: image {i} differs"


def test_rewrites_change_the_definition(tmp_path):
    text = write_definition(Input(resize=256, crop=224), "gpu", tmp_path / "d.py", BATCH, 2).read_text()
    for case in CASES:
        if (case["trim"], case["geometry"], case["input_no_copy"]) != ("current", "current", True):
            assert rewrite(text, case["trim"], case["input_no_copy"], case["geometry"],
                           tmp_path / "lib.so") != text, case["name"]
    with pytest.raises(ValueError, match="trimming line"):
        rewrite(text.replace("    encoded = exact_bytes(encoded)\n", ""), "identity")
    with pytest.raises(ValueError, match="--plugin"):
        rewrite(text, "plugin")


def _plugin_rows(plugin, rows, op="exact_bytes", dynamic=False):
    """The plugin's operator `op` alone over `rows` (bytes), in a new pipeline run as dali_backend
    runs one (`dynamic`: with DALI_USE_EXEC2=1, the dynamic executor)."""
    import nvidia.dali.plugin_manager as plugins
    from nvidia.dali import fn, pipeline_def, types
    from contract.preprocess import backend_executor

    plugins.load_library(str(plugin))

    @pipeline_def(batch_size=len(rows), num_threads=2, device_id=None,
                  **{**backend_executor(), "exec_dynamic": dynamic})
    def trim():
        return getattr(fn, op)(fn.external_source(name="rows", dtype=types.UINT8))

    pipe = trim()
    pipe.build()
    pipe.feed_input("rows", [np.frombuffer(r, np.uint8) for r in rows])
    out, = pipe.run()
    return [bytes(np.array(out[i])) for i in range(len(rows))]


@pytest.mark.parametrize("dynamic", [False, True], ids=["pipelined", "dynamic"])
@pytest.mark.parametrize("op", ["exact_bytes", "exact_bytes_view"])
def test_the_plugin_trims_as_the_file_does(plugin, op, dynamic):
    assert _plugin_rows(plugin, [b"\xff\xd8\xff\xe0jpeg", b"LEN:\x03\x00\x00\x00abc\0\0\0", b"LEN:",
                                 b"LEN:\x01\x00\x00\x00z"], op, dynamic) == [b"\xff\xd8\xff\xe0jpeg", b"abc", b"LEN:", b"z"]


@pytest.mark.parametrize("prefix, words", [
    (b"LEN:\x06\x00\x00\x00", "row 1 declares 6 bytes but has 5"),     # past the row's end
    (b"LEN:\x00\x00\x00\x00", "row 1 declares 0 bytes"),
    (b"LEN:\xff\xff\xff\xff", "row 1 declares 4294967295 bytes"),
])
@pytest.mark.parametrize("op", ["exact_bytes", "exact_bytes_view"])
def test_the_plugin_refuses_a_declared_length_the_row_does_not_hold(plugin, prefix, words, op):
    with pytest.raises(RuntimeError, match=words):
        _plugin_rows(plugin, [b"LEN:\x01\x00\x00\x00a", prefix + b"hello"], op)


@pytest.mark.parametrize("rows", ["bare", "packed"])
def test_the_conditional_form_computes_what_the_file_computes(rows, reference, tmp_path):
    """benchmarks/exact_bytes_conditional.py: exact_bytes as a DALI conditional (bare rows untouched)."""
    from benchmarks.exact_bytes_conditional import variant_text

    path = write_definition(Input(resize=256, crop=224), "cpu", tmp_path / "cond.py", BATCH, 2)
    text = variant_text(path.read_text(), "cond")
    assert "if words[0] == _MARKER_WORD:" in text and "enable_conditionals=True" in text
    path.write_text(text)
    pipe = load_pipeline(path, None, 2, BATCH)
    pipe.feed_input(DALI_INPUT, ROWS[rows])
    out, = pipe.run()
    for i in range(BATCH):
        assert np.array_equal(np.array(out[i]), reference[i]), f"image {i} differs"


@pytest.mark.parametrize("args,words", [
    (["--cases", "current,no_such_case"], "'no_such_case'"),
    (["--cases", "current,"], "''"),
    (["--cases", ""], "''"),
    (["--batch", "257"], "--batch must be 1 to 256"),
    (["--rounds", "0"], "--rounds must be at least 1"),
    (["--warmup-seconds", "-0.5"], "--warmup-seconds at least 0"),
    (["--cases", "current,plugin"], "plugin need --plugin"),
])
def test_bad_arguments_are_refused_by_name(tmp_path, capsys, args, words):
    from benchmarks.exact_bytes_probe import main

    with pytest.raises(SystemExit) as exit_:
        main([*args, "--out", str(tmp_path / "p.json")])
    assert exit_.value.code == 2 and words in capsys.readouterr().err
    assert not (tmp_path / "p.json").exists()


def test_exact_bytes_cost_times_the_plugin_forms(plugin, tmp_path):
    """benchmarks/exact_bytes_cost.py --plugin: the one-operator forms are timed beside the file's."""
    import json

    from benchmarks.exact_bytes_cost import main

    out = tmp_path / "cost.json"
    assert main(["--plugin", str(plugin), "--batch", "8", "--repeats", "1", "--rounds", "1", "--out", str(out)]) == 0
    data = json.loads(out.read_text())
    assert set(data["rounds"]) == {"padded", "exact_bytes", "plugin", "plugin_view"}
    assert all(data[f"{form}_ms_per_batch"] > 0 for form in ("exact_bytes", "plugin", "plugin_view"))


def test_exact_bytes_cost_refuses_a_missing_plugin_by_name(tmp_path, capsys):
    from benchmarks.exact_bytes_cost import main

    with pytest.raises(SystemExit) as exit_:
        main(["--plugin", str(tmp_path / "nope.so"), "--out", str(tmp_path / "c.json")])
    assert exit_.value.code == 2 and "nope.so: no such file" in capsys.readouterr().err
    assert not (tmp_path / "c.json").exists()

"""What a new user trips on (issue 15): defaults that follow what the spec set, "did you mean",
errors that name the field and the likely cause."""
from __future__ import annotations

import pytest
import torch
import torchvision

from contract.spec import SpecError, load_spec, parse_spec


def _error(data: dict) -> str:
    with pytest.raises(SpecError) as err:
        parse_spec(data)
    return str(err.value)


@pytest.mark.parametrize("mbs, preferred, opt", [(8, (2, 4, 8), 4), (1, (1,), 1), (64, (16, 32, 64), 32),
                                                 (100, (25, 50, 100), 50)])
def test_only_max_batch_size_set_gives_defaults_that_fit(mbs, preferred, opt):
    (m,) = parse_spec({"models": [{"triton": {"max_batch_size": mbs}}]}).models
    assert m.triton.preferred_batch_sizes == preferred
    assert m.engine.opt_batch == opt


def test_defaults_unchanged_when_nothing_is_set():
    (m,) = parse_spec({}).models
    assert (m.triton.max_batch_size, m.triton.preferred_batch_sizes, m.engine.opt_batch) == (64, (16, 32, 64), 32)


def test_explicit_values_are_kept_and_conflicts_still_fail():
    (m,) = parse_spec({"models": [{"triton": {"max_batch_size": 8, "preferred_batch_sizes": [8]},
                                   "engine": {"opt_batch": 2, "workspace_mib": 64}}]}).models
    assert m.triton.preferred_batch_sizes == (8,) and m.engine.opt_batch == 2 and m.engine.workspace_mib == 64
    assert "preferred_batch_sizes [16]" in _error({"models": [{"triton": {"max_batch_size": 8,
                                                                          "preferred_batch_sizes": [16]}}]})
    assert "engine.opt_batch (32)" in _error({"models": [{"triton": {"max_batch_size": 8},
                                                          "engine": {"opt_batch": 32}}]})


@pytest.mark.parametrize("data, hint", [
    ({"models": [{"precison": ["fp32"]}]}, "did you mean 'precisions'"),
    ({"models": [{"triton": {"max_batch_sise": 8}}]}, "did you mean 'max_batch_size'"),
    ({"outptu": "x"}, "did you mean 'output'"),
    ({"models": [{"calibration": {"method": "entropi"}}]}, "did you mean 'entropy'"),
    ({"models": [{"source": {"kind": "torchvison"}}]}, "did you mean 'torchvision'"),
    ({"models": [{"source": {"kind": "torchvision", "arch": "resnet-18", "checkpoint": "x.pt"},
                  "data": {"val": "v", "calibration": "c"}}]}, "did you mean 'resnet18'"),
])
def test_typos_get_did_you_mean(data, hint):
    assert hint in _error(data)


def test_nothing_close_gets_no_guess():
    assert "did you mean" not in _error({"models": [{"zzzzqqq": 1}]})


def test_missing_checkpoint_is_found_at_spec_load_naming_the_field(tmp_path):
    (tmp_path / "val").mkdir()
    spec = tmp_path / "spec.toml"
    spec.write_text('[[models]]\nname = "flowers"\nprecisions = ["fp32"]\n'
                    'source = { kind = "torchvision", arch = "resnet18", checkpoint = "weights/r18.pt" }\n'
                    'data = { val = "val" }\n')
    with pytest.raises(SpecError) as err:
        load_spec(spec)
    msg = str(err.value)
    assert "models.0.source.checkpoint = 'weights/r18.pt'" in msg and "'flowers'" in msg
    assert str(tmp_path / "weights" / "r18.pt") in msg and "spec's folder" in msg
    (tmp_path / "weights").mkdir()
    torch.save({}, tmp_path / "weights" / "r18.pt")
    assert load_spec(spec).models[0].source.checkpoint == tmp_path / "weights" / "r18.pt"


def _saved(tmp_path, state, name="c.pt"):
    torch.save(state, tmp_path / name)
    return tmp_path / name


def test_checkpoint_of_another_arch_names_both(tmp_path):
    from builders.models import load_checkpoint

    state = torchvision.models.get_model("mobilenet_v3_small", weights=None, num_classes=10).state_dict()
    with pytest.raises(ValueError) as err:
        load_checkpoint("resnet18", _saved(tmp_path, state), 10)
    msg = str(err.value)
    assert "source.checkpoint" in msg and "'resnet18'" in msg
    assert "looks like torchvision 'mobilenet_v3_small'" in msg
    assert "Error(s) in loading state_dict" not in msg


def test_checkpoint_with_another_class_count_says_so(tmp_path):
    from builders.models import load_checkpoint

    state = torchvision.models.get_model("mobilenet_v3_small", weights=None, num_classes=10).state_dict()
    with pytest.raises(ValueError, match="Only the class head differs.*5 class folders"):
        load_checkpoint("mobilenet_v3_small", _saved(tmp_path, state), 5)
    wrapped = {f"module.{k}": v for k, v in state.items()}
    with pytest.raises(ValueError, match="DataParallel"):
        load_checkpoint("mobilenet_v3_small", _saved(tmp_path, wrapped, "w.pt"), 10)


def _tiny_conv_onnx(path, tiny_tensors: int):
    """`tiny_tensors` chained 1x1 convs (3 -> 3 channels) on the engine input, each weight tensor
    holding one number below fp16's smallest subnormal (onnxconverter-common warns once per tensor)."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from contract.layout import ENGINE_INPUT

    nodes, weights, prev = [], [], ENGINE_INPUT
    for i in range(tiny_tensors):
        w = np.full((3, 3, 1, 1), 0.3, np.float32)
        w.flat[0] = 1e-9
        weights.append(numpy_helper.from_array(w, f"w{i}"))
        nodes.append(helper.make_node("Conv", [prev, f"w{i}"], [f"y{i}"]))
        prev = f"y{i}"
    graph = helper.make_graph(
        nodes, "tiny", [helper.make_tensor_value_info(ENGINE_INPUT, TensorProto.FLOAT, ["n", 3, 4, 4])],
        [helper.make_tensor_value_info(prev, TensorProto.FLOAT, ["n", 3, 4, 4])], weights)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


def test_precision_stages_summarize_third_party_chatter(tmp_path, capfd, caplog):
    import logging

    import numpy as np

    from builders.precision import to_fp16, to_int8
    from contract.spec import Calibration

    fp32 = _tiny_conv_onnx(tmp_path / "fp32.onnx", tiny_tensors=5)
    x = np.random.default_rng(0).random((4, 3, 4, 4), dtype=np.float32)
    with caplog.at_level(logging.INFO, logger="builders.precision"):
        to_fp16(fp32, tmp_path / "fp16.onnx")
        to_int8(fp32, tmp_path / "int8.onnx", x, Calibration(method="entropy"), tmp_path / "calib")
        to_int8(fp32, tmp_path / "u8.onnx", x, Calibration(method="entropy"), tmp_path / "calib", runtime="onnxruntime")
    out, err = capfd.readouterr()
    for chatter in ("will be truncated", "Number of tensors", "Collecting tensor data", "pre-processing"):
        assert chatter not in out + err, chatter
    lines = [r.getMessage() for r in caplog.records]
    assert sum("fp16: 5 weight tensors hold values outside fp16's range" in m for m in lines) == 1, lines
    assert any(m.startswith("calibration (entropy):") and "progress lines" in m for m in lines), lines
    assert (tmp_path / "fp16.onnx").is_file() and (tmp_path / "u8.onnx").is_file()

"""The PyTorch-backend twin: TorchScript variants built and checked against PyTorch, their Triton
configs, and the DALI -> TorchScript ensemble served end to end by the local server (KIND_CPU,
the python stand-in for the PyTorch backend), selected by the clients with --backend torch.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from builders.triton_config import read_config
from contract import layout
from contract.images import load_image_folder
from contract.manifest import load_manifest

NAME = "digits"
TORCH_PRECISIONS = ("fp32", "fp16")


# --- build --------------------------------------------------------------------------------------

def _val_tensors(built_repo: Path, manifest: dict, limit: int = 64) -> tuple[np.ndarray, list[bytes]]:
    """The first `limit` validation images, encoded and as the repository's CPU DALI pipeline makes them."""
    from contract.preprocess import CpuPreprocessor

    files = load_image_folder(load_manifest(built_repo).models[NAME].val).files[:limit]
    encoded = [f.read_bytes() for f in files]
    pre = CpuPreprocessor(built_repo / "cpu" / layout.preprocess_model(NAME) / "1" / layout.DALI_DEFINITION)
    x = np.concatenate([pre([np.frombuffer(e, np.uint8) for e in encoded[i: i + pre.max_batch_size]])
                        for i in range(0, len(encoded), pre.max_batch_size)])
    return x, encoded


def test_manifest_records_torchscript_parity(manifest):
    ts = manifest["models"][NAME]["torchscript"]
    assert set(ts["precisions"]) == set(TORCH_PRECISIONS), ts["status"]
    for p, rec in ts["precisions"].items():
        assert rec["within_tolerance"] and rec["max_abs_diff_pytorch"] <= rec["tolerance"]
        assert rec["images"] == 359 and rec["top1_agreement_pytorch"] >= 0.99
        assert rec["ensemble"] == f"{NAME}_{p}_torch" and rec["engine"] == f"{NAME}_{p}_torch_infer"
    assert ts["precisions"]["fp32"]["max_abs_diff_pytorch"] < 1e-4


@pytest.mark.parametrize("target", ["cpu", "gpu"])
def test_torchscript_files_run_and_match_pytorch(built_repo, manifest, target):
    from builders.models import load_checkpoint

    entry = manifest["models"][NAME]
    x, _ = _val_tensors(built_repo, manifest)
    model = load_checkpoint(entry["source"]["arch"], built_repo / entry["checkpoint"], entry["num_classes"])
    with torch.inference_mode():
        ref = model(torch.from_numpy(x)).numpy()
    for p in TORCH_PRECISIONS:
        path = built_repo / target / layout.engine_model(NAME, p, "torch") / "1" / "model.pt"
        script = torch.jit.load(str(path), map_location="cpu")
        dtypes = {t.dtype for t in script.parameters()}
        assert dtypes == ({torch.float32} if p == "fp32" else {torch.float16}), (p, dtypes)
        with torch.inference_mode():
            out = script(torch.from_numpy(x[:5]))   # another batch size than the trace's 2
            assert out.dtype == torch.float32 and out.shape == (5, entry["num_classes"])
            got = script(torch.from_numpy(x)).numpy()
        tol = 1e-4 if p == "fp32" else 0.1
        assert np.abs(got - ref).max() < tol, (p, float(np.abs(got - ref).max()))


@pytest.mark.parametrize("target", ["cpu", "gpu"])
def test_torch_configs_are_what_the_pytorch_backend_takes(built_repo, target):
    from tritonclient.grpc import model_config_pb2 as mc

    kind = mc.ModelInstanceGroup.KIND_GPU if target == "gpu" else mc.ModelInstanceGroup.KIND_CPU
    for p in TORCH_PRECISIONS:
        eng = read_config(built_repo / target / layout.engine_model(NAME, p, "torch") / "config.pbtxt")
        assert eng.platform == "pytorch_libtorch" and eng.default_model_filename == "model.pt"
        assert [i.name for i in eng.input] == ["INPUT__0"] and [o.name for o in eng.output] == ["OUTPUT__0"]
        assert eng.input[0].data_type == mc.TYPE_FP32 and list(eng.input[0].dims) == [3, 32, 32]
        assert {g.kind for g in eng.instance_group} == {kind}
        assert eng.model_warmup and eng.model_warmup[0].inputs["INPUT__0"].input_data_file == "input.fp32"
        ens = read_config(built_repo / target / layout.ensemble_model(NAME, p, "torch") / "config.pbtxt")
        pre_step, net_step = ens.ensemble_scheduling.step
        assert pre_step.model_name == layout.preprocess_model(NAME)
        assert net_step.model_name == eng.name
        assert dict(net_step.input_map) == {"INPUT__0": pre_step.output_map[layout.DALI_OUTPUT]}
        assert dict(net_step.output_map) == {"OUTPUT__0": layout.ENSEMBLE_OUTPUT}
        # The TensorRT/ONNX Runtime ensemble of the same precision is still there, unchanged.
        assert (built_repo / target / layout.ensemble_model(NAME, p) / "config.pbtxt").is_file()


def test_torchscript_flag_and_onnx_source():
    from contract.spec import SpecError, parse_spec

    off = parse_spec({"models": [{"torchscript": False}]})
    assert off.models[0].torchscript is False
    with pytest.raises(SpecError, match="torchscript = true needs a PyTorch model"):
        parse_spec({"models": [{"name": "x", "torchscript": True, "precisions": ["fp32"],
                                "source": {"kind": "onnx", "onnx": "m.onnx"}, "data": {"val": "v"}}]})


def test_backend_naming():
    from clients.served_models import ensemble_name, served_precisions

    assert layout.ensemble_model("m", "fp16", "torch") == "m_fp16_torch"
    assert layout.engine_model("m", "fp16", "pytorch") == "m_fp16_torch_infer"
    assert layout.ensemble_model("m", "fp16", "tensorrt") == layout.ensemble_model("m", "fp16") == "m_fp16"
    with pytest.raises(ValueError, match="unknown backend 'tvm'"):
        layout.engine_model("m", "fp32", "tvm")
    ready = ["m_preprocess", "m_fp32", "m_fp32_infer", "m_int8", "m_int8_infer", "m_fp32_torch",
             "m_fp32_torch_infer", "m_fp16_torch"]   # m_fp16_torch has no engine: not served
    index = [{"name": n, "state": "READY"} for n in ready]
    assert served_precisions(index, "m") == ["fp32", "int8"]
    assert served_precisions(index, "m", "torch") == ["fp32"]
    assert ensemble_name("m", "fp32", "torch") == "m_fp32_torch"


# --- served end to end (local server, cpu target) -----------------------------------------------

@pytest.fixture(scope="module")
def torch_server(built_repo):
    from serving.local_server import LocalTritonServer, free_port

    with LocalTritonServer(built_repo / "cpu", http_port=free_port(), grpc_port=free_port(),
                           metrics_port=free_port(), timeout_s=240, model_control_mode="explicit",
                           load_models=tuple(layout.ensemble_model(NAME, p, "torch") for p in TORCH_PRECISIONS)) as srv:
        yield srv


@pytest.mark.server
@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_served_torch_ensemble_matches_in_process(torch_server, built_repo, manifest, protocol):
    from clients.triton import TritonClient

    x, encoded = _val_tensors(built_repo, manifest, limit=24)
    url = torch_server.http_url if protocol == "http" else torch_server.grpc_url
    with TritonClient(url, protocol) as client:
        for p in TORCH_PRECISIONS:
            script = torch.jit.load(str(built_repo / "cpu" / layout.engine_model(NAME, p, "torch") / "1" / "model.pt"))
            with torch.inference_mode():
                want = script(torch.from_numpy(x)).numpy()
            got = client.infer_many(layout.ensemble_model(NAME, p, "torch"), encoded, batch_size=8).logits
            # Same DALI file, same script, same CPU: only batching (8 vs 24) can move the last bits.
            assert np.abs(got - want).max() < (1e-4 if p == "fp32" else 2e-2), p
            assert (got.argmax(1) == want.argmax(1)).all()


@pytest.mark.server
def test_torch_engine_rejects_a_wrong_shape_and_keeps_serving(torch_server):
    import tritonclient.http as httpclient

    client = httpclient.InferenceServerClient(torch_server.http_url)
    engine = layout.engine_model(NAME, "fp32", "torch")
    bad = httpclient.InferInput("INPUT__0", [2, 3, 16, 16], "FP32")
    bad.set_data_from_numpy(np.zeros((2, 3, 16, 16), np.float32))
    with pytest.raises(Exception, match=r"\[-1, 3, 32, 32\]|3,32,32"):
        client.infer(engine, [bad])
    good = httpclient.InferInput("INPUT__0", [2, 3, 32, 32], "FP32")
    good.set_data_from_numpy(np.zeros((2, 3, 32, 32), np.float32))
    assert client.infer(engine, [good]).as_numpy("OUTPUT__0").shape == (2, 10)


@pytest.mark.server
def test_verify_and_bench_select_the_torch_twin(torch_server, built_repo, tmp_path, capsys):
    from benchmarks import bench
    from clients import verify

    out = tmp_path / "verify.json"
    rc = verify.main(["--url", torch_server.http_url, "--protocol", "http", "--backend", "torch",
                      "--manifest", str(built_repo / layout.MANIFEST_FILE), "--limit", "48", "--json", str(out)])
    report = json.loads(out.read_text())
    assert rc == 0, capsys.readouterr().out
    assert {r["ensemble"] for r in report["results"]} == {f"{NAME}_fp32_torch", f"{NAME}_fp16_torch"}
    rc = bench.main(["--url", torch_server.http_url, "--grpc-url", torch_server.grpc_url, "--protocol", "grpc",
                     "--backend", "torch",
                     "--manifest", str(built_repo / layout.MANIFEST_FILE), "--batch-size", "4", "--window", "0.2",
                     "--max-windows", "3", "--images", "16", "--no-preprocess-comparison", "--out", str(tmp_path / "b")])
    assert rc == 0, capsys.readouterr()
    result = json.loads((tmp_path / "b" / "bench.json").read_text())
    assert result["settings"]["backend"] == "torch"
    assert {r["model"] for r in result["points"]} == {f"{NAME}_fp32_torch", f"{NAME}_fp16_torch"}

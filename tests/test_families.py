"""Your own model, served as it was trained: timm, any nn.Module and a Hugging Face classifier.

examples/families.py makes the three models (random backbones, heads fitted on the real photos)
and examples/families.toml builds them into one cpu repository; the real local Triton server
serves it and tik-verify compares every precision with the user's PyTorch model on its own
transform (timm's create_transform, torchvision's for the module, the HF image processor).
"""
from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
NAMES = ("timm_net", "my_net", "hf_vit")


@pytest.fixture(scope="module")
def families_spec(tmp_path_factory) -> Path:
    """examples/families.toml and my_models.py copied next to freshly made inputs (.data/families)."""
    sys.path.insert(0, str(ROOT / "examples"))
    from families import make

    folder = tmp_path_factory.mktemp("families")
    shutil.copy(ROOT / "examples" / "families.toml", folder)
    shutil.copy(ROOT / "examples" / "my_models.py", folder)
    make(folder / ".data" / "families")
    return folder / "families.toml"


@pytest.fixture(scope="module")
def families_repo(families_spec, build_cache) -> Path:
    from builders.build import build
    from contract.spec import load_spec

    spec = load_spec(families_spec)
    build(spec, cache_dir=build_cache, quiet=True)
    return Path(spec.output)


def test_input_comes_from_the_model_unless_written(families_repo):
    models = json.loads((families_repo / "manifest.json").read_text())["models"]
    timm_in, hf_in, mine = (models[n]["input"] for n in ("timm_net", "hf_vit", "my_net"))
    # timm test_efficientnet: 160 px, crop_pct 0.95 -> resize floor(160 / 0.95) = 168, bicubic.
    assert (timm_in["crop"], timm_in["resize"], timm_in["crop_pct"], timm_in["interpolation"]) == \
        (160, 168, 0.95, "bicubic")
    assert models["timm_net"]["preprocessing"]["reference_transform"]["family"] == "timm"
    # The ViT's processor: 224 x 224 squashed, mean/std 0.5, no crop.
    assert (hf_in["resize_mode"], hf_in["resize"], hf_in["crop"], hf_in["mean"]) == ("square", 224, 224, [0.5] * 3)
    assert models["hf_vit"]["preprocessing"]["reference_transform"]["family"] == "huggingface"
    assert (mine["resize"], mine["crop"], mine["interpolation"]) == (72, 64, "bicubic")
    assert models["my_net"]["preprocessing"]["reference_transform"] == {"family": "torchvision"}
    for name in NAMES:
        assert models[name]["preprocessing"]["within_tolerance"], name
        assert models[name]["export"]["top1_agreement"] == 1.0
    # Everything verify needs travels with the repository.
    assert (families_repo / "source" / "hf_vit_hf" / "preprocessor_config.json").is_file()
    assert (families_repo / "source" / "my_net_code" / "my_models.py").is_file()


@pytest.mark.server
def test_verify_passes_for_every_kind(families_repo, tmp_path, capsys):
    from clients import verify
    from serving.local_server import LocalTritonServer, free_port

    out = tmp_path / "verify.json"
    with LocalTritonServer(families_repo / "cpu", http_port=free_port(), grpc_port=free_port(),
                           metrics_port=free_port(), timeout_s=300) as srv:
        rc = verify.main(["--url", srv.http_url, "--protocol", "http", "--manifest", str(families_repo),
                          "--json", str(out)])
    report = json.loads(out.read_text())
    assert rc == 0, capsys.readouterr().out
    assert {(r["model"], r["precision"]) for r in report["results"]} == \
        {(n, p) for n in NAMES for p in ("fp32", "fp16", "int8")}
    for r in report["results"]:
        assert r["status"] == "PASS" and r["top1_agreement"] >= 0.99, r
    for name in NAMES:
        assert report["preprocessing"][name]["status"] == "PASS"
    assert "timm create_transform" in report["reference"]["timm_net"]
    assert "image processor" in report["reference"]["hf_vit"]


def test_twin_and_export_of_the_hf_model_return_logits(families_repo):
    import onnx

    from builders.torchscript import load_script, run_script

    onnx_model = onnx.load(str(families_repo / "cpu" / "hf_vit_fp32_infer" / "1" / "model.onnx"))
    assert [o.name for o in onnx_model.graph.output] == ["logits"]
    script = load_script(next((families_repo / "cpu" / "hf_vit_fp32_torch_infer").rglob("model.pt")))
    assert run_script(script, np.zeros((2, 3, 224, 224), np.float32)).shape == (2, 2)


def test_timm_and_module_spec_errors(tmp_path):
    from contract.spec import SpecError, load_spec

    spec = tmp_path / "s.toml"
    spec.write_text('[[models]]\nname = "a"\n[models.source]\nkind = "timm"\narch = "efficientnet_b"\n'
                    'checkpoint = "w.pt"\n[models.data]\nval = "."\ncalibration = "."\n')
    with pytest.raises(SpecError, match=r"not a timm model \(did you mean 'efficientnet_b"):
        load_spec(spec)
    spec.write_text('[[models]]\nname = "a"\n[models.source]\nkind = "module"\ncheckpoint = "w.pt"\n'
                    '[models.data]\nval = "."\ncalibration = "."\n')
    with pytest.raises(SpecError, match="needs source.factory"):
        load_spec(spec)
    spec.write_text('[[models]]\nname = "a"\n[models.source]\nkind = "huggingface"\npath = "nowhere"\n'
                    '[models.data]\nval = "."\ncalibration = "."\n')
    with pytest.raises(SpecError, match="no save_pretrained folder"):
        load_spec(spec)
    spec.write_text('[[models]]\nname = "a"\n[models.source]\nkind = "huggingfase"\n')
    with pytest.raises(SpecError, match="did you mean 'huggingface'"):
        load_spec(spec)


def test_crop_pct_gives_resize_and_conflicts_are_named():
    from contract.spec import Input

    assert Input(crop=224, crop_pct=0.875).resize == 256
    with pytest.raises(ValueError, match="disagrees with input.crop / input.crop_pct"):
        Input(crop=224, crop_pct=0.875, resize=250)


class _Inverts(__import__("torch").nn.Module):
    """A module whose op (a matrix inverse) has no ONNX form."""

    def forward(self, x):
        import torch

        m = x.flatten(1)[:, :4].reshape(-1, 2, 2) + torch.eye(2)
        return torch.linalg.inv(m).flatten(1)


def test_export_error_names_the_module_and_the_op(tmp_path):
    import torch

    from builders.export import ExportError, export_onnx

    net = torch.nn.Sequential(torch.nn.Conv2d(3, 3, 1), torch.nn.Sequential(torch.nn.ReLU(), _Inverts()))
    with pytest.raises(ExportError) as err:
        export_onnx(net, 8, tmp_path / "m.onnx")
    text = str(err.value)
    assert "module '1.1' (_Inverts) calls aten::linalg_inv" in text and "opset 17" in text
    assert "source.kind = 'onnx'" in text and not (tmp_path / "m.onnx").exists()

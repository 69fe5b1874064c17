"""Served preprocessing vs each model family's own eval transform, on the real-photo set.

For each case, the spec entry's `input` is resolved as the build resolves it (builders.families:
the model's own transform when `input` is omitted), the cpu target's DALI definition is written
and run in-process (contract.preprocess.CpuPreprocessor, as the build's parity check runs it), and
compared per image, in pixel levels, with the family's reference:

    timm efficientnet_b0, input omitted   timm create_transform(resolve_data_config): bicubic, crop_pct 0.875
    Hugging Face ViT, input omitted       ViTImageProcessor (resize to 224 x 224, bilinear, mean/std 0.5)
    module, explicit input                torchvision Resize(256, bicubic) / CenterCrop(224)

The bicubic cases also run with DALI's antialias off, to show which setting is closer to PIL's
bicubic (which widens its filter when downscaling). No network runs: only transforms.

    python benchmarks/family_parity.py --out docs/preprocessing/families.json
"""
from __future__ import annotations

import argparse
import platform
import tempfile
from pathlib import Path

import numpy as np


from benchmarks.results_file import write_result
from builders.families import reference_preprocess_all, resolve_input
from builders.parity_photos import write_photo_set
from contract.images import load_image_folder, pack_batch
from contract.preprocess import (CpuPreprocessor, parity, read_definition_params, tolerance_for,
                                 with_definition_params, write_definition)
from contract.spec import Data, Input, ModelSpec, Source

COMMAND = "python benchmarks/family_parity.py --out docs/preprocessing/families.json"


def write_vit(folder: Path) -> Path:
    """A ViT classifier with random weights and the default ViTImageProcessor (224 x 224), saved locally."""
    from transformers import ViTConfig, ViTForImageClassification, ViTImageProcessor

    cfg = ViTConfig(image_size=224, patch_size=32, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                    intermediate_size=64, num_labels=2)
    ViTForImageClassification(cfg).save_pretrained(folder)
    ViTImageProcessor().save_pretrained(folder)
    return folder


def cases(tmp: Path, photos: Path) -> dict[str, ModelSpec]:
    data = Data(val=photos, calibration=photos)
    dummy = tmp / "unused.pt"
    dummy.write_bytes(b"")
    return {
        "timm_efficientnet_b0": ModelSpec(name="timm", data=data,
                                          source=Source(kind="timm", arch="efficientnet_b0", checkpoint=dummy)),
        "huggingface_vit": ModelSpec(name="vit", data=data,
                                     source=Source(kind="huggingface", path=write_vit(tmp / "vit"))),
        "module_explicit_input": ModelSpec(
            name="module", data=data, source=Source(kind="module", factory="m:f", checkpoint=dummy),
            input=Input(resize=256, crop=224, interpolation="bicubic")),
    }


def measure(spec: ModelSpec, encoded: list[bytes], names: list[str], tmp: Path, antialias: bool) -> dict:
    """Per-image parity of the cpu DALI definition with the family's reference transform."""
    spec, record = resolve_input(spec)
    inp = spec.input
    definition = write_definition(inp, "cpu", tmp / f"{spec.name}-{antialias}" / "dali.py", 8)
    if not antialias:
        text = definition.read_text()
        definition.write_text(with_definition_params(text, {**read_definition_params(text), "antialias": False}))
    pre = CpuPreprocessor(definition)
    dali = np.concatenate([pre(list(pack_batch(encoded[i: i + 8]))) for i in range(0, len(encoded), 8)])
    hf = spec.source.path if spec.source.kind == "huggingface" else None
    ref = reference_preprocess_all(encoded, record, inp, hf)
    result = parity(dali, ref, inp.std, names, "cpu", tolerance_for("cpu", inp.interpolation, record["family"]))
    return {"input": inp.model_dump(mode="json"), "reference": record.get("family"), "antialias": antialias,
            **result.summary(), "per_image_mean_levels": dict(zip(names, result.mean)),
            "per_image_p99_levels": dict(zip(names, result.p99))}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("docs/preprocessing/families.json"))
    args = parser.parse_args(argv)
    import timm
    import transformers
    import nvidia.dali

    with tempfile.TemporaryDirectory(prefix="family-parity-") as tmp:
        tmp = Path(tmp)
        images = load_image_folder(write_photo_set(tmp / "photos"))
        encoded = images.encoded()
        names = [str(f.relative_to(images.root)) for f in images.files]
        results = {}
        for name, spec in cases(tmp, images.root).items():
            results[name] = measure(spec, encoded, names, tmp, True)
            if results[name]["input"]["interpolation"] == "bicubic":
                results[f"{name}_no_antialias"] = measure(spec, encoded, names, tmp, False)
        for name in results:
            print(f"{name}: mean <= {results[name]['mean_levels']['max_over_images']:.3f}, "
                  f"p99 <= {results[name]['p99_levels']['max_over_images']:.2f}, "
                  f"max {results[name]['max_levels']:.1f} levels")
    report = {"command": COMMAND, "images": len(encoded), "image_set": "builders.parity_photos.write_photo_set(seed=0)",
              "machine": f"{platform.machine()} CPU, {platform.system()} (DALI CPU operators)",
              "versions": {"dali": nvidia.dali.__version__, "timm": timm.__version__,
                           "transformers": transformers.__version__},
              "done_when_bounds": {"mean": 1.0, "p99": 4.0}, "build_tolerance": {"bilinear": tolerance_for("cpu"), "bicubic or huggingface": tolerance_for("cpu", "bicubic")},
              "cases": results}
    write_result(args.out, report, indent=1, quiet=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

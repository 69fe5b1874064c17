"""Write the Triton model repository (both targets) and its manifest, atomically.

The repository is assembled in `<output>.staging/` and swapped in only when complete: the
previous `<output>/` is renamed to `<output>.previous/`, the staging folder takes its place, and
the previous one is deleted. A build that fails or is killed before the swap leaves `<output>/`
untouched; one killed inside the swap leaves `<output>.previous/`, which the next build restores
before doing anything else.
"""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np

from builders import layout
from builders.datasets import load_image_folder
from builders.pipeline import ModelBuild
from builders.stages import hash_path
from builders.triton_config import WARMUP_DIR, engine_config, ensemble_config, preprocess_config, write_config


def staging_dir(output: Path) -> Path:
    return output.with_name(output.name + ".staging")


def previous_dir(output: Path) -> Path:
    return output.with_name(output.name + ".previous")


def recover(output: Path) -> None:
    """Undo a swap that was interrupted between its two renames."""
    prev = previous_dir(output)
    if prev.exists() and not output.exists():
        prev.rename(output)
    shutil.rmtree(previous_dir(output), ignore_errors=True)
    shutil.rmtree(staging_dir(output), ignore_errors=True)


def swap_in(staging: Path, output: Path) -> None:
    prev = previous_dir(output)
    if output.exists():
        output.rename(prev)
    staging.rename(output)
    shutil.rmtree(prev, ignore_errors=True)


def _copy(src: Path, dst: Path) -> dict:
    dst.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src, dst)
    return {"sha256": hash_path(dst), "bytes": dst.stat().st_size}


def write_target(root: Path, target: str, build: ModelBuild, plans: dict[str, Path],
                 compute_capability: str | None = None) -> dict[str, dict]:
    """Write one model entry's models into `root/<target>/`; returns artifact records by path.

    plans: precision -> TensorRT plan file (gpu target), named as the engine stage chose
    (model_sm<cc>.plan, or model.plan when hardware-compatible or not built yet)."""
    spec, n = build.spec, len(build.labels)
    base = root / target
    artifacts: dict[str, dict] = {}
    labels_text = "\n".join(build.labels) + "\n"

    # Warm-up data: the first validation image, encoded for DALI and preprocessed for the engine.
    image = load_image_folder(build.data.val).files[0].read_bytes()
    tensor = np.load(build.preprocessing.val_tensors, mmap_mode="r")[0]

    pre_dir = base / layout.preprocess_model(spec.name)
    (pre_dir / WARMUP_DIR).mkdir(parents=True, exist_ok=True)
    (pre_dir / WARMUP_DIR / "image.jpg").write_bytes(image)
    write_config(preprocess_config(spec, target, len(image)), pre_dir)
    dali = build.preprocessing.cpu if target == "cpu" else build.preprocessing.gpu
    artifacts[str((pre_dir / "1" / "model.dali").relative_to(root))] = {
        "kind": "dali", "target": target, "model": spec.name, **_copy(dali, pre_dir / "1" / "model.dali")}

    for precision, variant in build.variants.items():
        eng_dir = base / layout.engine_model(spec.name, precision)
        plan = plans.get(precision)
        (eng_dir / WARMUP_DIR).mkdir(parents=True, exist_ok=True)
        (eng_dir / WARMUP_DIR / "input.fp32").write_bytes(np.ascontiguousarray(tensor, dtype=np.float32).tobytes())
        write_config(engine_config(spec, target, precision, n, plan.name if plan else "model.plan",
                                   compute_capability if plan and plan.name != "model.plan" else None,
                                   warmup=True), eng_dir)
        (eng_dir / layout.LABELS_FILE).write_text(labels_text)
        if target == "cpu":
            rec = {"kind": "onnx", **_copy(variant.path, eng_dir / "1" / "model.onnx")}
            path = eng_dir / "1" / "model.onnx"
        elif plan:
            path = eng_dir / "1" / plan.name
            rec = {"kind": "tensorrt_plan", **_copy(plan, path)}
        else:
            # The plan needs TensorRT on a GPU; the folder waits for it (docker compose's builder).
            (eng_dir / "1").mkdir(parents=True, exist_ok=True)
            rec = {"kind": "tensorrt_plan", "missing": "needs a GPU build with TensorRT (docker compose up)"}
            path = eng_dir / "1" / "model.plan"
        artifacts[str(path.relative_to(root))] = {"target": target, "model": spec.name,
                                                  "precision": precision, **rec}

        ens_dir = base / layout.ensemble_model(spec.name, precision)
        write_config(ensemble_config(spec, precision, n), ens_dir)
        (ens_dir / layout.LABELS_FILE).write_text(labels_text)
        (ens_dir / "1").mkdir(parents=True, exist_ok=True)  # ensembles need an (empty) version folder
    return artifacts

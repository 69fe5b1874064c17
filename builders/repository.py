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

from builders.pipeline import ModelBuild
from builders.stages import hash_path
from builders.triton_config import (WARMUP_DIR, engine_config, ensemble_config, preprocess_config,
                                    torchscript_config, write_config)
from contract import layout
from contract.images import load_image_folder
from contract.manifest import Artifact


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


def _other_arch_plans(previous: Path | None, old_artifacts: dict[str, Artifact], eng_rel: Path, precision: str,
                      onnx_sha: str, cc: str) -> dict[str, Path]:
    """Plans the previous repository holds for this engine model on other GPU architectures,
    built from the same ONNX: compute capability -> file. They stay, so one repository serves
    several GPU generations (cc_model_filenames)."""
    found = {}
    for path, art in old_artifacts.items():
        if (art.kind == "tensorrt_plan" and not art.missing and Path(path).parent.parent == eng_rel
                and art.precision == precision and art.onnx_sha256 == onnx_sha
                and art.compute_capability not in (None, cc) and (previous / path).is_file()):
            found[art.compute_capability] = previous / path
    return found


def write_target(root: Path, target: str, build: ModelBuild, plans: dict[str, Path],
                 compute_capability: str | None = None, previous: Path | None = None,
                 old_artifacts: dict[str, Artifact] | None = None) -> dict[str, dict]:
    """Write one model entry's models into `root/<target>/`; returns artifact records by path.

    plans: precision -> TensorRT plan file (gpu target), named as the engine stage chose
    (model_sm<cc>.plan, or model.plan when hardware-compatible or not built yet).
    previous, old_artifacts: the repository being replaced and its manifest's artifacts, from
    which plans for other GPU architectures are kept."""
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
    definition = pre_dir / "1" / layout.DALI_DEFINITION
    artifacts[str(definition.relative_to(root))] = {
        "kind": "dali_definition", "target": target, "model": spec.name, **_copy(dali, definition)}

    # The cpu target serves ONNX Runtime-shaped int8 (U8S8); the gpu target's plans come from the
    # TensorRT-shaped one (S8S8 Q/DQ): builders/precision.py.
    for precision, variant in build.variants_for(target).items():
        eng_dir = base / layout.engine_model(spec.name, precision)
        plan = plans.get(precision)
        per_arch = plan is not None and plan.name != "model.plan" and compute_capability is not None
        onnx_sha = hash_path(variant.path)
        others = (_other_arch_plans(previous, old_artifacts or {}, eng_dir.relative_to(root), precision,
                                    onnx_sha, compute_capability) if per_arch and previous else {})
        for cc, other in others.items():
            dst = eng_dir / "1" / other.name
            artifacts[str(dst.relative_to(root))] = {
                "target": target, "model": spec.name, "precision": precision, "kind": "tensorrt_plan",
                "compute_capability": cc, "onnx_sha256": onnx_sha, "kept_from_previous_build": True,
                **_copy(other, dst)}
        (eng_dir / WARMUP_DIR).mkdir(parents=True, exist_ok=True)
        (eng_dir / WARMUP_DIR / "input.fp32").write_bytes(np.ascontiguousarray(tensor, dtype=np.float32).tobytes())
        write_config(engine_config(spec, target, precision, n, plan.name if plan else "model.plan",
                                   compute_capability if per_arch else None, warmup=True,
                                   other_plans={cc: p.name for cc, p in others.items()}), eng_dir)
        (eng_dir / layout.LABELS_FILE).write_text(labels_text)
        if target == "cpu":
            rec = {"kind": "onnx", **_copy(variant.path, eng_dir / "1" / "model.onnx")}
            path = eng_dir / "1" / "model.onnx"
        elif plan:
            path = eng_dir / "1" / plan.name
            rec = {"kind": "tensorrt_plan", "compute_capability": compute_capability, "onnx_sha256": onnx_sha,
                   **_copy(plan, path)}
        else:
            # The plan needs TensorRT on a GPU; the folder waits for it (docker compose's builder).
            (eng_dir / "1").mkdir(parents=True, exist_ok=True)
            rec = {"kind": "tensorrt_plan", "missing": "needs a GPU build with TensorRT (docker compose up)",
                   "onnx_sha256": onnx_sha}
            path = eng_dir / "1" / "model.plan"
        artifacts[str(path.relative_to(root))] = {"target": target, "model": spec.name,
                                                  "precision": precision, **rec}

        ens_dir = base / layout.ensemble_model(spec.name, precision)
        write_config(ensemble_config(spec, precision, n), ens_dir)
        (ens_dir / layout.LABELS_FILE).write_text(labels_text)
        (ens_dir / "1").mkdir(parents=True, exist_ok=True)  # ensembles need an (empty) version folder
    artifacts.update(_write_torch_twin(root, target, build, tensor, labels_text))
    return artifacts


def _write_torch_twin(root: Path, target: str, build: ModelBuild, warmup_tensor: np.ndarray,
                      labels_text: str) -> dict[str, dict]:
    """The PyTorch-backend twin (builders.torchscript): per TorchScript precision an engine model
    `<name>_<precision>_torch_infer` (1/model.pt) and the ensemble `<name>_<precision>_torch`."""
    spec, n = build.spec, len(build.labels)
    artifacts = {}
    for precision, script in build.torchscript.items():
        eng_dir = root / target / layout.engine_model(spec.name, precision, layout.TORCH_BACKEND)
        (eng_dir / WARMUP_DIR).mkdir(parents=True, exist_ok=True)
        (eng_dir / WARMUP_DIR / "input.fp32").write_bytes(
            np.ascontiguousarray(warmup_tensor, dtype=np.float32).tobytes())
        write_config(torchscript_config(spec, target, precision, n, warmup=True), eng_dir)
        (eng_dir / layout.LABELS_FILE).write_text(labels_text)
        path = eng_dir / "1" / "model.pt"
        artifacts[str(path.relative_to(root))] = {"target": target, "model": spec.name, "precision": precision,
                                                  "backend": layout.TORCH_BACKEND, "kind": "torchscript",
                                                  **_copy(script.path, path)}
        ens_dir = root / target / layout.ensemble_model(spec.name, precision, layout.TORCH_BACKEND)
        write_config(ensemble_config(spec, precision, n, layout.TORCH_BACKEND), ens_dir)
        (ens_dir / layout.LABELS_FILE).write_text(labels_text)
        (ens_dir / "1").mkdir(parents=True, exist_ok=True)
    return artifacts


def bundle_val(root: Path, name: str, val: Path, max_images: int) -> dict | None:
    """Copy the validation images clients use by default into `root/data/<name>/val/`.

    All of them when there are at most `max_images`, else an even sample that takes classes in
    turn (every class folder is written, even if empty, so class indices stay those of the
    full set). Returns the manifest's `data` record (paths relative to `root`), or None when
    `max_images` is 0."""
    if max_images <= 0:
        return None
    images = load_image_folder(val)
    per_class: list[list[Path]] = [[] for _ in images.classes]
    for f, t in zip(images.files, images.targets):
        per_class[t].append(f)
    chosen: list[Path] = []
    depth = 0
    while len(chosen) < min(max_images, len(images)):
        for files in per_class:
            if depth < len(files) and len(chosen) < max_images:
                chosen.append(files[depth])
        depth += 1
    dst = root / "data" / name / "val"
    for cls in images.classes:
        (dst / cls).mkdir(parents=True, exist_ok=True)
    for f in chosen:
        shutil.copyfile(f, dst / f.relative_to(images.root))
    return {"val": dst.relative_to(root).as_posix(),
            "val_bundle": {"images": len(chosen), "of": len(images), "classes": len(images.classes),
                           "selection": "all" if len(chosen) == len(images) else
                           f"classes in turn, first {len(chosen)} (data.bundle_val_images)",
                           "sha256": hash_path(dst)}}

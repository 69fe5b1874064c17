"""Run the stages for every model in a spec and write the repository and manifest atomically."""
from __future__ import annotations

import dataclasses
import datetime
import platform
import shutil
from importlib import metadata
from pathlib import Path

from builders.families import describe_reference, factory_code
from builders.pipeline import ModelBuild, build_model
from builders.report import BuildResult
from builders.repository import bundle_val, recover, staging_dir, swap_in, write_target
from builders.stages import BuildContext
from contract import layout, releases
from contract.errors import ToolkitError
from contract.manifest import (FORMAT_VERSION, Manifest, ManifestError, file_names_only, load_manifest, manifest_file,
                               write_manifest)
from contract.spec import BuildSpec


class BuildError(ToolkitError, RuntimeError):
    """A stage failed; the message says which and why. The previous repository is untouched."""


def tool_versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {"python": platform.python_version()}
    for dist in ("torch", "torchvision", "onnx", "onnxruntime", "onnxconverter-common",
                 "nvidia-dali-cuda130", "tritonclient", "nvidia-pytriton", "tensorrt"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = None
    return out


def _plans_for(build: ModelBuild, ctx: BuildContext, release: releases.Release,
               require_plans: bool) -> tuple[dict, str, dict, str | None]:
    """TensorRT plans for the gpu target, or why there are none.

    Without TensorRT or a GPU the plans are skipped (a CPU machine still builds everything
    else), unless `require_plans` (the GPU build in compose): then that is an error, so Triton
    never starts on empty plan folders. A TensorRT other than `release`'s is always an error.
    Returns (precision -> plan file, status line, manifest info, compute capability)."""
    from builders import engine
    from builders.pipeline import PLAN

    # TensorRT's ONNX rules are checked on every machine, before any TensorRT is needed: a variant
    # the parser would reject (or that is not the precision it claims) fails the build here, not
    # later in the GPU container.
    implicit = build.spec.engine.int8_implicit_calibrator
    for precision, variant in build.variants_for("gpu").items():
        source, as_precision = ((build.variants["fp32"].path, "fp32") if precision == "int8" and implicit
                                else (variant.path, precision))
        problems = engine.check_onnx_for_tensorrt(source, as_precision, layout.ENGINE_INPUT)
        if problems:
            raise engine.EngineBuildError(f"{build.spec.name}/{precision}: TensorRT would not take "
                                          f"{source.name}: " + "; ".join(problems))

    ok, reason = engine.tensorrt_available()
    if not ok:
        if require_plans:
            raise engine.EngineUnavailable(f"--require-plans: no TensorRT plans can be built here: {reason}")
        return {}, (f"TensorRT plans not built: {reason}. Plans need TensorRT on a GPU: "
                    "run `docker compose up` on a GPU host (docs/gpu.md)."), {}, None
    import tensorrt

    releases.check_tensorrt(tensorrt.__version__, release)

    gpu = engine.gpu_info() or {}
    cc = gpu.get("compute_capability")
    spec = build.spec
    plans, info = {}, {"tensorrt_version": tensorrt.__version__, "gpu": gpu, "plans": {}}
    for precision, variant in build.variants_for("gpu").items():
        out = PLAN(ctx, label=f"{spec.name}/{precision}", onnx=variant.path, fp32=build.variants["fp32"].path,
                   precision=precision, engine_spec=spec.engine, max_batch=spec.triton.max_batch_size,
                   crop=spec.input.crop, calibration=build.data.calibration, inp=spec.input, calib=spec.calibration,
                   val_tensors=build.preprocessing.val_tensors, tensorrt_version=tensorrt.__version__,
                   compute_capability=cc, timing_cache=str(ctx.cache_dir / "tensorrt-timing.cache"))
        plans[precision] = out.plan
        # The plan's place in the repository; the stage-cache files it came from by name only.
        info["plans"][precision] = {
            **file_names_only(out.info),
            "plan": f"gpu/{layout.engine_model(spec.name, precision)}/1/{out.plan.name}"}
    return plans, f"built {len(plans)} plan(s) with TensorRT {tensorrt.__version__} on {gpu.get('name')}", info, cc


FP16_ON_CPU = ("fp16 is a GPU precision: ONNX Runtime on CPU runs it slower than fp32 (it has few fp16 "
               "CPU kernels and casts around the rest); served on the cpu target for accuracy checks only "
               "(docs/cpu_precision.md)")


def _precision_targets(b: ModelBuild, precision: str) -> dict:
    """target -> evaluation, build time, notes and ONNX hash of the model that target uses."""
    from builders.stages import hash_path

    out = {}
    for target in layout.TARGETS:
        v = b.variants_for(target)[precision]
        notes = "; ".join(n for n in (v.notes, FP16_ON_CPU if (target, precision) == ("cpu", "fp16") else "") if n)
        out[target] = {**dataclasses.asdict(b.evaluation_for(target, precision)), "build_seconds": v.seconds,
                       "notes": notes, "onnx_sha256": hash_path(v.path)}
    return out


def copy_source(b: ModelBuild, staging: Path) -> dict:
    """Copy what rebuilds the user's PyTorch model into `staging/source/`: the state dict (the
    save_pretrained folder for huggingface; the factory's top-level module or package for module).
    Returns the manifest fields that point to them (relative to the output folder)."""
    src, name = b.spec.source, b.spec.name
    (staging / "source").mkdir(exist_ok=True)
    if src.kind == "huggingface":
        shutil.copytree(b.checkpoint, staging / "source" / f"{name}_hf")
        return {"checkpoint": f"source/{name}_hf"}
    shutil.copyfile(b.checkpoint, staging / "source" / f"{name}.pt")
    fields = {"checkpoint": f"source/{name}.pt"}
    code = factory_code(src)
    if code is not None:
        dst = staging / "source" / f"{name}_code"
        dst.mkdir()
        if code.is_dir():
            shutil.copytree(code, dst / code.name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copyfile(code, dst / code.name)
        fields["source_root"] = f"source/{name}_code"
    return fields


def _model_manifest(b: ModelBuild, plan_status: str, plan_info: dict, data: dict | None) -> dict:
    """One model's manifest entry. data: the bundled validation images' record (bundle_val), or
    None when none were bundled. Every path is relative to the output folder: the checkpoint
    is set by the caller once copied; files outside the repository are named by file name."""
    spec = b.spec
    pre = b.preprocessing
    return {
        "labels": b.labels,
        "num_classes": len(b.labels),
        "source": file_names_only(spec.source.model_dump(mode="json")),
        "checkpoint": None,
        "input": spec.input.model_dump(mode="json"),
        "max_batch_size": spec.triton.max_batch_size,
        "ragged_input": spec.triton.ragged_input,
        "data": data or {"val": None, "val_bundle": None},
        "train_seconds": b.train_seconds,
        "export": dataclasses.asdict(b.export_parity) if b.export_parity else None,
        "preprocessing": {
            **pre.parity, "within_tolerance": not pre.parity["outside_tolerance"],
            "policy": "enforce" if pre.enforced else "warn (input.parity or --allow-preprocess-mismatch)",
            "compared": "DALI CPU (the cpu target's dali.py) vs the torchvision transform, per image",
            "reference": describe_reference(b.reference, spec.input),
            "reference_transform": b.reference,
        },
        # Top level: the cpu target's model (what ONNX Runtime serves here); `targets`: each
        # target's own (int8 differs: U8S8 on cpu, S8S8 Q/DQ as the plans' source on gpu).
        "precisions": {p: {**targets["cpu"], "targets": targets}
                       for p, targets in ((p, _precision_targets(b, p)) for p in b.variants)},
        "tensorrt": {"status": plan_status, **plan_info},
        # The PyTorch-backend twin: parity with PyTorch per precision and its Triton model names.
        "torchscript": {"status": b.torchscript_status, "precisions": {
            p: {**{k: v for k, v in dataclasses.asdict(m).items() if k != "path"},
                "ensemble": layout.ensemble_model(spec.name, p, layout.TORCH_BACKEND),
                "engine": layout.engine_model(spec.name, p, layout.TORCH_BACKEND)}
            for p, m in b.torchscript.items()}},
        "models": {
            "preprocess": layout.preprocess_model(spec.name),
            **{p: {"ensemble": layout.ensemble_model(spec.name, p), "engine": layout.engine_model(spec.name, p)}
               for p in b.variants},
        },
    }


def _old_manifest(output: Path) -> tuple[Manifest | None, str]:
    """The previous build's manifest (load_manifest), or None and why it cannot be read ("" when
    there is none)."""
    if not manifest_file(output).is_file():
        return None, ""
    try:
        return load_manifest(output), ""
    except ManifestError as err:
        return None, str(err)


def _carry_over(output: Path, staging: Path, spec: BuildSpec, old: Manifest | None, unreadable: str,
                artifacts: dict, models: dict) -> None:
    """Keep what this build did not touch: a `--target gpu` build keeps the previous cpu/
    repository, a `--model a` build keeps model b, each with its manifest records (`old`: the
    previous manifest; `unreadable`: why it could not be read, when it could not)."""
    built = {m.name for m in spec.models}
    if old is None:
        # Without a manifest nothing can be kept; refuse when the previous repository has more.
        kept = sorted(f"{t.name}/{d.name}" for t in output.glob("*") if t.name in layout.TARGETS and t.is_dir()
                      for d in t.iterdir() if t.name not in spec.targets
                      or not any(d.name.startswith(f"{n}_") for n in built))
        if unreadable and kept:
            raise ValueError(f"the previous repository's {kept[0]} cannot be kept, as its manifest cannot be "
                             f"read ({unreadable}): build every model and target (no --model/--target), or "
                             "delete the folder")
        return
    for path, art in old.artifacts.items():
        if art.target in spec.targets and art.model in built:
            continue
        model_dir = Path(path).parts[:2]  # <target>/<triton model>
        src, dst = output.joinpath(*model_dir), staging.joinpath(*model_dir)
        if src.is_dir() and not dst.exists():
            shutil.copytree(src, dst)
        artifacts.setdefault(path, art.record)
        # The ensembles that call a carried engine model have no artifact of their own.
        if art.precision:
            ens = layout.ensemble_model(art.model, art.precision, art.backend)
            if (output / model_dir[0] / ens).is_dir() and not (staging / model_dir[0] / ens).exists():
                shutil.copytree(output / model_dir[0] / ens, staging / model_dir[0] / ens)
        if art.model not in built and art.model in old.models:
            entry = old.models[art.model]
            models.setdefault(art.model, entry.record)
            for src in (entry.checkpoint, entry.val):
                dst = staging / src.relative_to(output) if src else None
                if dst is not None and not dst.exists():
                    dst.parent.mkdir(parents=True, exist_ok=True)
                    (shutil.copytree if src.is_dir() else shutil.copyfile)(src, dst)


def build(spec: BuildSpec, cache_dir: Path, force: bool = False, quiet: bool = False,
          release: str | None = None, require_plans: bool = False) -> BuildResult:
    """Build every model of `spec` into spec.output, atomically.

    cache_dir: stage cache; force: rerun cached stages; quiet: no progress bars; release: the
    Triton release ("YY.MM", default releases.DEFAULT_RELEASE) the gpu target is built for;
    require_plans: fail instead of skipping TensorRT plans when TensorRT or a GPU is missing.
    """
    from builders.report import progress_factory

    target_release = releases.release(release)

    output = Path(spec.output).resolve()
    recover(output)
    ctx = BuildContext(Path(cache_dir).resolve(), force)
    staging = staging_dir(output)
    try:
        with progress_factory(quiet) as progress:
            ctx.progress = progress
            builds = [build_model(m, ctx) for m in spec.models]
        artifacts: dict[str, dict] = {}
        models_manifest, plan_status = {}, {}
        staging.mkdir(parents=True)
        old, unreadable = _old_manifest(output)
        old_artifacts = old.artifacts if old else {}
        for b in builds:
            plans, status, info, cc = (_plans_for(b, ctx, target_release, require_plans) if "gpu" in spec.targets
                                       else ({}, "gpu target not built", {}, None))
            plan_status[b.spec.name] = status
            for target in spec.targets:
                artifacts.update(write_target(staging, target, b, plans, cc, output, old_artifacts))
            # Clients default to these images: they travel with the repository.
            data = bundle_val(staging, b.spec.name, b.data.val, b.spec.data.bundle_val_images)
            models_manifest[b.spec.name] = _model_manifest(b, status, info, data)
            if b.checkpoint:
                # The PyTorch model travels with the repository so clients can verify against it.
                models_manifest[b.spec.name].update(copy_source(b, staging))
        _carry_over(output, staging, spec, old, unreadable, artifacts, models_manifest)
        manifest = {
            "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "targets": sorted({a["target"] for a in artifacts.values()}),
            "triton_release": {"name": target_release.name, "tensorrt": target_release.tensorrt,
                               "dali_version": target_release.dali_version,
                               "tensorrt_image": target_release.tensorrt_image,
                               "triton_image": target_release.triton_image},
            "tools": tool_versions(),
            "models": models_manifest,
            "artifacts": artifacts,
            "stages": [dataclasses.asdict(r) for r in ctx.records],
        }
        write_manifest(staging, manifest)
        manifest = {"format_version": FORMAT_VERSION, **manifest}
        swap_in(staging, output)
    except (Exception, KeyboardInterrupt) as err:
        shutil.rmtree(staging, ignore_errors=True)
        if isinstance(err, KeyboardInterrupt):
            raise
        raise BuildError(f"{type(err).__name__}: {err}") from err
    return BuildResult(spec, builds, manifest, ctx.records, plan_status)

"""The build stages for one model entry of the spec, in order:

    data -> model -> export -> variant (fp16, int8) -> evaluate (per variant) -> preprocess [-> engine]

Each is a `Stage` with a typed output; `build_model` chains them and returns what the repository
writer and the manifest need.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from builders.datasets import DEMO_LABELS, write_demo_dataset
from builders.stages import BuildContext, Stage, made_by
from contract import layout
from contract.errors import ToolkitError
from contract.images import load_image_folder
from contract.manifest import Measured
from contract.spec import Calibration, Input, ModelSpec, Source, Triton

ProgressFactory = Callable[[str], Callable[[int, int], None]]  # description -> update(done, total)


# --- outputs -----------------------------------------------------------------------------------

@dataclass
class DataSplits:
    train: Path | None
    val: Path
    calibration: Path | None


@dataclass
class TrainedModel:
    checkpoint: Path
    arch: str
    labels: list
    seconds: float


@dataclass
class OnnxModel:
    path: Path
    precision: str
    seconds: float
    notes: str = ""


@dataclass(frozen=True)
class Evaluation(Measured):
    """The evaluate stage's output: the measurement and the reference it was compared with."""

    reference: str = "fp32"
    reference_accuracy: float | None = None


@dataclass
class Preprocessing:
    cpu: Path                      # the cpu variant's pipeline definition (dali.py)
    gpu: Path
    val_tensors: Path              # the CPU pipeline's output on the val images (.npy)
    parity: dict                   # DALI CPU vs the torchvision transform: contract.preprocess.Parity.summary()
    enforced: bool                 # False: input.parity = "warn" let a mismatch through
    images: int


# The reference transform of each family (builders.families), as the parity error names it.
REFERENCE_NAMES = {"torchvision": "the torchvision transform", "timm": "timm's eval transform",
                   "huggingface": "the Hugging Face image processor"}


class PreprocessParityError(ToolkitError, ValueError):
    """DALI's output is outside tolerance of the torchvision transform (input.parity = "enforce")."""


# --- stage functions ---------------------------------------------------------------------------

def _demo_data(workdir: Path, seed: int) -> DataSplits:
    paths = write_demo_dataset(workdir, seed=seed)
    return DataSplits(paths["train"], paths["val"], paths["calibration"])


def _train(workdir: Path, train: Path, inp: Input, source: Source, progress: ProgressFactory) -> TrainedModel:
    import torch

    from builders.models import train_demo

    images = load_image_folder(train)
    start = time.perf_counter()
    bar = progress(f"training {source.arch}")
    model = train_demo(images, inp, source.arch, source.train_epochs, source.seed, progress=bar)
    ckpt = workdir / "model.pt"
    torch.save(model.state_dict(), ckpt)
    return TrainedModel(ckpt, source.arch, list(images.classes), time.perf_counter() - start)


def _export(workdir: Path, checkpoint: Path, source: Source, num_classes: int, crop: int, opset: int,
            factory_code: Path | None = None) -> OnnxModel:
    """checkpoint: the state dict (the save_pretrained folder for huggingface); factory_code: the
    module source's code folder (part of the cache key only)."""
    from builders.export import export_onnx
    from builders.families import load_model

    start = time.perf_counter()
    path = export_onnx(load_model(source, checkpoint, num_classes), crop, workdir / "model.onnx", opset)
    return OnnxModel(path, "fp32", time.perf_counter() - start)


def _fp16(workdir: Path, fp32: Path) -> OnnxModel:
    from builders.precision import to_fp16

    start = time.perf_counter()
    return OnnxModel(to_fp16(fp32, workdir / "model.onnx"), "fp16", time.perf_counter() - start)


def _int8(workdir: Path, fp32: Path, calibration: Path, inp: Input, calib: Calibration,
          calib_cache: str, runtime: str, options: dict, progress: ProgressFactory) -> OnnxModel:
    """runtime: tensorrt (gpu target) or onnxruntime (cpu target); options: cpu_int8_options()."""
    from builders.precision import to_int8

    from builders.models import preprocess_set

    x = preprocess_set(load_image_folder(calibration), inp, limit=calib.max_images)
    start = time.perf_counter()
    path, cache, reused = to_int8(fp32, workdir / "model.onnx", x, calib, Path(calib_cache), runtime,
                                  options.get("quant_format", "qdq"), options.get("reduce_range", False),
                                  progress(f"calibrating int8 ({calib.method}, {len(x)} images)"))
    if runtime == "tensorrt":
        shape = "S8S8 Q/DQ for TensorRT (symmetric, zero points 0, per-channel weights)"
    else:
        shape = (f"U8S8 {options['quant_format'].upper()} for ONNX Runtime (uint8 activations, per-channel int8 "
                 f"weights), reduce_range {'on' if options['reduce_range'] else 'off'} "
                 f"({options['reduce_range_reason']})")
    note = (f"{shape}; {calib.method} calibration on {len(x)} images; cache {cache.name} "
            f"({'reused' if reused else 'new'})")
    return OnnxModel(path, "int8", time.perf_counter() - start, note)


def _preprocessing(workdir: Path, inp: Input, triton: Triton, val: Path, progress: ProgressFactory,
                   reference: dict | None = None, hf_path: Path | None = None) -> Preprocessing:
    """reference: builders.families' record of the reference transform (None: torchvision's);
    hf_path: the save_pretrained folder whose image processor is the reference."""
    from builders.families import reference_preprocess_all
    from contract.images import pack_batch
    from contract.preprocess import CpuPreprocessor, parity, tolerance_for, write_definition

    mbs = triton.max_batch_size
    cpu = write_definition(inp, "cpu", workdir / "cpu" / layout.DALI_DEFINITION, mbs, triton.dali_num_threads)
    gpu = write_definition(inp, "gpu", workdir / "gpu" / layout.DALI_DEFINITION, mbs, triton.dali_gpu_num_threads,
                           hw_decoder_load=triton.hw_decoder_load)
    images = load_image_folder(val)
    encoded = images.encoded()
    pre = CpuPreprocessor(cpu, num_threads=triton.dali_num_threads)
    bar = progress("DALI CPU parity")
    outs = []
    for i in range(0, len(encoded), mbs):
        # Padded like a client's batch: parity then covers the padded-input convention too.
        outs.append(pre(list(pack_batch(encoded[i: i + mbs]))))
        bar(min(i + mbs, len(encoded)), len(encoded))
    dali = np.concatenate(outs)
    ref = reference_preprocess_all(encoded, reference or {"family": "torchvision"}, inp, hf_path)
    names = [str(f.relative_to(images.root)) for f in images.files]
    family = (reference or {}).get("family", "torchvision")
    result = parity(dali, ref, inp.std, names, "cpu", tolerance_for("cpu", inp.interpolation, family))
    if result.failing and inp.parity == "enforce":
        raise PreprocessParityError(
            f"DALI CPU preprocessing differs from {REFERENCE_NAMES[family]} on {len(result.failing)} of "
            f"{len(names)} validation images (tolerance per image, pixel levels: {result.tolerance}); worst: "
            f"{result.worst()}. Check input.resize/crop/resize_mode/mean/std against the training transform; "
            "input.parity = 'warn' or --allow-preprocess-mismatch builds anyway")
    np.save(workdir / "val_tensors.npy", dali)
    return Preprocessing(cpu, gpu, workdir / "val_tensors.npy", result.summary(), inp.parity == "enforce",
                         len(encoded))


def _evaluate(workdir: Path, model: Path, precision: str, fp32: Path, val_tensors: Path, val: Path,
              threads: int) -> Evaluation:
    from runners.compare import accuracy, compare_logits, run_batches
    from runners.onnxruntime_runner import OnnxRuntimeRunner

    x = np.load(val_tensors)
    targets = load_image_folder(val).targets
    with OnnxRuntimeRunner(fp32, threads) as ref:
        ref_logits = run_batches(ref, layout.ENGINE_INPUT, x, layout.ENGINE_OUTPUT)
    try:
        with OnnxRuntimeRunner(model, threads) as runner:
            logits = run_batches(runner, layout.ENGINE_INPUT, x, layout.ENGINE_OUTPUT)
    except Exception as err:  # ONNX Runtime lacks a CPU kernel for this precision
        reason = f"ONNX Runtime on CPU cannot run the {precision} variant: {str(err).splitlines()[0][:300]}"
        return Evaluation(precision, False, reason, reference_accuracy=accuracy(ref_logits, targets))
    cmp = compare_logits(ref_logits, logits, "fp32", precision)
    return Evaluation(precision, True, "", accuracy(logits, targets), cmp.top1_agreement, cmp.max_abs_diff,
                      reference_accuracy=accuracy(ref_logits, targets))


@dataclass
class Plan:
    plan: Path
    info: dict


def _plan(workdir: Path, onnx: Path, fp32: Path, precision: str, engine_spec, max_batch: int, crop: int,
          calibration: Path | None, inp: Input, calib: Calibration, val_tensors: Path, tensorrt_version: str,
          compute_capability: str | None, timing_cache: str) -> Plan:
    # tensorrt_version and compute_capability are inputs only so that they key the cache:
    # a plan runs only on the TensorRT release and GPU architecture it was built with.
    from builders import engine
    from builders.models import preprocess_set

    implicit = precision == "int8" and engine_spec.int8_implicit_calibrator
    plan = workdir / engine.plan_filename(compute_capability, engine_spec.hardware_compatible)
    info = engine.build_plan(
        fp32 if implicit else onnx, plan, precision, engine_spec, max_batch, layout.ENGINE_INPUT,
        (3, crop, crop), Path(timing_cache),
        calib_images=preprocess_set(load_image_folder(calibration), inp, limit=calib.max_images) if implicit else None,
        calib_cache_path=workdir / "calibration.cache" if implicit else None)
    info["validation"] = engine.validate_plan(plan, fp32 if implicit else onnx, np.load(val_tensors),
                                              version_compatible=engine_spec.version_compatible)
    return Plan(plan, info)


# code: the modules (besides this one) whose logic makes each artifact; tools: the distributions
# whose versions do. Both key the stage cache (builders.stages), so an edit or an upgrade rebuilds.
_IMAGES = ("builders.datasets", "contract.images", "contract.preprocess", "builders.models")  # decoding + reference transform
DATA = Stage("demo-data", DataSplits, _demo_data, code=("builders.datasets",),
             tools=("scikit-learn", "pillow", "numpy"))
TRAIN = Stage("train", TrainedModel, _train, code=_IMAGES, tools=("torch", "torchvision", "pillow", "numpy"))
EXPORT = Stage("export", OnnxModel, _export, code=("builders.export", "builders.models", "builders.families"),
               tools=("torch", "torchvision", "onnx", "timm", "transformers"))
FP16 = Stage("fp16", OnnxModel, _fp16, code=("builders.precision",), tools=("onnx", "onnxconverter-common"))
INT8 = Stage("int8", OnnxModel, _int8, version="3", code=("builders.precision", *_IMAGES),
             tools=("onnx", "onnxruntime", "torchvision", "pillow", "numpy"))
PREPROCESS = Stage("preprocess", Preprocessing, _preprocessing, version="2",
                   code=("contract.preprocess", "contract.dali_pipeline", "contract.images", "builders.datasets",
                         "builders.families"),
                   tools=("nvidia-dali-*", "torchvision", "pillow", "numpy", "timm", "transformers"))
EVALUATE = Stage("evaluate", Evaluation, _evaluate, code=("runners.compare", "runners.onnxruntime_runner"),
                 tools=("onnxruntime", "numpy"))
CALIBRATOR = made_by(("builders.precision",), ("onnxruntime", "numpy"))
PLAN = Stage("tensorrt-plan", Plan, _plan, code=("builders.engine", "builders.engine.api", "builders.engine.common", "builders.engine.inspection", "builders.engine.onnx_checks", "builders.engine.trtexec", "builders.engine.validation", "builders.models", "runners.tensorrt_runner", "runners.tensorrt_env"),
             tools=("tensorrt*", "onnx", "onnxruntime"))


# --- chaining ----------------------------------------------------------------------------------

@dataclass
class ExportParity:
    """PyTorch vs ONNX Runtime on the validation images (after DALI preprocessing)."""

    max_abs_diff: float
    top1_agreement: float
    pytorch_accuracy: float


@dataclass
class ModelBuild:
    """Everything the repository writer needs for one spec entry."""

    spec: ModelSpec
    labels: list
    data: DataSplits
    checkpoint: Path | None
    variants: dict = field(default_factory=dict)      # precision -> OnnxModel (gpu target: plans' source)
    evaluations: dict = field(default_factory=dict)   # precision -> Evaluation of `variants`
    # target -> precision -> OnnxModel / Evaluation, where a target serves another file (cpu: U8S8 int8).
    target_variants: dict = field(default_factory=dict)
    target_evaluations: dict = field(default_factory=dict)
    preprocessing: Preprocessing | None = None
    export_parity: ExportParity | None = None
    train_seconds: float | None = None
    torchscript: dict = field(default_factory=dict)   # precision -> builders.torchscript.TorchScriptModel
    torchscript_status: str = ""
    reference: dict = field(default_factory=dict)     # builders.families' record of the reference transform

    def variants_for(self, target: str) -> dict:
        """precision -> the OnnxModel the target serves (cpu) or builds its plans from (gpu)."""
        return {p: self.target_variants.get(target, {}).get(p, v) for p, v in self.variants.items()}

    def evaluation_for(self, target: str, precision: str) -> Evaluation:
        return self.target_evaluations.get(target, {}).get(precision, self.evaluations[precision])


def build_model(spec: ModelSpec, ctx: BuildContext) -> ModelBuild:
    """Run the stages of one spec entry; `input` is first completed from the model's own transform."""
    from builders.families import factory_code, resolve_input

    spec, reference = resolve_input(spec)
    src = spec.source
    name = spec.name
    if src.kind == "demo":
        data = DATA(ctx, label=name, seed=src.seed)
        data = DataSplits(data.train, spec.data.val or data.val, spec.data.calibration or data.calibration)
    else:
        data = DataSplits(spec.data.train, spec.data.val, spec.data.calibration)
    val = load_image_folder(data.val)
    labels = list(spec.labels or val.classes)

    checkpoint, train_seconds = None, None
    if src.kind == "demo":
        trained = TRAIN(ctx, label=name, train=data.train, inp=spec.input, source=src)
        checkpoint, train_seconds = trained.checkpoint, trained.seconds
        labels = list(spec.labels or DEMO_LABELS)
    elif src.kind == "huggingface":
        checkpoint = src.path
    elif src.pytorch:
        checkpoint = src.checkpoint
    if len(labels) != len(val.classes):
        raise ValueError(f"{name}: {len(labels)} labels but the validation folder {data.val} has "
                         f"{len(val.classes)} classes")

    if checkpoint is not None:
        fp32 = EXPORT(ctx, label=name, checkpoint=checkpoint, source=src, num_classes=len(labels),
                      crop=spec.input.crop, opset=spec.opset, factory_code=factory_code(src))
    else:
        from builders.export import check_onnx_interface

        crop, classes = check_onnx_interface(src.onnx)
        if crop != spec.input.crop or classes != len(labels):
            raise ValueError(f"{src.onnx}: input {crop}x{crop} and {classes} outputs do not match "
                             f"input.crop = {spec.input.crop} and {len(labels)} labels")
        fp32 = OnnxModel(src.onnx, "fp32", 0.0, "user-supplied ONNX")

    out = ModelBuild(spec, labels, data, checkpoint, train_seconds=train_seconds, reference=reference)
    out.variants["fp32"] = fp32
    if "fp16" in spec.precisions:
        out.variants["fp16"] = FP16(ctx, label=name, fp32=fp32.path)
    if "int8" in spec.precisions:
        from builders.precision import cpu_int8_options

        # Both shapes quantize from one calibration: the second finds the first's ranges in the cache.
        common = dict(fp32=fp32.path, calibration=data.calibration, inp=spec.input, calib=spec.calibration,
                      # By location, not content: its files are keyed by content themselves, and
                      # hashing it would make each new entry a miss. One folder per calibrator
                      # code and version: ranges made by another one are not reused.
                      calib_cache=str(ctx.cache_dir / "calibration" / CALIBRATOR))
        out.variants["int8"] = INT8(ctx, label=f"{name}/tensorrt", runtime="tensorrt", options={}, **common)
        cpu_calib = spec.calibration
        if cpu_calib.cpu_method:
            cpu_calib = cpu_calib.model_copy(update={"method": cpu_calib.cpu_method})
        out.target_variants["cpu"] = {"int8": INT8(ctx, label=f"{name}/onnxruntime", runtime="onnxruntime",
                                                   options=cpu_int8_options(spec.calibration),
                                                   **(common | {"calib": cpu_calib}))}
    family = {} if reference.get("family", "torchvision") == "torchvision" else \
        {"reference": reference, "hf_path": src.path if src.kind == "huggingface" else None}
    out.preprocessing = PREPROCESS(ctx, label=name, inp=spec.input, triton=spec.triton, val=data.val, **family)

    def evaluate(variant: OnnxModel, precision: str, label: str) -> Evaluation:
        return EVALUATE(ctx, label=label, model=variant.path, precision=precision, fp32=fp32.path,
                        val_tensors=out.preprocessing.val_tensors, val=data.val,
                        threads=spec.triton.onnx_intra_op_threads)

    for precision, variant in out.variants.items():
        out.evaluations[precision] = evaluate(variant, precision, f"{name}/{precision}")
    for target, variants in out.target_variants.items():
        out.target_evaluations[target] = {p: evaluate(v, p, f"{name}/{p}-{target}") for p, v in variants.items()}
    if checkpoint is not None:
        out.export_parity = _export_parity(spec, checkpoint, len(labels), fp32.path, out.preprocessing, data.val)
    from builders.torchscript import build_twin

    out.torchscript, out.torchscript_status = build_twin(spec, checkpoint, len(labels),
                                                         out.preprocessing.val_tensors, data.val, ctx)
    return out


def _export_parity(spec: ModelSpec, checkpoint: Path, num_classes: int, onnx_path: Path,
                   pre: Preprocessing, val: Path) -> ExportParity:
    from builders.families import load_model
    from runners.compare import accuracy, compare_runners
    from runners.onnxruntime_runner import OnnxRuntimeRunner
    from runners.torch_runner import TorchRunner

    x = np.load(pre.val_tensors)
    model = load_model(spec.source, checkpoint, num_classes)
    outputs, (cmp,) = compare_runners([TorchRunner(model), OnnxRuntimeRunner(onnx_path)],
                                      layout.ENGINE_INPUT, x, layout.ENGINE_OUTPUT)
    return ExportParity(cmp.max_abs_diff, cmp.top1_agreement,
                        accuracy(outputs["pytorch"], load_image_folder(val).targets))

"""The declarative build spec (TOML), validated with pydantic.

A spec names one or more models. Each model says where its weights come from, which image
folders calibrate and validate it, how images are preprocessed, which precisions to build and
how Triton should batch and place it. Every field has a default that suits the built-in demo,
so a spec only states what differs.

Errors name the field (as a dotted path), the value given and what is allowed; loading a bad
spec raises :class:`SpecError` before anything is written.
"""
from __future__ import annotations

import math
import tomllib
from pathlib import Path
from typing import Literal

from pydantic import Field, ValidationError, field_validator, model_validator

from contract.errors import USAGE, ToolkitError
from contract.layout import PRECISIONS, TARGETS, Precision, Target
from contract.spec_errors import format_errors
from contract.spec_source import LOCAL_ARCHS, Source, Strict as _Strict

__all__ = ["LOCAL_ARCHS", "Source"]

class SpecError(ToolkitError, ValueError):
    """The spec file is missing, is not TOML, or holds a field with a value that is not allowed."""

    exit_code = USAGE


class Data(_Strict):
    """Image folders in the ImageFolder layout (one sub-folder per class, named by label).

    Leave them empty for the demo: the build writes the digits there as JPEG files.
    """

    train: Path | None = None
    val: Path | None = None
    calibration: Path | None = None
    bundle_val_images: int = Field(512, ge=0, le=1_000_000)
    """Validation images copied into the repository (`<output>/data/<name>/val/`), so verify,
    bench and the load tests work from the repository alone: all of them up to this many, else
    an even sample across classes; 0 bundles none (clients then need --data/--images)."""


class Input(_Strict):
    """Preprocessing: decode -> resize -> center crop -> normalize -> CHW float, exactly
    torchvision's eval transform (the reference the DALI pipeline is checked against):
    `Resize(resize, interpolation)` (or `Resize((resize, resize))`), `CenterCrop(crop)`, `ToTensor()`,
    `Normalize(mean, std)` on the RGB image.

    Omitted for a timm or huggingface source, it is the model's own eval transform (timm's
    resolve_data_config, the image processor's config); the fields written here override it."""

    resize: int = Field(36, ge=1, le=4096)
    """Shorter side after resize, in pixels (resize_mode "shorter"), or both sides ("square")."""
    resize_mode: Literal["shorter", "square"] = "shorter"
    """"shorter": torchvision `Resize(resize)`, the longer side keeps the aspect ratio (truncated to
    an integer, as torchvision does); "square": `Resize((resize, resize))`, aspect ratio not kept."""
    crop: int = Field(32, ge=1, le=4096)
    """Side of the square center crop fed to the network; the network's input is crop x crop."""
    interpolation: Literal["bilinear", "bicubic"] = "bilinear"
    """Resize filter, antialiased when downscaling (PIL's, as torchvision and timm use on PIL images)."""
    crop_pct: float | None = Field(None, gt=0, le=1)
    """timm's crop fraction: resize = floor(crop / crop_pct) (e.g. 224 / 0.875 -> 256) when resize
    is not given; a resize that disagrees with it is an error."""
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    """Per-channel mean (RGB) in [0, 1] units."""
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)
    """Per-channel standard deviation (RGB) in [0, 1] units."""
    parity: Literal["enforce", "warn"] = "enforce"
    """"enforce": the build fails (nothing swapped in) when DALI's output is outside tolerance of
    the torchvision transform on any validation image; "warn": it reports and goes on (recorded
    in the manifest). `build_all.py --allow-preprocess-mismatch` sets "warn"."""

    @field_validator("std")
    @classmethod
    def _positive_std(cls, v: tuple[float, float, float]) -> tuple[float, float, float]:
        if min(v) <= 0:
            raise ValueError(f"every std must be > 0, got {list(v)}")
        return v

    @model_validator(mode="before")
    @classmethod
    def _resize_from_crop_pct(cls, data):
        # timm: scale_size = floor(img_size / crop_pct); resize follows crop_pct unless it is given.
        if isinstance(data, dict) and isinstance(data.get("crop_pct"), (int, float)) and data["crop_pct"] > 0 \
                and isinstance(data.get("crop"), int):
            derived = math.floor(data["crop"] / data["crop_pct"])
            if "resize" not in data:
                data = {**data, "resize": derived}
            elif data["resize"] != derived:
                raise ValueError(f"input.resize = {data['resize']} disagrees with input.crop / input.crop_pct = "
                                 f"{data['crop']} / {data['crop_pct']} -> {derived}; give one of them")
        return data

    @model_validator(mode="after")
    def _crop_fits(self) -> "Input":
        # A crop written without a resize may be completed by the model's own transform (timm,
        # huggingface): ModelSpec checks the rest.
        completed_later = "crop" in self.model_fields_set and "resize" not in self.model_fields_set
        if self.crop > self.resize and not completed_later:
            raise ValueError(f"input.crop = {self.crop} is larger than input.resize = {self.resize}; "
                             "allowed: crop <= resize")
        return self


class Calibration(_Strict):
    """INT8 post-training quantization: one calibration, two shapes (builders/precision.py).

    The gpu target's plans come from symmetric S8S8 Q/DQ (zero points 0, per-channel weights);
    the cpu target serves U8S8 (uint8 activations, per-channel int8 weights) for ONNX Runtime.
    """

    method: Literal["entropy", "max", "percentile"] = "entropy"
    max_images: int = Field(1000, ge=1, le=100_000)
    """Images taken from the calibration split (the lecture's ~1000 by default)."""
    percentile: float = Field(99.999, gt=90, le=100)
    """Used by method 'percentile' only."""
    cpu_method: Literal["entropy", "max", "percentile"] | None = None
    """cpu target: its own calibration method; unset: `method`, and one calibration serves both
    targets. uint8 activations have twice the steps of int8 ones on the positive side, so
    entropy's clipping can cost more than it saves there (the demo: build.toml)."""
    cpu_format: Literal["qdq", "qoperator"] = "qdq"
    """cpu target: Q/DQ nodes around float ops (ONNX Runtime's preferred form) or QLinearConv-style
    QOperator nodes."""
    cpu_reduce_range: bool | Literal["auto"] = "auto"
    """cpu target: 7-bit weights, which avoid integer saturation on x86 CPUs without VNNI. `auto`:
    on when the build machine is an x86 CPU without VNNI (build where you serve, or set it)."""


def default_preferred_batch_sizes(max_batch_size: int) -> tuple[int, ...]:
    """A quarter, a half and all of max_batch_size (64 -> 16, 32, 64; 8 -> 2, 4, 8)."""
    return tuple(sorted({max(1, max_batch_size // 4), max(1, max_batch_size // 2), max_batch_size}))


def default_opt_batch(max_batch_size: int) -> int:
    """Half of max_batch_size (64 -> 32)."""
    return max(1, max_batch_size // 2)


class Triton(_Strict):
    """How Triton batches and places the models of this entry."""

    max_batch_size: int = Field(64, ge=1, le=4096)
    preferred_batch_sizes: tuple[int, ...] = (16, 32, 64)
    """Unset: a quarter, a half and all of max_batch_size (the default 64 gives 16, 32, 64)."""
    max_queue_delay_us: int = Field(500, ge=0, le=10_000_000)
    ragged_input: bool = True
    """True: requests with encoded images of different lengths batch together (allow_ragged_batch
    on the DALI input); images inside one request are always zero-padded to the longest."""
    cpu_instances: int = Field(1, ge=1, le=64)
    gpu_instances: int = Field(3, ge=1, le=64)
    """gpu target: instances of each model. Served ResNet-50 fp16 ensemble on an H200 (DALI's
    dynamic executor, local server under MPS): 3 instances 9,824 img/s, 2 instances 8,576
    (docs/gpu_ensemble.md)."""
    dali_num_threads: int = Field(2, ge=1, le=256)
    """cpu target: DALI worker threads per pipeline (the DALI backend's num_threads parameter)."""
    dali_gpu_num_threads: int = Field(4, ge=1, le=256)
    """gpu target: DALI CPU threads per pipeline; 4 leave room for JPEGs the hardware decoder
    cannot take (an earlier H200 sweep, simple executor: raw results in docs/gpu_preprocess/)."""
    onnx_intra_op_threads: int = Field(0, ge=0, le=256)
    """ONNX Runtime intra-op threads; 0 lets ONNX Runtime choose."""
    hw_decoder_load: float = Field(1.0, ge=0.0, le=1.0)
    """gpu target: share of JPEG decoding given to the hardware decoder (A100/H100 and newer);
    1.0 was fastest in every cell of an earlier H200 sweep (simple executor; raw results in
    docs/gpu_preprocess/). DALI's own default is 0.65: rerun benchmarks/preprocess_bench.py or
    benchmarks/gpu_bounds.py on other GPUs."""

    max_image_pixels: int = Field(50_000_000, ge=0)
    """Pixel budget per image (width x height from the header, checked before decoding; 0 = no
    limit): a 600-byte JPEG can declare 20000x20000 and make a decoder allocate gigabytes. 50 MP
    admits 8000x6000 camera images. Written into the DALI model's config as a parameter."""
    max_request_pixels: int = Field(512_000_000, ge=0)
    """Pixel budget per request, all images together, and per decoded batch: the local server's DALI
    stand-in never decodes more pixels in one pipeline run, however dynamic batching merged the
    requests (0 = no limit); 512 MP is 64 images of 8 MP."""

    @model_validator(mode="before")
    @classmethod
    def _preferred_follow_max(cls, data):
        # A spec that sets only max_batch_size gets preferred sizes that fit it.
        if isinstance(data, dict) and "preferred_batch_sizes" not in data \
                and isinstance(data.get("max_batch_size"), int) and data["max_batch_size"] >= 1:
            data = {**data, "preferred_batch_sizes": default_preferred_batch_sizes(data["max_batch_size"])}
        return data

    @model_validator(mode="after")
    def _preferred_fit(self) -> "Triton":
        too_big = [b for b in self.preferred_batch_sizes if b < 1 or b > self.max_batch_size]
        if too_big:
            raise ValueError(f"triton.preferred_batch_sizes {too_big} must lie in 1..max_batch_size "
                             f"({self.max_batch_size})")
        return self


class Engine(_Strict):
    """TensorRT plans (gpu target): one optimization profile per plan."""

    opt_batch: int = Field(32, ge=1)
    """The batch size users serve most; TensorRT tunes kernels for it. Unset: half of
    triton.max_batch_size (the default 64 gives 32)."""
    min_batch: int = 1
    """Smallest batch of the optimization profile. Must be 1: Triton's TensorRT backend rejects
    any request batch below the profile minimum, and the server's warm-up and single-image
    requests are batch 1."""
    workspace_mib: int = Field(2048, ge=16)
    builder: Literal["python", "trtexec"] = "python"
    version_compatible: bool = False
    hardware_compatible: bool = False
    int8_implicit_calibrator: bool = False
    """TensorRT 10 only: calibrate with IInt8EntropyCalibrator2 instead of the Q/DQ ONNX."""

    @field_validator("min_batch")
    @classmethod
    def _served_from_batch_one(cls, value: int) -> int:
        if value != 1:
            raise ValueError(f"min_batch = {value}: served plans need 1 (Triton rejects requests, "
                             "including its batch-1 warm-up, below the profile's minimum batch)")
        return value


class ModelSpec(_Strict):
    name: str = Field("digits", pattern=r"^[A-Za-z][A-Za-z0-9_\-]{0,62}$")
    """Prefix of every Triton model this entry produces (letters, digits, _ and -)."""
    source: Source = Source()
    data: Data = Data()
    input: Input = Input()
    precisions: tuple[Precision, ...] = PRECISIONS
    calibration: Calibration = Calibration()
    triton: Triton = Triton()
    engine: Engine = Engine()
    opset: int = Field(17, ge=17, le=23)
    labels: tuple[str, ...] | None = None
    """Class labels in output order; by default the class folder names, sorted."""
    torchscript: bool = True
    """Also build the PyTorch-backend twin: per precision fp32/fp16 a TorchScript model.pt
    (`<name>_<precision>_torch_infer`, platform pytorch_libtorch) and a DALI -> TorchScript ensemble
    `<name>_<precision>_torch`, in every target. Needs a PyTorch source (every kind but onnx);
    left at its default, an onnx source simply has no twin."""

    @model_validator(mode="before")
    @classmethod
    def _opt_batch_follows_max(cls, data):
        # A spec that sets only triton.max_batch_size gets an engine.opt_batch that fits it.
        if not isinstance(data, dict):
            return data
        triton, engine = data.get("triton"), data.get("engine")
        mbs = triton.max_batch_size if isinstance(triton, Triton) else \
            triton.get("max_batch_size") if isinstance(triton, dict) else None
        if not isinstance(mbs, int) or mbs < 1:
            return data
        engine = {} if engine is None else engine
        if isinstance(engine, dict) and "opt_batch" not in engine:
            data = {**data, "engine": {**engine, "opt_batch": default_opt_batch(mbs)}}
        elif isinstance(engine, Engine) and "opt_batch" not in engine.model_fields_set:
            data = {**data, "engine": engine.model_copy(update={"opt_batch": default_opt_batch(mbs)})}
        return data

    @model_validator(mode="after")
    def _consistent(self) -> "ModelSpec":
        if "fp32" not in self.precisions:
            raise ValueError(f"precisions = {list(self.precisions)} must include 'fp32' "
                             "(the reference every other precision is compared with)")
        if len(set(self.precisions)) != len(self.precisions):
            raise ValueError(f"precisions = {list(self.precisions)} lists a precision twice")
        if self.source.kind != "demo":
            missing = [k for k in ("val", "calibration") if getattr(self.data, k) is None]
            if "int8" not in self.precisions and "calibration" in missing:
                missing.remove("calibration")
            if missing:
                raise ValueError(f"data.{missing[0]} is needed for source.kind = "
                                 f"{self.source.kind!r} (an ImageFolder directory)")
        if self.torchscript and self.source.kind == "onnx" and "torchscript" in self.model_fields_set:
            raise ValueError("torchscript = true needs a PyTorch model, but source.kind = 'onnx' has none; "
                             "set torchscript = false or use a PyTorch source (torchvision, timm, module, huggingface)")
        if self.input.crop > self.input.resize and not self.source.has_own_transform:
            raise ValueError(f"input.crop = {self.input.crop} is larger than input.resize = {self.input.resize}; "
                             "allowed: crop <= resize")
        mbs = self.triton.max_batch_size
        if not (self.engine.min_batch <= self.engine.opt_batch <= mbs):
            raise ValueError(f"engine.min_batch ({self.engine.min_batch}) <= engine.opt_batch "
                             f"({self.engine.opt_batch}) <= triton.max_batch_size ({mbs}) must hold")
        return self


class BuildSpec(_Strict):
    output: Path = Path("model_repository")
    """Folder that receives the repository (one sub-folder per target) and manifest.json."""
    targets: tuple[Target, ...] = TARGETS
    models: tuple[ModelSpec, ...] = (ModelSpec(),)

    @model_validator(mode="after")
    def _unique_names(self) -> "BuildSpec":
        names = [m.name for m in self.models]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"models[].name must be unique; repeated: {dupes}")
        if not self.models:
            raise ValueError("models must list at least one model")
        return self


def parse_spec(data: dict, origin: Path = Path("<spec>")) -> BuildSpec:
    """Validate an already-parsed spec dictionary; paths stay as written."""
    try:
        return BuildSpec.model_validate(data)
    except ValidationError as err:
        raise SpecError(format_errors(err, origin, BuildSpec)) from None


def load_spec(path: Path) -> BuildSpec:
    """Read and validate a TOML spec. Relative paths inside it are taken from the spec's folder."""
    path = Path(path)
    try:
        raw = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise SpecError(f"{path}: spec file not found") from None
    except tomllib.TOMLDecodeError as err:
        raise SpecError(f"{path}: not valid TOML: {err}") from None
    spec = _resolve_paths(parse_spec(raw, path), path.resolve().parent)
    _check_source_files(spec, raw, path)
    return spec


def _check_source_files(spec: BuildSpec, raw: dict, path: Path) -> None:
    """A missing checkpoint, ONNX file or Hugging Face folder is a spec error, found before anything is built."""
    needed = {("torchvision", "checkpoint"), ("timm", "checkpoint"), ("module", "checkpoint"),
              ("onnx", "onnx"), ("huggingface", "path")}
    for i, m in enumerate(spec.models):
        for field in ("checkpoint", "onnx", "path"):
            file = getattr(m.source, field)
            if (m.source.kind, field) not in needed or file is None:
                continue
            ok = file.is_dir() and (file / "config.json").is_file() if field == "path" else file.is_file()
            if not ok:
                written = raw["models"][i]["source"][field]
                where = "" if Path(written).is_absolute() else " (relative paths are taken from the spec's folder)"
                what = "no save_pretrained folder (with config.json) at" if field == "path" else "no such file"
                raise SpecError(f"{path}: models.{i}.source.{field} = {written!r} (model {m.name!r}): "
                                f"{what} {file}{where}")


def _resolve_paths(spec: BuildSpec, base: Path) -> BuildSpec:
    def fix(p: Path | None) -> Path | None:
        return None if p is None else (p if p.is_absolute() else (base / p))

    models = []
    for m in spec.models:
        root = (fix(m.source.root) or base) if m.source.kind == "module" else m.source.root
        src = m.source.model_copy(update={"checkpoint": fix(m.source.checkpoint), "onnx": fix(m.source.onnx),
                                          "path": fix(m.source.path), "root": root})
        data = m.data.model_copy(update={"train": fix(m.data.train), "val": fix(m.data.val),
                                         "calibration": fix(m.data.calibration)})
        models.append(m.model_copy(update={"source": src, "data": data}))
    return spec.model_copy(update={"output": fix(spec.output), "models": tuple(models)})

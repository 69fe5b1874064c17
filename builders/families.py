"""Model families: load the user's PyTorch classifier as it was trained, and its own eval transform.

    torchvision / demo   torchvision.models (or LOCAL_ARCHS) + state dict; reference: torchvision's transform
    timm                 timm.create_model(arch, pretrained=False) + state dict; reference: timm's
                         resolve_data_config + create_transform
    module               your `factory()` + state dict; reference: torchvision's transform of `input`
    huggingface          a local save_pretrained folder; reference: its image processor

The reference is the family's own transform when the spec omits `input`; written fields make the
reference torchvision's transform of the resulting `input` (what the user asked for instead).
Nothing here downloads: timm's pretrained=False, transformers' local_files_only=True.
"""
from __future__ import annotations

import importlib
import importlib.machinery
import importlib.util
import math
import sys
from pathlib import Path

import numpy as np
import torch

from contract.spec import Input, ModelSpec, Source

TORCHVISION = "torchvision"


class LogitsOnly(torch.nn.Module):
    """A Hugging Face `*ForImageClassification` as f(pixel_values) -> logits tensor.

    Tracing (TorchScript) and ONNX export need a tensor out, not a ModelOutput; the input is
    passed by the keyword the model expects (`pixel_values`)."""

    def __init__(self, inner: torch.nn.Module):
        super().__init__()
        self.inner = inner

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner(pixel_values=x, return_dict=False)[0]


def factory_code(source: Source) -> Path | None:
    """The module source's code: the factory's top-level package folder or module file under
    source.root (None for other kinds, or when it is installed elsewhere). Part of the export and
    TorchScript stages' keys, so an edit of the user's module rebuilds them; copied into the repository."""
    if source.kind != "module" or source.root is None:
        return None
    top = source.factory.split(":")[0].split(".")[0]
    for candidate in (source.root / top, source.root / f"{top}.py"):
        if candidate.exists():
            return candidate
    return None


def import_factory(factory: str, root: Path | None):
    """The callable `package.module:function` names; its top-level package or module is looked up
    in `root` first (the spec's folder), without touching sys.path, so the user's code is found
    next to the spec and nothing else's import path changes."""
    module_name, _, attr = factory.partition(":")
    top = module_name.split(".")[0]
    try:
        if root is not None and top not in sys.modules:
            spec = importlib.machinery.PathFinder.find_spec(top, [str(root)])
            if spec is not None and spec.loader is not None:
                module = importlib.util.module_from_spec(spec)
                sys.modules[top] = module
                try:
                    spec.loader.exec_module(module)
                except BaseException:
                    sys.modules.pop(top, None)
                    raise
        module = importlib.import_module(module_name)
    except ImportError as err:
        raise ValueError(f"source.factory = {factory!r}: cannot import {module_name!r} from {root} ({err})") from None
    fn = getattr(module, attr, None)
    if not callable(fn):
        raise ValueError(f"source.factory = {factory!r}: {module_name} has no callable {attr!r}")
    return fn


def _load_state(model: torch.nn.Module, checkpoint: Path, what: str, num_classes: int) -> torch.nn.Module:
    """`model` with the state dict in `checkpoint` (weights_only=True); what: the model in words."""
    from builders.checkpoints import load_state

    return load_state(model, checkpoint, what, what, num_classes)


def load_huggingface(path: Path, num_classes: int) -> torch.nn.Module:
    """The save_pretrained folder's classifier (eager attention: exportable), wrapped to return logits."""
    from transformers import AutoModelForImageClassification

    model = AutoModelForImageClassification.from_pretrained(str(path), local_files_only=True,
                                                            attn_implementation="eager")
    if model.config.num_labels != num_classes:
        raise ValueError(f"source.path {path}: the model has {model.config.num_labels} labels "
                         f"(config.json num_labels) but the data has {num_classes} classes")
    return LogitsOnly(model).eval()


def load_model(source: Source, weights: Path, num_classes: int) -> torch.nn.Module:
    """The user's classifier in eval mode. weights: the state dict (the save_pretrained folder for
    huggingface); num_classes: the class head's size."""
    if source.kind in ("demo", TORCHVISION):
        from builders.models import load_checkpoint

        return load_checkpoint(source.arch, weights, num_classes)
    if source.kind == "timm":
        import timm

        return _load_state(timm.create_model(source.arch, pretrained=False, num_classes=num_classes), weights,
                           f"timm {source.arch!r} with {num_classes} classes", num_classes)
    if source.kind == "module":
        model = import_factory(source.factory, source.root)()
        if not isinstance(model, torch.nn.Module):
            raise ValueError(f"source.factory = {source.factory!r} returned {type(model).__name__}, not an nn.Module")
        return _load_state(model, weights, f"the module {source.factory!r} returns", num_classes)
    if source.kind == "huggingface":
        return load_huggingface(weights, num_classes)
    raise ValueError(f"source.kind = {source.kind!r} has no PyTorch model")


# --- the family's own transform ---------------------------------------------------------------

def timm_data_config(arch: str) -> dict:
    """timm's resolve_data_config for `arch` (its pretrained_cfg; no weights are made or loaded)."""
    import timm
    from timm.data import resolve_data_config

    with torch.device("meta"):
        model = timm.create_model(arch, pretrained=False, num_classes=1)
    cfg = resolve_data_config({}, model=model)
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in cfg.items()}


def processor_config(path: Path) -> dict:
    """The Hugging Face image processor's settings (preprocessor_config.json, read by transformers)."""
    from transformers import AutoImageProcessor

    return AutoImageProcessor.from_pretrained(str(path), local_files_only=True).to_dict()


def _interpolation(name: str, where: str) -> str:
    if name not in ("bilinear", "bicubic"):
        raise ValueError(f"{where}: interpolation {name!r} has no DALI equivalent here; "
                         "set input.interpolation to 'bilinear' or 'bicubic' (and train with it)")
    return name


def family_input(kind: str, config: dict) -> dict:
    """The Input fields of a family's transform config (timm data config or HF processor dict)."""
    if kind == "timm":
        crop = int(config["input_size"][-1])
        mode = {"center": "shorter", "squash": "square"}.get(config.get("crop_mode", "center"))
        if mode is None or config["input_size"][-1] != config["input_size"][-2]:
            raise ValueError(f"timm crop_mode {config.get('crop_mode')!r} / input_size {config['input_size']}: "
                             "only square inputs with crop_mode center or squash are served; set input explicitly")
        return {"resize": math.floor(crop / config["crop_pct"]), "resize_mode": mode, "crop": crop,
                "crop_pct": config["crop_pct"], "interpolation": _interpolation(config["interpolation"], "timm"),
                "mean": tuple(config["mean"]), "std": tuple(config["std"])}
    size = config.get("size") or {}
    resample = {2: "bilinear", 3: "bicubic"}.get(int(config.get("resample", 2)), str(config.get("resample")))
    fields = {"interpolation": _interpolation(resample, "preprocessor_config.json resample"),
              "mean": tuple(config.get("image_mean", (0.5,) * 3)), "std": tuple(config.get("image_std", (0.5,) * 3))}
    if "height" in size and size["height"] == size.get("width"):
        side = int(size["height"])
        crop = config.get("crop_size", {}).get("height", side) if config.get("do_center_crop") else side
        return {**fields, "resize": side, "resize_mode": "square", "crop": int(crop)}
    if "shortest_edge" in size:
        side = int(size["shortest_edge"])
        crop = config.get("crop_size", {}).get("height", side) if config.get("do_center_crop") else side
        return {**fields, "resize": side, "resize_mode": "shorter", "crop": int(crop)}
    raise ValueError(f"preprocessor_config.json size {size}: only a square size or shortest_edge is served; "
                     "set input explicitly")


def transform_config(source: Source) -> dict | None:
    """The family's own transform config (JSON), or None for families without one."""
    if source.kind == "timm":
        return timm_data_config(source.arch)
    if source.kind == "huggingface":
        return {k: v for k, v in processor_config(source.path).items() if isinstance(v, (int, float, str, list, dict,
                                                                                          tuple, bool, type(None)))}
    return None


def resolve_input(spec: ModelSpec) -> tuple[ModelSpec, dict]:
    """The entry with `input` taken from the model's own transform where the spec omits it, and the
    reference record: {"family": timm | huggingface | torchvision, "config": the family's config}."""
    if not spec.source.has_own_transform:
        return spec, {"family": TORCHVISION}
    config = transform_config(spec.source)
    given = spec.input.model_dump(include=spec.input.model_fields_set) if "input" in spec.model_fields_set else {}
    if given:
        # Written fields override; the reference is then torchvision's transform of the result.
        fields = {**family_input(spec.source.kind, config), **given}
        if "resize" in given and "crop_pct" not in given:
            fields.pop("crop_pct", None)
        elif "crop_pct" in fields and "resize" not in given:
            fields.pop("resize")    # follows crop / crop_pct
        return spec.model_copy(update={"input": Input(**fields)}), {"family": TORCHVISION}
    inp = Input(**family_input(spec.source.kind, config))
    return spec.model_copy(update={"input": inp}), {"family": spec.source.kind, "config": config}


def reference_callable(record: dict, inp: Input, hf_path: Path | None = None):
    """f(PIL RGB image) -> [3, crop, crop] float32: the reference transform `record` names.
    hf_path: the save_pretrained folder whose processor is the reference (family huggingface)."""
    family = record.get("family", TORCHVISION)
    if family == "timm":
        from timm.data import create_transform

        cfg = record["config"]
        t = create_transform(**{**cfg, "input_size": tuple(cfg["input_size"]), "mean": tuple(cfg["mean"]),
                                "std": tuple(cfg["std"])})
        return lambda img: t(img).numpy()
    if family == "huggingface":
        from transformers import AutoImageProcessor

        proc = AutoImageProcessor.from_pretrained(str(hf_path), local_files_only=True)
        return lambda img: np.asarray(proc(images=img, return_tensors="np")["pixel_values"][0], np.float32)
    from contract.preprocess import reference_transform

    t = reference_transform(inp)
    return lambda img: t(img).numpy()


def describe_reference(record: dict, inp: Input) -> str:
    """The reference transform in words, for the manifest and reports."""
    from contract.preprocess import describe_transform

    family = record.get("family", TORCHVISION)
    if family == "timm":
        return f"timm create_transform(resolve_data_config(model)) = {describe_transform(inp)}"
    if family == "huggingface":
        return f"the Hugging Face image processor (preprocessor_config.json), ~ {describe_transform(inp)}"
    return describe_transform(inp)


def reference_preprocess_all(encoded: list[bytes], record: dict, inp: Input, hf_path: Path | None = None) -> np.ndarray:
    """[N, 3, crop, crop]: the reference transform on each decoded image (PIL, RGB, as ImageFolder loads)."""
    import io

    from PIL import Image

    f = reference_callable(record, inp, hf_path)
    return np.stack([f(Image.open(io.BytesIO(e)).convert("RGB")) for e in encoded]).astype(np.float32)

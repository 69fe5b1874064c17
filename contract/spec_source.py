"""The spec's `source` section: where the trained classifier comes from (contract.spec)."""
from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from contract.spec_errors import did_you_mean

# Architectures the toolkit defines itself (builders/models.py), beside torchvision's: `tiny_cnn`,
# two convolutions and a linear head, builds in seconds (serving.minirepo, tests).
LOCAL_ARCHS = ("tiny_cnn",)


class Strict(BaseModel):
    """A spec section: unknown keys are errors (a typo must not silently fall back to a default)."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class Source(Strict):
    """Where the trained classifier comes from."""

    kind: Literal["demo", "torchvision", "timm", "module", "huggingface", "onnx"] = "demo"
    """`demo`: train the built-in MobileNetV3-small on scikit-learn's digits at build time;
    `torchvision`: an architecture from torchvision.models plus a checkpoint (state dict);
    `timm`: `timm.create_model(arch, pretrained=False, num_classes=...)` plus a checkpoint;
    `module`: `factory()` (your own nn.Module) plus a checkpoint;
    `huggingface`: a local `save_pretrained` folder of a `*ForImageClassification` model (no hub access);
    `onnx`: an existing ONNX file with a dynamic batch axis."""
    arch: str = "mobilenet_v3_small"
    """torchvision.models builder name, e.g. resnet18, or one of LOCAL_ARCHS (kinds demo and
    torchvision); a timm model name, e.g. efficientnet_b0 (kind timm)."""
    checkpoint: Path | None = None
    """State dict saved with torch.save, loaded with weights_only=True (kinds torchvision, timm, module)."""
    factory: str | None = Field(None, pattern=r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")
    """`package.module:callable` returning the untrained nn.Module; called with no arguments (kind module)."""
    root: Path | None = None
    """Folder the factory's module is imported from (kind module); default: the spec's folder."""
    path: Path | None = None
    """The Hugging Face `save_pretrained` folder: config.json, weights, preprocessor_config.json (kind huggingface)."""
    onnx: Path | None = None
    """The ONNX file (kind onnx)."""
    train_epochs: int = Field(30, ge=1, le=500)
    """Epochs for the built-in demo's training (kind demo)."""
    seed: int = 0
    """Seed for the demo's data split, initial weights and training order."""

    @model_validator(mode="after")
    def _needs_files(self) -> "Source":
        needs = {"torchvision": "checkpoint", "timm": "checkpoint", "module": "checkpoint",
                 "huggingface": "path", "onnx": "onnx"}
        what = {"checkpoint": "a state-dict file", "path": "a save_pretrained folder", "onnx": "the ONNX file"}
        field = needs.get(self.kind)
        if field and getattr(self, field) is None:
            raise ValueError(f"source.kind = {self.kind!r} needs source.{field} ({what[field]})")
        if self.kind == "module" and self.factory is None:
            raise ValueError("source.kind = 'module' needs source.factory ('package.module:function' "
                             "returning your nn.Module)")
        if self.kind == "torchvision":
            import torchvision.models

            names = torchvision.models.list_models()
            if self.arch not in LOCAL_ARCHS and self.arch not in names:
                raise ValueError(f"source.arch = {self.arch!r} is not a torchvision model"
                                 f"{did_you_mean(self.arch, [*names, *LOCAL_ARCHS])}; allowed: the names "
                                 f"torchvision.models.list_models() gives, or {list(LOCAL_ARCHS)}")
        if self.kind == "timm":
            import timm

            if not timm.is_model(self.arch):
                raise ValueError(f"source.arch = {self.arch!r} is not a timm model"
                                 f"{did_you_mean(self.arch, timm.list_models())}; allowed: the names "
                                 "timm.list_models() gives")
        return self

    @property
    def pytorch(self) -> bool:
        """True when the source is a PyTorch model (every kind but onnx)."""
        return self.kind != "onnx"

    @property
    def has_own_transform(self) -> bool:
        """True for the families that carry their own eval transform (timm, huggingface)."""
        return self.kind in ("timm", "huggingface")

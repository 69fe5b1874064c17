"""Model sources: the built-in demo (trained here), a torchvision architecture with a checkpoint.

Training uses exactly the reference preprocessing (torchvision's Resize + Normalize, which the
served DALI pipeline is checked against) on the decoded JPEGs, with a random crop in place of the
center crop as the only augmentation, so the network sees at serving time what it saw in training.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torchvision

from builders.checkpoints import load_state
from contract.images import ImageSet
from contract.preprocess import reference_preprocess, reference_transform
from contract.spec import LOCAL_ARCHS, Input

Progress = Callable[[int, int], None]  # (done, total)


def tiny_cnn(num_classes: int) -> torch.nn.Module:
    """Two strided convolutions and a linear head (~6k parameters): the LOCAL_ARCHS entry
    `tiny_cnn`, for repositories that must build in seconds (serving.minirepo, tests)."""
    from torch import nn

    return nn.Sequential(
        nn.Conv2d(3, 16, 3, stride=2, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
        nn.Conv2d(16, 32, 3, stride=2, padding=1), nn.BatchNorm2d(32), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, num_classes))


def create_model(arch: str, num_classes: int) -> torch.nn.Module:
    """A torchvision architecture (or one of LOCAL_ARCHS) with a `num_classes` head and fresh
    (untrained) weights."""
    if arch in LOCAL_ARCHS:
        return {"tiny_cnn": tiny_cnn}[arch](num_classes)
    return torchvision.models.get_model(arch, weights=None, num_classes=num_classes)


def load_checkpoint(arch: str, checkpoint: Path, num_classes: int) -> torch.nn.Module:
    """torchvision architecture + state dict; the file is loaded with weights_only=True, so a
    checkpoint cannot run code on load."""
    return load_state(create_model(arch, num_classes), checkpoint,
                      f"torchvision '{arch}' with {num_classes} classes", arch, num_classes)


def preprocess_set(images: ImageSet, inp: Input, crop: int | None = None, limit: int | None = None) -> np.ndarray:
    """[N, 3, crop, crop] float32 via the reference preprocessing, torchvision's transform (crop
    defaults to input.crop); the first `limit` images when given."""
    tweaked = inp if crop is None else inp.model_copy(update={"crop": crop})
    transform = reference_transform(tweaked)
    return np.stack([reference_preprocess(f.read_bytes(), tweaked, transform) for f in images.files[:limit]])


def train_demo(train: ImageSet, inp: Input, arch: str, epochs: int, seed: int,
               progress: Progress | None = None) -> torch.nn.Module:
    """Train `arch` from scratch on `train`; deterministic for a given seed on one machine."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    # Keep the whole resized image (crop = resize) so each epoch can take a random crop.
    full = torch.from_numpy(preprocess_set(train, inp, crop=inp.resize))
    targets = torch.tensor(train.targets)
    model = create_model(arch, len(train.classes))
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=1e-4)
    batch = 64
    steps = epochs * ((len(full) + batch - 1) // batch)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=3e-3, total_steps=steps)
    loss_fn = torch.nn.CrossEntropyLoss(label_smoothing=0.05)
    margin = inp.resize - inp.crop
    model.train()
    for epoch in range(epochs):
        order = torch.from_numpy(rng.permutation(len(full)))
        for start in range(0, len(full), batch):
            ids = order[start: start + batch]
            dy, dx = (int(v) for v in rng.integers(0, margin + 1, size=2))
            x = full[ids, :, dy: dy + inp.crop, dx: dx + inp.crop]
            opt.zero_grad(set_to_none=True)
            loss_fn(model(x), targets[ids]).backward()
            opt.step()
            sched.step()
        if progress:
            progress(epoch + 1, epochs)
    _recalibrate_batchnorm(model, full[:, :, margin // 2: margin // 2 + inp.crop, margin // 2: margin // 2 + inp.crop])
    return model.eval()


@torch.no_grad()
def _recalibrate_batchnorm(model: torch.nn.Module, x: torch.Tensor, batch: int = 128) -> None:
    # torchvision's MobileNetV3 uses BN momentum 0.01: after a few hundred steps the running
    # statistics still trail the weights by far (eval accuracy ~50 % where train mode gives
    # ~99 %). Re-estimating them as an exact average over the training images fixes that.
    bns = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    for bn in bns:
        bn.reset_running_stats()
        bn.momentum = None  # cumulative average
    model.train()
    for i in range(0, len(x), batch):
        model(x[i: i + batch])
    for bn in bns:
        bn.momentum = 0.01


@torch.inference_mode()
def predict(model: torch.nn.Module, x: np.ndarray, batch: int = 256) -> np.ndarray:
    """Logits for preprocessed images [N, 3, H, W]."""
    model.eval()
    return np.concatenate([model(torch.from_numpy(x[i: i + batch])).numpy()
                           for i in range(0, len(x), batch)])

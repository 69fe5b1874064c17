"""Why a state dict does not load into the spec's torchvision architecture, in words.

PyTorch's own error lists every missing and unexpected key (hundreds of lines for a checkpoint of
another architecture); the build shows its first line only, which says nothing. This module says
what differs (how many keys, a few examples, the class count) and which torchvision architecture
the checkpoint most likely came from.
"""
from __future__ import annotations

import warnings
from pathlib import Path

import torch
import torchvision

EXAMPLES = 3


def _shapes(state: dict) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in state.items() if isinstance(v, torch.Tensor)}


def likely_architectures(state: dict, limit: int = 3) -> list[str]:
    """torchvision architectures whose state dict has exactly the checkpoint's keys and shapes,
    except at most the class head (weight and bias) whose class count may differ.

    state: the checkpoint's state dict. Models are built on the meta device (no memory, no
    weights); a builder that cannot run there is skipped. Takes a few seconds: error path only.
    """
    wanted = _shapes(state)
    found = []
    for arch in torchvision.models.list_models(module=torchvision.models):
        try:
            with warnings.catch_warnings(), torch.device("meta"):
                warnings.simplefilter("ignore")
                shapes = _shapes(torchvision.models.get_model(arch, weights=None).state_dict())
        except Exception:   # noqa: BLE001 - some builders compute sizes from tensor data (regnet)
            continue
        if shapes.keys() != wanted.keys():
            continue
        if sum(shapes[k] != wanted[k] for k in wanted) <= 2:
            found.append(arch)
            if len(found) == limit:
                break
    return found


def _examples(keys: list[str]) -> str:
    shown = ", ".join(keys[:EXAMPLES])
    return shown + (", ..." if len(keys) > EXAMPLES else "")


def describe_mismatch(model: torch.nn.Module, state: dict, arch: str, num_classes: int) -> str:
    """What differs between `state` (a checkpoint's state dict) and `model` (torchvision `arch`
    built with `num_classes` outputs), with the likely cause; one paragraph, no traceback."""
    have, want = _shapes(state), _shapes(model.state_dict())
    missing = [k for k in want if k not in have]
    unexpected = [k for k in have if k not in want]
    reshaped = [k for k in want if k in have and have[k] != want[k]]
    parts = []
    if missing:
        parts.append(f"{len(missing)} of the model's {len(want)} tensors are not in the checkpoint "
                     f"({_examples(missing)})")
    if unexpected:
        parts.append(f"{len(unexpected)} checkpoint tensors are not in the model ({_examples(unexpected)})")
    if reshaped:
        parts.append(f"{len(reshaped)} have other shapes ("
                     + ", ".join(f"{k}: checkpoint {list(have[k])}, model {list(want[k])}"
                                 for k in reshaped[:EXAMPLES]) + ")")
    text = "; ".join(parts) or "the tensors match but loading failed"
    if unexpected and all(k.startswith("module.") for k in have):
        return (f"{text}. Every checkpoint key starts with 'module.': it was saved from a "
                "DataParallel/DistributedDataParallel wrapper; save `model.module.state_dict()` instead.")
    if not missing and not unexpected and reshaped and len(reshaped) <= 2:
        return (f"{text}. Only the class head differs: the checkpoint was trained for another number of "
                f"classes than the {num_classes} class folders of data.val (or the labels field).")
    guesses = [a for a in likely_architectures(state) if a != arch]
    if guesses:
        return (f"{text}. The checkpoint looks like torchvision {' or '.join(repr(g) for g in guesses)}, "
                f"not the spec's source.arch = {arch!r}: set source.arch to the architecture it was saved from.")
    return (f"{text}. It was most likely saved from another architecture than the spec's "
            f"source.arch = {arch!r}.")


def load_state(model: torch.nn.Module, checkpoint: Path, what: str, arch: str, num_classes: int) -> torch.nn.Module:
    """`model` (in eval mode) with the state dict in `checkpoint`, loaded with weights_only=True so
    a checkpoint cannot run code on load; a {"state_dict": ...} wrapper (Lightning and the like) is
    unwrapped. what: the model in words for the error; arch: its architecture's name for
    describe_mismatch; num_classes: the head the spec asked for."""
    state = torch.load(Path(checkpoint), map_location="cpu", weights_only=True)
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    try:
        model.load_state_dict(state)
    except RuntimeError:
        # PyTorch's message lists every key; say what differs and what the checkpoint looks like.
        raise ValueError(f"source.checkpoint {checkpoint} does not fit {what}: "
                         f"{describe_mismatch(model, state, arch, num_classes)}") from None
    return model.eval()

"""Make the inputs of examples/families.toml: the real-photo ImageFolder (builders/parity_photos.py), a
timm `test_efficientnet` checkpoint, a checkpoint of the module in examples/my_models.py, and a
Hugging Face ViT saved with save_pretrained (with its ViTImageProcessor), all for the two classes.

No weights can be downloaded here: every backbone keeps its random initialization (seeded) and
only the class head is fitted, on the photos as the model's own transform gives them, so that
the logits are decisive enough to compare precisions. The point is serving parity, not accuracy.

    python examples/families.py          # writes examples/.data/families/
"""
from __future__ import annotations

import argparse
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parent

VIT_SIDE = 224     # the processor's default size; a 7 x 7-patch ViT is still tiny


def fit_head(model, head, x, y, steps: int = 200) -> None:
    """Fit the Linear `head` of `model` (in place) on the inputs `head` sees for images x, labels y."""
    import torch

    seen = []
    hook = head.register_forward_hook(lambda _m, inp, _out: seen.append(inp[0].detach()))
    with torch.no_grad():
        model.eval()(x)
    hook.remove()
    features = seen[0]
    scale = features.std()
    fc = torch.nn.Linear(features.shape[1], head.out_features)
    opt = torch.optim.Adam(fc.parameters(), lr=1e-2)
    for _ in range(steps):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(fc(features / scale), y).backward()
        opt.step()
    with torch.no_grad():      # fold the feature scaling into the layer
        head.weight.copy_(fc.weight / scale)
        head.bias.copy_(fc.bias)


def train_briefly(model, x, y, steps: int = 60) -> None:
    """A few full-batch steps on every weight: a random ViT's features barely separate the photos,
    and int8's rounding then flips images whose margin is tiny (95 % agreement with head-only)."""
    import torch

    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    model.train()
    for _ in range(steps):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    model.eval()


def _inputs(spec, images):
    """The photos through the entry's reference transform (its own, as the build resolves it)."""
    import torch

    from builders.families import reference_preprocess_all, resolve_input

    spec, record = resolve_input(spec)
    hf = spec.source.path if spec.source.kind == "huggingface" else None
    return torch.from_numpy(reference_preprocess_all(images.encoded(), record, spec.input, hf))


def make(out: Path, seed: int = 0) -> Path:
    """Write `out/photos/`, `out/timm_net.pt`, `out/my_net.pt` and `out/hf_vit/`; returns out."""
    import timm
    import torch
    from transformers import ViTConfig, ViTForImageClassification, ViTImageProcessor

    from builders.families import LogitsOnly, import_factory
    from builders.parity_photos import write_photo_set
    from contract.images import load_image_folder
    from contract.spec import Data, Input, ModelSpec, Source

    out.mkdir(parents=True, exist_ok=True)
    images = load_image_folder(write_photo_set(out / "photos", seed=seed))
    y = torch.tensor(images.targets)
    n = len(images.classes)
    data = Data(val=images.root, calibration=images.root)
    torch.manual_seed(seed)

    net = timm.create_model("test_efficientnet", pretrained=False, num_classes=n)
    spec = ModelSpec(name="t", data=data, source=Source(kind="timm", arch="test_efficientnet", checkpoint=out))
    fit_head(net, net.get_classifier(), _inputs(spec, images), y)
    torch.save(net.state_dict(), out / "timm_net.pt")

    mine = import_factory("my_models:make_net", EXAMPLES)(n)
    spec = ModelSpec(name="m", data=data, source=Source(kind="module", factory="my_models:make_net", checkpoint=out),
                     input=Input(resize=72, crop=64, interpolation="bicubic"))
    fit_head(mine, mine[-1], _inputs(spec, images), y)
    torch.save(mine.state_dict(), out / "my_net.pt")

    cfg = ViTConfig(image_size=VIT_SIDE, patch_size=32, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                    intermediate_size=64, num_labels=n, id2label=dict(enumerate(images.classes)),
                    label2id={c: i for i, c in enumerate(images.classes)})
    vit = ViTForImageClassification(cfg)
    folder = out / "hf_vit"
    ViTImageProcessor(size={"height": VIT_SIDE, "width": VIT_SIDE}).save_pretrained(folder)
    vit.save_pretrained(folder)         # first, so the processor's transform below can be read back
    spec = ModelSpec(name="h", data=data, source=Source(kind="huggingface", path=folder))
    x = _inputs(spec, images)
    train_briefly(LogitsOnly(vit), x, y)
    fit_head(LogitsOnly(vit), vit.classifier, x, y)
    vit.save_pretrained(folder)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=EXAMPLES / ".data" / "families",
                   help="output folder (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    print(f"wrote {make(args.out, args.seed)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

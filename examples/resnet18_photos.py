"""Make the inputs of examples/resnet18_photos.toml: an ImageFolder of real photos with varied sizes
and encodings (builders/parity_photos.py: crops of scikit-learn's two sample photos, labels "china" and
"flower"), and a torchvision ResNet-18 checkpoint for those two classes.

No pretrained weights can be downloaded here, so the backbone keeps torchvision's random
initialization (seeded) and only the final layer is fitted, on the same photos, to tell the two
sources apart: the point of this model is preprocessing and conversion parity on real photos, not
accuracy (its accuracy is measured on the images it was fitted on).

    python examples/resnet18_photos.py            # writes examples/.data/photos and examples/.data/resnet18_photos.pt
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def make(out: Path, seed: int = 0, resize: int = 256, crop: int = 224) -> tuple[Path, Path]:
    """Write `out/photos/` and `out/resnet18_photos.pt`; returns (image folder, checkpoint)."""
    import torch

    from builders.models import create_model, preprocess_set
    from builders.parity_photos import write_photo_set
    from contract.images import load_image_folder
    from contract.spec import Input

    folder = write_photo_set(out / "photos", seed=seed)
    images = load_image_folder(folder)
    torch.manual_seed(seed)
    model = create_model("resnet18", len(images.classes)).eval()
    x = torch.from_numpy(preprocess_set(images, Input(resize=resize, crop=crop)))
    y = torch.tensor(images.targets)
    with torch.no_grad():
        model.fc = torch.nn.Identity()
        features = model(x)
    fc = torch.nn.Linear(features.shape[1], len(images.classes))
    opt = torch.optim.Adam(fc.parameters(), lr=1e-2)
    scale = features.std()
    for _ in range(300):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(fc(features / scale), y).backward()
        opt.step()
    with torch.no_grad():      # fold the feature scaling into the layer
        fc.weight /= scale
    model.fc = fc
    ckpt = out / "resnet18_photos.pt"
    torch.save(model.state_dict(), ckpt)
    return folder, ckpt


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=ROOT / "examples" / ".data", help="output folder (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    folder, ckpt = make(args.out, args.seed)
    print(f"wrote {folder} and {ckpt}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

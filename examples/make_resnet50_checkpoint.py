"""Write the files examples/resnet50.toml needs: a torchvision ResNet-50 checkpoint with RANDOM
weights and a small labeled image folder of 640x480 JPEGs.

    python examples/make_resnet50_checkpoint.py            # -> examples/resnet50/{resnet50_random.pt, val/}
    python builders/build_all.py --spec examples/resnet50.toml

No pretrained weights can be downloaded on this project's machines, so the network is torchvision's
ResNet-50 with its own random initialization (seeded): its logits and timings are real, its accuracy is
meaningless (accuracy figures stay with the demo). The images are the synthetic photographs of
builders/synthetic_jpegs.py, sorted into `--classes` folders only so that the build has an ImageFolder to
validate and warm up with; the class head has that many outputs (compute differs from the 1000-class
head by < 0.1 %).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=HERE / "resnet50",
                   help="folder for resnet50_random.pt and val/ (default: %(default)s)")
    p.add_argument("--classes", type=int, default=10, help="class folders = network outputs (default: %(default)s)")
    p.add_argument("--per-class", type=int, default=2, help="JPEGs per class folder (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="seed for the weights and the images (default: %(default)s)")
    args = p.parse_args(argv)
    if args.classes < 2 or args.per_class < 1:
        p.error(f"--classes must be >= 2 and --per-class >= 1 (got {args.classes} and {args.per_class})")

    import torch
    import torchvision

    from builders.synthetic_jpegs import natural_jpeg

    args.out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(args.seed)
    model = torchvision.models.resnet50(weights=None, num_classes=args.classes)
    ckpt = args.out / "resnet50_random.pt"
    torch.save(model.state_dict(), ckpt)
    for c in range(args.classes):
        folder = args.out / "val" / f"class_{c:02d}"
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(args.per_class):
            (folder / f"{i:03d}.jpg").write_bytes(natural_jpeg(args.seed + c * args.per_class + i))
    print(f"wrote {ckpt} (random weights, seed {args.seed}) and {args.classes * args.per_class} 640x480 JPEGs "
          f"in {args.out / 'val'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Measure DALI preprocessing against torchvision's eval transform on the photo set.

    python benchmarks/preprocess_parity.py --out docs/preprocessing/parity_cpu.json
    python benchmarks/preprocess_parity.py --device gpu --out docs/preprocessing/parity_gpu.json   # GPU host

For each size pair (resize 256 / crop 224, and the demo's 36 / 32) the pipeline definition the
builder writes (`dali.py`, autoserialized as dali_backend does) runs on the 40 photos of
builders/parity_photos.py (portrait, landscape, square, 35x47 to 1280x854, gray, 4:2:0/4:2:2/4:4:4), with
`--device gpu` on GPU 0 (nvJPEG); every image is compared with torchvision `Resize`, `CenterCrop`,
`ToTensor`, `Normalize` on the PIL image. Printed and written: per-image mean, p99 and max |Δ| in
pixel levels, the worst images, and whether each is inside the builder's tolerance for the device
(contract.preprocess.CPU_TOLERANCE / GPU_TOLERANCE). Exit status 1 when one is outside.
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
from pathlib import Path

import numpy as np

from builders.parity_photos import write_photo_set
from contract import layout
from contract.images import pack_batch
from contract.preprocess import load_pipeline, parity, reference_preprocess, reference_transform
from contract.preprocess import write_definition
from contract.spec import Input

SIZES = ((256, 224), (36, 32))


def run_pipeline(definition: Path, device: str, encoded: list[bytes]) -> np.ndarray:
    pipe = load_pipeline(definition, 0 if device == "gpu" else None, num_threads=4, batch_size=len(encoded))
    pipe.feed_input(layout.DALI_INPUT, list(pack_batch(encoded)))
    (out,) = pipe.run()
    if hasattr(out, "as_cpu"):
        out = out.as_cpu()
    return np.stack([np.asarray(out[i]) for i in range(len(encoded))])


def measure(device: str, folder: Path, work: Path) -> list[dict]:
    files = sorted(folder.rglob("*.jpg"))
    encoded = [f.read_bytes() for f in files]
    names = [str(f.relative_to(folder)) for f in files]
    results = []
    for resize, crop in SIZES:
        inp = Input(resize=resize, crop=crop)
        definition = write_definition(inp, device, work / f"{device}-{resize}" / layout.DALI_DEFINITION, len(encoded),
                                      hw_decoder_load=1.0)
        out = run_pipeline(definition, device, encoded)
        t = reference_transform(inp)
        ref = np.stack([reference_preprocess(e, inp, t) for e in encoded])
        p = parity(out, ref, inp.std, names, device)
        results.append({"resize": resize, "crop": crop, **p.summary(), "worst": p.worst(),
                        "per_image": [{"image": n, "mean": m, "p99": q, "max": x}
                                      for n, m, q, x in zip(names, p.mean, p.p99, p.max)]})
    return results


def _machine(device: str) -> str:
    if device == "gpu":
        import torch

        return f"{torch.cuda.get_device_name(0)}, {platform.node()}"
    return f"{platform.processor() or platform.machine()}, {platform.node()}"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", choices=layout.TARGETS, default="cpu", help="pipeline variant (default: %(default)s)")
    p.add_argument("--out", type=Path, help="write the results as JSON here")
    args = p.parse_args(argv)
    import nvidia.dali as dali

    with tempfile.TemporaryDirectory() as tmp:
        results = measure(args.device, write_photo_set(Path(tmp) / "photos"), Path(tmp))
    ok = True
    for r in results:
        inside = not r["outside_tolerance"]
        ok &= inside
        print(f"{args.device} {r['resize']}/{r['crop']}: {r['images']} photos, per image mean <= "
              f"{r['mean_levels']['max_over_images']:.3f}, p99 <= {r['p99_levels']['max_over_images']:.3f}, "
              f"max {r['max_levels']:.3f} levels; tolerance {r['tolerance_levels']}: "
              f"{'inside' if inside else 'OUTSIDE'}; worst: {r['worst']}")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"device": args.device, "machine": _machine(args.device),
                                        "dali": dali.__version__, "command": " ".join(["python", *sys.argv]),
                                        "results": results}, indent=1))
        print(f"wrote {args.out}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

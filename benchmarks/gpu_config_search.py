"""Config search on a GPU ensemble of benchmarks/gpu_ensemble_bench.py (DALI gpu -> TorchScript).

    tik-gpu-config-search --model resnet50 --work /tmp/cs -- --sla-ms 60 --concurrency 8,16

Writes that benchmark's repository for one model (random weights; hand-chosen defaults from
contract.spec.Triton: 2 instances, 4 DALI threads, hw_decoder_load 1.0) and its 640x480 JPEGs
under --work, then runs `python -m benchmarks.config_search` on it with the arguments after `--`
(--repository, --ensemble and --data are filled in).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from benchmarks import gpu_ensemble_bench as geb
from builders.synthetic_jpegs import make_jpegs
from contract import layout
from benchmarks.config_search.__main__ import main as search_main


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    rest = argv[argv.index("--") + 1:] if "--" in argv else []
    own = argv[:argv.index("--")] if "--" in argv else argv
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", choices=sorted(geb.MODELS), default="resnet50")
    p.add_argument("--device", choices=("cuda", "cpu"), default="cuda", help="cpu: a KIND_CPU smoke run")
    p.add_argument("--precision", choices=("fp32", "fp16"), default="fp16")
    p.add_argument("--batch", default="16,64,128", help="preferred batch sizes; the largest is max_batch_size")
    p.add_argument("--images", type=int, default=64, help="distinct JPEGs to send (default: %(default)s)")
    p.add_argument("--work", type=Path, required=True, help="folder for the repository and the JPEGs")
    a = p.parse_args(own)
    bench_args = geb.parse_args(["--device", a.device, "--models", a.model, "--precision", a.precision,
                                 "--batch", a.batch, "--out", str(a.work / "unused")])
    repo = a.work / ("gpu" if a.device == "cuda" else "cpu")
    repo.mkdir(parents=True, exist_ok=True)
    geb.write_repository(repo, a.model, bench_args)
    data = a.work / "jpegs"
    data.mkdir(exist_ok=True)
    for i, jpeg in enumerate(make_jpegs(a.images)):
        (data / f"{i:04d}.jpg").write_bytes(jpeg)
    ensemble = layout.ensemble_model(a.model, a.precision, layout.TORCH_BACKEND)
    # The CUDA memory pool above the largest inter-step tensor, as gpu_ensemble_bench serves it.
    pool = [f"--server-arg=--cuda-memory-pool-byte-size=0:{bench_args.cuda_pool_mib << 20}"] if a.device == "cuda" else []
    return search_main(["--repository", str(repo), "--ensemble", ensemble, "--data", str(data), *pool, *rest])


if __name__ == "__main__":
    sys.exit(main())

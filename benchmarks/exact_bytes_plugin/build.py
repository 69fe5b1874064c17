"""Build the ExactBytes DALI plugin (exact_bytes.cc) against this process's DALI.

    python -m benchmarks.exact_bytes_plugin.build OUT.so

An experiment for benchmarks/exact_bytes_probe.py (case "plugin"), not part of the product: a
plugin loads only into the DALI it was built against, so a deployment would need one build per
Triton release. Needs g++ (C++20: DALI's headers use C++20 bit-field initializers) and the CUDA
runtime headers DALI's headers include (from an `nvidia-cuda-runtime` wheel or /usr/local/cuda*).
"""
from __future__ import annotations

import glob
import os
import shutil
import subprocess
import sys
from pathlib import Path

SOURCE = Path(__file__).with_name("exact_bytes.cc")


def cuda_include() -> str:
    """A folder holding the CUDA runtime headers (cuda_runtime.h and the crt/ headers it includes):
    a CUDA wheel's, else a local toolkit's."""
    import nvidia

    roots = [os.path.join(p, "*", "include") for p in nvidia.__path__] + ["/usr/local/cuda*/include"]
    for pattern in roots:
        for folder in sorted(glob.glob(pattern)):
            if all(os.path.exists(os.path.join(folder, f)) for f in ("cuda_runtime.h", "crt/host_config.h")):
                return folder
    raise FileNotFoundError("no CUDA runtime headers (cuda_runtime.h, crt/host_config.h) in the nvidia wheels "
                            "or /usr/local/cuda*/include")


def build(out: Path) -> Path:
    import nvidia.dali.sysconfig as sysconfig

    compiler = shutil.which("g++")
    if compiler is None:
        raise FileNotFoundError("g++ is not on PATH")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    cmd = [compiler, "-std=c++20", "-O2", "-shared", "-fPIC", *sysconfig.get_compile_flags(),
           f"-I{cuda_include()}", str(SOURCE), "-o", str(out), *sysconfig.get_link_flags()]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        errors = [line for line in done.stderr.splitlines() if "error" in line]
        raise RuntimeError(f"g++ failed ({done.returncode}): " + " | ".join(errors[:5] or done.stderr.splitlines()[-5:]))
    return out


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python -m benchmarks.exact_bytes_plugin.build OUT.so")
    print(build(Path(sys.argv[1])))

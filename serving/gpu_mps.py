"""A private CUDA MPS daemon for the local server on a GPU host.

The local server's DALI and PyTorch stand-ins run in Triton's python-backend stubs, one process
per model instance, each with its own CUDA context; without MPS the GPU time-slices between those
contexts, so a DALI step waits for the network's slice and the other way round (measured on an
H200: the ensemble at 0.61 of the network alone). A real tritonserver runs dali_backend and the
TensorRT backend inside ONE process, where kernels of different streams overlap; MPS gives the
stand-ins' processes the same. The daemon's pipe and log folders are private temporary folders,
so it neither uses nor disturbs a system-wide MPS daemon; it is stopped on exit.
"""
from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
from typing import Iterator

_VARS = ("CUDA_MPS_PIPE_DIRECTORY", "CUDA_MPS_LOG_DIRECTORY")


@contextlib.contextmanager
def private_mps() -> Iterator[str]:
    """Start `nvidia-cuda-mps-control -d` with private folders, point this process (and every
    process it starts) at it, and quit it on exit. Must run before this process touches CUDA.
    Yields the pipe folder. Raises RuntimeError when the control binary is missing or fails."""
    exe = shutil.which("nvidia-cuda-mps-control")
    if exe is None:
        raise RuntimeError("nvidia-cuda-mps-control is not on PATH (it ships with the NVIDIA driver)")
    saved = {k: os.environ.get(k) for k in _VARS}
    with tempfile.TemporaryDirectory(prefix="mps-") as tmp:   # private (0700)
        env = {"CUDA_MPS_PIPE_DIRECTORY": os.path.join(tmp, "pipe"), "CUDA_MPS_LOG_DIRECTORY": os.path.join(tmp, "log")}
        for folder in env.values():
            os.mkdir(folder, 0o700)
        proc = subprocess.run([exe, "-d"], env={**os.environ, **env}, capture_output=True, text=True, timeout=30)
        if proc.returncode != 0:
            raise RuntimeError(f"nvidia-cuda-mps-control -d failed ({proc.returncode}): {proc.stderr.strip()}")
        os.environ.update(env)
        try:
            yield env["CUDA_MPS_PIPE_DIRECTORY"]
        finally:
            subprocess.run([exe], input="quit\n", env={**os.environ, **env}, capture_output=True, text=True,
                           timeout=30)
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v

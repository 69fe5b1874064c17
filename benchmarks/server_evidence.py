"""What the server side did during a benchmark window: Triton's per-step statistics, the busy
fraction of each step's instances, GPU utilization samples, and perf_analyzer as a second opinion."""
from __future__ import annotations

import shutil
import subprocess
import threading
from pathlib import Path

import numpy as np

from benchmarks.stats import percentile, statistics_delta
from contract import layout


class GpuSampler:
    """GPU utilization (%) every 100 ms while running: pynvml if installed, else nvidia-smi."""

    def __init__(self, enabled: bool):
        self.samples: list[float] = []
        self.source = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True) if enabled else None

    def _read(self):
        try:
            import pynvml

            pynvml.nvmlInit()
            handle = pynvml.nvmlDeviceGetHandleByIndex(0)
            self.source = "pynvml"
            return lambda: float(pynvml.nvmlDeviceGetUtilizationRates(handle).gpu)
        except Exception:  # noqa: BLE001 - not installed or no driver: try nvidia-smi
            pass
        smi = shutil.which("nvidia-smi")
        if not smi:
            return None
        self.source = "nvidia-smi"
        cmd = [smi, "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits", "--id=0"]
        return lambda: float(subprocess.run(cmd, capture_output=True, text=True, timeout=5).stdout.split()[0])

    def _loop(self):
        read = self._read()
        while read and not self._stop.wait(0.1):
            try:
                self.samples.append(read())
            except Exception:  # noqa: BLE001 - one failed sample is skipped
                pass

    def __enter__(self):
        if self._thread:
            self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        if self._thread:
            self._thread.join(timeout=10)

    def summary(self) -> dict:
        s = self.samples
        return {"source": self.source, "samples": len(s), "mean_pct": float(np.mean(s)) if s else None,
                "p90_pct": percentile(s, 90)}


def step_breakdown(before: dict, after: dict, window_s: float, instances: dict[str, int]) -> dict:
    """Per model: ms per request in queue and compute, and the busy fraction of its instances."""
    out = {}
    for name, d in statistics_delta(before, after).items():
        n, execs = max(d["success_count"], 1), max(d["execution_count"], 1)
        compute = d["compute_input_ns"] + d["compute_infer_ns"] + d["compute_output_ns"]
        out[name] = {"requests": d["success_count"], "executions": d["execution_count"],
                     "queue_ms_per_request": d["queue_ns"] / n / 1e6,
                     "compute_ms_per_execution": compute / execs / 1e6,
                     "busy_fraction": (compute / (window_s * 1e9 * instances[name])
                                       if name in instances else None)}
    return out


def perf_analyzer(url: str, model: str, jpeg_row: np.ndarray, batch: int, concurrency: int, workdir: Path) -> dict:
    """perf_analyzer on `model`; jpeg_row: one row of a packed request (contract.images.pack_batch:
    length prefix, bytes, padding), which perf_analyzer repeats `batch` times per request."""
    exe = shutil.which("perf_analyzer")
    if not exe:
        return {"ran": False, "reason": "no perf_analyzer binary on PATH (the perf-analyzer wheel ships one "
                                        "for recent glibc; this host's is a placeholder)"}
    data = workdir / "pa-input"
    data.mkdir(exist_ok=True)
    (data / layout.ENSEMBLE_INPUT).write_bytes(jpeg_row.tobytes())
    cmd = [exe, "-m", model, "-u", url, "-i", "grpc", "-b", str(batch), "--concurrency-range", str(concurrency),
           "--shape", f"{layout.ENSEMBLE_INPUT}:{jpeg_row.size}", "--input-data", str(data),
           "--shared-memory", "system", "--measurement-interval", "4000"]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=180)
    except subprocess.TimeoutExpired:
        return {"ran": False, "reason": "perf_analyzer did not finish in 180 s", "command": cmd}
    tp = [ln for ln in proc.stdout.splitlines() if "Throughput:" in ln]
    return {"ran": proc.returncode == 0, "command": cmd, "returncode": proc.returncode,
            "throughput_line": tp[-1].strip() if tp else None, "stdout_tail": proc.stdout[-3000:],
            "stderr_tail": proc.stderr[-1000:]}



def server_statistics(http_url: str) -> dict:
    """Triton's per-model statistics now (clients.served_models.normalize_statistics form)."""
    from clients.sender import Sender

    with Sender(http_url, "http") as sender:
        return sender.statistics()

"""What benchmarks.bench writes: bench.json, bench.csv and the two plots, and the in-process DALI vs
PIL preprocessing comparison printed beside the sweep.
"""
from __future__ import annotations

import csv
import io
import json
import time
from pathlib import Path

import numpy as np

from benchmarks._bench_point import role as _role
from benchmarks.stats import PHASES


def preprocess_comparison(dali_file: Path, inp: dict, encoded: list[bytes], min_s: float, threads: int = 2) -> dict:
    """DALI CPU pipeline (batched, `threads` worker threads) vs a per-image PIL + torchvision loop."""
    import torch
    import torchvision.transforms as T
    from PIL import Image

    from contract.preprocess import CpuPreprocessor

    pre = CpuPreprocessor(dali_file, num_threads=threads)
    arrays = [np.frombuffer(e, np.uint8) for e in encoded]
    bs = pre.max_batch_size

    def dali_pass():
        for i in range(0, len(arrays), bs):
            pre(arrays[i: i + bs])

    tf = T.Compose([T.Resize(inp["resize"]), T.CenterCrop(inp["crop"]), T.ToTensor(),
                    T.Normalize(inp["mean"], inp["std"])])

    def pil_pass():
        for e in encoded:
            tf(Image.open(io.BytesIO(e)).convert("RGB"))

    def rate(fn) -> tuple[float, int]:
        fn()  # warm-up (pipeline buffers, first decode)
        n, start = 0, time.perf_counter()
        while True:
            fn()
            n += len(encoded)
            el = time.perf_counter() - start
            if el >= min_s:
                return n / el, n

    torch.set_num_threads(1)  # the per-image loop is one DataLoader worker's work
    dali_rate, dali_n = rate(dali_pass)
    pil_rate, pil_n = rate(pil_pass)
    return {"images": len(encoded), "dali_images_per_s": dali_rate, "pil_images_per_s": pil_rate,
            "ratio": dali_rate / pil_rate if pil_rate else None, "dali_threads": threads, "dali_batch": bs,
            "dali_file": str(dali_file), "pil": "PIL decode + torchvision Resize/CenterCrop/ToTensor/Normalize, "
            "one image at a time", "timed_images": {"dali": dali_n, "pil": pil_n}}


def write_outputs(out: Path, rows: list[dict], meta: dict) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / "bench.json", out / "bench.csv"]
    paths[0].write_text(json.dumps({**meta, "points": rows}, indent=2))
    with paths[1].open("w", newline="") as f:
        w = csv.writer(f)
        head = ["protocol", "precision", "model", "batch_size", "concurrency", "stable", "windows",
                "inferences_per_s", "images_per_s", "p50_ms", "p90_ms", "p95_ms", "p99_ms", "avg_ms",
                "server_ms", "client_requests", "server_requests"]
        head += [f"{role}_{ph}_us" for role in ("preprocess", "engine") for ph in PHASES] + ["bottleneck"]
        w.writerow(head)
        for r in rows:
            lat = r["latency_ms"]
            by_role = {_role(s): v for s, v in r["server_breakdown_us"].items()}
            w.writerow([r["protocol"], r["precision"], r["model"], r["batch_size"], r["concurrency"], r["stable"],
                        r["windows"], f"{r['inferences_per_s']:.2f}", f"{r['images_per_s']:.1f}",
                        *(f"{lat[k]:.3f}" for k in ("p50", "p90", "p95", "p99", "avg")), f"{r['server_latency_ms']:.3f}",
                        r["client_requests"], r["server_requests"],
                        *(f"{by_role.get(role, {}).get(ph, 0):.1f}" for role in ("preprocess", "engine") for ph in PHASES),
                        r["bottleneck"]])
    paths += _plots(out, rows)
    return paths


def _plots(out: Path, rows: list[dict]) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    series: dict[tuple, list[dict]] = {}
    for r in rows:
        series.setdefault((r["precision"], r["protocol"], r["concurrency"]), []).append(r)
    multi_c = len({r["concurrency"] for r in rows}) > 1
    colors = {"fp32": "tab:blue", "fp16": "tab:orange", "int8": "tab:green"}
    styles = {"http": "-", "grpc": "--"}
    label = (lambda p, pr, c: f"{p} {pr}" + (f" c={c}" if multi_c else ""))

    fig, ax = plt.subplots(figsize=(6.4, 4.0), dpi=80)
    for (prec, proto, conc), pts in sorted(series.items()):
        pts = sorted(pts, key=lambda r: r["batch_size"])
        ax.plot([r["batch_size"] for r in pts], [r["images_per_s"] for r in pts], styles.get(proto, ":"),
                marker="o", color=colors.get(prec), label=label(prec, proto, conc), alpha=0.9)
    ax.set_xscale("log", base=2)
    p1 = _save(fig, ax, out / "throughput_vs_batch.png", "throughput vs batch size",
               "batch size (images per request)", "images/s")

    fig, ax = plt.subplots(figsize=(6.4, 4.0), dpi=80)
    for (prec, proto, conc), pts in sorted(series.items()):
        pts = sorted(pts, key=lambda r: r["images_per_s"])
        ax.plot([r["images_per_s"] for r in pts], [r["latency_ms"]["p99"] for r in pts], styles.get(proto, ":"),
                marker="o", color=colors.get(prec), label=label(prec, proto, conc), alpha=0.9)
        for r in pts:
            ax.annotate(str(r["batch_size"]), (r["images_per_s"], r["latency_ms"]["p99"]), fontsize=7,
                        xytext=(3, 3), textcoords="offset points")
    ax.set_yscale("log")
    p2 = _save(fig, ax, out / "latency_vs_throughput.png", "latency vs throughput (labels: batch size)",
               "images/s", "p99 latency per request (ms)")
    return [p1, p2]


def _save(fig, ax, path: Path, title: str, xlabel: str, ylabel: str) -> Path:
    import matplotlib.pyplot as plt

    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


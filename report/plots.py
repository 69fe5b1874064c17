"""The report's figures, each drawn by matplotlib as inline SVG text (no files, no network).

SVG scales to a narrow window and prints sharp; the hash salt and empty Date make the same data
give the same bytes, so a changed page means changed data.
"""
from __future__ import annotations

import io

COLORS = {"fp32": "tab:blue", "fp16": "tab:orange", "int8": "tab:green"}
STYLES = {"http": "-", "grpc": "--"}


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams["svg.hashsalt"] = "tik-report"
    return plt


def _svg(fig, ax, title: str, xlabel: str, ylabel: str) -> str:
    plt = _plt()
    ax.set_title(title, fontsize=10)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    if ax.get_legend() is None and ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8)
    fig.tight_layout()
    buf = io.StringIO()
    fig.savefig(buf, format="svg", metadata={"Date": None})
    plt.close(fig)
    text = buf.getvalue()
    return text[text.index("<svg"):]


def _bars(groups: list[str], series: dict[str, list[float | None]], title: str, ylabel: str,
          hlines: dict[str, float] | None = None) -> str:
    """Grouped bars: one group per entry of `groups`, one bar per series (None leaves a gap)."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.4, 3.6), dpi=80)
    width = 0.8 / max(len(series), 1)
    for i, (name, values) in enumerate(series.items()):
        xs = [g + i * width for g, v in enumerate(values) if v is not None]
        ax.bar(xs, [v for v in values if v is not None], width, label=name)
    for name, y in (hlines or {}).items():
        ax.axhline(y, ls="--", lw=1, color="k", label=name)
    ax.set_xticks([g + width * (len(series) - 1) / 2 for g in range(len(groups))], groups)
    return _svg(fig, ax, title, "", ylabel)


def accuracy(rows: list[dict]) -> str:
    groups = [f"{r['model']} {r['precision']}" for r in rows]
    series = {"build accuracy": [r.get("build_accuracy") for r in rows],
              "served accuracy": [r.get("served_accuracy") for r in rows],
              "served top-1 agreement": [r.get("served_top1_agreement") for r in rows]}
    series = {k: v for k, v in series.items() if any(x is not None for x in v)}
    return _bars(groups, series, "accuracy and top-1 agreement with PyTorch",
                 "fraction of validation images") if series else ""


def preprocessing(rows: list[dict]) -> str:
    groups = [f"{r['model']}: {r['where'].split(' ')[0]}" for r in rows]
    series = {k: [r.get(k) for r in rows] for k in ("mean", "p99", "max")}
    tol = rows[0].get("tolerance") or {} if rows else {}
    return _bars(groups, series, "DALI vs torchvision, worst image (pixel levels, 0-255)", "|Δ| pixel levels",
                 {f"tolerance max {tol['max']:g}": tol["max"]} if tol.get("max") is not None else None)


def _by_series(points: list[dict]) -> dict[tuple, list[dict]]:
    series: dict[tuple, list[dict]] = {}
    for p in points:
        series.setdefault((p["precision"], p["protocol"], p["concurrency"]), []).append(p)
    return {k: sorted(v, key=lambda p: p["batch_size"]) for k, v in sorted(series.items())}


def throughput(points: list[dict]) -> str:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.4, 3.8), dpi=80)
    for (prec, proto, conc), pts in _by_series(points).items():
        ax.plot([p["batch_size"] for p in pts], [p["images_per_s"] for p in pts], STYLES.get(proto, ":"),
                marker="o", color=COLORS.get(prec), label=f"{prec} {proto} c={conc}")
    ax.set_xscale("log", base=2)
    return _svg(fig, ax, "throughput vs batch size", "batch size (images per request)", "images/s")


def latency(points: list[dict]) -> str:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.4, 3.8), dpi=80)
    for (prec, proto, conc), pts in _by_series(points).items():
        pts = [p for p in pts if p["latency_ms"].get("p99") is not None]
        xs = [p["batch_size"] for p in pts]
        ax.plot(xs, [p["latency_ms"]["p99"] for p in pts], STYLES.get(proto, ":"), marker="o",
                color=COLORS.get(prec), label=f"p99 {prec} {proto} c={conc}")
        ax.plot(xs, [p["latency_ms"]["p50"] for p in pts], STYLES.get(proto, ":"), marker=".", alpha=0.5,
                color=COLORS.get(prec), label=f"p50 {prec} {proto} c={conc}")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    return _svg(fig, ax, "p50 and p99 latency vs batch size", "batch size (images per request)",
                "latency per request (ms)")


def served_vs_in_process(batches: list[dict]) -> str:
    return _bars([f"batch {b['batch']}" for b in batches],
                 {"in-process (same ONNX Runtime)": [b.get("in_process_images_per_s") for b in batches],
                  "served (Triton)": [b.get("served_images_per_s") for b in batches]},
                 "served vs in-process throughput", "images/s")


def pareto(search: dict) -> str:
    from benchmarks.config_search.report import pareto as front_of

    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.4, 4.0), dpi=80)
    allpts = []
    for tr in search.get("trials", []):
        pts = [(p["latency_ms"]["p99"], p["images_per_s"]) for p in tr.get("points", [])
               if p["latency_ms"].get("p99") is not None]
        allpts += pts
        marks = tr.get("marks", [])
        style = (dict(marker="*", s=200, color="tab:red", zorder=4, label="winner") if "winner" in marks else
                 dict(marker="s", s=60, color="tab:blue", zorder=3, label="default") if "default" in marks else
                 dict(marker="o", s=16, color="0.6", zorder=2, label="other configurations"))
        if pts:
            ax.scatter(*zip(*pts), **style)
    if (front := front_of(allpts)):
        ax.plot(*zip(*front), color="tab:green", lw=1, label="Pareto front")
    sla = (search.get("settings") or {}).get("sla_ms")
    if sla:
        ax.axvline(sla, color="k", ls="--", lw=1, label=f"SLA p99 {sla:g} ms")
    handles, labels = ax.get_legend_handles_labels()
    uniq = dict(zip(labels, handles))
    ax.legend(uniq.values(), uniq.keys(), fontsize=8, loc="lower right")
    return _svg(fig, ax, "configurations: throughput vs p99", "p99 latency (ms)", "images/s")


def gpu(summary: dict) -> str:
    names = {"dali_alone_img_s": "DALI alone", "network_alone_img_s": "network alone", "served_img_s": "served ensemble"}
    return _bars([v for k, v in names.items() if summary.get(k) is not None],
                 {summary.get("gpu", "GPU"): [summary[k] for k in names if summary.get(k) is not None]},
                 f"{summary.get('gpu', 'GPU')}, batch {summary.get('batch')}", "images/s")

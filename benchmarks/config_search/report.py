"""Search results: the JSON record, a table, and the Pareto plot (throughput vs p99)."""
from __future__ import annotations

import json
from pathlib import Path


def pareto(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """The (p99 ms, images/s) points no other point beats on both (lower p99 and higher throughput)."""
    front, best = [], -1.0
    for p99, rate in sorted(points, key=lambda p: (p[0], -p[1])):
        if rate > best:
            front.append((p99, rate))
            best = rate
    return front


def table(trials: list[dict], sla_ms: float, title: str):
    """A rich Table: one row per measured configuration and concurrency."""
    from rich.table import Table

    t = Table(title=title)
    for col in ("#", "configuration", "conc.", "images/s", "p50 ms", "p99 ms", "SLA", "note"):
        t.add_column(col, justify="left" if col in ("configuration", "note") else "right")
    for i, tr in enumerate(trials):
        mark = " ".join(tr.get("marks", []))
        if tr["error"]:
            t.add_row(str(i), tr["label"], "", "FAILED", "", "", "", f"{mark} {tr['error'][:60]}".strip())
            continue
        for p in tr["points"]:
            lat = p["latency_ms"]
            ok = lat["p99"] is not None and lat["p99"] <= sla_ms
            t.add_row(str(i), tr["label"], str(p["concurrency"]), f"{p['images_per_s']:.1f}" + ("" if p["stable"] else "*"),
                      f"{lat['p50']:.2f}", f"{lat['p99']:.2f}", "ok" if ok else "over", mark)
    return t


def write_json(path: Path, record: dict) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record, indent=2, allow_nan=False))
    return path


def plot(path: Path, trials: list[dict], sla_ms: float, title: str) -> Path:
    """Every measured (configuration, concurrency) point as throughput over p99; the Pareto front as
    a line, the SLA as a vertical line, the default's points as squares, the winner's as stars."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 5))
    allpts = []
    for tr in trials:
        pts = [(p["latency_ms"]["p99"], p["images_per_s"]) for p in tr["points"] if p["latency_ms"]["p99"] is not None]
        allpts += pts
        if not pts:
            continue
        marks = tr.get("marks", [])
        style = (dict(marker="*", s=220, color="tab:red", zorder=4, label="winner") if "winner" in marks else
                 dict(marker="s", s=70, color="tab:blue", zorder=3, label="default") if "default" in marks else
                 dict(marker="o", s=18, color="0.6", zorder=2))
        ax.scatter(*zip(*pts), **style)
    front = pareto(allpts)
    if front:
        ax.plot(*zip(*front), color="tab:green", lw=1, label="Pareto front")
    ax.axvline(sla_ms, color="k", ls="--", lw=1, label=f"SLA p99 {sla_ms:g} ms")
    handles, labels = ax.get_legend_handles_labels()
    uniq = dict(zip(labels, handles))
    ax.legend(uniq.values(), uniq.keys(), loc="lower right", fontsize=8)
    ax.set_xlabel("p99 latency (ms)")
    ax.set_ylabel("throughput (images/s)")
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path

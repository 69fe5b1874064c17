"""What benchmarks/preprocess_bench.py shows of its result: a rich table and a bar chart (img/s by
backend and configuration, and DALI GPU throughput against hw_decoder_load)."""
from __future__ import annotations

from pathlib import Path


def print_table(result: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    env = result["environment"]
    title = (f"Preprocessing {result['images']['count']} JPEGs {result['images']['width']}x"
             f"{result['images']['height']} -> {result['preprocess']['crop']} on {env.get('gpu') or 'no GPU'}, "
             f"{env['cpu_count']} CPUs")
    table = Table(title=title)
    for col, just in (("Backend", "left"), ("Config", "left"), ("Output", "left"), ("img/s", "right"),
                      (f"x DataLoader ({result['baseline'] or 'none'})", "right")):
        table.add_column(col, justify=just)
    for r in result["rows"]:
        ratio = f"{r['ratio_vs_dataloader']:.2f}" if r.get("ratio_vs_dataloader") is not None else "-"
        table.add_row(r["backend"], r["label"], r["output"], f"{r['img_s']:,.0f}", ratio)
    for s in result["skipped"]:
        table.add_row(s["backend"], f"skipped: {s['reason']}", "-", "-", "-")
    Console(width=140).print(table)


def plot(result: dict, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = result["rows"]
    gpu = [r for r in rows if r["backend"] == "DALI GPU"]
    fig, axes = plt.subplots(1, 2 if gpu else 1, figsize=(13 if gpu else 8, 6.5), squeeze=False,
                             gridspec_kw={"width_ratios": [1.6, 1]} if gpu else None)
    ax = axes[0][0]
    colours = {"DALI GPU": "#76b900", "DALI CPU": "#1f77b4", "PIL loop": "#9467bd", "DataLoader": "#ff7f0e"}
    labels = [f"{r['backend']}: {r['label']}" for r in rows]
    ax.barh(range(len(rows)), [r["img_s"] for r in rows], color=[colours[r["backend"]] for r in rows])
    ax.set_yticks(range(len(rows)), labels, fontsize=7)
    ax.invert_yaxis()
    ax.set_xscale("log")
    ax.set_xlabel("images/s (log scale)")
    for i, r in enumerate(rows):
        ax.text(r["img_s"], i, f" {r['img_s']:,.0f}", va="center", fontsize=6)
    env = result["environment"]
    ax.set_title(f"{result['images']['width']}x{result['images']['height']} JPEG -> {result['preprocess']['crop']}, "
                 f"{env.get('gpu') or 'no GPU'}, {env['cpu_count']} CPUs", fontsize=9)
    if gpu:
        ax2 = axes[0][1]
        sweep = sorted((r for r in gpu if r.get("sweep") == "hw_decoder_load"), key=lambda r: r["hw_decoder_load"])
        if sweep:
            ax2.plot([r["hw_decoder_load"] for r in sweep], [r["img_s"] for r in sweep], "o-", color="#76b900")
            ax2.set_xlabel("hw_decoder_load")
            ax2.set_ylabel("images/s")
            ax2.set_title(f"DALI GPU vs hw_decoder_load (batch {sweep[0]['batch']}, "
                          f"{sweep[0]['num_threads']} threads)", fontsize=9)
            ax2.grid(alpha=0.3)
            ax2.set_ylim(bottom=0)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)

"""The GPU ensemble against its bounds, in one JSON: served / min(DALI alone, network alone).

    python benchmarks/gpu_summary.py --bounds BOUNDS.json --served RESNET50.json --out docs/gpu_ensemble/summary.json

BOUNDS.json comes from benchmarks/gpu_bounds.py, RESNET50.json from
benchmarks/gpu_ensemble_bench.py (--models resnet50), both on the same GPU host. Prints the ratios
and exits 1 when a target of docs/gpu_ensemble.md is missed (served / min(parts) >= 0.85,
batch-order ratio >= 0.9).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from benchmarks.results_file import write_result

SERVED_OVER_MIN_PARTS_TARGET = 0.85
BATCH_ORDER_TARGET = 0.9


def summarize(bounds: dict, served: dict, bounds_file: str, served_file: str) -> dict:
    """The summary record (see the module docstring) from the two raw results."""
    best = served["best"]
    if best["batch"] != bounds["batch"]:
        raise ValueError(f"served best point is at batch {best['batch']}, the bounds were measured at {bounds['batch']}")
    parts = min(bounds["dali_alone_img_s"], bounds["network_alone_img_s"])
    env = bounds["environment"]
    return {
        "gpu": env.get("gpu"), "driver": env.get("driver"), "dali": env.get("dali"), "torch": env.get("torch"),
        "batch": bounds["batch"],
        "dali_alone_img_s": bounds["dali_alone_img_s"],
        "dali_pipelines": bounds["pipelines"],
        "network_alone_img_s": bounds["network_alone_img_s"],
        "network_best_streams": bounds["network_alone"]["best_streams"],
        "served_img_s": best["images_per_s"],
        "served_concurrency": best["concurrency"],
        "served_p99_ms": best["p99_ms"],
        "served_instances": served["instances"],
        "served_over_min_parts": best["images_per_s"] / parts,
        "batch_order_ratio": bounds["batch_order_ratio"],
        "batch_order_ratio_without_warmup": bounds.get("batch_order_ratio_without_warmup"),
        "perf_analyzer_throughput_line": (served.get("perf_analyzer") or {}).get("throughput_line"),
        "logits_within_tolerance": served["logits"]["within_tolerance"],
        "per_step_ms_per_batch": _per_step(bounds, served),
        "sources": {"bounds": bounds_file, "served": served_file},
        "commands": [bounds["command"], served.get("command")],
    }


def _per_step(bounds: dict, served: dict) -> dict:
    """Each step's time per batch inside the server (Triton's compute time per execution at the best
    point) next to the same work alone (one pipeline's or one stream's share of the bounds)."""
    best = next(p for p in served["points"]
                if p["batch"] == served["best"]["batch"] and p["concurrency"] == served["best"]["concurrency"])
    batch = bounds["batch"]
    alone = {"preprocess": 1000.0 * batch * bounds["pipelines"] / bounds["dali_alone_img_s"],
             "network": 1000.0 * batch * bounds["network_alone"]["best_streams"] / bounds["network_alone_img_s"]}
    out = {}
    for model, step in best["steps"].items():
        kind = ("preprocess" if model.endswith("_preprocess") else
                "network" if model.endswith("_infer") else None)
        if kind:
            out[kind] = {"model": model, "in_server": step["compute_ms_per_execution"], "alone": alone[kind]}
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--bounds", type=Path, required=True)
    p.add_argument("--served", type=Path, required=True)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--served-command", default=None,
                   help="the command that made --served, for results older than the bench's own 'command' field")
    p.add_argument("--environment", default=None,
                   help="environment variables both runs had, e.g. DALI_USE_EXEC2=1 (recorded as given)")
    a = p.parse_args(argv)
    served = json.loads(a.served.read_text())
    if a.served_command:
        served["command"] = a.served_command
    s = summarize(json.loads(a.bounds.read_text()), served, str(a.bounds), str(a.served))
    s["environment_variables"] = a.environment
    s["command"] = "python benchmarks/gpu_summary.py " + " ".join(sys.argv[1:] if argv is None else argv)
    write_result(a.out, s, quiet=True)
    print(f"{s['gpu']}: DALI alone {s['dali_alone_img_s']:,.0f}, network alone {s['network_alone_img_s']:,.0f}, "
          f"served {s['served_img_s']:,.0f} img/s -> served / min(parts) {s['served_over_min_parts']:.2f}; "
          f"batch-order ratio {s['batch_order_ratio']:.2f}")
    for kind, step in s["per_step_ms_per_batch"].items():
        print(f"  {kind}: {step['in_server']:.1f} ms per batch in the server, {step['alone']:.1f} ms alone")
    ok = s["served_over_min_parts"] >= SERVED_OVER_MIN_PARTS_TARGET and s["batch_order_ratio"] >= BATCH_ORDER_TARGET
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

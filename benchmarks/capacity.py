"""Capacity model for the Kubernetes deployment: replicas for a target load, and the HPA target.

    python benchmarks/capacity.py docs/kubernetes/bench-cpu-dev/bench.json \\
        --target-images-per-s 20000 --sla-p99-ms 50 --protocol grpc --precision fp32 --batch-size 8 \\
        --machine "2-core CPU dev machine, shared" --json docs/kubernetes/capacity-cpu-dev.json

Input: the JSON of `python -m benchmarks.bench` run against ONE replica at several concurrencies
(`--concurrency 1 --concurrency 2 ...`), for the protocol, precision and batch size the clients
will use. For each measured concurrency it reads the replica's throughput (images/s), the p99
latency the clients saw, and the requests in flight inside the server, by Little's law
(requests/s x the server's own time per request): the quantity the HPA's metric
`triton_inflight_requests` computes from Triton's counters (deploy/k8s/monitoring/).

The operating point is the measured concurrency with the highest throughput whose p99 still
meets the SLA. Then, with `headroom` (default 0.8) the share of that point one replica is
planned to carry:

    replicas        = ceil(target images/s / (headroom x operating throughput))
    HPA target      = headroom x in-flight requests at the operating point      (per pod)

The headroom covers what the autoscaler cannot: it acts on a 1-minute rate, and a new replica
needs minutes to load its models, so it must scale out before a replica reaches the SLA limit.
A model, not a measurement of the cluster: it assumes replicas scale linearly (one GPU or CPU
set each, a Service spreading requests evenly) and that the load looks like the benchmark's.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

from contract.errors import USAGE, ToolkitError


class CapacityError(ToolkitError, ValueError):
    """The benchmark cannot answer the question asked (no matching points, SLA never met, ...)."""

    exit_code = USAGE


def load_points(bench: dict, protocol: str | None = None, precision: str | None = None,
                batch_size: int | None = None, include_unstable: bool = False) -> list[dict]:
    """One row per measured concurrency of `bench` (benchmarks.bench JSON) for one protocol,
    precision and batch size; a filter left None must be unambiguous in the file."""
    points = bench.get("points")
    if not points:
        raise CapacityError("the benchmark JSON has no 'points' (is it benchmarks.bench output?)")
    chosen = {"protocol": protocol, "precision": precision, "batch_size": batch_size}
    for key, want in chosen.items():
        values = sorted({p[key] for p in points}, key=str)
        if want is None:
            if len(values) > 1:
                raise CapacityError(f"the benchmark has several {key} values {values}: choose one with "
                                    f"--{key.replace('_', '-')}")
            chosen[key] = values[0]
        elif want not in values:
            raise CapacityError(f"no point with {key} {want!r} in the benchmark (it has {values})")
    rows = []
    for p in points:
        if any(p[k] != v for k, v in chosen.items()):
            continue
        if not p.get("stable", True) and not include_unstable:
            continue
        rows.append({
            "concurrency": p["concurrency"],
            "images_per_s": p["images_per_s"],
            "requests_per_s": p["inferences_per_s"],
            "p99_ms": p["latency_ms"]["p99"],
            # Little's law inside the server: arrivals/s x seconds each spends there.
            "inflight": p["inferences_per_s"] * p["server_latency_ms"] / 1000.0,
            "stable": p.get("stable", True),
        })
    if not rows:
        raise CapacityError(f"no stable point for {chosen} (pass --include-unstable to use unstable ones)")
    return sorted(rows, key=lambda r: r["concurrency"])


def plan(points: list[dict], target_images_per_s: float, sla_p99_ms: float, headroom: float = 0.8) -> dict:
    """Replicas and HPA target from `points` (load_points()); see the module docstring.

    target_images_per_s: the load the deployment must carry; sla_p99_ms: the p99 latency each
    request must meet; headroom: the share (0-1] of the operating point one replica is planned for.
    """
    if target_images_per_s <= 0 or sla_p99_ms <= 0:
        raise CapacityError("the target throughput and the SLA must be positive")
    if not 0 < headroom <= 1:
        raise CapacityError(f"headroom must be in (0, 1], got {headroom}")
    meeting = [p for p in points if p["p99_ms"] is not None and p["p99_ms"] <= sla_p99_ms]
    if not meeting:
        best = min(points, key=lambda p: p["p99_ms"])
        raise CapacityError(f"no measured concurrency meets p99 <= {sla_p99_ms} ms; the lowest p99 is "
                            f"{best['p99_ms']:.2f} ms at concurrency {best['concurrency']}: the SLA needs a "
                            "faster replica (smaller batch, other precision, GPU), not more replicas")
    op = max(meeting, key=lambda p: p["images_per_s"])
    per_replica = headroom * op["images_per_s"]
    replicas = math.ceil(target_images_per_s / per_replica)
    notes = []
    if op["concurrency"] == max(p["concurrency"] for p in points):
        notes.append("the operating point is the highest concurrency measured: a replica may take more "
                     "before p99 passes the SLA; measure higher concurrencies to know")
    hpa_target = headroom * op["inflight"]
    return {
        "sla_p99_ms": sla_p99_ms, "target_images_per_s": target_images_per_s, "headroom": headroom,
        "operating_point": op, "per_replica_images_per_s": per_replica, "replicas": replicas,
        # One replica can be lost (node drain within the PodDisruptionBudget) without missing the target.
        "replicas_n_plus_1": replicas + 1,
        "hpa_target_inflight": hpa_target,
        # A Kubernetes quantity for the HPA's averageValue, in thousandths ("1500m" = 1.5 requests).
        "hpa_average_value": f"{max(1, round(hpa_target * 1000))}m",
        "notes": notes,
    }


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("bench", type=Path, help="bench.json written by python -m benchmarks.bench (one replica)")
    p.add_argument("--target-images-per-s", type=float, required=True, help="load the deployment must carry")
    p.add_argument("--sla-p99-ms", type=float, required=True, help="p99 latency per request to meet")
    p.add_argument("--headroom", type=float, default=0.8,
                   help="share of the SLA-limit throughput one replica is planned for (default: %(default)s)")
    p.add_argument("--protocol", default=None, help="protocol of the points to use (needed if the file has several)")
    p.add_argument("--precision", default=None, help="precision of the points to use")
    p.add_argument("--batch-size", type=int, default=None, help="images per request of the points to use")
    p.add_argument("--include-unstable", action="store_true", help="also use points flagged not stable")
    p.add_argument("--machine", default=None, help="where the benchmark ran, recorded in --json")
    p.add_argument("--json", type=Path, default=None, help="write the inputs and the result here")
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        bench = json.loads(args.bench.read_text())
        points = load_points(bench, args.protocol, args.precision, args.batch_size, args.include_unstable)
        result = plan(points, args.target_images_per_s, args.sla_p99_ms, args.headroom)
    except (OSError, json.JSONDecodeError) as err:
        print(f"error: cannot read {args.bench}: {err}", file=sys.stderr)
        return 2
    except (CapacityError, KeyError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"{'conc.':>5} {'images/s':>10} {'p99 ms':>8} {'in flight':>9}")
    for p in points:
        mark = "  <- operating point" if p is result["operating_point"] else ""
        print(f"{p['concurrency']:>5} {p['images_per_s']:>10.1f} {p['p99_ms']:>8.2f} {p['inflight']:>9.2f}{mark}")
    op = result["operating_point"]
    print(f"one replica: {op['images_per_s']:.1f} images/s at p99 {op['p99_ms']:.2f} ms <= {args.sla_p99_ms} ms "
          f"(concurrency {op['concurrency']}); planned at {args.headroom:.0%}: {result['per_replica_images_per_s']:.1f} images/s")
    print(f"replicas for {args.target_images_per_s:.0f} images/s: {result['replicas']} "
          f"({result['replicas_n_plus_1']} to survive losing one)")
    print(f"HPA target (triton_inflight_requests per pod): {result['hpa_target_inflight']:.3f} -> "
          f"averageValue \"{result['hpa_average_value']}\"")
    for note in result["notes"]:
        print(f"note: {note}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({
            "machine": args.machine, "bench": str(args.bench), "server": bench.get("server", {}).get("version"),
            "model": bench.get("model"), "protocol": args.protocol, "precision": args.precision,
            "batch_size": args.batch_size, "points": points, **result}, indent=2) + "\n")
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

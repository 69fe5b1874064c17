"""python -m benchmarks.config_search: search, report, write back, confirm (see the package docstring)."""
from __future__ import annotations

import argparse
import shlex
import statistics
import sys
import time
from pathlib import Path

from contract.errors import MissingInput, UsageError, exit_code_of
from contract.images import request_pool
from benchmarks.config_search import measure as m, report, space, writeback
from benchmarks.config_search.strategy import Score, coordinate_descent


KNOBS = ("instances", "delay_us", "preferred", "num_threads", "hw_decoder_load")


def _ints(text: str) -> tuple[int, ...]:
    try:
        vals = tuple(sorted({int(v) for v in text.split(",") if v.strip()}))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if not vals or vals[0] < 0:
        raise argparse.ArgumentTypeError(f"expected integers >= 0, got {text!r}")
    return vals


def _loads(text: str) -> tuple[float, ...]:
    try:
        vals = tuple(sorted({float(v) for v in text.split(",") if v.strip()}))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None
    if not vals or vals[0] < 0 or vals[-1] > 1:
        raise argparse.ArgumentTypeError(f"hw_decoder_load values lie in [0, 1], got {text!r}")
    return vals


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m benchmarks.config_search", description=(
        "Find the fastest serving configuration of an ensemble whose p99 stays under an SLA, by coordinate "
        "descent over per-model instance count, max queue delay, preferred batch sizes (and DALI num_threads, "
        "hw_decoder_load on the gpu target), each measured on a local tritonserver serving a private copy of "
        "the repository; write the winner back and confirm it against the default in a fresh run."))
    p.add_argument("--repository", type=Path, default=Path("model_repository/cpu"),
                   help="the target folder to search and write back to (default: %(default)s)")
    p.add_argument("--ensemble", required=True, help="the ensemble to tune, e.g. digits_fp32")
    p.add_argument("--sla-ms", type=float, required=True, help="p99 latency bound in ms (client side)")
    p.add_argument("--min-throughput", type=float, default=0.0, help="images/s a point needs besides the SLA")
    p.add_argument("--concurrency", type=_ints, default=(4,), help="requests in flight, comma-separated (default 4)")
    p.add_argument("--batch-size", type=int, default=1, help="images per request (default: %(default)s)")
    p.add_argument("--data", type=Path, default=None,
                   help="images to send: an ImageFolder or a flat folder (default: the manifest's validation images)")
    p.add_argument("--images", type=int, default=64, help="distinct images to cycle through (default: %(default)s)")
    p.add_argument("--instances", type=_ints, default=(1, 2), help="instance counts to try (default 1,2)")
    p.add_argument("--delays-us", type=_ints, default=(0, 500, 2000, 8000),
                   help="max_queue_delay_microseconds values to try (default 0,500,2000,8000)")
    p.add_argument("--threads", type=_ints, default=(2, 4, 8), help="gpu DALI num_threads to try (default 2,4,8)")
    p.add_argument("--hw-loads", type=_loads, default=(0.0, 0.5, 1.0),
                   help="gpu DALI hw_decoder_load values to try (default 0,0.5,1)")
    p.add_argument("--knobs", default=",".join(KNOBS),
                   help=f"knobs to search, comma-separated of {','.join(KNOBS)} (default: all that apply)")
    p.add_argument("--models", default="", help="composing models to tune, comma-separated (default: every step)")
    p.add_argument("--max-passes", type=int, default=2, help="coordinate descent passes at most (default 2)")
    p.add_argument("--min-gain", type=float, default=0.05,
                   help="a move must beat the best by this fraction (noise margin; default %(default)s)")
    p.add_argument("--budget-s", type=float, default=480.0, help="wall seconds for the search (default %(default)s)")
    p.add_argument("--window", type=float, default=0.5, help="measure_point window seconds (default %(default)s)")
    p.add_argument("--max-windows", type=int, default=6, help="measure_point window cap (default %(default)s)")
    p.add_argument("--server-arg", action="append", default=[], metavar="ARG",
                   help="a further tritonserver argument, e.g. --server-arg=--cuda-memory-pool-byte-size=0:1073741824 "
                        "(repeatable)")
    p.add_argument("--protocol", choices=("grpc", "http"), default="grpc")
    p.add_argument("--confirm-rounds", type=int, default=2,
                   help="fresh default-vs-winner measurements after the search, alternating (0: none; default 2)")
    p.add_argument("--dry-run", action="store_true", help="print the diff instead of writing the winner back")
    p.add_argument("--out", type=Path, default=Path("results/config_search"),
                   help="folder for config_search.json and pareto.png (default: %(default)s)")
    p.add_argument("--label", default="", help="machine or run name put in the JSON and the plot title")
    return p


def _default_data(repo: Path, ensemble: str) -> Path:
    from contract.manifest import ManifestError, load_manifest

    try:
        mf = load_manifest(repo.parent)
    except ManifestError as err:
        raise MissingInput(f"no --data given and no usable manifest next to {repo}: {err}") from None
    names = [n for n in mf.models if ensemble.startswith(n + "_") and mf.models[n].val]
    if not names:
        raise MissingInput(f"no --data given and the manifest has no validation images for {ensemble!r}")
    return mf.models[max(names, key=len)].val


def _trial(cfg, rec, marks=()) -> dict:
    return {"label": space.config_key(cfg), "config": space.config_json(cfg), **rec, "marks": list(marks)}


def _inputs(args, repo: Path):
    """The ensemble's current configs, the knobs and the models to search; UsageError (exit code 2)
    for a flag out of range or a knob or model that is not there."""
    try:
        start = space.read_config(repo, args.ensemble)
    except OSError as err:
        raise UsageError(str(err)) from err
    if args.batch_size < 1 or min(args.concurrency) < 1 or min(args.instances) < 1:
        raise UsageError("--batch-size, --concurrency and --instances must be >= 1")
    knobs = [k.strip() for k in args.knobs.split(",") if k.strip()]
    models = [x.strip() for x in args.models.split(",") if x.strip()] or list(start)
    bad = [k for k in knobs if k not in KNOBS] + [x for x in models if x not in start]
    if bad:
        raise UsageError(f"unknown knob(s) or model(s) {bad}; knobs: {list(KNOBS)}, models: {list(start)}")
    return start, knobs, models


def _search(args, repo: Path, start, axes, batches, settings, say) -> dict:
    """Coordinate descent over `axes` from `start`, every configuration measured on a fresh server;
    the trials (default and winner marked), the winner, its score, the passes and the seconds."""
    trials: list[dict] = []
    began = time.monotonic()
    with m.Workspace(repo, args.ensemble) as ws:
        def evaluate(cfg) -> Score:
            rec = m.measure(ws, cfg, batches, settings)
            trials.append(_trial(cfg, rec))
            s = rec["score"]
            say(f"[{len(trials):2}] {space.config_key(cfg)}: " + (f"FAILED {rec['error']}" if rec["error"] else
                f"{s['images_per_s']:.1f} images/s within SLA" if s["feasible"] else
                f"over SLA (best p99 {s['best_p99_ms']:.1f} ms)") + f"  [{rec['seconds']:.0f} s]")
            return Score(s["feasible"], s["images_per_s"], s["best_p99_ms"] or float("inf"))

        winner, best, passes = coordinate_descent(start, axes, evaluate, max_passes=args.max_passes,
                                                  min_gain=args.min_gain, budget_s=args.budget_s, log=say)
    keys = [t["label"] for t in trials]
    trials[0]["marks"].append("default")
    trials[keys.index(space.config_key(winner))]["marks"].append("winner")
    return {"trials": trials, "winner": winner, "best": best, "passes": passes, "seconds": time.monotonic() - began}


def _write_back(args, repo: Path, winner, feasible: bool, say) -> dict | None:
    """Write the winner into the repository when it met the SLA and this is no --dry-run."""
    if args.dry_run or not feasible:
        say("dry run: the write-back would change\n" + writeback.diff(repo, winner) if args.dry_run else "")
        return None
    written = writeback.write_back(repo, args.ensemble, winner)
    say(f"written back: {', '.join(winner)} in {repo}; previous configs in {written['previous']}, live copies in "
        f"{written['live']}" + (f"; manifest {written['manifest']} records it" if written["manifest"] else
                                "; no manifest next to the repository to record it in"))
    return written


def _record(args, argv, settings, images: int, start, found: dict, written) -> dict:
    """What config_search.json holds (confirmation filled in later)."""
    return {"command": shlex.join(["tik-config-search", *(sys.argv[1:] if argv is None else argv)]),
            "label": args.label, "repository": str(args.repository), "ensemble": args.ensemble,
            "settings": {**settings.__dict__, "concurrencies": list(settings.concurrencies),
                         "server_args": list(settings.server_args), "images": images,
                         "instances": list(args.instances), "delays_us": list(args.delays_us),
                         "threads": list(args.threads), "hw_loads": list(args.hw_loads),
                         "max_passes": args.max_passes, "min_gain": args.min_gain, "budget_s": args.budget_s},
            "strategy": "coordinate descent", "passes": found["passes"], "search_seconds": round(found["seconds"], 1),
            "default": space.config_json(start), "winner": space.config_json(found["winner"]),
            "winner_feasible": found["best"].feasible, "written_back": written, "dry_run": args.dry_run,
            "confirmation": None, "trials": found["trials"]}


def run(args, argv, console) -> int:
    """Search, report, write back, confirm; 0 when a configuration met the SLA, else 1."""
    say = lambda text: console.print(text, highlight=False)  # noqa: E731
    repo = args.repository.resolve()
    start, knobs, models = _inputs(args, repo)
    encoded = m.load_images(args.data or _default_data(repo, args.ensemble), args.images)
    batches = request_pool(encoded, args.batch_size)
    settings = m.Settings(sla_ms=args.sla_ms, concurrencies=args.concurrency, min_throughput=args.min_throughput,
                          batch_size=args.batch_size, window_s=args.window, max_windows=max(3, args.max_windows),
                          protocol=args.protocol, server_args=tuple(args.server_arg))
    axes = [a for a in space.axes(start, args.instances, args.delays_us, args.threads, args.hw_loads)
            if a.knob in knobs and a.model in models]
    say(f"config search: {args.ensemble} in {repo}; p99 <= {args.sla_ms:g} ms"
        + (f", >= {args.min_throughput:g} images/s" if args.min_throughput else "")
        + f"; concurrency {list(args.concurrency)}, batch {args.batch_size}; {len(axes)} axes, "
        f"{sum(len(a.values) for a in axes)} values per pass")
    found = _search(args, repo, start, axes, batches, settings, say)
    trials, winner, best = found["trials"], found["winner"], found["best"]
    title = f"{args.ensemble}, p99 <= {args.sla_ms:g} ms" + (f" ({args.label})" if args.label else "")
    console.print(report.table(trials, args.sla_ms, f"config search: {title}; {len(trials)} configurations, "
                               f"{found['seconds']:.0f} s"))
    say(f"search: coordinate descent, {found['passes']} pass(es), {len(trials)} configurations in "
        f"{found['seconds']:.0f} s")
    say(f"winner: {space.config_key(winner)}" + ("" if best.feasible else "  (NOTHING met the SLA; the winner "
                                                 "is the lowest p99 found, and is not written back)"))
    written = _write_back(args, repo, winner, best.feasible, say)
    record = _record(args, argv, settings, len(encoded), start, found, written)
    # Written before the confirmation too, so a run cut short there still leaves the search's results.
    out = [report.write_json(args.out / "config_search.json", record),
           report.plot(args.out / "pareto.png", trials, args.sla_ms, title)]
    if args.confirm_rounds > 0:
        record["confirmation"] = _confirm(repo, args, settings, batches, start, winner, written is not None, say)
        report.write_json(args.out / "config_search.json", record)
    say("wrote " + ", ".join(map(str, out)))
    return 0 if best.feasible else 1


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    from rich.console import Console

    console = Console(width=None if sys.stdout.isatty() else 160)
    return exit_code_of(run, args, argv, console)


def _confirm(repo, args, settings, batches, start, winner, written: bool, say) -> dict:
    """Fresh servers, alternating default and winner `--confirm-rounds` times; the medians' ratio."""
    live = space.read_config(repo, args.ensemble) if written else winner
    runs = {"default": [], "winner": []}
    with m.Workspace(repo, args.ensemble) as ws:
        for _ in range(args.confirm_rounds):
            for name, cfg in (("default", start), ("winner", live)):
                runs[name].append(m.measure(ws, cfg, batches, settings))
    med = {k: statistics.median(r["score"]["images_per_s"] for r in v) for k, v in runs.items()}
    ratio = med["winner"] / med["default"] if med["default"] > 0 else None
    say(f"confirmation ({args.confirm_rounds} fresh rounds each, p99 <= {args.sla_ms:g} ms): default "
        f"{med['default']:.1f} images/s, {'written-back' if written else 'winner'} {med['winner']:.1f} images/s: "
        + (f"ratio {ratio:.2f}" if ratio is not None else "the default met the SLA in no round (ratio undefined)"))
    return {"rounds": args.confirm_rounds, "winner_from": "repository (written back)" if written else "search",
            "median_images_per_s": med, "ratio": ratio,
            "runs": {k: [{"score": r["score"], "error": r["error"], "points": r["points"]} for r in v]
                     for k, v in runs.items()}}


if __name__ == "__main__":
    sys.exit(main())

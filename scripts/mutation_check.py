"""A small mutation check of the core: named one-line breakages, each run against the fast tests
that should catch it. Run outside CI (each mutant is a pytest run; the server ones start Triton):

    PYTHONPATH=$PWD TOOLKIT_TEST_CACHE=$PWD/.cache/build .venv/bin/python scripts/mutation_check.py
    ... --only swap-delete-then-rename --only dali-std-reversed     # some of them
    ... --list                                                       # what would run

The checkout is copied (tracked and untracked-not-ignored files) into a private temporary folder;
each mutant edits one line of the copy, the tests run there (`pytest -x`, a timeout per mutant),
and the line is put back. The checkout itself is never edited. TOOLKIT_TEST_CACHE lets the tests
reuse a built demo; a mutant in a stage's code changes that stage's cache key and makes the tests
rebuild, so such mutants are run against tests that do not build.

A mutant is killed when its tests fail, survives when they pass, and is `stale` when its line is
no longer in the file (the code moved on; update the mutant). A survivor marked `equivalent`
cannot change behaviour, for the reason given. Writes the JSON report and a Markdown summary.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from contract.errors import ToolkitError

ROOT = Path(__file__).resolve().parents[1]
PARITY = ["tests/test_parity.py", "tests/test_guards.py", "-k",
          "matches_torchvision_on_photos or square_resize or slips or any_one_bound"]


@dataclass
class Mutant:
    """name: what the breakage is; path: file (from the repository root); old: the exact text
    replaced, unique in the file unless `nth` picks an occurrence (0-based); new: its replacement;
    tests: pytest arguments that must fail; equivalent: why this mutant cannot change behaviour."""

    name: str
    path: str
    old: str
    new: str
    tests: list[str]
    nth: int | None = None
    equivalent: str = ""


GUARDS = "tests/test_guards.py"
SERVER = "tests/test_guards_server.py"
MUTANTS = [
    # preprocessing: constants and geometry (DALI pipeline, tolerance)
    Mutant("dali-std-reversed", "contract/dali_pipeline.py", "std=[s * 255.0 for s in std]",
           "std=[s * 255.0 for s in reversed(std)]", PARITY),
    Mutant("dali-mean-scale", "contract/dali_pipeline.py", "mean=[m * 255.0 for m in mean]",
           "mean=[m * 256.0 for m in mean]", PARITY),
    Mutant("crop-anchor-rounding", "contract/dali_pipeline.py", "return k + (d & k & 1)",
           "return k + (d & 1)", PARITY),
    Mutant("no-antialias", "contract/dali_pipeline.py", "antialias=True", "antialias=False", PARITY),
    Mutant("exact-bytes-keeps-padding", "contract/dali_pipeline.py", "whole + tagged * (word(4) - whole)",
           "whole - tagged * PREFIX_BYTES",
           ["tests/test_exact_bytes.py"]),
    Mutant("longer-side-to-resize", "contract/dali_pipeline.py", "// fn.reductions.min(hw)",
           "// fn.reductions.max(hw)", PARITY),
    Mutant("parity-tolerance-1000", "contract/preprocess.py", 'CPU_TOLERANCE = {"mean": 0.5, "p99": 1.5, "max": 2.5}',
           'CPU_TOLERANCE = {"mean": 1000, "p99": 1000, "max": 1000}', PARITY),
    Mutant("parity-or-to-and", "contract/preprocess.py", 'self.mean[i] > self.tolerance["mean"] or',
           'self.mean[i] > self.tolerance["mean"] and', PARITY),
    # config wiring and batching
    Mutant("infer-no-dynamic-batching", "builders/triton_config.py", "dynamic_batching=_dynamic_batching(spec),",
           "", [SERVER, "-k", "batch_concurrent"], nth=1),
    Mutant("infer-no-warmup", "builders/triton_config.py",
           "    if warmup:\n        cfg.model_warmup.extend(_warmup(spec, layout.ENGINE_INPUT,",
           "    if False:\n        cfg.model_warmup.extend(_warmup(spec, layout.ENGINE_INPUT,",
           ["tests/test_builder.py", "-k", "warm_up"]),
    Mutant("warmup-tensor-zeros", "builders/repository.py",
           "np.ascontiguousarray(tensor, dtype=np.float32).tobytes()", "np.zeros(tensor.shape, np.float32).tobytes()",
           [SERVER, "-k", "warmup_tensor"]),
    # repository swap and recovery
    Mutant("swap-delete-then-rename", "builders/repository.py", "        output.rename(prev)\n",
           "        shutil.rmtree(output)\n", [GUARDS, "-k", "swap"]),
    Mutant("recover-ignores-previous", "builders/repository.py", "if prev.exists() and not output.exists():",
           "if prev.exists() and output.exists():", [GUARDS, "-k", "swap"]),
    # calibration cache keys
    Mutant("calib-key-ignores-images", "builders/precision.py", "h.update(np.ascontiguousarray(x).tobytes())",
           "h.update(b'')", [GUARDS, "-k", "calibration"]),
    Mutant("calib-key-ignores-percentile", "builders/precision.py",
           'h.update(f"{calib.method}:{calib.percentile}:{ranges}".encode())',
           'h.update(f"{calib.method}:{ranges}".encode())',
           [GUARDS, "-k", "calibration"]),
    # client retry / backoff
    # "0 * ": zero whatever the default is.
    Mutant("client-retries-0", "clients/_base.py", "retries: int = ", "retries: int = 0 * ",
           [GUARDS, "-k", "retries"]),
    Mutant("cli-retries-0", "clients/connection.py", 'parser.add_argument("--retries", type=int, default=',
           'parser.add_argument("--retries", type=int, default=0 * ', [GUARDS, "-k", "retries"]),
    Mutant("retry-never", "clients/_sync.py", "and attempt < self.retries and", "and attempt < 0 and",
           [SERVER, "-k", "outage"], nth=0),
    Mutant("no-backoff", "clients/_base.py", "min(self.backoff_s * (2 ** attempt), 2.0)",
           "min(self.backoff_s * (2 ** attempt), 0.0)", [SERVER, "-k", "outage"]),
    # SLA gates
    Mutant("sla-no-exit-code", "load_tests/locustfile.py",
           "environment.process_exit_code = _sla.SLA_FAILED_EXIT_CODE", "pass", [SERVER, "-k", "sla"]),
    Mutant("sla-rps-inverted", "load_tests/sla.py", "rps >= min_rps", "rps <= min_rps",
           ["tests/test_load.py", "-k", "sla_evaluate"]),
    # stage cache keys
    Mutant("stage-key-ignores-code", "builders/stages.py", '"made-by": self.provenance(),', '"made-by": {},',
           ["tests/test_stage_cache.py"]),
    Mutant("code-hash-counts-layout", "builders/stages.py", "include_attributes=False", "include_attributes=True",
           ["tests/test_stage_cache.py"]),
    Mutant("tool-versions-ignored", "builders/stages.py", "out[name] = installed[name]", 'out[name] = "any"',
           ["tests/test_stage_cache.py"]),
    # The five breakages the suite once let through (each is pinned by a test since):
    Mutant("image-limit-uses-request-limit", "serving/backends/dali/model.py",
           "_first_over_image_limit(sizes, self.max_image_pixels)",
           "_first_over_image_limit(sizes, self.max_request_pixels)",
           ["tests/test_preprocess_limits.py", "-k", "each_pixel_limit_holds_alone"]),
    Mutant("cpu-int8-per-tensor", "builders/precision.py", "per_channel=True,", "per_channel=symmetric,",
           ["tests/test_builder.py", "-k", "cpu_target_serves_onnxruntime_int8"]),
    Mutant("write-back-the-default", "benchmarks/config_search/__main__.py",
           "written = _write_back(args, repo, winner, best.feasible, say)",
           "written = _write_back(args, repo, start, best.feasible, say)", ["tests/test_config_search.py"]),
    Mutant("average-is-median", "benchmarks/stats.py", '"avg": float(ms.mean())', '"avg": float(np.median(ms))',
           ["tests/test_stats_results.py"]),
    Mutant("softmax-over-the-batch", "clients/results.py", "probs /= probs.sum(axis=1, keepdims=True)",
           "probs /= probs.sum(axis=0, keepdims=True)", ["tests/test_stats_results.py"]),
]


def _copy_checkout(dst: Path) -> None:
    files = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                           capture_output=True, check=True).stdout.decode().split("\0")
    for rel in filter(None, files):
        src = ROOT / rel
        if src.is_file():
            (dst / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dst / rel)


def _replace(text: str, m: Mutant) -> str | None:
    starts = [i.start() for i in re.finditer(re.escape(m.old), text)]
    if m.nth is None:
        if len(starts) != 1:
            return None
        i = starts[0]
    elif m.nth < len(starts):
        i = starts[m.nth]
    else:
        return None
    return text[:i] + m.new + text[i + len(m.old):]


def _pytest(copy: Path, args: list[str], timeout: float) -> tuple[str, float, str]:
    """Run pytest in the copy: ("passed" | "failed" | "timeout", seconds, the first failure line)."""
    env = {**os.environ, "PYTHONPATH": str(copy), "PYTHONDONTWRITEBYTECODE": "1"}
    cmd = [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", *args]
    start = time.monotonic()
    # Its own session: on timeout the whole group (pytest, tritonserver, locust) is ended.
    proc = subprocess.Popen(cmd, cwd=copy, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        return "timeout", time.monotonic() - start, ""
    lines = out.splitlines()
    first = next((ln for ln in lines if ln.startswith(("FAILED", "ERROR"))), lines[-1] if lines else "")
    return ("passed" if proc.returncode == 0 else "failed"), time.monotonic() - start, first


def run(mutants: list[Mutant], timeout: float, baseline: bool) -> dict:
    results = []
    with tempfile.TemporaryDirectory(prefix="mutation-") as tmp:
        copy = Path(tmp)
        _copy_checkout(copy)
        if baseline:
            for args in {tuple(m.tests) for m in mutants}:
                status, secs, line = _pytest(copy, list(args), timeout)
                print(f"baseline {' '.join(args)}: {status} in {secs:.0f}s", flush=True)
                if status != "passed":
                    raise ToolkitError(f"the unmutated tests fail ({line}); fix them before checking mutants")
        for m in mutants:
            target = copy / m.path
            original = target.read_text()
            mutated = _replace(original, m)
            rec = {**asdict(m), "command": "pytest -x -q " + " ".join(
                f"'{a}'" if " " in a else a for a in m.tests)}
            if mutated is None:
                rec.update(result="stale", seconds=0.0, failure="")
            else:
                try:
                    target.write_text(mutated)
                    status, secs, line = _pytest(copy, m.tests, timeout)
                finally:
                    target.write_text(original)
                result = {"failed": "killed", "timeout": "timeout", "passed": "survived"}[status]
                if result == "survived" and m.equivalent:
                    result = "equivalent"
                rec.update(result=result, seconds=round(secs, 1), failure=line)
            print(f"{m.name}: {rec['result']} ({rec['seconds']:.0f}s) {rec['failure']}", flush=True)
            results.append(rec)
    counted = [r for r in results if r["result"] in ("killed", "survived", "timeout")]
    killed = [r for r in counted if r["result"] in ("killed", "timeout")]
    return {"command": "PYTHONPATH=$PWD TOOLKIT_TEST_CACHE=$PWD/.cache/build .venv/bin/python scripts/mutation_check.py",
            "machine": "2-core CPU dev machine, shared", "python": platform.python_version(),
            "date": time.strftime("%Y-%m-%d"), "score": round(len(killed) / len(counted), 3) if counted else None,
            "killed": len(killed), "survived": sum(r["result"] == "survived" for r in results),
            "equivalent": sum(r["result"] == "equivalent" for r in results),
            "stale": sum(r["result"] == "stale" for r in results), "mutants": results}


def markdown(report: dict) -> str:
    def why(r: dict) -> str:
        text = r["equivalent"] or r["failure"]
        quoted = text.replace("`", "'").replace("|", "/")
        return f"`{quoted}`" if text else ""

    rows = "\n".join(f"| `{r['name']}` | `{r['path']}` | {r['result']} | {r['seconds']:.0f} | {why(r)} |"
                      for r in report["mutants"])
    return f"""# Mutation check

Named one-line breakages of the core modules (`scripts/mutation_check.py`), each run against the
fast tests that should catch it. Regenerate with:

    {report['command']}

Machine: {report['machine']}; {report['date']}. Full results, with each mutant's replaced and
replacing text and its test command: `docs/mutation.json`.

<!-- figures: docs/mutation.json -->
Mutation score {report['score']}: {report['killed']} killed, {report['survived']} survived,
{report['equivalent']} equivalent (excluded from the score), {report['stale']} stale.

| mutant | file | result | seconds | first failing test, or why equivalent |
|---|---|---|---|---|
{rows}
<!-- /figures -->
"""


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--only", action="append", default=[], help="run only this mutant (repeatable)")
    p.add_argument("--list", action="store_true", help="list the mutants and their tests, run nothing")
    p.add_argument("--timeout", type=float, default=600, help="seconds per mutant (default: %(default)s)")
    p.add_argument("--no-baseline", action="store_true", help="skip running each test selection unmutated first")
    p.add_argument("--json", type=Path, default=ROOT / "docs" / "mutation.json", help="report (default: %(default)s)")
    p.add_argument("--markdown", type=Path, default=ROOT / "docs" / "mutation.md", help="summary (default: %(default)s)")
    args = p.parse_args(argv)
    unknown = set(args.only) - {m.name for m in MUTANTS}
    if unknown:
        p.error(f"unknown mutant(s) {sorted(unknown)}; --list shows them")
    chosen = [m for m in MUTANTS if not args.only or m.name in args.only]
    if args.list:
        for m in chosen:
            print(f"{m.name:32} {m.path:28} pytest {' '.join(m.tests)}")
        return 0
    try:
        report = run(chosen, args.timeout, not args.no_baseline)
    except ToolkitError as err:
        print(err, file=sys.stderr)
        return err.exit_code
    args.json.write_text(json.dumps(report, indent=1) + "\n")
    # What follows the generated table (the mutmut section) is kept as it is.
    old = args.markdown.read_text() if args.markdown.is_file() else ""
    tail = old.split("<!-- /figures -->\n", 1)[1] if "<!-- /figures -->\n" in old else ""
    args.markdown.write_text(markdown(report) + tail)
    print(f"score {report['score']}: {report['killed']} killed, {report['survived']} survived, "
          f"{report['equivalent']} equivalent, {report['stale']} stale -> {args.json}, {args.markdown}")
    return 1 if report["survived"] or report["stale"] else 0


if __name__ == "__main__":
    sys.exit(main())

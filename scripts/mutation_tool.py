"""Run mutmut (pinned in requirements-dev.txt) over the core, group by group, as
scripts/mutation_tool.toml configures: each group mutates its modules (or the named functions of
them) and runs only its fast tests. Writes docs/mutation_tool.json and the report's table in
docs/mutation.md (between the `mutmut-report` markers). Outside CI; the machine it ran on is named
in the JSON. Usage:

    PYTHONPATH=$PWD .venv/bin/python scripts/mutation_tool.py                 # every group
    ... --only dali-limits --only contract                                   # some groups
    ... --max-children 2                                                     # parallel mutants

Each group runs in its own private copy of the checkout (tracked and untracked-not-ignored files),
with a [tool.mutmut] table appended to the copy's pyproject.toml; the checkout is never edited.
A mutant is killed when a test fails (or times out), survives when they pass; `no tests` means no
selected test called the function. The score is killed / (killed + survived + no tests), with the
equivalent mutants the TOML names (and why) taken out of the survivors.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import tomllib
from fnmatch import fnmatch
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "scripts" / "mutation_tool.toml"
# Packages copied into mutmut's mutants/ folder (unmutated unless a group names them), so the tests
# import this checkout's code and never the editable install's.
PACKAGES = ["contract", "runners", "builders", "clients", "serving"]
COMMAND = "PYTHONPATH=$PWD .venv/bin/python scripts/mutation_tool.py"
KILLED, SURVIVED, NO_TESTS = {1, 3, 36, 24, -24, 152, 255}, {0}, {5, 33}


def load_groups() -> list[dict]:
    return tomllib.loads(CONFIG.read_text())["group"]


def _copy_checkout(dst: Path) -> None:
    files = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                           capture_output=True, check=True).stdout.decode().split("\0")
    for rel in filter(None, files):
        if (ROOT / rel).is_file():
            (dst / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / rel, dst / rel)


def _mutmut_table(group: dict) -> str:
    q = json.dumps   # TOML basic strings and arrays of them read like JSON's
    return ("\n[tool.mutmut]\n"
            f"source_paths = {q(PACKAGES)}\n"
            f"only_mutate = {q(group['mutate'])}\n"
            f"pytest_add_cli_args_test_selection = {q(group['tests'])}\n"
            f"pytest_add_cli_args = {q(['-p', 'no:cacheprovider', '-x', '-q'])}\n")


def _mutmut(work: Path, *args: str, timeout: float | None = None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}   # mutmut puts mutants/ first itself
    exe = Path(sys.executable).with_name("mutmut")
    return subprocess.run([str(exe), *args], cwd=work, env=env, capture_output=True, text=True, timeout=timeout)


def _results(work: Path, group: dict) -> dict[str, int | None]:
    """mutant name -> exit code (None: not run), for the group's modules and functions."""
    out = {}
    for path in group["mutate"]:
        meta = work / "mutants" / (path + ".meta")
        codes = json.loads(meta.read_text())["exit_code_by_key"] if meta.is_file() else {}
        for name, code in codes.items():
            if not group["functions"] or any(fnmatch(name, f) for f in group["functions"]):
                out[name] = code
    return out


def _diff(work: Path, name: str) -> tuple[str, str]:
    lines = _mutmut(work, "show", name, timeout=120).stdout.splitlines()
    old = next((ln[1:].strip() for ln in lines if ln.startswith("-") and not ln.startswith("---")), "")
    new = next((ln[1:].strip() for ln in lines if ln.startswith("+") and not ln.startswith("+++")), "")
    return old, new


def run_group(group: dict, max_children: int) -> dict:
    with tempfile.TemporaryDirectory(prefix=f"mutmut-{group['name']}-") as tmp:
        work = Path(tmp)
        _copy_checkout(work)
        with (work / "pyproject.toml").open("a") as f:
            f.write(_mutmut_table(group))
        began = time.monotonic()
        args = ["run", "--max-children", str(max_children), *group["functions"]]
        try:
            proc = _mutmut(work, *args, timeout=group["timeout_s"])
            finished, tail = proc.returncode == 0, proc.stdout[-300:] + proc.stderr[-300:]
        except subprocess.TimeoutExpired:
            finished, tail = False, f"stopped at the group's limit of {group['timeout_s']} s"
        seconds = round(time.monotonic() - began, 1)
        codes = _results(work, group)
        rows = []
        for name, code in sorted(codes.items()):
            status = ("killed" if code in KILLED else "survived" if code in SURVIVED else
                      "no tests" if code in NO_TESTS else "not run" if code is None else f"exit {code}")
            if status != "killed":
                old, new = _diff(work, name)
                rows.append({"mutant": name, "status": status, "old": old, "new": new, "why": ""})
    result = {"name": group["name"], "modules": group["mutate"], "functions": group["functions"], "tests": group["tests"],
              "finished": finished, "seconds": seconds, "mutants": len(codes),
              "killed": sum(1 for c in codes.values() if c in KILLED), "not_killed": rows,
              "log_tail": "" if finished else tail}
    return classify(result, group)


def classify(result: dict, group: dict) -> dict:
    """Mark the survivors the TOML calls equivalent (as it says now) and count each status."""
    equivalent = {e["mutant"]: e["why"] for e in group.get("equivalent", [])}
    for r in result["not_killed"]:
        if r["status"] in ("survived", "equivalent"):
            r["status"], r["why"] = ("equivalent", equivalent[r["mutant"]]) if r["mutant"] in equivalent else ("survived", "")
    for s in ("survived", "equivalent", "no tests", "not run"):
        result[s.replace(" ", "_")] = sum(1 for r in result["not_killed"] if r["status"] == s)
    scored = result["killed"] + result["survived"] + result["no_tests"]
    result["score"] = round(result["killed"] / scored, 3) if scored else None
    return result


def markdown(report: dict) -> str:
    lines = ["<!-- figures: docs/mutation_tool.json -->",
             f"mutmut `{report['mutmut']}`, `{report['machine']}`, `{report['date']}`.", "",
             "| group | modules | tests | mutants | killed | survived | equivalent | no tests | not run | score | seconds |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for g in report["groups"]:
        mods = "<br>".join(f"`{m}`" for m in g["modules"])
        tests = "<br>".join(f"`{t}`" for t in g["tests"])
        score = "-" if g["score"] is None else f"{g['score']:.3f}"
        lines.append(f"| {g['name']} | {mods} | {tests} | {g['mutants']} | {g['killed']} | {g['survived']} | "
                     f"{g['equivalent']} | {g['no_tests']} | {g['not_run']} | {score} | {g['seconds']} |")
    lines += ["", f"Overall score {report['score']:.3f} (killed / all tested but the equivalent ones; `not run`: "
              "the group's time limit ended the run first).", "",
              "Mutants not killed:", "", "| mutant | status | replaced | by | why equivalent |", "|---|---|---|---|---|"]
    for g in report["groups"]:
        for r in (r for r in g["not_killed"] if r["status"] != "not run"):
            cell = lambda s: "`" + s.replace("|", "\\|").replace("`", "'") + "`" if s else ""  # noqa: E731
            lines.append(f"| `{r['mutant']}` | {r['status']} | {cell(r['old'])} | {cell(r['new'])} | {r['why']} |")
    lines.append("<!-- /figures -->")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--only", action="append", default=[], help="group name (repeatable; default: all)")
    p.add_argument("--max-children", type=int, default=2, help="mutants tested in parallel (default 2)")
    p.add_argument("--json", type=Path, default=ROOT / "docs" / "mutation_tool.json")
    p.add_argument("--doc", type=Path, default=ROOT / "docs" / "mutation.md")
    p.add_argument("--report-only", action="store_true",
                   help="run nothing: rewrite the report from the JSON (after editing the equivalent mutants)")
    args = p.parse_args(argv)
    groups = [g for g in load_groups() if not args.report_only and (not args.only or g["name"] in args.only)]
    previous = json.loads(args.json.read_text()) if args.json.is_file() else {"groups": []}
    done = {g["name"]: g for g in previous.get("groups", [])}
    for g in groups:
        print(f"mutmut: {g['name']} ({', '.join(g['mutate'])}) ...", flush=True)
        done[g["name"]] = run_group(g, args.max_children)
        done[g["name"]]["made_by"] = f"{COMMAND} --only {g['name']} --max-children {args.max_children}"
        r = done[g["name"]]
        print(f"  {r['mutants']} mutants: {r['killed']} killed, {r['survived']} survived, {r['equivalent']} equivalent, "
              f"{r['no_tests']} no tests; score {r['score']}; {r['seconds']} s", flush=True)
    results = [classify(done[g["name"]], g) for g in load_groups() if g["name"] in done]
    killed = sum(g["killed"] for g in results)
    scored = sum(g["killed"] + g["survived"] + g["no_tests"] for g in results)
    from importlib.metadata import version

    report = {"command": COMMAND,   # each group's own run: its "made_by" (one group at a time gives the same)
              "mutmut": version("mutmut"), "machine": f"{os.cpu_count()}-core {platform.machine()} CPU, shared",
              "date": time.strftime("%Y-%m-%d", time.gmtime()), "score": round(killed / scored, 3) if scored else 0.0,
              "groups": results}
    args.json.write_text(json.dumps(report, indent=1) + "\n")
    doc = args.doc.read_text() if args.doc.is_file() else ""
    start, end = "<!-- mutmut-report -->", "<!-- /mutmut-report -->"
    block = f"{start}\n{markdown(report)}\n{end}"
    doc = doc[: doc.index(start)] + block + doc[doc.index(end) + len(end):] if start in doc else doc + "\n" + block + "\n"
    args.doc.write_text(doc)
    print(f"wrote {args.json} and {args.doc}; overall score {report['score']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

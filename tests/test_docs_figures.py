"""Figures quoted in the docs come from committed result files.

A doc declares where a passage's numbers come from with an HTML comment (invisible when rendered):

    <!-- figures: docs/preprocessing/parity_cpu.json -->
    ... text and tables quoting its numbers ...
    <!-- /figures -->

(without the closing comment the passage runs to the end of the file). Several files may be named,
comma-separated. Every number in the passage, outside `code`, must be a value of one of those JSON
files as shown: rounded to the digits the doc prints, or as a percentage of a fraction when followed
by "%". Each file must be tracked by git and name the command that made it: a top-level "command"
in the JSON, or `made by: <command>` in the comment (`<!-- figures: x.json; made by: python y.py -->`).

Numbers are read as printed: "1,589", "1.6e-5" (to its significant digits), "19.5k" (thousands, to
the hundreds), "98.3 %"; the number of a name ("ResNet-18", "top-1") is not a figure.

Outside every passage (and outside code), no doc may quote a measured-looking figure: a throughput
("3,016 images/s", "img/s", "req/s") or a speed-up ("2.5×"); a bound ("≥ 2.0×") may stand anywhere.
README must declare the files behind its measurement paragraphs (test_readme_...).

A quoted number may match any value of the named files, so a drift to another value that the files
happen to hold (likelier for short numbers, e.g. 0.9) goes unnoticed: name only the files a passage
quotes, and keep passages to their figures.
"""
from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DECLARATION = re.compile(r"<!--\s*figures:\s*(?P<files>[^;>]+?)\s*(?:;\s*made by:\s*(?P<cmd>.+?)\s*)?-->"
                         r"(?P<body>.*?)(?:<!--\s*/figures\s*-->|\Z)", re.S)
# A name's number ("ResNet-18", "top-1") is not a figure.
NUMBER = re.compile(r"(?<![\w.])(?<![A-Za-z]-)[-+]?\d[\d,]*(?:\.\d+)?(?P<exp>[eE][-+]?\d+)?(?P<k>k\b)?(?P<pct>\s?%)?")
# A measured figure by its unit: a throughput or a speed-up ("2.5×", not "640×480"). Outside a
# figures passage (and outside code) a doc may not quote one; bounds ("≥ 2.0×", a target) may.
MEASURED = re.compile(r"(?<![\w.≥≤<>~])(?<![≥≤<>~] )\d[\d,]*(?:\.\d+)?k?\s?(?:images/s|img/s|req/s|inferences/s)"
                      r"|(?<![\w.≥≤<>~])(?<![≥≤<>~] )\d[\d,]*(?:\.\d+)?×(?!\s?\d)")


def _docs() -> list[Path]:
    return sorted([ROOT / "README.md", *(ROOT / "docs").rglob("*.md")])


def declarations(text: str) -> list[tuple[list[str], str | None, str]]:
    """(JSON paths, command or None, passage) for each `figures:` comment in a Markdown text."""
    text = re.sub(r"```.*?```|`[^`\n]*`", " ", text, flags=re.S)   # a comment shown as code declares nothing
    return [([f.strip() for f in m["files"].split(",") if f.strip()], m["cmd"], m["body"])
            for m in DECLARATION.finditer(text)]


def json_numbers(data) -> list[float]:
    """Every number (not bool) anywhere in a parsed JSON document."""
    if isinstance(data, bool):
        return []
    if isinstance(data, (int, float)):
        return [float(data)]
    if isinstance(data, dict):
        return [x for v in data.values() for x in json_numbers(v)]
    if isinstance(data, list):
        return [x for v in data for x in json_numbers(v)]
    return []


def quoted_numbers(passage: str) -> list[tuple[str, float, int, bool]]:
    """(text, value, decimals, is_percent) of each number in a passage outside code and comments."""
    prose = re.sub(r"```.*?```|`[^`\n]*`|<!--.*?-->|\]\([^)]*\)", " ", passage, flags=re.S)
    out = []
    for m in NUMBER.finditer(prose):
        mantissa = m.group(0)
        for part in ("pct", "k", "exp"):
            if m[part]:
                mantissa = mantissa[: m.start(part) - m.start()]
        mantissa = mantissa.replace(",", "")
        decimals = len(mantissa.split(".")[1]) if "." in mantissa else 0
        value = float(mantissa)
        if m["exp"]:                                   # 1.6e-5: two significant digits, six decimals
            decimals -= int(m["exp"][1:])
            value *= 10.0 ** int(m["exp"][1:])
        if m["k"]:                                     # 19.5k: thousands, rounded to hundreds
            decimals -= 3
            value *= 1000
        out.append((m.group(0).strip(), value, decimals, bool(m["pct"])))
    return out


def unmatched(passage: str, values: list[float]) -> list[str]:
    """The numbers of a passage that no value shows as (rounded to the printed digits)."""
    bad = []
    for text, value, decimals, pct in quoted_numbers(passage):
        shown = [round(v, decimals) for v in values] + ([round(v * 100, decimals) for v in values] if pct else [])
        if not any(abs(s - value) < 10 ** -(decimals + 3) for s in shown):
            bad.append(text)
    return bad


def undeclared_figures(text: str) -> list[str]:
    """Measured-looking figures (throughputs, speed-ups) of a Markdown text outside code and outside
    every figures passage: each one quotes a result no file backs."""
    text = re.sub(r"```.*?```|`[^`\n]*`", " ", text, flags=re.S)
    text = DECLARATION.sub(" ", text)
    return [m.group(0) for m in MEASURED.finditer(re.sub(r"<!--.*?-->", " ", text, flags=re.S))]


def _tracked(path: Path, root: Path) -> bool:
    done = subprocess.run(["git", "ls-files", "--error-unmatch", str(path.relative_to(root))], cwd=root,
                          capture_output=True)
    return done.returncode == 0


def check_passage(doc: Path, files: list[str], cmd: str | None, body: str, root: Path = ROOT,
                  require_tracked: bool = True) -> list[str]:
    """What is wrong with one figures passage of `doc` (file paths relative to `root`); [] if nothing."""
    values, problems = [], []
    for name in files:
        path = root / name
        if not path.is_file():
            problems.append(f"{doc.name} names {name}, which does not exist")
            continue
        if require_tracked and not _tracked(path, root):
            problems.append(f"{name} (quoted by {doc.name}) is not committed")
        data = json.loads(path.read_text())
        if not (cmd or (isinstance(data, dict) and data.get("command"))):
            problems.append(f"{name}: no command made it (a top-level 'command', or 'made by:' in {doc.name}'s comment)")
        values += json_numbers(data)
    if not quoted_numbers(body):
        problems.append(f"{doc.name}: the figures passage for {files} quotes no number")
    bad = unmatched(body, values)
    if bad:
        problems.append(f"{doc.name} quotes {bad}, which {', '.join(files)} do not hold")
    return problems


def check_doc(doc: Path, root: Path = ROOT, require_tracked: bool = True) -> list[str]:
    """Every problem of a doc's figures: its passages against their files, and figures outside them."""
    text = doc.read_text()
    problems = [p for files, cmd, body in declarations(text)
                for p in check_passage(doc, files, cmd, body, root, require_tracked)]
    loose = undeclared_figures(text)
    if loose:
        problems.append(f"{doc.name} quotes {loose} outside any figures passage (no result file behind them)")
    return problems


DECLARED = [(doc, files, cmd, body) for doc in _docs() for files, cmd, body in declarations(doc.read_text())]


def test_at_least_one_doc_declares_its_figures():
    assert DECLARED, "no doc declares a figures source"


@pytest.mark.parametrize("doc,files,cmd,body", DECLARED,
                         ids=[f"{d.relative_to(ROOT)}:{','.join(f)}" for d, f, _, _ in DECLARED])
def test_quoted_figures_match_their_result_files(doc, files, cmd, body):
    problems = check_passage(doc, files, cmd, body)
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("doc", _docs(), ids=lambda d: str(d.relative_to(ROOT)))
def test_no_measured_figure_outside_a_figures_passage(doc):
    loose = undeclared_figures(doc.read_text())
    assert not loose, (f"{doc.relative_to(ROOT)} quotes {loose} with no result file: wrap the passage in "
                       "<!-- figures: path.json --> ... <!-- /figures --> or drop the figure")


def test_readme_quotes_its_measured_figures_from_files():
    """README's measurements (build, accuracy, Locust/bench, served/in-process, GPU runs, cpu precision)
    are each declared: the result files it names are the ones behind those paragraphs."""
    named = {f for files, _, _ in declarations((ROOT / "README.md").read_text()) for f in files}
    for expected in ("docs/results/demo_manifest.json", "docs/results/compare_bench.json",
                     "docs/results/bench_local.json", "docs/gpu_ensemble/summary.json",
                     "docs/cpu_precision/results.json"):
        assert expected in named, f"README.md has no figures passage from {expected}"
    assert check_doc(ROOT / "README.md") == []


# --- the checker itself --------------------------------------------------------------------------

def test_checker_catches_a_drifted_figure_in_a_doc(tmp_path):
    """A doc quoting a number its result file does not hold fails; so does a throughput outside
    any passage, and a passage whose file names no command."""
    (tmp_path / "r.json").write_text(json.dumps({"command": "python m.py", "images_per_s": 4048.4, "ratio": 1.0412}))
    doc = tmp_path / "doc.md"
    good = "Intro, batch `8`.\n<!-- figures: r.json -->\n4,048 images/s (ratio 1.04).\n<!-- /figures -->\n"
    doc.write_text(good)
    assert check_doc(doc, tmp_path, require_tracked=False) == []
    doc.write_text(good.replace("4,048", "4,148"))
    assert check_doc(doc, tmp_path, require_tracked=False) == ["doc.md quotes ['4,148'], which r.json do not hold"]
    doc.write_text(good + "Later: 3,888 images/s.\n")
    assert "3,888 images/s" in check_doc(doc, tmp_path, require_tracked=False)[0]
    (tmp_path / "r.json").write_text(json.dumps({"images_per_s": 4048.4, "ratio": 1.0412}))
    doc.write_text(good)
    assert "no command made it" in check_doc(doc, tmp_path, require_tracked=False)[0]


def test_checker_reads_exponents_thousands_and_bounds():
    assert unmatched("max |Δ| 1.6e-5", [1.5735e-05]) == []
    assert unmatched("max |Δ| 1.7e-5", [1.5735e-05]) == ["1.7e-5"]
    assert unmatched("19.5k → 30.4k", [19516.9, 30438.0]) == []
    assert unmatched("19.6k", [19516.9]) == ["19.6k"]
    assert unmatched("ResNet-18, top-1: 2.51 (2.36-2.66)", [2.51, 2.36, 2.66]) == []
    assert undeclared_figures("2.5× faster, 640×480, a target ≥ 2.0×, `9 img/s`") == ["2.5×"]
    assert undeclared_figures("<!-- figures: a.json -->\n9 img/s\n<!-- /figures -->\n8 img/s") == ["8 img/s"]


def test_checker_catches_a_drifted_figure():
    data = {"accuracy": 0.9778, "ms": 12.34, "images": 1200, "command": "x"}
    text = "<!-- figures: r.json -->\nAccuracy 97.8 %, 12.3 ms, 1,200 images, `--batch-size 8`.\n<!-- /figures -->\nv2"
    (files, cmd, body), = declarations(text)
    assert files == ["r.json"] and cmd is None and "v2" not in body
    assert unmatched(body, json_numbers(data)) == []
    assert unmatched(body.replace("97.8", "97.2"), json_numbers(data)) == ["97.2 %"]
    assert unmatched(body.replace("12.3 ms", "12.4 ms"), json_numbers(data)) == ["12.4"]
    assert unmatched(body.replace("97.8 %", "0.98"), json_numbers(data)) == []     # a fraction, 2 digits
    assert unmatched(body.replace("97.8 %", "97.8"), json_numbers(data)) == ["97.8"]  # no % sign: not scaled
    (files, cmd, _), = declarations("<!-- figures: a.json, b.json; made by: python m.py --n 3 -->\n1")
    assert files == ["a.json", "b.json"] and cmd == "python m.py --n 3"
    assert declarations("Declare with `<!-- figures: path.json -->`.") == []

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
NUMBER = re.compile(r"(?<![\w.])[-+]?\d[\d,]*(?:\.\d+)?(?P<pct>\s?%)?")


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
        text = m.group(0).rstrip("% ").rstrip()
        digits = text.replace(",", "")
        decimals = len(digits.split(".")[1]) if "." in digits else 0
        out.append((m.group(0).strip(), float(digits), decimals, bool(m["pct"])))
    return out


def unmatched(passage: str, values: list[float]) -> list[str]:
    """The numbers of a passage that no value shows as (rounded to the printed digits)."""
    bad = []
    for text, value, decimals, pct in quoted_numbers(passage):
        shown = [round(v, decimals) for v in values] + ([round(v * 100, decimals) for v in values] if pct else [])
        if not any(abs(s - value) < 10 ** -(decimals + 3) for s in shown):
            bad.append(text)
    return bad


def _tracked(path: Path) -> bool:
    done = subprocess.run(["git", "ls-files", "--error-unmatch", str(path.relative_to(ROOT))], cwd=ROOT,
                          capture_output=True)
    return done.returncode == 0


DECLARED = [(doc, files, cmd, body) for doc in _docs() for files, cmd, body in declarations(doc.read_text())]


def test_at_least_one_doc_declares_its_figures():
    assert DECLARED, "no doc declares a figures source"


@pytest.mark.parametrize("doc,files,cmd,body", DECLARED,
                         ids=[f"{d.relative_to(ROOT)}:{','.join(f)}" for d, f, _, _ in DECLARED])
def test_quoted_figures_match_their_result_files(doc, files, cmd, body):
    values = []
    for name in files:
        path = ROOT / name
        assert path.is_file(), f"{doc.name} names {name}, which does not exist"
        assert _tracked(path), f"{name} (quoted by {doc.name}) is not committed"
        data = json.loads(path.read_text())
        assert cmd or (isinstance(data, dict) and data.get("command")), \
            f"{name}: no command made it (a top-level 'command', or 'made by:' in {doc.name}'s comment)"
        values += json_numbers(data)
    assert quoted_numbers(body), f"{doc.name}: the figures passage for {files} quotes no number"
    bad = unmatched(body, values)
    assert not bad, f"{doc.name} quotes {bad}, which {', '.join(files)} do not hold"


# --- the checker itself --------------------------------------------------------------------------

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

"""tik-report on the demo build plus a real tik-verify and tik-bench run, opened in a real headless
Chromium: no console errors, nothing fetched, every figure drawn, readable at 400 px and in print;
the full-page screenshot is kept in .cache/report/ (docs/report_demo.png is a copy of it).
"""
from __future__ import annotations

import copy
import io
import json
import re
import shutil
from pathlib import Path

import pytest

from tests.browser import Browser, INSTALL_HINT, chromium_binary
from benchmarks import bench
from clients import verify
from report import cli
from serving.local_server import LocalTritonServer, free_port

ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = ROOT / ".cache" / "report"
# Measured results committed in docs/ (a CPU config search, an H200 summary, served vs in-process):
# real inputs for the sections a short test cannot measure itself.
COMMITTED = [ROOT / "docs/config_search/cpu/config_search.json", ROOT / "docs/gpu_ensemble/summary.json",
             ROOT / "docs/results/bench_local.json"]
FIGURES = {"accuracy": 1, "preprocessing": 1, "bench": 2, "served_vs_in_process": 1, "config_search": 1, "gpu": 1}

pytestmark = [pytest.mark.server, pytest.mark.slow]


@pytest.fixture(scope="module")
def results(repo_root, tmp_path_factory) -> Path:
    """A real tik-verify (64 images) and a short tik-bench sweep (2 precisions x 2 protocols x 2 batch
    sizes) against a local Triton serving the demo build."""
    out = tmp_path_factory.mktemp("report-results")
    with LocalTritonServer(repo_root / "cpu", http_port=free_port(), grpc_port=free_port(),
                           metrics_port=free_port(), timeout_s=180) as srv:
        assert verify.main(["--url", srv.http_url, "--manifest", str(repo_root), "--limit", "64",
                            "--json", str(out / "verify.json")]) == 0
        assert bench.main(["--url", srv.http_url, "--grpc-url", srv.grpc_url, "--manifest", str(repo_root),
                           "--precision", "fp32", "--precision", "int8", "--batch-size", "1", "--batch-size", "8",
                           "--window", "0.25", "--max-windows", "3", "--images", "32",
                           "--no-preprocess-comparison", "--out", str(out / "bench")]) == 0
    return out


def _report(repo_root: Path, results: Path, out: Path, extra: list[Path] = COMMITTED) -> tuple[str, dict]:
    assert cli.main(["--repository", str(repo_root), "--results", str(results), *map(str, extra),
                     "--out", str(out)]) == 0
    return out.read_text(), json.loads(out.with_suffix(".json").read_text())


def test_report_opens_in_a_browser(repo_root, results, tmp_path):
    if chromium_binary() is None:
        pytest.fail(INSTALL_HINT)
    html, data = _report(repo_root, results, tmp_path / "report.html")
    sections = data["sections"]
    assert [n for n, s in sections.items() if not s["present"]] == ["locust"]
    assert "tik-locust" in html                      # an absent section says which command makes it
    assert sections["bench"]["command"].startswith("tik-bench --url") and sections["bench"]["machine"]
    assert {r["status"] for r in sections["parity"]["data"]} == {"PASS"}
    assert {r["step"] for r in sections["parity"]["data"]} >= {"PyTorch → ONNX fp32", "ONNX fp32 → int8",
                                                               "PyTorch → TorchScript fp32", "PyTorch → served digits_int8"}
    # Self-contained: nothing to fetch, no script.
    assert not re.search(r"""(?:src|href)\s*=\s*["']?(?:https?:|//)""", html) and "<script" not in html

    with Browser(free_port()) as b:
        b.open(tmp_path / "report.html")
        figures = b.evaluate("[...document.querySelectorAll('figure')].map(f => {const s = f.querySelector('svg');"
                             " const r = s ? s.getBoundingClientRect() : {width: 0, height: 0};"
                             " return [f.closest('section').id, r.width, r.height,"
                             " s ? s.querySelectorAll('path').length : 0];})")
        b.viewport(400)
        narrow = b.evaluate("[document.documentElement.scrollWidth, window.innerWidth,"
                            " Math.max(...[...document.querySelectorAll('figure svg')].map(s => s.getBoundingClientRect().right))]")
        b.media("print")
        printed = b.evaluate("[...document.querySelectorAll('figure svg')].map(s => s.getBoundingClientRect().height)")
        b.media("screen")
        shot = b.screenshot(ARTIFACTS / "report_demo.png", 900)
        assert b.problems() == []
    assert sorted(f[0] for f in figures) == sorted(n for n, k in FIGURES.items() for _ in range(k))
    assert all(w > 200 and h > 100 and paths >= 10 for _, w, h, paths in figures), figures
    assert narrow[0] <= narrow[1] and narrow[2] <= narrow[1], narrow   # no sideways scrolling, figures fit
    assert len(printed) == len(figures) and min(printed) > 100
    _assert_drawn(shot)


def _assert_drawn(png: Path) -> None:
    """The screenshot is a page, not a blank: many pixels in the plots' colours."""
    import numpy as np
    from PIL import Image

    img = np.asarray(Image.open(io.BytesIO(png.read_bytes())).convert("RGB")).astype(int)
    assert img.shape[1] == 900 and img.shape[0] > 3000
    coloured = int(((img.max(axis=2) - img.min(axis=2)) > 80).sum())
    assert coloured > 20_000, coloured


def test_page_follows_its_inputs(repo_root, results, tmp_path):
    """A figure changed in an input changes the page: the table's number and the plot's drawing."""
    html, _ = _report(repo_root, results, tmp_path / "a.html", extra=[])
    again, _ = _report(repo_root, results, tmp_path / "b.html", extra=[])
    svgs = (lambda page: re.findall(r"<svg.*?</svg>", page, re.S))
    assert svgs(html) == svgs(again)                # same inputs, same drawings

    changed = tmp_path / "changed"
    shutil.copytree(results, changed)
    doc = json.loads((changed / "bench/bench.json").read_text())
    point = max(doc["points"], key=lambda p: p["images_per_s"])
    new = copy.deepcopy(point)
    new["images_per_s"] = point["images_per_s"] * 3 + 1234.5
    doc["points"][doc["points"].index(point)] = new
    (changed / "bench/bench.json").write_text(json.dumps(doc))
    after, data = _report(repo_root, changed, tmp_path / "c.html", extra=[])
    assert f"{new['images_per_s']:.1f}" in after and f"{new['images_per_s']:.1f}" not in html
    before_figs, after_figs = svgs(html), svgs(after)
    assert len(before_figs) == len(after_figs)
    differ = [i for i, (x, y) in enumerate(zip(before_figs, after_figs)) if x != y]
    assert len(differ) == 1                         # the throughput plot, and only it
    assert max(p["images_per_s"] for p in data["sections"]["bench"]["data"]["points"]) == new["images_per_s"]


def test_bad_input_is_named(tmp_path, capsys):
    """A file that is no known result, or a missing repository, is an error naming it; nothing is written."""
    odd = tmp_path / "odd.json"
    odd.write_text(json.dumps({"hello": 1}))
    out = tmp_path / "r.html"
    assert cli.main(["--no-repository", "--results", str(odd), "--out", str(out)]) == 2
    assert "odd.json" in capsys.readouterr().err and not out.exists()
    assert cli.main(["--repository", str(tmp_path / "nope"), "--out", str(out)]) == 2
    assert "nope" in capsys.readouterr().err and not out.exists()

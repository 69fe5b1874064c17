"""tik-report: the build's results on one page.

    tik-report --repository model_repository --results results --out results/report.html

writes report.html (self-contained: inline CSS and SVG, no script, nothing fetched) and, beside it,
report.json with the same data. Exit code 0 when written, 2 on bad input (the message names it).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from builders.triton_config import write_text_atomic
from report.collect import ReportInputError, collect
from report.render import render


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="tik-report", description=__doc__.split("\n\n")[0])
    p.add_argument("--repository", type=Path, default=Path("model_repository"),
                   help="a built repository (its manifest.json is read) (default: %(default)s)")
    p.add_argument("--no-repository", action="store_true", help="report on --results only, without a manifest")
    p.add_argument("--results", type=Path, nargs="*", default=[],
                   help="result JSON files or folders holding them (tik-verify --json, tik-bench --out, "
                        "tik-bench-local, Locust --csv prefix_sla.json, tik-config-search, GPU summary)")
    p.add_argument("--out", type=Path, default=Path("results/report.html"),
                   help="the HTML page; the JSON goes beside it with .json (default: %(default)s)")
    return p


def _write(path: Path, text: str) -> None:
    """Whole or not at all (builders.triton_config.write_text_atomic), in a folder made if needed."""
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(path, text)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        data = collect(None if args.no_repository else args.repository, args.results)
    except ReportInputError as e:
        print(f"tik-report: error: {e}", file=sys.stderr)
        return 2
    json_path = args.out.with_suffix(".json")
    _write(json_path, json.dumps(data, indent=2))
    _write(args.out, render(data))
    present = [n for n, s in data["sections"].items() if s["present"]]
    missing = [n for n, s in data["sections"].items() if not s["present"]]
    print(f"wrote {args.out} and {json_path}: sections {', '.join(present) or 'none'}"
          + (f"; no data for {', '.join(missing)}" if missing else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Read a build's results into one plain dict (what report.json holds and report.render draws).

Inputs are recognised by their content, not their name, so `--results` can point at any folder a
user kept them in: the manifest of a built repository, tik-verify JSON, tik-bench's bench.json,
tik-bench-local JSON, a Locust run's <prefix>_sla.json (with <prefix>_stats.csv beside it),
tik-config-search's config_search.json and the GPU summary (benchmarks/gpu_summary.py).
Each section records the file, the command and the machine it came from; a section with no input
is kept as {"present": False, "make": <the command that makes it>} so the page can say so.
"""
from __future__ import annotations

import csv
import json
import time
from pathlib import Path
from typing import Any

from contract import layout
from contract.errors import USAGE, ToolkitError

# section -> (title, the command that makes its input)
SECTIONS: dict[str, tuple[str, str]] = {
    "parity": ("Parity chain", "tik-build (the manifest) and tik-verify --json results/verify.json"),
    "accuracy": ("Accuracy and top-1 agreement per precision", "tik-build; tik-verify --json results/verify.json"),
    "preprocessing": ("Preprocessing parity (DALI vs torchvision)", "tik-build (enforces it); tik-verify"),
    "bench": ("Throughput and latency vs batch size", "tik-bench --out results/bench"),
    "served_vs_in_process": ("Served vs in-process", "tik-bench-local --out results/bench_local.json"),
    "locust": ("Locust load test SLA", "tik-locust ... --csv results/load/run --sla-p95-ms 100"),
    "config_search": ("Config search: Pareto front and winner", "tik-config-search --out results/config_search"),
    "gpu": ("GPU figures", "python benchmarks/gpu_summary.py ... --out docs/gpu_ensemble/summary.json (on a GPU host)"),
}


class ReportInputError(ToolkitError, ValueError):
    """An input the report cannot use; the message names the file and what was wrong."""

    exit_code = USAGE


def _kind(data: Any) -> str | None:
    """Which tool wrote this JSON document, judged by the keys only that tool writes."""
    if not isinstance(data, dict):
        return None
    keys = set(data)
    for kind, needed in (("manifest", {"format_version", "models", "artifacts"}),
                         ("verify", {"verdict", "thresholds", "results"}),
                         ("bench", {"points", "settings", "server"}),
                         ("bench_local", {"batches", "best", "single_images"}),
                         ("locust", {"passed", "checks"}),
                         ("config_search", {"winner", "trials", "strategy"}),
                         ("gpu", {"gpu", "dali_alone_img_s", "served_img_s"})):
        if needed <= keys:
            return kind
    return None


def _load(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ReportInputError(f"{path}: not readable JSON ({e})") from e


def find_inputs(repository: Path | None, results: list[Path]) -> dict[str, tuple[Path, Any]]:
    """kind -> (file, parsed JSON). A file named in `results` must be one the report knows; in a
    folder, JSON files of other kinds are passed over. When two files are of one kind, the newer wins."""
    found: dict[str, tuple[Path, Any]] = {}
    pinned: set[str] = set()     # the repository's manifest: a manifest kept among results never replaces it

    def take(path: Path, strict: bool, pin: bool = False) -> None:
        data = _load(path)
        kind = _kind(data)
        if kind is None:
            if strict:
                raise ReportInputError(f"{path}: not a result tik-report knows (manifest, tik-verify, tik-bench, "
                                       "tik-bench-local, Locust SLA, config search or GPU summary JSON)")
            return
        if kind in pinned:
            return
        if pin or kind not in found or path.stat().st_mtime >= found[kind][0].stat().st_mtime:
            found[kind] = (path, data)
            if pin:
                pinned.add(kind)

    if repository is not None:
        manifest = repository / layout.MANIFEST_FILE if repository.is_dir() else repository
        if not manifest.is_file():
            raise ReportInputError(f"{repository}: no {layout.MANIFEST_FILE} (build it with tik-build)")
        take(manifest, strict=True, pin=True)
    for item in results:
        if item.is_dir():
            for path in sorted(item.rglob("*.json")):
                take(path, strict=False)
        elif item.is_file():
            take(item, strict=True)
        else:
            raise ReportInputError(f"{item}: no such file or folder")
    return found


def _locust_stats(sla_file: Path) -> dict | None:
    """The Aggregated row of <prefix>_stats.csv beside <prefix>_sla.json, if Locust wrote one."""
    stats = sla_file.with_name(sla_file.name.removesuffix("_sla.json") + "_stats.csv")
    if not stats.is_file():
        return None
    with stats.open(newline="") as f:
        rows = [r for r in csv.DictReader(f) if r.get("Name") == "Aggregated"]
    if not rows:
        return None
    r = rows[-1]
    num = (lambda k: float(r[k]) if r.get(k) not in (None, "", "N/A") else None)
    return {"file": str(stats), "requests": num("Request Count"), "failures": num("Failure Count"),
            "rps": num("Requests/s"), "p50_ms": num("50%"), "p95_ms": num("95%"), "p99_ms": num("99%")}


def _section(kind: str, found: dict, data: dict, command: str | None = None, machine: str | None = None) -> dict:
    path = found[kind][0]
    return {"present": True, "source": str(path), "command": command, "machine": machine, "data": data}


def collect(repository: Path | None, results: list[Path]) -> dict:
    """The report's data: {"generated", "models", "sections": {name: section}} (see SECTIONS)."""
    found = find_inputs(repository, results)
    get = (lambda k: found[k][1] if k in found else None)
    man, ver, bench = get("manifest"), get("verify"), get("bench")
    sections: dict[str, dict] = {}
    if man or ver:
        from report.chain import accuracy_rows, parity_rows, preprocessing_rows

        src = "manifest" if man else "verify"
        built = "tik-build (the build's manifest)"
        vcmd = (ver or {}).get("command") or "tik-verify"
        both = " + ".join(x for x in (built if man else None, vcmd if ver else None) if x)
        sections["parity"] = {**_section(src, found, parity_rows(man, ver), both, (ver or {}).get("machine")),
                              "sources": [str(found[k][0]) for k in ("manifest", "verify") if k in found]}
        sections["accuracy"] = {**sections["parity"], "data": accuracy_rows(man, ver)}
        sections["preprocessing"] = {**sections["parity"], "data": preprocessing_rows(man, ver)}
    if bench:
        sections["bench"] = _section("bench", found, {"model": bench.get("model"), "points": bench["points"],
                                                      "failed": bench.get("failed_points", []),
                                                      "preprocessing": bench.get("preprocessing")},
                                     bench.get("command"), bench.get("machine"))
    if (local := get("bench_local")):
        sections["served_vs_in_process"] = _section(
            "bench_local", found, {k: local.get(k) for k in ("model", "protocol", "batches", "best", "single_images")},
            local.get("command"), f"{local['machine_cpus']} CPUs" if local.get("machine_cpus") else None)
    if (sla := get("locust")):
        sections["locust"] = _section("locust", found, {**sla, "stats": _locust_stats(found["locust"][0])},
                                      sla.get("command"), sla.get("machine"))
    if (cs := get("config_search")):
        sections["config_search"] = _section("config_search", found, cs, cs.get("command"), cs.get("label"))
    if (gpu := get("gpu")):
        sections["gpu"] = _section("gpu", found, gpu, gpu.get("command"),
                                   f"{gpu['gpu']} (driver {gpu.get('driver')})")
    for name, (title, make) in SECTIONS.items():
        sections.setdefault(name, {"present": False, "make": make})
        sections[name]["title"] = title
    models = sorted((man or {}).get("models", {})) or sorted({r["model"] for r in (ver or {}).get("results", [])})
    return {"generated": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "models": models,
            "manifest": {"created": man.get("created"), "tools": man.get("tools")} if man else None,
            "sections": {name: sections[name] for name in SECTIONS}}

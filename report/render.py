"""report.collect's dict -> one self-contained HTML page: inline CSS, inline SVG figures, no script,
nothing fetched. Narrow windows get one column and scrolling tables; print drops the colours and
keeps figures whole on a page (CSS media queries).
"""
from __future__ import annotations

import re
from html import escape

from report import plots

CSS = """
body{font:15px/1.45 system-ui,sans-serif;margin:0 auto;max-width:60rem;padding:1rem;color:#222}
h1{font-size:1.5rem}h2{font-size:1.2rem;border-bottom:1px solid #ccc;margin-top:2rem}
.meta,.src{color:#555;font-size:.85rem}.src code{word-break:break-all}
.tbl{overflow-x:auto}table{border-collapse:collapse;font-size:.85rem;margin:.5rem 0}
td,th{border:1px solid #ddd;padding:.2rem .4rem;text-align:left;vertical-align:top}td.n{text-align:right}
.PASS{color:#070;font-weight:600}.FAIL{color:#b00;font-weight:600}.missing{color:#666;font-style:italic}
figure{margin:.5rem 0}figure svg{max-width:100%;height:auto}
@media (max-width:40rem){body{font-size:14px;padding:.5rem}td,th{padding:.1rem .2rem}}
@media print{body{max-width:none;color:#000}.PASS,.FAIL{color:#000}figure,table{break-inside:avoid}
h2{break-after:avoid}}
"""


_NUMERIC = re.compile(r"[-+]?[\d.,]+(?:e[-+]?\d+)?\*?|—")


def _num(v, fmt: str = ".4g") -> str:
    if v is None:
        return "—"
    return format(v, fmt) if isinstance(v, (int, float)) else escape(str(v))


def _status(s) -> str:
    word = escape(str(s))
    return f'<span class="{word.split(":")[0]}">{word}</span>'


def _table(head: list[str], rows: list[list[str]]) -> str:
    """`rows` hold HTML already escaped by the caller."""
    th = "".join(f"<th>{escape(h)}</th>" for h in head)
    body = "".join("<tr>" + "".join(f"<td class=n>{c}</td>" if _NUMERIC.fullmatch(c) else f"<td>{c}</td>"
                                    for c in r) + "</tr>" for r in rows)
    return f'<div class="tbl"><table><thead><tr>{th}</tr></thead><tbody>{body}</tbody></table></div>'


def _fig(svg: str, caption: str) -> str:
    return f"<figure>{svg}<figcaption class=meta>{escape(caption)}</figcaption></figure>" if svg else ""


def _parity(d) -> str:
    return _table(["model", "step", "max |Δlogit|", "top-1 agreement", "tolerance", "status"],
                  [[escape(r["model"]), escape(r["step"]), _num(r["max_abs_diff"]), _num(r["top1_agreement"]),
                    escape(r["tolerance"] or "—"), _status(r["status"])] for r in d])


def _accuracy(d) -> str:
    t = _table(["model", "precision", "build accuracy", "PyTorch accuracy", "served accuracy",
                "served top-1 agreement", "required", "status"],
               [[escape(r["model"]), escape(r["precision"]), _num(r.get("build_accuracy")),
                 _num(r.get("pytorch_accuracy", r.get("reference_accuracy"))), _num(r.get("served_accuracy")),
                 _num(r.get("served_top1_agreement")), _num(r.get("min_agreement")),
                 _status(r.get("status", "—"))] for r in d])
    return t + _fig(plots.accuracy(d), "bars: fraction of the validation images")


def _preprocessing(d) -> str:
    t = _table(["model", "measured in", "images", "mean", "p99", "max", "tolerance (mean/p99/max)", "status"],
               [[escape(r["model"]), escape(r["where"]), _num(r["images"]), _num(r["mean"], ".3f"),
                 _num(r["p99"], ".3f"), _num(r["max"], ".3f"),
                 escape("/".join(f"{v:g}" for v in (r["tolerance"] or {}).values())), _status(r["status"])]
                for r in d])
    return t + (_fig(plots.preprocessing(d), "worst image over the validation set, per statistic") if d else "")


def _bench(d) -> str:
    pts = d["points"]
    t = _table(["protocol", "precision", "batch", "conc.", "images/s", "p50 ms", "p99 ms", "bottleneck"],
               [[escape(p["protocol"]), escape(p["precision"]), str(p["batch_size"]), str(p["concurrency"]),
                 _num(p["images_per_s"], ".1f") + ("" if p.get("stable", True) else "*"),
                 _num(p["latency_ms"].get("p50"), ".2f"), _num(p["latency_ms"].get("p99"), ".2f"),
                 escape(str(p.get("bottleneck", ""))[:60])]
                for p in sorted(pts, key=lambda p: (p["precision"], p["protocol"], p["batch_size"], p["concurrency"]))])
    fails = "".join(f"<p class=FAIL>failed point: {escape(str(f))[:200]}</p>" for f in d.get("failed") or [])
    return (t + fails + _fig(plots.throughput(pts), "images/s per precision and protocol")
            + _fig(plots.latency(pts), "client-side latency per request"))


def _served(d) -> str:
    b = d["batches"]
    t = _table(["batch", "in-process images/s", "served images/s", "served / in-process"],
               [[str(x["batch"]), _num(x["in_process_images_per_s"], ".1f"), _num(x["served_images_per_s"], ".1f"),
                 _num(x.get("ratio"), ".2f")] for x in b])
    return t + _fig(plots.served_vs_in_process(b), f"{d.get('model')} over {d.get('protocol')}")


def _locust(d) -> str:
    t = _table(["check", "limit", "measured", "status"],
               [[escape(c["name"]), _num(c["limit"]), _num(c["measured"]), _status("PASS" if c["passed"] else "FAIL")]
                for c in d["checks"]])
    s = d.get("stats")
    if s:
        t += _table(["requests", "failures", "req/s", "p50 ms", "p95 ms", "p99 ms"],
                    [[_num(s[k]) for k in ("requests", "failures", "rps", "p50_ms", "p95_ms", "p99_ms")]])
    return f"<p>SLA: {_status('PASS' if d['passed'] else 'FAIL')}</p>" + t


def _setting(c: dict) -> str:
    """One model's serving settings in words (null = left to Triton's default)."""
    words = {"instances": "instances", "delay_us": "queue delay µs", "preferred": "preferred batches",
             "num_threads": "threads", "hw_decoder_load": "hw decoder load"}
    return escape("; ".join(f"{w} {'/'.join(map(str, c[k])) if isinstance(c[k], list) else c[k]}"
                            for k, w in words.items() if c.get(k) is not None))


def _config_search(d) -> str:
    conf = d.get("confirmation") or {}
    med = conf.get("median_images_per_s") or {}
    rows = [[escape(model), *(_setting((d.get(k) or {}).get(model) or {}) for k in ("default", "winner"))]
            for model in sorted(d.get("winner") or {})]
    t = _table(["model", "default", "winner"], rows)
    line = (f"<p>winner {_num(med.get('winner'), '.1f')} images/s vs default {_num(med.get('default'), '.1f')} "
            f"(median of {conf.get('rounds')} confirmation rounds, ×{_num(conf.get('ratio'), '.2f')}); "
            f"SLA-feasible: {escape(str(d.get('winner_feasible')))}</p>") if conf else ""
    return line + t + _fig(plots.pareto(d), f"{len(d.get('trials', []))} configurations of {d.get('ensemble')}")


def _gpu(d) -> str:
    keys = ["gpu", "batch", "dali_alone_img_s", "network_alone_img_s", "served_img_s", "served_p99_ms",
            "served_concurrency", "served_instances", "logits_within_tolerance"]
    t = _table(["figure", "value"], [[escape(k), _num(d.get(k), ".5g") if isinstance(d.get(k), float)
                                      else escape(str(d.get(k)))] for k in keys if k in d])
    return t + _fig(plots.gpu(d), "images/s, each stage alone and the served ensemble")


RENDERERS = {"parity": _parity, "accuracy": _accuracy, "preprocessing": _preprocessing, "bench": _bench,
             "served_vs_in_process": _served, "locust": _locust, "config_search": _config_search, "gpu": _gpu}


def _section(name: str, sec: dict) -> str:
    head = f'<section id="{name}"><h2>{escape(sec["title"])}</h2>'
    if not sec["present"]:
        return head + f'<p class=missing>No data. Made by: <code>{escape(sec["make"])}</code></p></section>'
    srcs = sec.get("sources") or [sec["source"]]
    src = (f'<p class=src>from <code>{"</code>, <code>".join(escape(s) for s in srcs)}</code>; command: '
           f'<code>{escape(sec.get("command") or "not recorded in the file")}</code>; machine: '
           f'{escape(sec.get("machine") or "not recorded in the file")}</p>')
    return head + src + RENDERERS[name](sec["data"]) + "</section>"


def render(report: dict) -> str:
    """The whole page as one string."""
    models = ", ".join(report["models"]) or "no model"
    man = report.get("manifest") or {}
    tools = ", ".join(f"{k} {v}" for k, v in (man.get("tools") or {}).items() if v)
    body = "".join(_section(n, s) for n, s in report["sections"].items())
    return (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width,initial-scale=1">'
            f"<title>tik-report: {escape(models)}</title><style>{CSS}</style></head><body>"
            f"<h1>tik-report: {escape(models)}</h1><p class=meta>generated {escape(report['generated'])}"
            f"{'; build ' + escape(str(man.get('created'))) if man else ''}"
            f"{'; tools: ' + escape(tools) if tools else ''}</p>{body}</body></html>")

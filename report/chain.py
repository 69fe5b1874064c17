"""The parity chain, accuracy and preprocessing rows, from a build's manifest and a tik-verify run.

The chain follows a logit from the trained network to the server: PyTorch -> ONNX fp32 (export),
ONNX fp32 -> each precision (the build's evaluation), PyTorch -> TorchScript (the twin) and
PyTorch on the reference transform -> the served ensemble on JPEG bytes (tik-verify). Each step
carries the tolerance it was judged against and the verdict; where the producer stated none, the
tolerance is tik-verify's threshold for that precision (the one a served result must meet).
"""
from __future__ import annotations


def _threshold(verify: dict | None, kind: str, precision: str):
    """tik-verify's threshold `kind` (min_agreement, max_abs_diff, max_accuracy_drop) for `precision`."""
    table = ((verify or {}).get("thresholds") or {}).get(kind) or {}
    return table.get(precision, table.get("*"))


def _verdict(agreement, diff, min_agreement, max_diff) -> str:
    checks = [a >= m for a, m in ((agreement, min_agreement),) if a is not None and m is not None]
    checks += [d <= m for d, m in ((diff, max_diff),) if d is not None and m is not None]
    return ("PASS" if all(checks) else "FAIL") if checks else "recorded"


def parity_rows(manifest: dict | None, verify: dict | None) -> list[dict]:
    """One row per step of the chain: model, step, max_abs_diff, top1_agreement, tolerance, status."""
    rows: list[dict] = []
    models = (manifest or {}).get("models", {})
    for name, m in sorted(models.items()):
        if (exp := m.get("export")):
            tol = _threshold(verify, "max_abs_diff", "fp32")
            rows.append({"model": name, "step": "PyTorch → ONNX fp32", "max_abs_diff": exp.get("max_abs_diff"),
                         "top1_agreement": exp.get("top1_agreement"),
                         "tolerance": f"max |Δlogit| ≤ {tol:g}" if tol is not None else None,
                         "status": _verdict(None, exp.get("max_abs_diff"), None, tol)})
        for prec, ev in sorted((m.get("precisions") or {}).items()):
            if not ev.get("runnable", True):
                rows.append({"model": name, "step": f"ONNX fp32 → {prec}", "max_abs_diff": None,
                             "top1_agreement": None, "tolerance": None, "status": f"SKIP: {ev.get('reason')}"})
                continue
            need = _threshold(verify, "min_agreement", prec)
            rows.append({"model": name, "step": f"ONNX fp32 → {prec}", "max_abs_diff": ev.get("max_abs_diff_fp32"),
                         "top1_agreement": ev.get("top1_agreement_fp32"),
                         "tolerance": f"top-1 agreement ≥ {need:g}" if need is not None else None,
                         "status": _verdict(ev.get("top1_agreement_fp32"), None, need, None)})
        for prec, ts in sorted(((m.get("torchscript") or {}).get("precisions") or {}).items()):
            rows.append({"model": name, "step": f"PyTorch → TorchScript {prec}",
                         "max_abs_diff": ts.get("max_abs_diff_pytorch"), "top1_agreement": ts.get("top1_agreement_pytorch"),
                         "tolerance": f"max |Δlogit| ≤ {ts['tolerance']:.3g}" if ts.get("tolerance") is not None else None,
                         "status": "PASS" if ts.get("within_tolerance") else "FAIL"})
    for r in (verify or {}).get("results", []):
        need, tol = (_threshold(verify, "min_agreement", r["precision"]),
                     _threshold(verify, "max_abs_diff", r["precision"]))
        rule = " and ".join(x for x in (f"top-1 agreement ≥ {need:g}" if need is not None else None,
                                         f"network max |Δlogit| ≤ {tol:g}" if tol is not None else None) if x)
        rows.append({"model": r["model"], "step": f"PyTorch → served {r.get('ensemble', r['precision'])}",
                     "max_abs_diff": r.get("max_abs_diff"), "top1_agreement": r.get("top1_agreement"),
                     "network_max_abs_diff": r.get("network_max_abs_diff"), "tolerance": rule or None,
                     "status": r.get("status"), "problems": r.get("problems", [])})
    return rows


def accuracy_rows(manifest: dict | None, verify: dict | None) -> list[dict]:
    """Per model and precision: the build's accuracy, the served accuracy and top-1 agreement."""
    out: dict[tuple[str, str], dict] = {}
    for name, m in sorted(((manifest or {}).get("models") or {}).items()):
        for prec, ev in sorted((m.get("precisions") or {}).items()):
            out[(name, prec)] = {"model": name, "precision": prec, "build_accuracy": ev.get("accuracy"),
                                 "reference_accuracy": ev.get("reference_accuracy"),
                                 "build_top1_agreement": ev.get("top1_agreement_fp32")}
    for r in (verify or {}).get("results", []):
        row = out.setdefault((r["model"], r["precision"]), {"model": r["model"], "precision": r["precision"]})
        row.update({"served_accuracy": r.get("accuracy"), "pytorch_accuracy": r.get("pytorch_accuracy"),
                    "served_top1_agreement": r.get("top1_agreement"), "images": r.get("images"),
                    "min_agreement": _threshold(verify, "min_agreement", r["precision"]),
                    "status": r.get("status")})
    return list(out.values())


def preprocessing_rows(manifest: dict | None, verify: dict | None) -> list[dict]:
    """Per model and where it was measured: DALI vs the torchvision transform in pixel levels."""
    rows = []
    for where, models in (("build (tik-build)", {k: v.get("preprocessing") for k, v in
                                                  ((manifest or {}).get("models") or {}).items()}),
                          ("served check (tik-verify)", (verify or {}).get("preprocessing") or {})):
        for name, p in sorted(models.items()):
            if not p:
                continue
            ok = p.get("status") == "PASS" if "status" in p else p.get("within_tolerance")
            rows.append({"model": name, "where": where, "images": p.get("images"),
                         "mean": (p.get("mean_levels") or {}).get("max_over_images"),
                         "p99": (p.get("p99_levels") or {}).get("max_over_images"), "max": p.get("max_levels"),
                         "tolerance": p.get("tolerance_levels"), "outside": p.get("outside_tolerance", []),
                         "status": "PASS" if ok else "FAIL", "device": p.get("device")})
    return rows

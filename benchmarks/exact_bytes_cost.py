"""What trimming each request row to its exact bytes (contract.dali_pipeline.exact_bytes) costs a
DALI pipeline's CPU threads, without any decoding: header peek only, batch 128 of 640x480 JPEGs.

    python benchmarks/exact_bytes_cost.py --out results/exact_bytes_cost.json

Compares the same pipeline fed zero-padded rows with no trimming (the request format before
exact bytes) against packed rows (contract.images.pack_batch) trimmed by exact_bytes, and, with
`--plugin LIB` (benchmarks/exact_bytes_plugin/build.py), trimmed by the experiment's one-operator
forms: ExactBytes (a copy per row) and ExactBytesView (views, no copy). Runs on any machine (CPU
only); the GPU figures are in docs/gpu_ensemble.md.
"""
from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

from benchmarks.results_file import write_result
from builders.synthetic_jpegs import make_jpegs
from contract.dali_pipeline import exact_bytes
from contract.images import pack_batch


PLUGIN_OPS = {"plugin": "exact_bytes", "plugin_view": "exact_bytes_view"}   # form -> operator in fn


def _pipeline(trim: str | None, batch: int, threads: int):
    from nvidia.dali import fn, pipeline_def, types

    @pipeline_def(batch_size=batch, num_threads=threads, device_id=None, prefetch_queue_depth=1,
                  exec_pipelined=True, exec_async=True)
    def pipe():
        enc = fn.external_source(name="IMAGE", dtype=types.UINT8, ndim=1, no_copy=True)
        if trim == "exact_bytes":
            enc = exact_bytes(enc)
        elif trim:
            enc = getattr(fn, PLUGIN_OPS[trim])(enc)
        return fn.peek_image_shape(enc, dtype=types.INT64)

    p = pipe()
    p.build()
    return p


def ms_per_batch(trim: str | None, rows: list, threads: int, repeats: int) -> float:
    pipe = _pipeline(trim, len(rows), threads)
    for _ in range(3):
        pipe.feed_input("IMAGE", rows)
        pipe.run()
    start = time.perf_counter()
    for _ in range(repeats):
        pipe.feed_input("IMAGE", rows)
        pipe.run()
    return (time.perf_counter() - start) / repeats * 1000


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--threads", type=int, default=4)
    p.add_argument("--repeats", type=int, default=30)
    p.add_argument("--rounds", type=int, default=3, help="alternating rounds; the median is reported")
    p.add_argument("--plugin", type=Path, default=None,
                   help="the built ExactBytes library: also time its two forms on the packed rows")
    p.add_argument("--out", type=Path, required=True)
    a = p.parse_args(argv)
    if a.plugin is not None:
        if not a.plugin.is_file():
            p.error(f"--plugin {a.plugin}: no such file (python -m benchmarks.exact_bytes_plugin.build OUT.so)")
        import nvidia.dali.plugin_manager as plugins

        plugins.load_library(str(a.plugin.resolve()))
    jpegs = make_jpegs(a.batch, 640, 480)
    longest = max(len(j) for j in jpegs)
    padded = np.zeros((len(jpegs), longest), np.uint8)
    for i, j in enumerate(jpegs):
        padded[i, :len(j)] = np.frombuffer(j, np.uint8)
    packed = pack_batch(jpegs)
    plain, trimmed, plugin = [], [], {form: [] for form in PLUGIN_OPS}
    for _ in range(a.rounds):
        plain.append(ms_per_batch(None, list(padded), a.threads, a.repeats))
        trimmed.append(ms_per_batch("exact_bytes", list(packed), a.threads, a.repeats))
        for form in plugin if a.plugin else ():
            plugin[form].append(ms_per_batch(form, list(packed), a.threads, a.repeats))
    import nvidia.dali

    out = {"command": "python benchmarks/exact_bytes_cost.py " + " ".join(sys.argv[1:] if argv is None else argv),
           "machine": {"cpu_cores": os.cpu_count(), "python": platform.python_version(),
                       "dali": nvidia.dali.__version__},
           "batch": a.batch, "threads": a.threads,
           "padded_ms_per_batch": float(np.median(plain)), "exact_bytes_ms_per_batch": float(np.median(trimmed)),
           "rounds": {"padded": plain, "exact_bytes": trimmed, **(plugin if a.plugin else {})}}
    for form, times in plugin.items() if a.plugin else ():
        out[f"{form}_ms_per_batch"] = float(np.median(times))
    out["added_ms_per_batch"] = out["exact_bytes_ms_per_batch"] - out["padded_ms_per_batch"]
    write_result(a.out, out, quiet=True)
    print(f"batch {a.batch}: padded rows {out['padded_ms_per_batch']:.2f} ms, exact bytes "
          f"{out['exact_bytes_ms_per_batch']:.2f} ms (+{out['added_ms_per_batch']:.2f} ms)"
          + "".join(f", {form} {out[form + '_ms_per_batch']:.2f} ms" for form in plugin if a.plugin))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Where the cost of exact bytes (contract.dali_pipeline.exact_bytes) goes on a GPU, and what
a cheaper form gains: the resnet50 gpu definition with its trimming line replaced, timed as DALI
alone is (benchmarks/gpu_bounds.dali_case: the backend's executor, batch 128 of 640x480 JPEGs,
fresh pipelines), in alternating rounds so drift hits every case alike.

    python benchmarks/exact_bytes_probe.py --out results/exact_bytes_probe.json     # GPU host

Variants of the trimming line (`encoded = exact_bytes(encoded)`):
  current        as the file has it
  identity       no trimming: rows go to the decoder as they came (the bound)
  previous       the 14-operator form before 2026-12-04 (one 8-byte head, subscripts, casts)
  copy           fn.copy: one CPU operator that copies every row whole (its buffer is pinned:
                 the decoder consumes it)
  slice_whole    a slice with constant relative bounds: the copy, as slice makes it
  reshape_chain  the previous form's start/length arithmetic, ending in a reshape to the row's
                 own length (bare rows only: no copy, so the arithmetic's cost alone)
  flat           the current form with the length as `tagged * declared + bare * whole`: one
                 operator more (12), as deep (six from the rows to the decoder, like all three)
  plugin         one operator: ExactBytes, a DALI CPU operator in C++ (benchmarks/exact_bytes_plugin/,
                 built with `python -m benchmarks.exact_bytes_plugin.build OUT.so` against the DALI
                 that runs the probe; `--plugin OUT.so`); the same rule, one copy
  plugin_view    ExactBytesView from the same library: the rows as views into the input, no copy
  u64            9 operators, for a prefix with the length FIRST (length, then b"LEN:"): the 8 bytes
                 as one uint64 minus the marker's high word are the length on a prefixed row and
                 2**32 or more on any other, so `min(that, row length)` needs no select; the wire
                 format is not that, so bare rows only
Variants of the geometry (the header-driven resize size and crop anchor, CPU operators):
  current        as the file has it ([H, W] vectors, 12 operators)
  fixed          the constants 640x480 inputs give (no header peek: the bound)
  previous       the per-axis form before 2026-12-04 (about 35 operators; here with one stack more,
                 to hand the resize one size argument)
The raw runs of docs/gpu_ensemble/h200_probe/probe_1.json and probe_2.json ran against the file
before 2026-12-04, where "current" was today's "previous"; their "two_heads" and "vector" are
today's "current".
Each timing follows `--warmup-seconds` (default 1) of untimed batches; probe_1 to probe_3 ran
before that option, after one untimed batch only (`--warmup-seconds 0`). The runs of
docs/gpu_ensemble/h200_forms_and_switches/ ran with the default, one process per
DALI_USE_NEW_THREAD_POOL setting (DALI reads it once per process).
Rows: "bare" (the files themselves) or "packed" (contract.images.pack_batch over all the images:
length prefix, zeros up to the longest of them, a little more padding than a request of 128 has).
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
from pathlib import Path

from benchmarks.results_file import write_result

IMAGES = 256   # distinct 640x480 JPEGs; each timed batch is a window of them
TRIM_LINE = "    encoded = exact_bytes(encoded)\n"
GEOMETRY_START = "        hw = fn.peek_image_shape(encoded, dtype=types.INT64)[0:2]\n"
GEOMETRY_END = "   # [top, left]\n"
GEOMETRY = {
    "current": None,
    # 640x480 -> shorter side 256: 341x256; anchors (256-224)/2 = 16 and round((341-224)/2) = 58
    "fixed": "        size = [256.0, 341.0]\n        start = [16, 58]\n",
    "previous": """        shape = fn.peek_image_shape(encoded, dtype=types.INT64)   # H, W, C
        h, w = shape[0], shape[1]
        portrait = fn.cast(w <= h, dtype=types.INT64)
        new_w = portrait * resize + (1 - portrait) * ((resize * w) // h)
        new_h = (1 - portrait) * resize + portrait * ((resize * h) // w)
        size = fn.stack(fn.cast(new_h, dtype=types.FLOAT), fn.cast(new_w, dtype=types.FLOAT))
        start = fn.cast(fn.stack(_previous_anchor(new_h, crop), _previous_anchor(new_w, crop)), dtype=types.INT32)
""",
}

_ARITHMETIC = '''

def _previous_length(encoded):
    head = fn.slice(encoded, start=[0], shape=[PREFIX_BYTES], axes=[0], out_of_bounds_policy="pad")
    words = fn.cast(fn.reinterpret(head, dtype=types.UINT32, shape=[2]), dtype=types.INT64)
    tagged = fn.cast(words[0:1] == _MARKER_WORD, dtype=types.INT64)
    return tagged, tagged * words[1:2] + (1 - tagged) * encoded.shape(dtype=types.INT64)


def _previous_exact_bytes(encoded):
    tagged, length = _previous_length(encoded)
    return fn.slice(encoded, tagged * PREFIX_BYTES, length, axes=[0])


def _flat_exact_bytes(encoded):
    def word(at):
        return fn.reinterpret(fn.slice(encoded, start=[at], shape=[4], axes=[0], out_of_bounds_policy="pad"),
                              dtype=types.INT32, shape=[1])
    head = word(0)
    tagged, bare = head == _MARKER_WORD, head != _MARKER_WORD
    return fn.slice(encoded, tagged * PREFIX_BYTES,
                    tagged * word(4) + bare * encoded.shape(dtype=types.INT32), axes=[0])


def _u64_exact_bytes(encoded):
    import nvidia.dali.math as dmath
    u64 = types.UINT64
    head = fn.reinterpret(fn.slice(encoded, start=[0], shape=[8], axes=[0], out_of_bounds_policy="pad"),
                          dtype=u64, shape=[1])
    declared = head - types.Constant(_MARKER_WORD << 32, dtype=u64)   # wraps on a bare row
    tagged = declared < types.Constant(1 << 32, dtype=u64)
    length = fn.reinterpret(dmath.min(declared, encoded.shape(dtype=u64)), dtype=types.INT64)
    return fn.slice(encoded, tagged * types.Constant(PREFIX_BYTES, dtype=types.INT64), length, axes=[0])


def _previous_anchor(size, crop):
    d = size - crop
    k = d // 2
    odd = d - 2 * k
    return k + odd * (k - 2 * (k // 2))
'''

VARIANTS = {
    "current": None,
    "identity": "",
    "previous": "    encoded = _previous_exact_bytes(encoded)\n",
    "copy": "    encoded = fn.copy(encoded)\n",
    "slice_whole": "    encoded = fn.slice(encoded, rel_start=[0.0], rel_shape=[1.0], axes=[0])\n",
    "reshape_chain": "    encoded = fn.reshape(encoded, shape=fn.cast(_previous_length(encoded)[1], dtype=types.INT32))\n",
    "flat": "    encoded = _flat_exact_bytes(encoded)\n",
    "u64": "    encoded = _u64_exact_bytes(encoded)\n",
    "plugin": "    encoded = fn.exact_bytes(encoded)\n",
    "plugin_view": "    encoded = fn.exact_bytes_view(encoded)\n",
}
PLUGIN_TRIMS = ("plugin", "plugin_view")   # the variants that need the built library
IMPORT_LINE = "from nvidia.dali import fn, types\n"


def _case(name, trim, rows="bare", pipelines=2, no_copy=True, geometry="current", threads=None,
          hw_decoder_load=1.0):
    return {"name": name, "trim": trim, "rows": rows, "pipelines": pipelines, "input_no_copy": no_copy,
            "geometry": geometry, "threads": threads, "hw_decoder_load": hw_decoder_load}


CASES = (
    _case("identity", "identity"),
    _case("current", "current"),
    _case("previous", "previous", geometry="previous"),
    _case("previous_trim", "previous"),
    _case("previous_geometry", "current", geometry="previous"),
    _case("identity_previous_geometry", "identity", geometry="previous"),
    _case("identity_fixed_geometry", "identity", geometry="fixed"),
    _case("current_fixed_geometry", "current", geometry="fixed"),
    _case("copy", "copy"),
    _case("slice_whole", "slice_whole"),
    _case("reshape_chain", "reshape_chain"),
    _case("current_packed", "current", rows="packed"),
    _case("previous_packed", "previous", rows="packed", geometry="previous"),
    _case("identity_input_copied", "identity", no_copy=False),
    _case("current_1_pipeline", "current", pipelines=1),
    _case("current_3_pipelines", "current", pipelines=3),
    _case("current_6_threads", "current", threads=6),
    _case("current_2_threads", "current", threads=2),
    _case("flat", "flat"),
    _case("u64", "u64"),
    _case("plugin", "plugin"),
    _case("plugin_packed", "plugin", rows="packed"),
    _case("plugin_view", "plugin_view"),
    _case("plugin_view_packed", "plugin_view", rows="packed"),
    # the share of JPEGs for the hardware decoder: the rest go to nvJPEG's CUDA decoder, in parallel
    _case("current_hw_0.9", "current", hw_decoder_load=0.9),
    _case("current_hw_0.8", "current", hw_decoder_load=0.8),
    _case("identity_hw_0.9", "identity", hw_decoder_load=0.9),
)


def rewrite(text: str, trim: str, no_copy: bool = True, geometry: str = "current", plugin: Path | None = None) -> str:
    """The definition `text` with its trimming line replaced by `trim`'s variant and its geometry
    by `geometry`'s; the plugin variants load the ExactBytes library `plugin` first."""
    if TRIM_LINE not in text:
        raise ValueError("the definition has no trimming line to replace")
    if trim in PLUGIN_TRIMS:
        if plugin is None:
            raise ValueError("the plugin variant needs the built library (--plugin)")
        load = f"import nvidia.dali.plugin_manager as _plugins\n_plugins.load_library({str(plugin)!r})\n"
        text = text.replace(IMPORT_LINE, IMPORT_LINE + load, 1)
    if VARIANTS[trim] is not None:
        text = text.replace(TRIM_LINE, VARIANTS[trim]) + _ARITHMETIC
    if GEOMETRY[geometry] is not None:
        i = text.index(GEOMETRY_START)
        j = text.index(GEOMETRY_END, i) + len(GEOMETRY_END)
        text = text[:i] + GEOMETRY[geometry] + text[j:]
        if _ARITHMETIC not in text:
            text += _ARITHMETIC
    if not no_copy:
        text = text.replace("no_copy=True", "no_copy=False")
    return text


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--seconds", type=float, default=3.0, help="timed seconds per case and round")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--warmup-seconds", type=float, default=1.0,
                   help="untimed seconds at the timed batch before each timing (gpu_bounds.dali_case)")
    p.add_argument("--cases", default=None, help="comma-separated case names (default: all)")
    p.add_argument("--plugin", type=Path, default=None,
                   help="the built ExactBytes library, for the plugin cases (benchmarks/exact_bytes_plugin/build.py)")
    p.add_argument("--out", type=Path, required=True)
    a = p.parse_args(argv)
    names = (a.cases.split(",") if a.cases is not None    # by default every case; the plugin's with --plugin
             else [c["name"] for c in CASES if a.plugin or c["trim"] not in PLUGIN_TRIMS])
    unknown = set(names) - {c["name"] for c in CASES}
    if unknown:
        p.error(f"unknown case(s) {', '.join(repr(n) for n in sorted(unknown))}; "
                f"the cases are {', '.join(c['name'] for c in CASES)}")
    needs_plugin = sorted(c["name"] for c in CASES if c["name"] in names and c["trim"] in PLUGIN_TRIMS)
    if needs_plugin and (a.plugin is None or not a.plugin.is_file()):
        p.error(f"case(s) {', '.join(needs_plugin)} need --plugin, the built ExactBytes library "
                f"(python -m benchmarks.exact_bytes_plugin.build OUT.so); got {a.plugin}")
    if not 1 <= a.batch <= IMAGES:
        p.error(f"--batch must be 1 to {IMAGES} (the distinct images a batch is drawn from), got {a.batch}")
    if a.rounds < 1 or a.seconds <= 0 or a.warmup_seconds < 0:
        p.error(f"--rounds must be at least 1, --seconds above 0 and --warmup-seconds at least 0, "
                f"got {a.rounds}, {a.seconds} and {a.warmup_seconds}")
    os.environ.setdefault("DALI_USE_EXEC2", "1")
    import numpy as np

    from benchmarks.gpu_bounds import _definition, dali_case, environment
    from builders.synthetic_jpegs import make_jpegs
    from contract.images import pack_batch
    from contract.spec import Triton

    threads = Triton().dali_gpu_num_threads
    jpegs = make_jpegs(IMAGES, 640, 480)
    rows = {"bare": [np.frombuffer(j, dtype=np.uint8) for j in jpegs], "packed": list(pack_batch(jpegs))}
    wanted = [c for c in CASES if c["name"] in names]
    out = {"command": "python benchmarks/exact_bytes_probe.py " + " ".join(sys.argv[1:] if argv is None else argv),
           "environment": environment(), "batch": a.batch, "dali_threads": threads,
           "warmup_s": a.warmup_seconds, "cases": {}}
    with tempfile.TemporaryDirectory(prefix="exact-bytes-probe-") as tmp:
        tmp = Path(tmp)
        for r in range(a.rounds):
            for c in wanted:
                name, n_threads = c["name"], c["threads"] or threads
                f = _definition(tmp, a.batch, n_threads, c["hw_decoder_load"], {})
                f.write_text(rewrite(f.read_text(), c["trim"], c["input_no_copy"], c["geometry"],
                                     a.plugin.resolve() if a.plugin else None))
                case = out["cases"].setdefault(name, {**c, "threads": n_threads, "rounds": []})
                try:
                    res = dali_case(f, "backend", (), a.batch, c["pipelines"], n_threads, jpegs, a.seconds,
                                    rows=rows[c["rows"]], warmup_s=a.warmup_seconds)
                except Exception as e:   # a variant DALI refuses is a finding, not the end of the probe
                    case["error"] = str(e)[:400]
                    print(f"round {r} {name:24} FAILED {str(e)[:200]}", flush=True)
                else:
                    case["rounds"].append(res["images_per_s"])
                    case["images_per_s"] = statistics.median(case["rounds"])
                    print(f"round {r} {name:24} {res['images_per_s']:9,.0f} img/s", flush=True)
                write_result(a.out, out, quiet=True)   # after every case: a cut-off run keeps what it measured
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""exact_bytes as a DALI conditional (rows without the length prefix pass through uncopied)
against the form in the file and against no trimming: two pipelines at batch 128, fed bare JPEGs
("plain") or packed rows (contract.images.pack_batch, "packed"), two rounds each; fresh pipelines
with the backend's executor (benchmarks.gpu_bounds.dali_case). The committed figures
(docs/gpu_ensemble/h200_exact_bytes/exact_bytes_conditional.json) ran against the 14-operator
exact_bytes of 2fe457a; the conditional replaces whatever body the file has.

    python benchmarks/exact_bytes_conditional.py results/exact_bytes_conditional.json   # GPU host
"""
import json
import os
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("DALI_USE_EXEC2", "1")

from benchmarks.gpu_bounds import _definition, dali_case, environment  # noqa: E402
from builders.synthetic_jpegs import make_jpegs  # noqa: E402
from contract.images import pack_batch  # noqa: E402

BATCH, PIPELINES, THREADS, SECONDS = 128, 2, 4, 3.0
BODY_START = "    def word(at):\n"   # exact_bytes' body, after its docstring
COND = '''    head = fn.slice(encoded, start=[0], shape=[PREFIX_BYTES], axes=[0], out_of_bounds_policy="pad")
    words = fn.reinterpret(head, dtype=types.INT32, shape=[2])
    if words[0] == _MARKER_WORD:
        encoded = fn.slice(encoded, [PREFIX_BYTES], words[1:2], axes=[0])
    return encoded
'''


def variant_text(text: str, variant: str) -> str:
    """The generated definition's source with exact_bytes as `variant` ("current": unchanged)."""
    if variant == "identity":
        return text.replace("    encoded = exact_bytes(encoded)\n", "")
    if variant == "cond":
        i = text.index(BODY_START)
        j = text.index("\n\n\ndef _center_anchor")
        text = text[:i] + COND + text[j + 1:]
        return text.replace("prefetch_queue_depth=1)", "prefetch_queue_depth=1, enable_conditionals=True)")
    return text


def main() -> int:
    jpegs = make_jpegs(256, 640, 480)
    inputs = {"plain": jpegs, "packed": list(pack_batch(jpegs[:BATCH]))}
    out = {"command": "python benchmarks/exact_bytes_conditional.py " + " ".join(sys.argv[1:]),
           "environment": environment(), "cases": {}}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for rnd in range(2):
            for variant in ("current", "cond", "identity"):
                for kind, rows in inputs.items():
                    if variant == "identity" and kind == "packed":
                        continue   # packed rows need the trimming to decode
                    f = _definition(tmp, BATCH, THREADS, 1.0, {})
                    f.write_text(variant_text(f.read_text(), variant))
                    try:
                        ips = dali_case(f, "backend", (), BATCH, PIPELINES, THREADS, rows, SECONDS)["images_per_s"]
                    except Exception as err:  # noqa: BLE001 - a DALI build without conditionals: record, go on
                        out["cases"].setdefault(f"{variant}_{kind}", []).append(f"FAILED: {str(err)[:300]}")
                        print(rnd, variant, kind, "FAILED", str(err)[:500], flush=True)
                        continue
                    out["cases"].setdefault(f"{variant}_{kind}", []).append(ips)
                    print(rnd, variant, kind, round(ips), flush=True)
    Path(sys.argv[1]).write_text(json.dumps(out, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

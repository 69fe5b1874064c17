"""What exact bytes (contract.dali_pipeline.exact_bytes) costs DALI alone on a GPU, and whether
more DALI threads win it back: the resnet50 gpu definition, two pipelines at batch 128 of bare
640x480 JPEGs (fresh, the backend's executor), as written ("current"), without the trimming
("identity"), and with the prefix arithmetic in uint32 ("u32"), each at 4 and 8 threads.

    python benchmarks/exact_bytes_variants.py results/exact_bytes_variants.json     # GPU host
"""
import json
import os
import sys
import tempfile
from pathlib import Path
os.environ.setdefault("DALI_USE_EXEC2", "1")
from benchmarks.gpu_bounds import _definition, dali_case, environment
from builders.synthetic_jpegs import make_jpegs
jpegs = make_jpegs(256, 640, 480)
out = {"command": "python benchmarks/exact_bytes_variants.py " + " ".join(sys.argv[1:]), "environment": environment(), "cases": {}}
with tempfile.TemporaryDirectory() as tmp:
    tmp = Path(tmp)
    for threads in (4, 8):
        for variant in ("current", "identity", "u32"):
            f = _definition(tmp, 128, threads, 1.0, {})
            text = f.read_text()
            if variant == "identity":
                text = text.replace("    encoded = exact_bytes(encoded)\n", "")
            elif variant == "u32":
                text = text.replace(
                    "    words = fn.cast(fn.reinterpret(head, dtype=types.UINT32, shape=[2]), dtype=types.INT64)\n",
                    "    words = fn.reinterpret(head, dtype=types.UINT32, shape=[2])\n").replace(
                    "    tagged = fn.cast(words[0:1] == _MARKER_WORD, dtype=types.INT64)\n",
                    "    tagged = fn.cast(words[0:1] == _MARKER_WORD, dtype=types.UINT32)\n").replace(
                    "encoded.shape(dtype=types.INT64)", "encoded.shape(dtype=types.UINT32)")
            f.write_text(text)
            try:
                r = dali_case(f, "backend", (), 128, 2, threads, jpegs, 3.0)
            except Exception as e:
                print(variant, threads, "FAILED", str(e)[:300], flush=True)
                continue
            out["cases"][f"{variant}_t{threads}"] = r["images_per_s"]
            print(variant, threads, round(r["images_per_s"]), flush=True)
Path(sys.argv[1]).write_text(json.dumps(out, indent=1))

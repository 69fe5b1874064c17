"""exact_bytes as a DALI conditional (rows without the length prefix pass through uncopied)
against the form in the file and against no trimming: two pipelines at batch 128, fed bare JPEGs
("plain") or packed rows (contract.images.pack_batch, "packed"), two rounds each.

    python benchmarks/exact_bytes_conditional.py results/exact_bytes_conditional.json   # GPU host
    python benchmarks/exact_bytes_conditional.py out.json --cpu     # the cpu variant, batch 16 (a check)
"""
import json
import os
import sys
import tempfile
from pathlib import Path
os.environ.setdefault("DALI_USE_EXEC2", "1")
import numpy as np
from benchmarks.gpu_bounds import _definition, environment
from builders.synthetic_jpegs import make_jpegs
from contract.images import pack_batch
from contract.preprocess import load_pipeline
from contract.layout import DALI_INPUT
import threading
import time

OLD_BODY_START = "    head = fn.slice(encoded, start=[0], shape=[PREFIX_BYTES], axes=[0], out_of_bounds_policy=\"pad\")\n"
COND = '''    head = fn.slice(encoded, start=[0], shape=[PREFIX_BYTES], axes=[0], out_of_bounds_policy="pad")
    words = fn.reinterpret(head, dtype=types.INT32, shape=[2])
    if words[0] == _MARKER_WORD:
        encoded = fn.slice(encoded, [PREFIX_BYTES], words[1:2], axes=[0])
    return encoded
'''

def variant_text(text, variant):
    if variant == "identity":
        return text.replace("    encoded = exact_bytes(encoded)\n", "")
    if variant == "cond":
        i = text.index(OLD_BODY_START)
        j = text.index("\n\n\ndef _center_anchor")
        text = text[:i] + COND + text[j + 1:]
        return text.replace("prefetch_queue_depth=1)", "prefetch_queue_depth=1, enable_conditionals=True)")
    return text

def run_case(dali_file, rows, batch, pipelines, threads, seconds, device_id):
    pipes = [load_pipeline(dali_file, device_id, threads, batch) for _ in range(pipelines)]
    for p in pipes:
        p.feed_input(DALI_INPUT, rows[:batch])
        out = p.run()
    shape0 = np.array(out[0].as_cpu().as_tensor()).shape if device_id is not None else np.array(out[0].as_tensor()).shape
    counts = [0] * pipelines
    def loop(w, deadline):
        while time.perf_counter() < deadline:
            pipes[w].feed_input(DALI_INPUT, rows[:batch])
            pipes[w].run()
            counts[w] += batch
    start = time.perf_counter()
    ts = [threading.Thread(target=loop, args=(w, start + seconds)) for w in range(pipelines)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    if device_id is not None:
        import torch

        torch.cuda.synchronize()
    return sum(counts) / (time.perf_counter() - start), shape0

device_id = None if "--cpu" in sys.argv else 0
batch = 16 if device_id is None else 128
jpegs = make_jpegs(256, 640, 480)
plain = [np.frombuffer(j, np.uint8) for j in jpegs]
packed = list(pack_batch(jpegs[:batch]))
out = {"command": "python benchmarks/exact_bytes_conditional.py " + " ".join(sys.argv[1:]), "environment": environment(), "cases": {}}
with tempfile.TemporaryDirectory() as tmp:
    tmp = Path(tmp)
    for rnd in range(2):
        for variant in ("current", "cond", "identity"):
            for rn, rows in (("plain", plain), ("packed", packed)):
                if variant == "identity" and rn == "packed":
                    continue
                f = _definition(tmp, batch, 4, 1.0, {})
                if device_id is None:
                    f.write_text(f.read_text().replace("'device': 'gpu'", "'device': 'cpu'"))
                f.write_text(variant_text(f.read_text(), variant))
                try:
                    ips, shape = run_case(f, rows, batch, 2, 4, 3.0 if device_id is not None else 1.0, device_id)
                except Exception as e:
                    print(variant, rn, "FAILED", str(e)[:500], flush=True)
                    continue
                out["cases"].setdefault(f"{variant}_{rn}", []).append(ips)
                print(rnd, variant, rn, round(ips), shape, flush=True)
Path(sys.argv[1]).write_text(json.dumps(out, indent=1))

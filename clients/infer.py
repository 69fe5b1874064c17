"""Classify images with a served ensemble.

    python -m clients.infer path/to/a.jpg path/to/folder --top-k 3
    python -m clients.infer images/ --protocol grpc --precision int8 --json predictions.json

Folders are searched recursively for .jpg/.jpeg/.png/.bmp. Images go in requests of --batch-size
(zero-padded to the longest in each request); the model is `<model>_<precision>`, where --model
defaults to the only model the server serves.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from builders.datasets import IMAGE_SUFFIXES


def collect_images(paths: list[Path]) -> list[Path]:
    files: list[Path] = []
    for p in paths:
        if p.is_dir():
            files += sorted(f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES)
        elif p.is_file():
            files.append(p)
        else:
            raise FileNotFoundError(f"{p} is neither an image file nor a folder")
    return files


def _parser() -> argparse.ArgumentParser:
    from clients.repository import add_backend_argument
    from clients.triton import add_connection_arguments

    p = argparse.ArgumentParser(prog="python -m clients.infer",
                                description="Send images to a Triton ensemble and print the top-k labels.")
    p.add_argument("images", nargs="+", type=Path, help="image files and/or folders (searched recursively)")
    add_connection_arguments(p)
    p.add_argument("--model", default=None,
                   help="model name (e.g. digits) or a full ensemble name (digits_fp16); default: the only model "
                        "the server serves")
    p.add_argument("--precision", default="fp32", help="precision ensemble to call (default: %(default)s)")
    add_backend_argument(p)
    p.add_argument("--top-k", type=int, default=3, help="labels per image, best first (default: %(default)s)")
    p.add_argument("--batch-size", type=int, default=16,
                   help="images per request, at most the model's max_batch_size (default: %(default)s)")
    p.add_argument("--shared-memory", action="store_true",
                   help="pass tensors through system shared memory (server on this machine; pays off for large "
                        "batches)")
    p.add_argument("--json", type=Path, default=None, help="also write the predictions as JSON to this path")
    return p


def run(args) -> int:
    from rich.console import Console
    from rich.table import Table

    from clients.triton import TritonClient, TritonClientError, ensemble_name, served_base_models

    try:
        files = collect_images(args.images)
    except FileNotFoundError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if not files:
        print(f"error: no images ({', '.join(sorted(IMAGE_SUFFIXES))}) in {', '.join(map(str, args.images))}",
              file=sys.stderr)
        return 2
    console = Console(width=None if sys.stdout.isatty() else 120)
    try:
        with TritonClient(args.url, args.protocol, timeout_s=args.timeout, retries=args.retries,
                          shared_memory=args.shared_memory) as client:
            client.wait_until_ready()
            index = client.repository_index()
            model = args.model
            if model is None:
                bases = served_base_models(index)
                if len(bases) != 1:
                    print(f"error: the server serves {len(bases)} models ({', '.join(bases) or 'none'}); "
                          "choose one with --model", file=sys.stderr)
                    return 2
                model = bases[0]
            # A full ensemble name (digits_fp16) is used as given; a model name gets the precision appended.
            is_ensemble = any(m["name"] == model for m in index) and model not in served_base_models(index)
            ensemble = model if is_ensemble else ensemble_name(model, args.precision, args.backend)
            pred = client.infer_many(ensemble, [f.read_bytes() for f in files], batch_size=args.batch_size,
                                     top_k=args.top_k)
    except TritonClientError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2

    table = Table(title=f"{ensemble} at {client.url} ({args.protocol}): {len(files)} images, "
                        f"{1000 * pred.latency_s / len(files):.2f} ms/image")
    table.add_column("image")
    table.add_column("top-1", justify="right")
    table.add_column("score", justify="right")
    if args.top_k > 1:
        table.add_column(f"top-{args.top_k}")
    # Paths relative to the inputs' common folder keep the table readable.
    common = Path(os.path.commonpath([str(f.resolve().parent) for f in files]))
    for f, row in zip(files, pred.top_k):
        shown = os.path.relpath(f.resolve(), common.parent) if len(files) > 1 else str(f)
        cells = [shown, row[0].label, f"{row[0].score:.3f}"]
        if args.top_k > 1:
            cells.append("  ".join(f"{t.label} {t.score:.3f}" for t in row))
        table.add_row(*cells)
    console.print(table)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({
            "model": ensemble, "url": client.url, "protocol": args.protocol,
            "predictions": [{"image": str(f), "top_k": [{"label": t.label, "score": t.score, "index": t.index,
                                                         "logit": t.logit} for t in row]}
                            for f, row in zip(files, pred.top_k)]}, indent=2))
    return 0


def main(argv: list[str] | None = None) -> int:
    return run(_parser().parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())

"""Classify images with a served ensemble.

    python -m clients.infer path/to/a.jpg path/to/folder --top-k 3
    python -m clients.infer images/ --protocol grpc --precision int8 --json predictions.json

Folders are searched recursively for .jpg/.jpeg/.png/.bmp. Images go in requests of --batch-size
(zero-padded to the longest in each request); the model is `<model>_<precision>`, where --model
defaults to the only model the server serves.

Every file gets a line: its top-k, or an error naming the file and why (a bad image fails alone;
the others are still classified). Exit code 0: all classified; 1: some failed; 2: none could be
(arguments, server, model).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from contract.images import IMAGE_SUFFIXES


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
    from clients.connection import add_connection_arguments
    from clients.repository import add_backend_argument

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


def classify_files(client, ensemble: str, files: list[Path], batch_size: int, top_k: int) -> list[dict]:
    """One entry per file, in order: {"image", "top_k"} or {"image", "error"}.

    Files go in requests of batch_size; when a request is rejected (bad input), its files are sent
    one by one so that only the bad ones fail, each with the server's reason. When the server
    cannot be reached or goes away, the files not yet classified get that error and no more
    requests are sent (each would wait the full --timeout)."""
    from clients.triton import ConnectionLost, RequestTimeout, ServerUnavailable, TritonClientError

    results: list[dict | None] = [None] * len(files)
    payload: dict[int, bytes] = {}
    for i, f in enumerate(files):
        try:
            payload[i] = f.read_bytes()
        except OSError as err:
            results[i] = {"image": str(f), "error": f"cannot read the file: {err.strerror or err}"}
    todo = sorted(payload)
    fatal: str | None = None

    def send(idx: list[int]) -> None:
        pred = client.infer(ensemble, [payload[i] for i in idx], top_k=top_k)
        for i, row in zip(idx, pred.top_k):
            results[i] = {"image": str(files[i]), "top_k": row}

    for start in range(0, len(todo), batch_size):
        chunk = todo[start:start + batch_size]
        if fatal is None:
            try:
                send(chunk)
                continue
            except (ServerUnavailable, ConnectionLost, RequestTimeout) as err:
                fatal = str(err)
            except TritonClientError:
                for i in chunk:   # find the bad file(s); the good ones still get their answer
                    if fatal is not None:
                        break
                    try:
                        send([i])
                    except (ServerUnavailable, ConnectionLost, RequestTimeout) as err:
                        fatal = str(err)
                    except TritonClientError as err:
                        results[i] = {"image": str(files[i]), "error": str(err)}
        for i in chunk:
            if results[i] is None:
                results[i] = {"image": str(files[i]), "error": fatal or "not sent"}
    return [r for r in results if r is not None]


def run(args) -> int:
    """Exit code: 0 every file classified, 1 some file failed (each has its error line), 2 nothing
    could be classified (bad arguments, no images, server unreachable or no such model)."""
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    from clients.connection import client_options
    from clients.hints import resolve_ensemble
    from clients.repository import served_base_models
    from clients.triton import TritonClient, TritonClientError

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
        with TritonClient(args.url, args.protocol, shared_memory=args.shared_memory, **client_options(args)) as client:
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
            ensemble = resolve_ensemble(index, model, args.precision, args.backend, client.url)
            info = client.model_info(ensemble)   # unknown model: one clear error, not one per file
            size = min(args.batch_size, info.max_batch_size or args.batch_size)
            start = time.perf_counter()
            results = classify_files(client, ensemble, files, size, args.top_k)
            elapsed = time.perf_counter() - start
    except TritonClientError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2

    failed = [r for r in results if "error" in r]
    table = Table(title=f"{ensemble} at {client.url} ({args.protocol}): {len(files) - len(failed)} of {len(files)} "
                        f"images classified, {1000 * elapsed / len(files):.2f} ms/image")
    table.add_column("image")
    table.add_column("top-1", justify="right")
    table.add_column("score", justify="right")
    if args.top_k > 1:
        table.add_column(f"top-{args.top_k}")
    # Paths relative to the inputs' common folder keep the table readable.
    common = Path(os.path.commonpath([str(f.resolve().parent) for f in files]))
    for f, r in zip(files, results):
        shown = os.path.relpath(f.resolve(), common.parent) if len(files) > 1 else str(f)
        if "error" in r:
            table.add_row(escape(shown), "[red]error[/red]", "", *([""] if args.top_k > 1 else []))
            continue
        row = r["top_k"]
        cells = [escape(shown), row[0].label, f"{row[0].score:.3f}"]
        if args.top_k > 1:
            cells.append("  ".join(f"{t.label} {t.score:.3f}" for t in row))
        table.add_row(*cells)
    console.print(table)
    # One line per failed file, on stderr, named by its path as given (whole, not shortened).
    for r in failed:
        print(f"error: {r['image']}: {r['error']}", file=sys.stderr)
    if failed:
        print(f"{len(failed)} of {len(files)} images failed", file=sys.stderr)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({
            "model": ensemble, "url": client.url, "protocol": args.protocol,
            "predictions": [{"image": r["image"], "top_k": [{"label": t.label, "score": t.score, "index": t.index,
                                                              "logit": t.logit} for t in r["top_k"]]}
                            for r in results if "top_k" in r],
            "errors": [{"image": r["image"], "error": r["error"]} for r in failed]}, indent=2))
    return 1 if failed else 0


def main(argv: list[str] | None = None) -> int:
    return run(_parser().parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())

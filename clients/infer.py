"""Classify images with a served ensemble.

    python -m clients.infer path/to/a.jpg path/to/folder --top-k 3
    python -m clients.infer images/ --protocol grpc --precision int8 --json predictions.json

Folders are searched recursively for the formats the server's DALI decoder reads (SERVED_SUFFIXES:
JPEG, PNG, BMP, WebP, TIFF, JPEG 2000, PNM); any other file found there is named and skipped with
the reason, and a path that does not exist is named as missing; neither stops the others. Images
go in requests of --batch-size (packed, contract.images.pack_batch); the model is
`<model>_<precision>`, where --model defaults to the only model the server serves.

Every file gets a line: its top-k, or an error naming the file and why (a bad image fails alone;
the others are still classified). Exit code 0: all classified; 1: some failed, were skipped or
missing; 2: none could be (arguments, server, model). When nothing listens at --url, that is said
within seconds (a TCP connect, 2 s at most), not after --timeout.
"""
from __future__ import annotations

import argparse
import json
import os
import socket
import sys
import time
from pathlib import Path

from contract.errors import CannotRun, UsageError, exit_code_of

# What DALI's decoder (fn.decoders.image, both targets) reads, by file name; GIF is not among them.
SERVED_SUFFIXES = {".jpg": "JPEG", ".jpeg": "JPEG", ".jpe": "JPEG", ".png": "PNG", ".bmp": "BMP", ".webp": "WebP",
                   ".tif": "TIFF", ".tiff": "TIFF", ".jp2": "JPEG 2000", ".j2k": "JPEG 2000", ".pnm": "PNM",
                   ".ppm": "PNM", ".pgm": "PNM", ".pbm": "PNM"}
_SERVED = ", ".join(dict.fromkeys(SERVED_SUFFIXES.values()))


def find_images(paths: list[Path]) -> tuple[list[Path], list[dict]]:
    """(image files to send, in order; {"image", "error"} for every path left out and why).

    A folder is searched recursively: files in a format the server decodes are sent, other files
    (hidden ones aside) are reported as skipped. A file named on its own is sent whatever its
    suffix (the server names what is wrong with it); a path that does not exist is missing."""
    files: list[Path] = []
    left_out: list[dict] = []
    for p in paths:
        if p.is_dir():
            for f in sorted(f for f in p.rglob("*") if f.is_file() and not f.name.startswith(".")):
                if f.suffix.lower() in SERVED_SUFFIXES:
                    files.append(f)
                else:
                    left_out.append({"image": str(f), "error": f"skipped: {f.suffix or 'no suffix'} is not a format "
                                                              f"the server decodes ({_SERVED})"})
        elif p.is_file():
            files.append(p)
        else:
            left_out.append({"image": str(p), "error": "missing: no such file or folder"})
    return files, left_out


def collect_images(paths: list[Path]) -> list[Path]:
    """The image files of `paths` (find_images); raises FileNotFoundError naming a missing path."""
    files, left_out = find_images(paths)
    missing = [r["image"] for r in left_out if r["error"].startswith("missing")]
    if missing:
        raise FileNotFoundError(f"{', '.join(missing)}: no such file or folder")
    return files


def unreachable(url: str, timeout_s: float = 2.0) -> str | None:
    """Why nothing answers at `url` (host:port, as normalized), or None when a TCP connect succeeds."""
    host, _, port = url.rpartition(":")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s):
            return None
    except (OSError, ValueError) as err:
        return str(getattr(err, "strerror", None) or err)


def _parser() -> argparse.ArgumentParser:
    from clients.connection import add_connection_arguments
    from clients.served_models import add_backend_argument

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


def _classify(args, files: list[Path]) -> tuple[str, str, list[dict], float]:
    """Ask the server: the ensemble (from --model/--precision, or the only model served), its
    address, every file's result and the seconds they took. CannotRun/UsageError (exit code 2)
    when nothing could be classified."""
    from clients.connection import client_options, normalize_url
    from clients.user_errors import resolve_ensemble
    from clients.served_models import served_base_models
    from clients.triton import TritonClient, TritonClientError

    url = normalize_url(args.url, args.protocol)
    why = unreachable(url)
    if why:
        raise CannotRun(f"cannot reach a Triton server at {url} ({args.protocol}): {why}; nothing listens there, so "
                        "this does not wait for --timeout. Start one (tik-serve) or pass --url")
    try:
        with TritonClient(args.url, args.protocol, shared_memory=args.shared_memory, **client_options(args)) as client:
            client.wait_until_ready()
            index = client.repository_index()
            model = args.model
            if model is None:
                bases = served_base_models(index)
                if len(bases) != 1:
                    raise UsageError(f"the server serves {len(bases)} models ({', '.join(bases) or 'none'}); "
                                     "choose one with --model")
                model = bases[0]
            # A full ensemble name (digits_fp16) is used as given; a model name gets the precision appended.
            ensemble = resolve_ensemble(index, model, args.precision, args.backend, client.url)
            info = client.model_info(ensemble)   # unknown model: one clear error, not one per file
            size = min(args.batch_size, info.max_batch_size or args.batch_size)
            start = time.perf_counter()
            results = classify_files(client, ensemble, files, size, args.top_k)
            return ensemble, client.url, results, time.perf_counter() - start
    except TritonClientError as err:
        raise CannotRun(str(err)) from err


def _table(args, title: str, files: list[Path], results: list[dict]):
    """One row per file: its top-1 and score (and top-k), or "error"."""
    from rich.markup import escape
    from rich.table import Table

    table = Table(title=title)
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
    return table


def _write_json(path: Path, ensemble: str, url: str, protocol: str, results: list[dict], failed: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({
        "model": ensemble, "url": url, "protocol": protocol,
        "predictions": [{"image": r["image"], "top_k": [{"label": t.label, "score": t.score, "index": t.index,
                                                          "logit": t.logit} for t in r["top_k"]]}
                        for r in results if "top_k" in r],
        "errors": [{"image": r["image"], "error": r["error"]} for r in failed]}, indent=2))


def run(args) -> int:
    """Exit code: 0 every file classified, 1 some file failed (each has its error line). Raises
    ToolkitError with exit code 2 when nothing could be classified (bad arguments, no images,
    server unreachable or no such model)."""
    from rich.console import Console

    files, left_out = find_images(args.images)
    if not files:
        for r in left_out:
            print(f"error: {r['image']}: {r['error']}", file=sys.stderr)
        raise UsageError(f"no images ({_SERVED}) in {', '.join(map(str, args.images))}")
    ensemble, url, results, elapsed = _classify(args, files)
    console = Console(width=None if sys.stdout.isatty() else 120)
    classified = sum("top_k" in r for r in results)
    failed = [r for r in results if "error" in r] + left_out
    console.print(_table(args, f"{ensemble} at {url} ({args.protocol}): {classified} of {len(files)} "
                               f"images classified, {1000 * elapsed / len(files):.2f} ms/image", files, results))
    # One line per failed file, on stderr, named by its path as given (whole, not shortened).
    for r in failed:
        print(f"error: {r['image']}: {r['error']}", file=sys.stderr)
    if failed:
        print(f"{len(failed)} of {len(files) + len(left_out)} files failed, were skipped or missing", file=sys.stderr)
    if args.json:
        _write_json(args.json, ensemble, url, args.protocol, results, failed)
    return 1 if failed else 0


def main(argv: list[str] | None = None) -> int:
    return exit_code_of(run, _parser().parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())

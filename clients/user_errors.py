"""Errors in the user's words: a client pointed at the other protocol's port, a model name the
server does not serve (reported as typed, with what the server does serve)."""
from __future__ import annotations

import difflib

from clients.connection import DEFAULT_PORTS
from clients.errors import ServerUnavailable, UnknownModel
from clients.served_models import ensemble_name, served_base_models, served_precisions

# What the transports say when they meet the other protocol: geventhttpclient's and aiohttp's HTTP/1
# parsers on gRPC's HTTP/2 bytes; gRPC's HTTP/2 parser on an HTTP/1 answer.
_HTTP_CLIENT_AT_GRPC = ("expected http/", "invalid http version", "badstatusline", "pri * http/2")
_GRPC_CLIENT_AT_HTTP = ("failed parsing http/2", "http1.x server", "expected settings frame")
# Triton's own HTTP endpoint just closes a connection that opens with HTTP/2's preface.
_GRPC_CLOSED = "socket closed"


def wrong_protocol(text: str, protocol: str, url: str) -> ServerUnavailable | None:
    """The error to raise when `text` (a transport error's message) shows that the server at `url`
    speaks the other protocol than `protocol` ("http" or "grpc"); None when it does not."""
    low = text.lower()
    mine = "HTTP" if protocol == "http" else "gRPC"
    if protocol == "http" and any(s in low for s in _HTTP_CLIENT_AT_GRPC):
        other, usual, what = "gRPC", DEFAULT_PORTS["http"], "answered in gRPC, not HTTP"
    elif protocol == "grpc" and any(s in low for s in _GRPC_CLIENT_AT_HTTP):
        other, usual, what = "HTTP", DEFAULT_PORTS["grpc"], "answered in HTTP, not gRPC"
    elif protocol == "grpc" and _GRPC_CLOSED in low:
        other, usual, what = "HTTP", DEFAULT_PORTS["grpc"], "accepted the connection and closed it without a gRPC answer"
    else:
        return None
    exc = ServerUnavailable(
        f"the server at {url} {what} ({text}): is this the {other} port? "
        f"Use --protocol {other.lower()}, or the {mine} port (Triton's default {usual}).")
    exc.detail = text  # type: ignore[attr-defined]
    return exc


def _did_you_mean(typed: str, names: list[str]) -> str:
    close = difflib.get_close_matches(typed, names, n=2, cutoff=0.6)
    return f" Did you mean {' or '.join(repr(c) for c in close)}?" if close else ""


def served_summary(index: list[dict], backend: str | None = None) -> str:
    """'digits (fp16, fp32, int8), flowers (fp32)': the served models with their precisions."""
    bases = served_base_models(index)
    return ", ".join(f"{b} ({', '.join(served_precisions(index, b, backend)) or 'no ready ensemble'})"
                     for b in bases) or "none"


def resolve_ensemble(index: list[dict], typed: str, precision: str | None, backend: str | None,
                     url: str) -> str:
    """The ensemble to call for `--model typed [--precision precision]`, or UnknownModel naming
    what the user typed and what the server serves.

    index: the server's repository index (rows with name and state). typed: a model name
    (`digits`) or a full ensemble name (`digits_fp16`). precision/backend: appended to a model
    name (contract.layout's naming); precision None checks the model name only.
    """
    names = {m["name"] for m in index}
    bases = served_base_models(index)
    if typed in names and typed not in bases:
        return typed                       # a full ensemble (or part) name, used as given
    if typed in bases:
        ensemble = ensemble_name(typed, precision, backend) if precision else typed
        if precision and ensemble not in names:
            raise UnknownModel(
                f"the server at {url} serves {typed!r}, but not in precision {precision!r} (ensemble "
                f"{ensemble!r}): its precisions are {', '.join(served_precisions(index, typed, backend)) or 'none'}.")
        return ensemble
    ensembles = sorted(n for n in names if n not in bases and not n.endswith(("_infer", "_preprocess")))
    raise UnknownModel(
        f"the server at {url} has no model {typed!r}.{_did_you_mean(typed, bases + ensembles)} "
        f"It serves: {served_summary(index, backend)}; pass a model name (--model digits, with "
        "--precision) or a full ensemble name (--model digits_fp16).")

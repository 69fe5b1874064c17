"""The errors clients.triton raises, and how it recognizes the transport errors it rewrites into them.

Every TritonClientError message says what the user can do about it (the wording lives with the
clients in clients.triton, which know the URL, protocol and timeout). The predicates below sort a
raw tritonclient / aiohttp / socket error into "never reached the server" (worth retrying),
"timed out" (not retried: the server is there but slow) and everything else.
"""
from __future__ import annotations

import asyncio

from contract.errors import ToolkitError


class TritonClientError(ToolkitError, RuntimeError):
    """Something a user can act on; the message says what."""


class ServerUnavailable(TritonClientError):
    """The server could not be reached (refused, unreachable, timed out) within the retries."""


class ConnectionLost(ServerUnavailable):
    """The connection closed while a request was in flight (server crashed, restarted or stopped)."""


class ApiRestricted(TritonClientError):
    """The server restricts this API (e.g. model-repository) and the request had no or a wrong key."""


class ServerNotReady(TritonClientError):
    """The server answers but is not ready (models loading or failed)."""


class UnknownModel(TritonClientError):
    """The model is not in the server's repository."""


class ModelNotReady(TritonClientError):
    """The model exists but is not loaded (see the reason)."""


class BatchTooLarge(TritonClientError):
    """More images in one request than the model's max_batch_size."""


class RequestTimeout(TritonClientError):
    """The server took longer than the timeout to answer."""


# tritonclient is imported inside the functions so that importing this module (and the error
# classes) does not need it installed.

def is_connection_error(err: BaseException) -> bool:
    """True when the request did not reach a server (worth retrying)."""
    if is_connection_lost(err) or is_restricted(err):
        return False
    if isinstance(err, (ConnectionError, OSError)) and not isinstance(err, TimeoutError):
        return True
    try:
        import aiohttp

        if isinstance(err, aiohttp.ClientConnectionError) and not isinstance(err, aiohttp.ServerTimeoutError):
            return True
    except ImportError:  # aiohttp comes with tritonclient[http]; without it there is no aio HTTP client
        pass
    from tritonclient.utils import InferenceServerException

    if isinstance(err, InferenceServerException):
        status = str(err.status() or "")
        text = str(err.message() or "")
        return "UNAVAILABLE" in status or "failed to connect" in text.lower() or "connection refused" in text.lower()
    return False


def is_connection_lost(err: BaseException) -> bool:
    """True when the server went away while a request was in flight: the connection was closed or
    reset after it was established (not retried: a request that crashed the server would crash it
    again)."""
    if isinstance(err, (ConnectionResetError, BrokenPipeError, ConnectionAbortedError)):
        return True
    if type(err).__name__ in ("HTTPConnectionClosed", "HTTPParseError", "ServerDisconnectedError",
                              "ClientPayloadError"):
        return True   # geventhttpclient (sync HTTP) and aiohttp (asyncio HTTP) words for it
    from tritonclient.utils import InferenceServerException

    if isinstance(err, InferenceServerException):
        text = str(err.message() or "").lower()
        if "failed to connect to all addresses" in text:
            # gRPC could not (re)connect, so the request was never sent: a reset while connecting
            # (a proxy or a restarting server refusing) is an unreachable server, worth retrying.
            return False
        return "UNAVAILABLE" in str(err.status() or "") and any(
            w in text for w in ("socket closed", "connection reset", "goaway", "recvmsg", "broken pipe"))
    return False


def is_restricted(err: BaseException) -> bool:
    """True for Triton's answer to a restricted API called without its key (HTTP 403; gRPC reports
    it as UNAVAILABLE, which must not be mistaken for an unreachable server)."""
    return "is restricted, expecting header" in str(message(err))


def is_timeout(err: BaseException) -> bool:
    if isinstance(err, (TimeoutError, asyncio.TimeoutError)):
        return True
    name = type(err).__name__.lower()
    if "timeout" in name:
        return True
    from tritonclient.utils import InferenceServerException

    if isinstance(err, InferenceServerException):
        return "DEADLINE_EXCEEDED" in str(err.status() or "") or "timed out" in str(err.message() or "").lower()
    return False


def message(err: BaseException) -> str:
    """The server's own words for an error, or the exception's text."""
    from tritonclient.utils import InferenceServerException

    if isinstance(err, InferenceServerException):
        return str(err.message() or err.status() or type(err).__name__)
    return str(err) or type(err).__name__

"""Where the server is and which tritonclient module talks to it, plus the command-line flags
for that, shared by clients.infer, clients.verify and clients.bench.
"""
from __future__ import annotations

PROTOCOLS = ("http", "grpc")
DEFAULT_PORTS = {"http": 8000, "grpc": 8001}
LOCAL_SERVER_HINT = ("Start the local server with `python -m serving.local_server --repository "
                     "model_repository/cpu` (HTTP port 8000, gRPC 8001) or `docker compose up`, "
                     "or pass the server's address with --url.")


def normalize_url(url: str | None, protocol: str) -> str:
    """host:port as tritonclient wants it; accepts http://host:port and a bare host (default port)."""
    if protocol not in PROTOCOLS:
        raise ValueError(f"protocol must be one of {PROTOCOLS}, got {protocol!r}")
    if not url:
        return f"127.0.0.1:{DEFAULT_PORTS[protocol]}"
    for scheme in ("http://", "https://", "grpc://"):
        if url.startswith(scheme):
            url = url[len(scheme):]
    url = url.rstrip("/")
    host_part = url.rsplit("]", 1)[-1]  # an IPv6 literal [::1] has colons of its own
    if ":" not in host_part:
        url = f"{url}:{DEFAULT_PORTS[protocol]}"
    return url


def tritonclient_module(protocol: str, aio: bool):
    """tritonclient.{http,grpc}[.aio], imported only when a client is made: each pulls in its own
    transport (gevent/aiohttp, grpcio) and a user of one protocol may lack the other's."""
    if protocol == "http":
        if aio:
            import tritonclient.http.aio as mod
        else:
            import tritonclient.http as mod
    else:
        if aio:
            import tritonclient.grpc.aio as mod
        else:
            import tritonclient.grpc as mod
    return mod


def add_connection_arguments(parser, protocol_choices: bool = True) -> None:
    """--url, --protocol, --timeout, --retries: the same flags on every command."""
    parser.add_argument("--url", default=None,
                        help="server address host:port (default: 127.0.0.1:8000 for http, 127.0.0.1:8001 for grpc)")
    if protocol_choices:
        parser.add_argument("--protocol", choices=PROTOCOLS, default="http",
                            help="HTTP/REST or gRPC; both give the same results (default: %(default)s)")
    parser.add_argument("--timeout", type=float, default=30.0,
                        help="seconds to wait for the server (connection retries included) and per request "
                             "(default: %(default)s)")
    parser.add_argument("--retries", type=int, default=4,
                        help="connection attempts after the first, with exponential backoff, while the server "
                             "is unreachable (default: %(default)s)")

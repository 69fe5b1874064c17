"""Where the server is and which tritonclient module talks to it, plus the command-line flags
for that, shared by clients.infer, clients.verify and benchmarks.bench.
"""
from __future__ import annotations

import os

from contract.auth import API_KEY_ENV, API_KEY_HEADER, key_file, request_header

PROTOCOLS = ("http", "grpc")
DEFAULT_PORTS = {"http": 8000, "grpc": 8001}
LOCAL_SERVER_HINT = ("Start the local server with `tik-serve --repository model_repository/cpu` "
                     "(or python -m serving.local_server; HTTP port 8000, gRPC 8001) or `docker compose up`, "
                     "or pass the server's address with --url.")


LOCAL_HOSTS = ("127.0.0.1", "localhost", "[::1]")
# Schemes that mean TLS; the others plain text. A TLS URL is never served over plain text.
TLS_SCHEMES = ("https://", "grpcs://")
PLAIN_SCHEMES = ("http://", "grpc://")


def split_url(url: str | None, protocol: str) -> tuple[str, bool]:
    """(host:port, tls) from a URL: https:// and grpcs:// mean TLS, http://, grpc:// and none mean
    plain text; a URL without a port gets the protocol's default."""
    tls = bool(url) and url.startswith(TLS_SCHEMES)
    return normalize_url(url, protocol), tls


def normalize_url(url: str | None, protocol: str) -> str:
    """host:port as tritonclient wants it; accepts http(s)://host:port and a bare host (default port).
    Whether the scheme asked for TLS is split_url's answer; this drops the scheme."""
    if protocol not in PROTOCOLS:
        raise ValueError(f"protocol must be one of {PROTOCOLS}, got {protocol!r}")
    if not url:
        return f"127.0.0.1:{DEFAULT_PORTS[protocol]}"
    for scheme in TLS_SCHEMES + PLAIN_SCHEMES:
        if url.startswith(scheme):
            url = url[len(scheme):]
    url = url.rstrip("/")
    host_part = url.rsplit("]", 1)[-1]  # an IPv6 literal [::1] has colons of its own
    if ":" not in host_part:
        url = f"{url}:{DEFAULT_PORTS[protocol]}"
    return url


def read_api_key(url: str) -> str | None:
    """The key of a local server started by serving.local_server on url's port, if its key file
    is there (readable by the same user only); None for other hosts or no file."""
    host, _, port = url.rpartition(":")
    if host not in LOCAL_HOSTS or not port.isdigit():
        return None
    try:
        return key_file(port).read_text().strip() or None
    except OSError:
        return None


def auth_headers(url: str, protocol: str, api_key: str | None = None) -> dict[str, str] | None:
    """The restricted-API header for a server at `url`: `api_key`, else $TRITON_API_KEY, else the
    local launcher's key file for that port; None when there is no key."""
    key = api_key or os.environ.get(API_KEY_ENV) or read_api_key(url)
    # Triton's gRPC endpoint looks for the key under a prefix (its HTTP endpoint does not).
    return {request_header(protocol): key} if key else None


def tls_kwargs(protocol: str, aio: bool, ca_cert: str | None = None, client_cert: str | None = None,
               client_key: str | None = None) -> dict:
    """Constructor arguments of a tritonclient client for TLS: the CA to trust and, for mutual TLS,
    the client's certificate and key (PEM files)."""
    if protocol == "grpc":
        return {"ssl": True, "root_certificates": ca_cert, "private_key": client_key,
                "certificate_chain": client_cert}
    if aio:
        import ssl

        ctx = ssl.create_default_context(cafile=ca_cert)
        if client_cert:
            ctx.load_cert_chain(client_cert, client_key)
        return {"ssl": True, "ssl_context": ctx}
    opts = {"ca_certs": ca_cert} if ca_cert else {}
    if client_cert:
        opts.update(certfile=client_cert, keyfile=client_key)
    return {"ssl": True, "ssl_options": opts}


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


def command_parser(prog: str, description: str, protocol_choices: bool = True):
    """An argparse parser for a command that talks to a server, with the connection flags on it
    (prog: the command line --help shows; description: what the command does; protocol_choices:
    whether --protocol picks one protocol, see add_connection_arguments)."""
    import argparse

    parser = argparse.ArgumentParser(prog=prog, description=description)
    add_connection_arguments(parser, protocol_choices=protocol_choices)
    return parser


def add_connection_arguments(parser, protocol_choices: bool = True) -> None:
    """--url, --protocol, --timeout, --retries: the same flags on every command."""
    parser.add_argument("--url", default=None,
                        help="server address host:port (default: 127.0.0.1:8000 for http, 127.0.0.1:8001 for grpc)")
    if protocol_choices:
        parser.add_argument("--protocol", choices=PROTOCOLS, default="http",
                            help="HTTP/REST or gRPC; both give the same results (default: %(default)s)")
    parser.add_argument("--timeout", type=float, default=30.0,
                        help="seconds: the longest wait for the server to become reachable and ready (retries "
                             "included), and the longest wait for each request's answer (default: %(default)s)")
    parser.add_argument("--retries", type=int, default=20,
                        help="attempts after the first, with exponential backoff (0.25 s doubling, at most 2 s), "
                             "while the server is unreachable or not ready; waiting stops at whichever of "
                             "--retries and --timeout comes first (default: %(default)s, about 36 s of backoff, "
                             "so the default --timeout ends the wait first)")
    parser.add_argument("--api-key", default=None,
                        help=f"key for the server's restricted APIs, sent as the {API_KEY_HEADER!r} header (default: "
                             f"${API_KEY_ENV}, else the key file the local launcher wrote for that port)")
    parser.add_argument("--ca-cert", default=None,
                        help="TLS (https:// or grpcs:// URL): PEM file of the certificate authority to trust "
                             "(default: the system's)")
    parser.add_argument("--client-cert", default=None,
                        help="TLS: PEM client certificate, for servers that require one (with --client-key)")
    parser.add_argument("--client-key", default=None, help="TLS: PEM private key of --client-cert")


def client_options(args) -> dict:
    """TritonClient keyword arguments from the flags add_connection_arguments defined."""
    return {"timeout_s": args.timeout, "retries": args.retries, "api_key": args.api_key,
            "ca_cert": args.ca_cert, "client_cert": args.client_cert, "client_key": args.client_key}

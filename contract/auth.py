"""How a client proves itself to the server's restricted APIs, in one place for the launcher
(serving.hardening writes the key and the tritonserver flags) and the clients (clients._base sends
it): the header name, the environment variable, and the private folder of per-port key files
(docs/hardening.md)."""
from __future__ import annotations

import os
from pathlib import Path

# The header (gRPC: metadata key, sent as "triton-grpc-protocol-<header>") the restricted APIs ask for.
API_KEY_HEADER = "triton-api-key"
API_KEY_ENV = "TRITON_API_KEY"
GRPC_HEADER_PREFIX = "triton-grpc-protocol-"


def api_key_dir() -> Path:
    """Private folder (0700) where the local launcher leaves each server's API key as <port>.key."""
    base = os.environ.get("XDG_RUNTIME_DIR") or str(Path.home() / ".cache")
    return Path(base) / "triton-image-toolkit" / "keys"


def key_file(port: int | str) -> Path:
    """The key file of the local server listening on `port` (its HTTP port)."""
    return api_key_dir() / f"{port}.key"


def request_header(protocol: str) -> str:
    """The header name that carries the key for `protocol` ("http" or "grpc")."""
    return f"{GRPC_HEADER_PREFIX}{API_KEY_HEADER}" if protocol == "grpc" else API_KEY_HEADER

"""A real Triton Inference Server on this machine, without Docker or a GPU.

The `nvidia-pytriton` wheel ships the tritonserver binary (2.51) and its python backend. This
module serves a `cpu` model repository with that binary, unchanged: the repository's DALI, ONNX
Runtime and PyTorch (TorchScript) models load through Python stand-ins (serving/backends/*/model.py)
that run the same dali.py (autoserialized), model.onnx and model.pt files (docs/local_server.md).

    python -m serving.local_server --repository model_repository/cpu

    with LocalTritonServer("model_repository/cpu") as server:
        ...   # a client (clients.triton.TritonClient) at server.http_url or server.grpc_url

This module is the command line and the public face; the work lies in serving.server_setup
(binary, backend folder, environment) and serving.server_process (the process's lifecycle).
"""
from __future__ import annotations

import argparse
import signal
import sys
import time
from pathlib import Path

from contract.auth import API_KEY_ENV
from serving import hardening
from serving.server_process import LocalTritonServer, free_port
from serving.server_setup import (ServerError, default_cache_dir, prepare_backend_dir, pytriton_root,
                                  server_binary, server_env, server_libs)

__all__ = ["LocalTritonServer", "ServerError", "default_cache_dir", "free_port", "main", "prepare_backend_dir",
           "pytriton_root", "server_binary", "server_env", "server_libs"]


# --- command line -------------------------------------------------------------------------------

def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m serving.local_server",
        description="Serve a cpu model repository with a real Triton Inference Server (from nvidia-pytriton), "
                    "no Docker or GPU needed. Ctrl-C stops it.",
        epilog="Trust boundary: the restricted-API key is on tritonserver's command line (tritonserver 2.51 "
               "reads it from nowhere else), so every local user of this machine can read it with ps and call "
               "the restricted APIs; it keeps them only from callers that cannot see this machine's process "
               "list. On a machine shared with untrusted users, serve from a container (docs/hardening.md).")
    p.add_argument("--repository", type=Path, default=Path("model_repository/cpu"),
                   help="model repository to serve (the builder's cpu target; default: %(default)s)")
    p.add_argument("--host", default="127.0.0.1",
                   help="address the HTTP, gRPC and metrics endpoints bind to (default: %(default)s; "
                        "0.0.0.0 exposes the server to the network)")
    p.add_argument("--http-port", type=int, default=8000, help="HTTP/REST port (default: %(default)s)")
    p.add_argument("--grpc-port", type=int, default=8001, help="gRPC port (default: %(default)s)")
    p.add_argument("--metrics-port", type=int, default=8002, help="Prometheus metrics port (default: %(default)s)")
    p.add_argument("--model-control-mode", choices=("none", "explicit"), default="none",
                   help="none: load every model at start, no load/unload API; explicit: load the models named "
                        "by --load-model (all if none named) and allow load/unload over the API "
                        "(default: %(default)s)")
    p.add_argument("--load-model", action="append", default=[], metavar="NAME",
                   help="with --model-control-mode explicit: a model to load at start (repeatable)")
    p.add_argument("--timeout", type=float, default=180.0,
                   help="seconds to wait for the server and all models to be ready (default: %(default)s)")
    p.add_argument("--log-file", type=Path, default=None,
                   help="also write the server log to this file (default: a temporary file)")
    p.add_argument("--verbose", action="store_true", help="verbose server log (Triton --log-verbose=1)")
    p.add_argument("--max-restarts", type=int, default=3, metavar="N",
                   help="restart the server when it or a python backend stub dies (Triton does not heal a dead "
                        "stub: its models fail every request while reporting ready), at most N times in a row, "
                        "waiting 1, 2, 4 ... s; then exit 1 (0: exit at once; default: %(default)s)")
    p.add_argument("--open-apis", action="store_true",
                   help="serve the model-repository, shared-memory, logging and trace APIs to any caller; by "
                        "default they need the header printed at start (docs/hardening.md)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    server = LocalTritonServer(
        args.repository, http_port=args.http_port, grpc_port=args.grpc_port, metrics_port=args.metrics_port,
        host=args.host, log_file=args.log_file, timeout_s=args.timeout,
        model_control_mode=args.model_control_mode, load_models=tuple(args.load_model),
        verbose=args.verbose, echo=True, open_apis=args.open_apis)

    # SIGTERM (e.g. from a process manager) takes the same clean path as Ctrl-C.
    def _terminate(signum, frame):
        raise KeyboardInterrupt
    signal.signal(signal.SIGTERM, _terminate)
    # A shell starts background jobs with SIGINT ignored, and Python then keeps it ignored.
    signal.signal(signal.SIGINT, signal.default_int_handler)

    try:
        server.start()
        _announce(server)
        return _supervise(server, args.max_restarts)
    except ServerError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\nstopping tritonserver ...", flush=True)
        return 0
    finally:
        server.stop()


def _announce(server: LocalTritonServer) -> None:
    print(f"\nTriton is ready: HTTP {server.http_url}  gRPC {server.grpc_url}  metrics {server.metrics_url}\n"
          f"serving {server.repository} (log: {server.log_file}); Ctrl-C to stop", flush=True)
    if server.api_key:
        print(f"restricted APIs ({', '.join(hardening.RESTRICTED_APIS)}) need the header "
              f"'{hardening.API_KEY_HEADER}: {server.api_key}'; clients on this machine read it from "
              f"{hardening.api_key_dir()}/<port>.key (or pass --api-key / ${API_KEY_ENV})", flush=True)


def _what_died(server: LocalTritonServer) -> str | None:
    """Why the server must be restarted (tritonserver or a stub died), or None while it is healthy."""
    if not server.is_running():
        code = server.process.returncode
        how = f"killed by signal {-code}" if code < 0 else f"exit code {code}"
        return f"tritonserver (pid {server.pid}) died ({how})"
    dead = server.dead_stubs()
    if dead:
        return f"the python backend stub of {', '.join(dead)} died; its models would fail every request"
    return None


HEALTHY_RESET_S = 60.0    # a server healthy this long has its restart count reset


def _supervise(server: LocalTritonServer, max_restarts: int) -> int:
    """Watch the server; restart it (back-off 1, 2, 4 ... s) when it or a stub dies. Returns the exit code."""
    restarts, healthy_since = 0, time.monotonic()
    while True:
        time.sleep(0.5)
        died = _what_died(server)
        if died is None:
            if time.monotonic() - healthy_since > HEALTHY_RESET_S:
                restarts = 0
            continue
        server.stop(grace_s=2.0)      # stop() takes the group down and removes its shm regions and key file
        if restarts >= max_restarts:
            print(f"error: {died}; not restarting ({restarts} restarts in a row, --max-restarts {max_restarts}); "
                  f"server log: {server.log_file}", file=sys.stderr, flush=True)
            return 1
        while True:
            delay = 2.0 ** restarts
            restarts += 1
            print(f"{died}; restarting tritonserver in {delay:.0f} s (restart {restarts} of {max_restarts})",
                  file=sys.stderr, flush=True)
            time.sleep(delay)
            try:
                server.start()
                break
            except ServerError as err:
                died = f"the restart failed: {str(err).splitlines()[0]}"
                if restarts >= max_restarts:
                    print(f"error: {died}; giving up after {restarts} restarts", file=sys.stderr, flush=True)
                    return 1
        _announce(server)
        healthy_since = time.monotonic()


if __name__ == "__main__":
    sys.exit(main())

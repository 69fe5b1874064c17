"""A real Triton Inference Server on this machine, without Docker or a GPU.

The `nvidia-pytriton` wheel ships the tritonserver binary (2.51) and its python backend. This
module serves a `cpu` model repository with that binary, unchanged: the repository's DALI, ONNX
Runtime and PyTorch (TorchScript) models load through Python stand-ins (serving/backends/*/model.py)
that run the same dali.py (autoserialized), model.onnx and model.pt files (docs/local_server.md).

    python -m serving.local_server --repository model_repository/cpu

    with LocalTritonServer("model_repository/cpu") as server:
        client = tritonclient.http.InferenceServerClient(server.http_url)

This module is the command line and the public face; the work lies in serving.server_setup
(binary, backend folder, environment) and serving.server_process (the process's lifecycle).
"""
from __future__ import annotations

import argparse
import signal
import sys
import time
from pathlib import Path

from clients.connection import API_KEY_ENV
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
                    "no Docker or GPU needed. Ctrl-C stops it.")
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
        print(f"\nTriton is ready: HTTP {server.http_url}  gRPC {server.grpc_url}  metrics {server.metrics_url}\n"
              f"serving {server.repository} (log: {server.log_file}); Ctrl-C to stop", flush=True)
        if server.api_key:
            print(f"restricted APIs ({', '.join(hardening.RESTRICTED_APIS)}) need the header "
                  f"'{hardening.API_KEY_HEADER}: {server.api_key}'; clients on this machine read it from "
                  f"{hardening.api_key_dir()}/<port>.key (or pass --api-key / ${API_KEY_ENV})", flush=True)
        while server.is_running():
            time.sleep(0.5)
        print(f"tritonserver exited with code {server.process.returncode}; last lines:\n{server.log_tail()}",
              file=sys.stderr)
        return 1
    except ServerError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\nstopping tritonserver ...", flush=True)
        return 0
    finally:
        server.stop()


if __name__ == "__main__":
    sys.exit(main())

"""A real Triton Inference Server on this machine, without Docker or a GPU.

The `nvidia-pytriton` wheel ships the tritonserver binary (2.51) and its python backend. This
module serves a `cpu` model repository with that binary, unchanged: the repository's DALI, ONNX
Runtime and PyTorch (TorchScript) models load through Python stand-ins (serving/backends/*/model.py)
that run the same dali.py (autoserialized), model.onnx and model.pt files (docs/local_server.md).

    python -m serving.local_server --repository model_repository/cpu

    with LocalTritonServer("model_repository/cpu") as server:
        client = tritonclient.http.InferenceServerClient(server.http_url)
"""
from __future__ import annotations

import argparse
import collections
import hashlib
import importlib.metadata
import importlib.util
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

from serving import hardening

PROJECT_ROOT = Path(__file__).resolve().parents[1]
STANDINS = Path(__file__).resolve().parent / "backends"
STANDIN_BACKENDS = ("dali", "onnxruntime", "pytorch")


class ServerError(RuntimeError):
    """tritonserver could not be prepared, did not start, or did not become ready."""


# --- locating the pieces ------------------------------------------------------------------------

def pytriton_root() -> Path:
    # Only the package's folder is needed (binary, stubs, python backend). Locating it without
    # importing it skips pytriton/__init__.py, which imports pytriton's own client and runtime
    # dependencies (tritonclient.http with gevent, pyzmq, wrapt, typing_inspect) that serving a
    # repository never uses, so a bare host (the GPU machine) needs only the wheel's files.
    spec = importlib.util.find_spec("pytriton")
    if spec is None or not spec.submodule_search_locations:
        raise ServerError("the nvidia-pytriton package is not installed in this environment; it ships the "
                          "tritonserver binary (pip install nvidia-pytriton==0.7.0)")
    return Path(next(iter(spec.submodule_search_locations))).resolve()


def server_binary() -> Path:
    path = pytriton_root() / "tritonserver" / "bin" / "tritonserver"
    if not path.is_file():
        raise ServerError(f"tritonserver binary not found at {path}; reinstall nvidia-pytriton")
    return path


def server_libs() -> Path:
    # Wheel installs keep the server's shared libraries next to the package (auditwheel layout);
    # pytriton's own launcher puts the same folder on LD_LIBRARY_PATH (pytriton.utils.distribution).
    root = pytriton_root()
    for candidate in (root.parent / "nvidia_pytriton.libs", root / "tritonserver" / "external_libs"):
        if candidate.is_dir():
            return candidate
    raise ServerError(f"tritonserver's libraries (nvidia_pytriton.libs) not found next to {root}")


def _env_bin() -> Path:
    """bin/ of the environment this Python runs in (the stub sees its packages only via PATH)."""
    return Path(sys.prefix) / "bin" if sys.prefix != sys.base_prefix else Path(sys.executable).parent


def _check_numpy() -> None:
    try:
        major = int(importlib.metadata.version("numpy").split(".")[0])
    except importlib.metadata.PackageNotFoundError:
        raise ServerError("numpy is not installed; the python backend stub needs numpy 1.x") from None
    if major >= 2:
        # With numpy 2 the stub (built against 1.x) hands the model empty tensors, silently.
        raise ServerError(f"numpy {importlib.metadata.version('numpy')} is installed; Triton 2.51's python "
                          "backend stub needs numpy < 2 (pip install 'numpy<2')")


def default_cache_dir() -> Path:
    if os.environ.get("TRITON_TOOLKIT_CACHE"):
        return Path(os.environ["TRITON_TOOLKIT_CACHE"])
    local = PROJECT_ROOT / ".cache"
    if os.access(PROJECT_ROOT, os.W_OK):
        return local
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "triton-image-toolkit"


def prepare_backend_dir(cache_dir: Path | None = None) -> Path:
    """Assemble the backend folder: python backend + stub for this Python + the two stand-ins.

    The folder's name is a hash of everything in it, so an edited stand-in or another Python gets
    a fresh folder, and concurrent launchers never write into a folder another server reads.
    """
    source = pytriton_root() / "tritonserver"
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    stub = source / "python_backend_stubs" / version / "triton_python_backend_stub"
    if not stub.is_file():
        have = sorted(p.name for p in (source / "python_backend_stubs").iterdir())
        raise ServerError(f"nvidia-pytriton has no python backend stub for Python {version} (it has {have}); "
                          "use one of those Python versions for the environment")
    python_files = [p for p in (source / "backends" / "python").iterdir() if p.is_file()]
    standin_files = [STANDINS / b / "model.py" for b in STANDIN_BACKENDS]
    for f in standin_files:
        if not f.is_file():
            raise ServerError(f"stand-in backend {f} is missing")

    digest = hashlib.sha256()
    for f in sorted(python_files) + [stub] + standin_files:
        st = f.stat()
        digest.update(f"{f}:{st.st_size}:{st.st_mtime_ns}".encode())
    base = Path(cache_dir) if cache_dir else default_cache_dir() / "triton_backends"
    target = base / digest.hexdigest()[:16]
    if (target / ".complete").exists():
        return target

    base.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=base))
    try:
        (staging / "python").mkdir()
        for f in python_files:
            shutil.copy2(f, staging / "python" / f.name)
        shutil.copy2(stub, staging / "python" / "triton_python_backend_stub")
        os.chmod(staging / "python" / "triton_python_backend_stub", 0o755)
        for b, f in zip(STANDIN_BACKENDS, standin_files):
            (staging / b).mkdir()
            shutil.copy2(f, staging / b / "model.py")
        (staging / ".complete").touch()
        try:
            staging.rename(target)
        except OSError:
            if not (target / ".complete").exists():  # lost a race to a half-built folder? unlikely
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def server_env() -> dict[str, str]:
    env = os.environ.copy()
    # The stub embeds Python in isolated mode: it finds this environment's packages (numpy, DALI,
    # onnxruntime) only when the environment's bin/ is first on PATH.
    env["PATH"] = f"{_env_bin()}{os.pathsep}{env.get('PATH', '')}"
    # The copied libtriton_python.so loses its $ORIGIN-relative RPATH to the wheel's libraries.
    libs = str(server_libs())
    env["LD_LIBRARY_PATH"] = f"{env['LD_LIBRARY_PATH']}{os.pathsep}{libs}" if env.get("LD_LIBRARY_PATH") else libs
    env.pop("PYTHONHOME", None)
    return env


def _port_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM) as s:
        # As servers do, so a port left in TIME_WAIT by a server just stopped counts as free;
        # a port someone listens on still fails.
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def free_port(host: str = "127.0.0.1") -> int:
    """A port the OS says is free now (a tiny race remains until the server binds it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


# --- the server ---------------------------------------------------------------------------------

class LocalTritonServer:
    """tritonserver serving `repository`, started on enter (or start()) and stopped on exit (or stop()).

    The server runs in its own process group (its python backend stubs too), so stop() ends all of
    them: SIGTERM, then SIGKILL after `grace_s`. Ports default to Triton's 8000/8001/8002; tests
    pass free_port() values. The server log goes to `log_file` (a temporary file by default; 0600
    either way) and, with `echo=True`, to this process's stdout.

    Hardening (serving.hardening, docs/hardening.md): 64 MiB stack limit, umask 077, restricted
    APIs (model-repository, shared-memory, logging, trace) behind a key made per start
    (`api_key`, also in a 0600 key file the clients read) unless `open_apis=True`, and the
    python backend's shared memory regions removed when the server stops, however it stops.
    """

    def __init__(self, repository: str | Path = "model_repository/cpu", *, http_port: int = 8000,
                 grpc_port: int = 8001, metrics_port: int = 8002, host: str = "127.0.0.1",
                 log_file: str | Path | None = None, timeout_s: float = 120.0,
                 model_control_mode: str = "none", load_models: tuple[str, ...] = (),
                 verbose: bool = False, echo: bool = False, grace_s: float = 10.0,
                 backend_dir: Path | None = None, extra_args: tuple[str, ...] = (), open_apis: bool = False):
        self.repository = Path(repository).resolve()
        self.host, self.http_port, self.grpc_port, self.metrics_port = host, http_port, grpc_port, metrics_port
        self.timeout_s, self.grace_s = timeout_s, grace_s
        if model_control_mode not in ("none", "explicit", "poll"):
            raise ValueError(f"model_control_mode must be none, explicit or poll; got {model_control_mode!r}")
        self.model_control_mode, self.load_models = model_control_mode, tuple(load_models)
        self.verbose, self.echo = verbose, echo
        self._own_log = log_file is None
        self.log_file = Path(log_file) if log_file else None
        self._backend_dir = backend_dir
        self.extra_args = tuple(extra_args)
        self.open_apis = open_apis
        self.api_key: str | None = None
        self.record: hardening.ServerRecord | None = None
        self.process: subprocess.Popen | None = None
        self._tail: collections.deque[str] = collections.deque(maxlen=60)
        self._reader: threading.Thread | None = None

    @property
    def http_url(self) -> str:
        return f"{self._url_host}:{self.http_port}"

    @property
    def grpc_url(self) -> str:
        return f"{self._url_host}:{self.grpc_port}"

    @property
    def metrics_url(self) -> str:
        return f"http://{self._url_host}:{self.metrics_port}/metrics"

    @property
    def _url_host(self) -> str:
        host = "127.0.0.1" if self.host in ("0.0.0.0", "") else self.host
        return f"[{host}]" if ":" in host else host

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    def command(self, backend_dir: Path) -> list[str]:
        cmd = [
            str(server_binary()),
            f"--model-repository={self.repository}",
            f"--backend-directory={backend_dir}",
            f"--http-address={self.host}", f"--http-port={self.http_port}",
            f"--grpc-address={self.host}", f"--grpc-port={self.grpc_port}",
            f"--metrics-address={self.host}", f"--metrics-port={self.metrics_port}",
            f"--model-control-mode={self.model_control_mode}",
            "--allow-gpu-metrics=false",
            # Bounded by our own grace period: in-flight requests get this long to finish on SIGTERM.
            f"--exit-timeout-secs={max(1, int(self.grace_s) - 2)}",
            f"--log-verbose={1 if self.verbose else 0}",
        ]
        if self.model_control_mode == "explicit":
            cmd += [f"--load-model={m}" for m in (self.load_models or ("*",))]
        if self.record is not None:
            cmd += self.record.backend_config()
        if self.api_key:
            cmd += hardening.restricted_api_args(self.api_key)
        return cmd + list(self.extra_args)

    def start(self) -> "LocalTritonServer":
        if self.process and self.process.poll() is None:
            raise ServerError(f"already running (pid {self.process.pid})")
        if not self.repository.is_dir():
            raise ServerError(f"model repository {self.repository} does not exist; build it first "
                              "(python builders/build_all.py) or pass --repository")
        _check_numpy()
        busy = [p for p in (self.http_port, self.grpc_port, self.metrics_port) if not _port_free(self.host, p)]
        if busy:
            raise ServerError(f"port(s) {busy} on {self.host} are already in use (another tritonserver?); "
                              "choose others with --http-port/--grpc-port/--metrics-port")
        backend_dir = self._backend_dir or prepare_backend_dir()
        if self.log_file is None:
            fd, name = tempfile.mkstemp(prefix="tritonserver-", suffix=".log")   # 0600
            os.close(fd)
            self.log_file = Path(name)
        hardening.open_private_log(self.log_file).close()   # created (or made) 0600 before anything is logged
        self._tail.clear()
        hardening.sweep()   # regions and key files of servers that died without stop()
        self.record = hardening.ServerRecord()
        self.api_key = None if self.open_apis else hardening.new_api_key()
        self.process = subprocess.Popen(
            self.command(backend_dir), env=server_env(), stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True,
            preexec_fn=hardening.child_setup(hardening.stack_limit()), cwd=str(self.repository))
        if self.api_key:
            self.record.write_key(self.api_key, [self.http_port, self.grpc_port])
        self.record.save(self.process.pid)
        self._reader = threading.Thread(target=self._pump, name="tritonserver-log", daemon=True)
        self._reader.start()
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise
        # The python backend creates its regions 0644 whatever the umask; only this user's processes
        # (the server and its stubs) need them. Models loaded later over the API get theirs at stop.
        for region in self.record.shm_regions():
            os.chmod(region, 0o600)
        return self

    def _pump(self):
        with hardening.open_private_log(self.log_file) as log:
            for line in iter(self.process.stdout.readline, b""):
                log.write(line)
                text = line.decode("utf-8", "replace")
                self._tail.append(text)
                if self.echo:
                    sys.stdout.write(text)
                    sys.stdout.flush()

    def log_tail(self, lines: int = 40) -> str:
        return "".join(list(self._tail)[-lines:])

    def _wait_ready(self):
        url = f"http://{self._url_host}:{self.http_port}/v2/health/ready"
        deadline = time.monotonic() + self.timeout_s
        while time.monotonic() < deadline:
            code = self.process.poll()
            if code is not None:
                self._reader.join(timeout=2)
                raise ServerError(f"tritonserver exited with code {code} before it was ready "
                                  f"(log: {self.log_file}); last lines:\n{self.log_tail()}")
            try:
                with urllib.request.urlopen(url, timeout=1) as resp:
                    if resp.status == 200:
                        return
            except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
                pass
            time.sleep(0.2)
        raise ServerError(f"tritonserver was not ready within {self.timeout_s:.0f} s (a model still loading, or "
                          f"one that failed; log: {self.log_file}); last lines:\n{self.log_tail()}")

    def stop(self) -> int | None:
        """Stop the server and every process in its group; returns the server's exit code."""
        proc = self.process
        if proc is None:
            return None
        pgid = proc.pid  # start_new_session: the server leads its own group
        self._signal_group(pgid, signal.SIGTERM)
        try:
            proc.wait(timeout=self.grace_s)
        except subprocess.TimeoutExpired:
            self._signal_group(pgid, signal.SIGKILL)
            proc.wait(timeout=10)
        # Stubs normally exit with the server; any left in the group are ended too.
        self._signal_group(pgid, signal.SIGKILL)
        if self._reader:
            self._reader.join(timeout=5)
        if proc.stdout:
            proc.stdout.close()
        self._cleanup()
        return proc.returncode

    def _cleanup(self) -> None:
        """Remove this server's shm regions and key file (no process of its group is left)."""
        if self.record is not None:
            self.record.cleanup()

    def shm_regions(self) -> list[Path]:
        """The python backend's shared memory regions of this server (in /dev/shm)."""
        return self.record.shm_regions() if self.record else []

    @staticmethod
    def _signal_group(pgid: int, sig: int):
        try:
            os.killpg(pgid, sig)
        except (ProcessLookupError, PermissionError):
            pass

    def is_running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def __enter__(self) -> "LocalTritonServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
        if self._own_log and self.log_file and exc[0] is None:
            self.log_file.unlink(missing_ok=True)


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
                  f"{hardening.api_key_dir()}/<port>.key (or pass --api-key / ${hardening.API_KEY_ENV})", flush=True)
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

"""The tritonserver process: ports, start (hardened), readiness, log, and stop of its whole group.

serving.local_server re-exports LocalTritonServer and free_port; serving.server_setup prepares
what the process needs.
"""
from __future__ import annotations

import collections
import os
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
from serving.server_setup import ServerError, check_numpy, prepare_backend_dir, server_binary, server_env


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


def _group_stubs(pgid: int) -> dict[tuple[int, str], str]:
    """The python backend stubs in process group `pgid`: {(pid, start time): model name}. A stub's
    command line is `triton_python_backend_stub <repository>/<model>/<version>/<file> ...`."""
    stubs = {}
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            fields = (proc / "stat").read_text().rsplit(")", 1)[1].split()
            argv = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue          # gone meanwhile
        if int(fields[2]) == pgid and fields[0] != "Z" and argv[0].endswith(b"triton_python_backend_stub") \
                and len(argv) > 1:
            stubs[(int(proc.name), fields[19])] = Path(argv[1].decode(errors="replace")).parent.parent.name
    return stubs


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
        self._stubs: dict[tuple[int, str], str] = {}
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
        check_numpy()
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
        self._stubs = _group_stubs(self.process.pid)
        return self

    def dead_stubs(self) -> list[str]:
        """'model (stub pid N)' for every python backend stub that died while its model is still
        loaded. Triton 2.51 does not restart a dead stub: every request to the model (and its
        ensembles) fails with "Stub process ... is not healthy" while readiness stays 200."""
        now = _group_stubs(self.process.pid) if self.is_running() else {}
        before, self._stubs = self._stubs, now
        gone = {key: model for key, model in before.items() if key not in now}
        counts = collections.Counter(now.values())
        # A stub also ends when its model is unloaded or reloaded over the API: only fewer stubs
        # than before for a model that is still ready means a dead one.
        return [f"{model} (stub pid {pid})" for (pid, _), model in sorted(gone.items())
                if counts[model] < list(before.values()).count(model) and self._model_ready(model)]

    def _model_ready(self, model: str) -> bool:
        url = f"http://{self._url_host}:{self.http_port}/v2/models/{model}/ready"
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                return resp.status == 200
        except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
            return False

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

    def stop(self, grace_s: float | None = None) -> int | None:
        """Stop the server and every process in its group; returns the server's exit code.
        grace_s: seconds between SIGTERM and SIGKILL (default: the server's grace_s)."""
        proc = self.process
        if proc is None:
            return None
        pgid = proc.pid  # start_new_session: the server leads its own group
        self._signal_group(pgid, signal.SIGTERM)
        try:
            proc.wait(timeout=self.grace_s if grace_s is None else grace_s)
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

"""What the local launcher does so that a tritonserver it starts is safe to leave running on a
shared machine (docs/hardening.md):

- the child process gets a 64 MiB stack limit (Triton 2.51's HTTP server overflows the default
  8 MiB stack on request bodies above ~4 MB, server#5840), umask 077 (files the server writes are
  private to the user; the python backend sets its shm regions' mode itself, 0644, so the launcher
  chmods them to 0600 once the server is ready) and dies with its launcher (PR_SET_PDEATHSIG);
- restricted APIs (model-repository, shared-memory, logging, trace) need a header whose value is
  a random key made per server, also written to a 0600 key file that the clients on this machine
  read (clients.connection.read_api_key);
- the python backend's shared memory regions carry a per-server prefix, so they are removed when
  the server stops however it stopped: by stop(), or at the next start of any launcher, which
  sweeps the regions of servers recorded here whose process is gone.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import json
import os
import resource
import secrets
import signal
from pathlib import Path

from contract.auth import API_KEY_HEADER, api_key_dir, key_file

STACK_BYTES = 64 * 1024 * 1024
RESTRICTED_APIS = ("model-repository", "shared-memory", "logging", "trace")
SHM_DIR = Path("/dev/shm")
SHM_PREFIX = "triton_tik_"   # + a per-server token; the python backend appends its own suffixes

# Loaded in the parent: the child between fork and exec should do nothing but plain syscalls.
_LIBC = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
_PR_SET_PDEATHSIG = 1


def stack_limit() -> tuple[int, int]:
    """(soft, hard) RLIMIT_STACK for the server: 64 MiB, or the hard limit if that is lower."""
    _, hard = resource.getrlimit(resource.RLIMIT_STACK)
    soft = STACK_BYTES if hard == resource.RLIM_INFINITY or hard >= STACK_BYTES else hard
    return soft, hard


def child_setup(stack: tuple[int, int]):
    """preexec_fn for tritonserver: returns a function that runs in the child before exec.

    `stack` is computed in the parent (stack_limit()) so the child only makes syscalls."""
    def _setup():
        # If the launching Python is killed outright (no chance to call stop()), the kernel sends
        # the server SIGTERM instead of leaving it running with the ports taken.
        _LIBC.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
        # Read by the kernel at exec (main thread) and by glibc at start-up (default thread stack
        # size), hence set before exec rather than with prlimit afterwards.
        resource.setrlimit(resource.RLIMIT_STACK, stack)
        os.umask(0o077)
    return _setup


def new_api_key() -> str:
    """A fresh restricted-API key: 192 random bits as hex, so it never starts with "-" (which
    `--api-key KEY` on a command line would read as an option, as token_urlsafe's keys can)."""
    return secrets.token_hex(24)


def restricted_api_args(key: str) -> list[str]:
    """tritonserver 2.51 flags: `--http-restricted-api=<apis>:<header>=<value>` (gRPC: -protocol)."""
    apis = ",".join(RESTRICTED_APIS)
    return [f"--http-restricted-api={apis}:{API_KEY_HEADER}={key}",
            f"--grpc-restricted-protocol={apis}:{API_KEY_HEADER}={key}"]


def _private_dir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(path, 0o700)
    return path


def _write_private(path: Path, text: str) -> None:
    """Write `text` to `path` as a 0600 file, atomically (a reader never sees half a file)."""
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def open_private_log(path: Path):
    """Open (append) a log file readable by its owner only; an existing file is made 0600 too."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    os.fchmod(fd, 0o600)
    return os.fdopen(fd, "ab", buffering=0)


def _records_dir() -> Path:
    _private_dir(api_key_dir())
    return _private_dir(api_key_dir() / "servers")


def _start_time(pid: int) -> str | None:
    """The process's start time in clock ticks (/proc/<pid>/stat field 22), None if it is gone;
    with the pid it names one process even after the pid is reused."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]


class ServerRecord:
    """The resources of one started server that must not outlive it: shm regions (by prefix) and
    key files. Saved while the server runs; removed by cleanup() or a later sweep()."""

    def __init__(self, token: str | None = None):
        self.token = token or secrets.token_hex(6)
        self.shm_prefix = f"{SHM_PREFIX}{self.token}"
        self.key_files: list[Path] = []
        self.path = _records_dir() / f"{self.token}.json"

    def backend_config(self) -> list[str]:
        return [f"--backend-config=python,shm-region-prefix-name={self.shm_prefix}"]

    def write_key(self, key: str, ports: list[int]) -> None:
        for port in ports:
            path = key_file(port)
            _write_private(path, key + "\n")
            self.key_files.append(path)

    def save(self, pid: int) -> None:
        _write_private(self.path, json.dumps({"pid": pid, "start": _start_time(pid), "shm_prefix": self.shm_prefix,
                                              "key_files": [str(p) for p in self.key_files]}))

    def shm_regions(self) -> list[Path]:
        return sorted(SHM_DIR.glob(f"{self.shm_prefix}*"))

    def cleanup(self) -> list[Path]:
        """Remove the server's regions, key files and record; returns the regions removed."""
        return _remove(self.shm_prefix, self.key_files, self.path)


def _remove(prefix: str, key_files, record: Path) -> list[Path]:
    removed = []
    for region in SHM_DIR.glob(f"{prefix}*"):
        try:
            region.unlink()
            removed.append(region)
        except FileNotFoundError:
            pass
    for f in key_files:
        Path(f).unlink(missing_ok=True)
    record.unlink(missing_ok=True)
    return removed


def sweep() -> list[Path]:
    """Remove what servers started by this launcher left behind when they died without stop()
    (SIGKILL, a crash, a killed launcher); servers still running are left alone."""
    removed: list[Path] = []
    for path in _records_dir().glob("*.json"):
        try:
            rec = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if rec.get("start") is not None and _start_time(int(rec["pid"])) == rec["start"]:
            continue  # still running
        if not str(rec.get("shm_prefix", "")).startswith(SHM_PREFIX):
            continue  # not a record this module wrote; never glob outside our prefix
        removed += _remove(rec["shm_prefix"], rec.get("key_files", []), path)
    return removed

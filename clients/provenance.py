"""Where a result came from: the command that made it and the machine it ran on, written into the
JSON of tik-bench and tik-verify so that a report (tik-report) can say so beside each figure."""
from __future__ import annotations

import os
import platform
import shlex
import sys
from pathlib import Path


def machine() -> str:
    """The machine in words: CPU model, core count, memory, OS (no host name: results get shared)."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = ""
    try:
        pages, size = os.sysconf("SC_PHYS_PAGES"), os.sysconf("SC_PAGE_SIZE")
        mem = f", {pages * size / 2**30:.0f} GiB"
    except (ValueError, OSError, AttributeError):
        pass
    return f"{cpu}, {os.cpu_count()} CPUs{mem}, {platform.system()} {platform.machine()}"


def command(prog: str, argv: list[str] | None) -> str:
    """The command line as a user would retype it: `prog` plus the arguments (sys.argv[1:] if None)."""
    args = sys.argv[1:] if argv is None else argv
    return shlex.join([prog, *args])

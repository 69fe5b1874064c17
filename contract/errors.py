"""The one base every error of the toolkit derives from, and the exit code each kind means.

A command's main() catches :class:`ToolkitError` once, prints its message on stderr and returns
its ``exit_code``; library code raises, never exits. Each subclass keeps its built-in base too
(``class SpecError(ToolkitError, ValueError)``), so ``except ValueError`` handlers keep working.

Exit codes:

- 0: the command did what was asked and every check passed.
- 1 (:data:`FAILED`): the command ran but the result is a failure (a check failed, a verdict
  FAIL, a server or build error), or input it needed is missing (no images, no checkpoint).
- 2 (:data:`USAGE`): the command could not start its work: it was called wrongly (a flag, a path
  or a name that is not allowed, no manifest) or the server it needs is unreachable; nothing was
  measured or written.
"""
from __future__ import annotations

import sys
from typing import Any, Callable

FAILED = 1
USAGE = 2


class ToolkitError(Exception):
    """An error the user can act on; the message says what. ``exit_code`` is what a command
    returns when this error ends it (see the module docstring for what each code means)."""

    exit_code: int = FAILED


class UsageError(ToolkitError, ValueError):
    """A command was called with a flag, path or name that is not allowed (exit code 2)."""

    exit_code = USAGE


class CannotRun(ToolkitError):
    """The server a command needs is unreachable or refused a request before anything was
    measured (exit code 2)."""

    exit_code = USAGE


class MissingInput(ToolkitError, FileNotFoundError):
    """Input a command needs is not there (no images, no repository, no checkpoint); exit code 1,
    the code these commands always exited with."""


def exit_code_of(work: Callable[..., int], *args: Any) -> int:
    """What a command's main() returns: `work(*args)`'s exit code, or, when it raises a
    ToolkitError, that error's code after printing "error: <message>" on stderr."""
    try:
        return work(*args)
    except ToolkitError as err:
        print(f"error: {err}", file=sys.stderr)
        return err.exit_code

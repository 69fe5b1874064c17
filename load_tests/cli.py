"""`tik-locust`: Locust with this project's locustfile, and a --help that lists the project's options.

    tik-locust --headless -u 4 -r 4 -t 30s --precision int8 --batch-size 8    # = locust -f load_tests/locustfile.py ...
    tik-locust --help                                                        # Locust's options and the scenario's

Locust prints `--help` before it imports a locustfile, so `locust -f load_tests/locustfile.py --help`
cannot show the options the locustfile adds (its `init_command_line_parser` listener has not run
yet). This command builds Locust's own parser, adds the scenario's options to it and prints that;
any other command line is handed to Locust unchanged, with `-f` set to this project's locustfile
unless the caller gave one.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

LOCUSTFILE = Path(__file__).resolve().with_name("locustfile.py")
HELP_FLAGS = ("-h", "--help")


def locust_argv(args: list[str]) -> list[str]:
    """The arguments for Locust: `args` with `-f LOCUSTFILE` in front unless `args` names a
    locustfile itself (`-f`, `--locustfile`, or `--locustfile=...`)."""
    names_file = any(a in ("-f", "--locustfile") or a.startswith("--locustfile=") for a in args)
    return list(args) if names_file else ["-f", str(LOCUSTFILE), *args]


def help_text(prog: str = "tik-locust") -> str:
    """Locust's help with the scenario's options (load_tests/scenario.py) added, as printed by --help."""
    # Importing locust monkey-patches this process for gevent; harmless here, the process only prints.
    from locust.argument_parser import get_parser

    from load_tests import scenario

    parser = get_parser()
    scenario.add_arguments(parser)
    parser.prog = prog
    return parser.format_help()


def main(argv: list[str] | None = None) -> int:
    """Print the combined help for -h/--help; otherwise replace this process with Locust.

    argv: the command line after the program name (default: sys.argv[1:]).
    """
    args = list(sys.argv[1:] if argv is None else argv)
    if any(a in HELP_FLAGS for a in args):
        print(help_text())
        return 0
    # exec, not a child process: Ctrl-C, exit codes and Locust's own signal handling stay Locust's.
    os.execv(sys.executable, [sys.executable, "-m", "locust", *locust_argv(args)])
    return 1  # not reached: execv only returns by raising


if __name__ == "__main__":
    sys.exit(main())

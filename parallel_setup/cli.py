"""The ``parallel-setup`` command line: a dumb dispatcher.

Each subcommand lives in ``parallel_setup/commands/<verb>.py`` and provides
``add_parser(subparsers)`` and ``run(args) -> int``. This module only parses
arguments and handles errors the same way for all of them:

* a problem the user can fix (``FatalError``; a file it cannot write for lack of
  permission or space; input nested too deeply): its message, exit 1;
* anything unexpected: one line naming a log file with the traceback, exit 3;
* Ctrl-C: exit 130.
"""

from __future__ import annotations

import argparse
import errno
import importlib
import os
import sys
import tempfile
import time
import traceback
from pathlib import Path

from . import __version__
from .errors import FatalError

PROG = "parallel-setup"
COMMANDS = ["plan", "execute", "status", "merge", "pool", "cleanup", "permissions", "templates", "demo"]

DESCRIPTION = """\
Plan a goal as independent tasks and run them as parallel Claude Code
subagents, each creating its own issue, git worktree and environment as its
first action. In Claude Code use /parallel:plan, /parallel:execute and
/parallel:status; this command does the work behind them."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description=DESCRIPTION,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    parser.add_argument("-C", "--project", metavar="DIR",
                        help="the repository to work in (default: the git top level of the current folder)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name in COMMANDS:
        module = importlib.import_module(f".commands.{name}", __package__)
        module.add_parser(sub)
    return parser


def _log_unexpected(exc: BaseException) -> str:
    base = os.environ.get("CLAUDE_PLUGIN_DATA") or tempfile.gettempdir()
    path = Path(base) / "parallel-setup-errors.log"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a", encoding="utf-8") as f:
            f.write(f"--- {time.strftime('%Y-%m-%dT%H:%M:%S')} {PROG} {' '.join(sys.argv[1:])}\n")
            f.write("".join(traceback.format_exception(type(exc), exc, exc.__traceback__)))
    except OSError:
        return "(could not write the log)"
    return str(path)


#: errno -> what the user can do about it (parallel keeps its state in the repository's .parallel/).
_USER_FIXABLE = {
    errno.EACCES: "make it (and .parallel/ in the repository) writable by you, then run the command again",
    errno.EPERM: "make it (and .parallel/ in the repository) writable by you, then run the command again",
    errno.EROFS: "the file system is read-only; run parallel in a writable checkout",
    errno.ENOSPC: "the disk is full; free some space, then run the command again",
    errno.EDQUOT: "your disk quota is used up; free some space, then run the command again",
}


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except FatalError as e:
        print(f"{PROG}: {e}" if e.prefixed else str(e), file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 1
    except OSError as e:
        if e.errno not in _USER_FIXABLE:
            log = _log_unexpected(e)
            print(f"{PROG}: unexpected error ({type(e).__name__}: {e}); details in {log}", file=sys.stderr)
            return 3
        where = f" {e.filename}" if e.filename else ""
        print(f"{PROG}: cannot write or read{where}: {e.strerror}; {_USER_FIXABLE[e.errno]}", file=sys.stderr)
        return 1
    except RecursionError as e:
        print(f"{PROG}: the input is nested too deeply to process ({e}); simplify it", file=sys.stderr)
        return 1
    except Exception as e:  # noqa: BLE001 - the one top-level handler
        log = _log_unexpected(e)
        print(f"{PROG}: unexpected error ({type(e).__name__}: {e}); details in {log}", file=sys.stderr)
        return 3


if __name__ == "__main__":
    sys.exit(main())

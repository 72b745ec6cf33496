"""``parallel-setup demo``: the setup measured both ways on a scratch repository.

Needs no GitHub account and no API key: issues go to an embedded fake GitHub
through the real gh when it is installed, else to local files, with the
same simulated latency either way.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ..errors import FatalError

HELP = "set up N tasks traditionally and in parallel on a scratch repository, and print the measured table"


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1 or value > 200:
        raise argparse.ArgumentTypeError("must be between 1 and 200")
    return value


def _seconds(text: str) -> float:
    value = float(text)
    if value < 0 or value > 60:
        raise argparse.ArgumentTypeError("must be between 0 and 60 seconds")
    return value


def add_parser(sub):
    p = sub.add_parser("demo", help=HELP, description=HELP + ". " + __doc__.split("\n\n", 1)[1].replace("\n", " "))
    p.add_argument("--tasks", type=_positive_int, default=5, metavar="N", help="tasks in the plan (default 5)")
    p.add_argument("--issue-latency", type=_seconds, default=3.0, metavar="SECONDS",
                   help="simulated seconds per issue creation (default 3, the seed's figure)")
    p.add_argument("--files", type=int, default=2000, metavar="N",
                   help="files in the scratch repository (default 2000)")
    p.add_argument("--mode", choices=("auto", "github", "local"), default="auto",
                   help="github: the real gh against an embedded fake GitHub; local: issue files; "
                        "auto (default): github when gh is installed")
    p.add_argument("--env-step", action="store_true",
                   help="also run an environment step in every worktree (a venv and a byte-compile)")
    p.add_argument("--keep", action="store_true", help="keep the scratch repositories, worktrees and run logs")
    p.add_argument("--workdir", type=Path, default=None, help=argparse.SUPPRESS)
    p.add_argument("--json", action="store_true", help="print the results as JSON instead of the table")
    p.set_defaults(func=run)


def run(args) -> int:
    from .. import demo

    if args.files < 10:
        raise FatalError("--files must be at least 10")
    opts = demo.DemoOptions(tasks=args.tasks, issue_latency=args.issue_latency, files=args.files,
                            keep=args.keep, mode=args.mode, env_step=args.env_step, json=args.json,
                            workdir=args.workdir)
    try:
        result = demo.run_demo(opts)
    except RuntimeError as e:
        raise FatalError(str(e)) from None
    return 1 if result["failures"] else 0

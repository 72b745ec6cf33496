"""``parallel-setup pool``: the worktree pool (worktrees checked out ahead of time).

See ``parallel_setup/pool.py`` for how it works. The verbs:

* ``on``: turn it on for this repository and fill it in the background;
* ``fill``: top it up now (``--background`` to return at once);
* ``status``: what is in it;
* ``off``: remove its free worktrees and turn it off.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys

from .. import pool
from ..errors import FatalError
from ..gitutil import ensure_excluded
from ..paths import find_project_root

HELP = "the worktree pool: worktrees checked out ahead of time and handed out to the tasks' setup"

DESCRIPTION = """\
The worktree pool: task worktrees checked out ahead of time, while you plan, and
handed out when the subagents set up. A task's setup then only moves a ready
worktree into place and creates its branch, instead of checking out every file
with git worktree add, so N tasks set up at once compete less for the CPU.

Off by default: every pool worktree is a full checkout on disk. Turn it on once
per repository with `pool on`; from then on /parallel:plan tops it up in the
background while Claude plans, and /parallel:execute hands its worktrees out
(--no-pool skips it for one run). A task that finds none free falls back to
git worktree add. The worktrees live in worktrees/.pool/."""


def _size(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if not 1 <= value <= pool.MAX_SIZE:
        raise argparse.ArgumentTypeError(f"must be from 1 to {pool.MAX_SIZE}")
    return value


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("pool", help=HELP, description=DESCRIPTION,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    verbs = p.add_subparsers(dest="pool_command", metavar="VERB")
    verbs.required = True

    on = verbs.add_parser("on", help="turn the pool on for this repository and fill it in the background",
                          description="Turn the worktree pool on for this repository (.parallel/pool.json) "
                                      "and fill it in the background.")
    on.add_argument("--size", type=_size, default=pool.DEFAULT_SIZE, metavar="N",
                    help=f"worktrees to keep ready (default {pool.DEFAULT_SIZE}; a plan's task count is a good value)")
    on.add_argument("--base", metavar="BRANCH",
                    help="the branch plans start from (default: origin's default branch, else the current one)")
    on.add_argument("--no-fill", action="store_true", help="only turn it on; /parallel:plan fills it next time")
    on.set_defaults(func=run_on)

    fill = verbs.add_parser("fill", help="top the pool up to its size now",
                            description="Top the pool up to its size, at the base branch's newest commit "
                                        "(no fetch). Free worktrees at an older commit are moved to the new one.")
    fill.add_argument("--size", type=_size, metavar="N", help="this many instead of the pool's size")
    fill.add_argument("--base", metavar="BRANCH", help="this branch instead of the pool's")
    fill.add_argument("--background", action="store_true",
                      help="fill in a background process and return at once (log: .parallel/pool/fill.log)")
    fill.add_argument("--if-on", action="store_true",
                      help="do nothing when the pool is off, and never fail: print one line about the pool "
                           "(what /parallel:plan runs)")
    fill.add_argument("--quiet-if-busy", action="store_true", help=argparse.SUPPRESS)
    fill.set_defaults(func=run_fill)

    status = verbs.add_parser("status", help="the pool's setting and its free worktrees",
                              description="The pool's setting, its free worktrees, and whether a fill is running.")
    status.add_argument("--json", action="store_true", help="as JSON")
    status.set_defaults(func=run_status)

    off = verbs.add_parser("off", help="remove the pool's free worktrees and turn it off",
                           description="Stop a running fill, remove every free pool worktree and turn the pool "
                                       "off. Worktrees already handed to tasks are not touched.")
    off.set_defaults(func=run_off)


def _settings(project, args) -> pool.Settings:
    settings = pool.load_settings(project)
    size = args.size or (settings.size if settings else None)
    base = args.base or (settings.base_branch if settings else None)
    if size is None:
        raise FatalError("the worktree pool is off in this repository; turn it on with: "
                         "parallel-setup pool on --size N (or give fill --size N)")
    return pool.Settings(size, base or pool.default_base_branch(project))


def _start_background(project, settings: pool.Settings) -> str:
    running = pool.fill_running(project)
    free = len(pool.free_slots(project))
    if running:
        return f"a fill is already running (pid {running}); {free} free now"
    pid = pool.fill_in_background(project, settings.size, settings.base_branch)
    return (f"filling up to {settings.size} worktrees at {settings.base_branch} in the background "
            f"(pid {pid}, {free} free now; log: {pool.log_path(project).relative_to(project)})")


def run_on(args: argparse.Namespace) -> int:
    project = find_project_root(args.project)
    settings = pool.Settings(args.size, args.base or pool.default_base_branch(project))
    pool.base_commit(project, settings.base_branch)  # the branch must exist before it is saved
    ensure_excluded(project)
    pool.save_settings(project, settings)
    print(f"Worktree pool on: {settings.size} worktrees at {settings.base_branch}, in "
          f"{pool.pool_dir(project).relative_to(project)}/ (setting: "
          f"{pool.settings_path(project).relative_to(project)})")
    if not args.no_fill:
        print("Worktree pool: " + _start_background(project, settings))
    return 0


def run_fill(args: argparse.Namespace) -> int:
    project = find_project_root(args.project)
    if args.if_on:
        try:
            settings = pool.load_settings(project)
            if settings is None:
                print("Worktree pool: off.")
                return 0
            print("Worktree pool: " + _start_background(project, _settings(project, args)))
        except (FatalError, OSError) as e:
            print(f"Worktree pool: not filled ({e}).")
        return 0
    settings = _settings(project, args)
    if args.background:
        print("Worktree pool: " + _start_background(project, settings))
        return 0
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # `pool off` stops a fill: release its lock
    try:
        result = pool.fill(project, settings.size, settings.base_branch, log=sys.stdout)
    except pool.FillBusy as e:
        if args.quiet_if_busy:
            return 0
        raise FatalError(str(e)) from None
    if result.failed:
        raise FatalError(f"the worktree pool has {result.free} of {settings.size} worktrees; could not "
                         "create or update: " + "; ".join(result.failed))
    return 0


def run_status(args: argparse.Namespace) -> int:
    project = find_project_root(args.project)
    settings = pool.load_settings(project)
    slots = pool.free_slots(project)
    running = pool.fill_running(project)
    commit = ref = None
    base = settings.base_branch if settings else None
    if base or slots:
        try:
            ref, commit = pool.base_commit(project, base or pool.default_base_branch(project))
        except FatalError:
            pass
    fresh = sum(1 for s in slots if commit and s.commit == commit)
    if args.json:
        print(json.dumps({
            "on": settings is not None, "size": settings.size if settings else None, "base_branch": base,
            "base_ref": ref, "base_commit": commit, "dir": str(pool.pool_dir(project)),
            "free": [{"path": str(s.path), "commit": s.commit, "current": bool(commit and s.commit == commit)}
                     for s in slots],
            "fill_running": running}, indent=2))
        return 0
    if settings is None:
        print("Worktree pool: off" + (f" ({len(slots)} worktrees left in it; `pool off` removes them)" if slots
                                        else " (turn it on with: parallel-setup pool on --size N)"))
    else:
        print(f"Worktree pool: on, {settings.size} worktrees at {settings.base_branch}"
              + (f" ({ref} is {commit[:12]})" if commit else ""))
    if slots or settings is not None:
        stale = len(slots) - fresh
        print(f"Free: {len(slots)}" + (f" ({fresh} at the base commit, {stale} older: updated at claim "
                                       "or by the next fill)" if stale else "")
              + f", in {pool.pool_dir(project).relative_to(project)}/")
    if running:
        print(f"A fill is running (pid {running}); log: {pool.log_path(project).relative_to(project)}")
    return 0


def run_off(args: argparse.Namespace) -> int:
    project = find_project_root(args.project)
    stopped = pool.stop_fill(project)
    removed = pool.clear(project)
    was_on = pool.settings_path(project).exists()
    pool.settings_path(project).unlink(missing_ok=True)
    left = len(pool.free_slots(project))
    print(f"Worktree pool off: {removed} free worktree(s) removed"
          + (f"; {left} still being claimed, left in place" if left else "")
          + ("" if stopped else "; a running fill did not stop, remove what it adds with `pool off` again")
          + ("" if was_on else " (it was not on)") + ".")
    return 0

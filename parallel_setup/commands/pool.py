"""``parallel-setup pool``: the worktree pool (worktrees checked out ahead of time).

See ``parallel_setup/pool.py`` for how it works. The verbs:

* ``on``: turn it on for this repository and fill it in the background;
* ``fill``: top it up now (``--background`` to return at once);
* ``status``: what is in it, the disk it takes, and why it is on or off;
* ``off``: remove its free worktrees and turn it off;
* ``auto``: back to the default (on when it fits the disk budget).
"""

from __future__ import annotations

import argparse
import json
import signal
import sys

from .. import disk, pool
from ..errors import FatalError
from ..gitutil import ensure_excluded
from ..paths import find_project_root

HELP = "the worktree pool: worktrees checked out ahead of time and handed out to the tasks' setup"

DESCRIPTION = """\
The worktree pool: task worktrees checked out ahead of time, with their environment
installed (setup: auto runs uv, pip, npm, pnpm, ...), while you plan, and handed
out when the subagents set up. A task's setup then only moves a ready worktree
into place, creates its branch and fixes up the moved venv's paths, instead of
checking out every file and installing every dependency.

Each worktree's environment is keyed by what it depends on (the setup command and
the lockfiles and manifests: uv.lock, requirements.txt, pyproject.toml,
package-lock.json, pnpm-lock.yaml, ...). A task whose key differs (a lockfile
changed since the fill) runs its environment step as usual, and its setup says why.

On by default where it is cheap: sized from the repository's recent runs (the most
tasks one of the last five had), when that many worktrees cost less than a disk
budget (default 4 GiB: `pool auto --budget SIZE`, or $PARALLEL_POOL_BUDGET); off
before the first run and when over the budget. `pool on` turns it on whatever the
cost, `pool off` turns it off for good, --no-pool skips it for one run.
/parallel:plan tops it up in the background while Claude plans. A task that finds
no free worktree falls back to git worktree add. The worktrees live in
worktrees/.pool/."""


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
    on.add_argument("--setup", metavar="STEP",
                    help="the environment step each worktree gets: auto (default: what the recent runs' tasks had, "
                         "else auto), none, or a shell command")
    on.add_argument("--no-fill", action="store_true", help="only turn it on; /parallel:plan fills it next time")
    on.set_defaults(func=run_on)

    fill = verbs.add_parser("fill", help="top the pool up to its size now",
                            description="Top the pool up to its size, at the base branch's newest commit "
                                        "(no fetch). Free worktrees at an older commit are moved to the new one.")
    fill.add_argument("--size", type=_size, metavar="N", help="this many instead of the pool's size")
    fill.add_argument("--base", metavar="BRANCH", help="this branch instead of the pool's")
    fill.add_argument("--setup", metavar="STEP", help="this environment step instead of the pool's")
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

    auto = verbs.add_parser("auto", help="back to the default: on when it fits the disk budget",
                            description="Forget `pool on`/`pool off`: the pool is on when the worktrees the recent "
                                        "runs needed cost less than the disk budget.")
    auto.add_argument("--budget", metavar="SIZE", type=_budget,
                      help=f"the disk the pool may take, like 4G or 500M (default {disk.human_size(pool.DEFAULT_BUDGET)})")
    auto.set_defaults(func=run_auto)


def _budget(text: str) -> int:
    try:
        return pool.parse_bytes(text)
    except FatalError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _settings(project, args) -> pool.Settings:
    """The fill's settings: the arguments, else ``pool on``'s, else what the default decided."""
    settings = pool.load_settings(project)
    if settings is None and (args.size is None or args.base is None or args.setup is None):
        decided = pool.decide(project)
        settings = decided.settings
    size = args.size or (settings.size if settings else None)
    base = args.base or (settings.base_branch if settings else None)
    setup = args.setup or (settings.setup if settings else "auto")
    if size is None:
        raise FatalError("the worktree pool is off in this repository; turn it on with: "
                         "parallel-setup pool on --size N (or give fill --size N)")
    return pool.Settings(size, base or pool.default_base_branch(project), setup)


def _start_background(project, settings: pool.Settings) -> str:
    running = pool.fill_running(project)
    free = len(pool.free_slots(project))
    if running:
        return f"a fill is already running (pid {running}); {free} free now"
    pid = pool.fill_in_background(project, settings.size, settings.base_branch, settings.setup)
    return (f"filling up to {settings.size} worktrees at {settings.base_branch} in the background "
            f"(pid {pid}, {free} free now; environment: {settings.setup}; "
            f"log: {pool.log_path(project).relative_to(project)})")


def run_on(args: argparse.Namespace) -> int:
    project = find_project_root(args.project)
    setup = args.setup
    if setup is None:
        recent = pool._recent_runs(project)
        setup = pool._setup_of(recent[0]) if recent else "auto"
    settings = pool.Settings(args.size, args.base or pool.default_base_branch(project), setup)
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
            decision = pool.decide(project)
            if not decision.on:
                removed = pool.remove_stale(project)
                print(f"Worktree pool: off ({decision.reason})."
                      + (f" Removed {removed} free worktree(s) it no longer uses." if removed else ""))
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
        result = pool.fill(project, settings.size, settings.base_branch, log=sys.stdout, setup=settings.setup)
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
    decision = pool.decide(project)
    settings = decision.settings
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
    with_env = sum(1 for s in slots if pool.read_env_record(s.path) is not None)
    used = disk.disk_usage(pool.pool_dir(project)) if pool.pool_dir(project).is_dir() else 0
    if args.json:
        print(json.dumps({
            "on": decision.on, "source": decision.source, "reason": decision.reason,
            "size": settings.size if settings else None, "base_branch": base,
            "setup": settings.setup if settings else None,
            "budget_bytes": decision.budget, "estimate_bytes": decision.estimate, "disk_bytes": used,
            "base_ref": ref, "base_commit": commit, "dir": str(pool.pool_dir(project)),
            "free": [{"path": str(s.path), "commit": s.commit, "current": bool(commit and s.commit == commit),
                      "env": pool.read_env_record(s.path)} for s in slots],
            "fill_running": running}, indent=2))
        return 0
    if not decision.on:
        print(f"Worktree pool: off ({decision.reason})"
              + (f"; {len(slots)} worktrees left in it (`pool off` removes them)" if slots else ""))
    else:
        print(f"Worktree pool: on, {settings.size} worktrees at {settings.base_branch}"
              + (f" ({ref} is {commit[:12]})" if commit else "")
              + f", environment: {settings.setup}"
              + ("" if decision.source == "setting" else f" ({decision.reason})"))
    if slots or decision.on:
        stale = len(slots) - fresh
        print(f"Free: {len(slots)}" + (f" ({fresh} at the base commit, {stale} older: updated at claim "
                                       "or by the next fill)" if stale else "")
              + (f", {with_env} with their environment step done" if with_env else "")
              + f", in {pool.pool_dir(project).relative_to(project)}/ ({disk.human_size(used)} on disk)")
    if running:
        print(f"A fill is running (pid {running}); log: {pool.log_path(project).relative_to(project)}")
    return 0


def run_off(args: argparse.Namespace) -> int:
    project = find_project_root(args.project)
    try:
        was_on = pool.decide(project).on
    except FatalError:
        was_on = True  # a damaged setting: it was meant to be on
    stopped = pool.stop_fill(project)
    removed = pool.clear(project)
    pool.save_off(project)
    left = len(pool.free_slots(project))
    print(f"Worktree pool off: {removed} free worktree(s) removed"
          + (f"; {left} still being claimed, left in place" if left else "")
          + ("" if stopped else "; a running fill did not stop, remove what it adds with `pool off` again")
          + ("" if was_on else " (it was not on)") + ".")
    return 0


def run_auto(args: argparse.Namespace) -> int:
    project = find_project_root(args.project)
    pool.save_auto(project, args.budget)
    decision = pool.decide(project)
    print(f"Worktree pool: back to the default; {'on' if decision.on else 'off'} now ({decision.reason}).")
    return 0

"""``parallel-setup execute``: create a run (or resume one) and print the spawn instructions.

/parallel:execute runs this. It validates the plan, creates
``.parallel/runs/<run-id>/`` (planning ends here), decides where issues go and says
why, creates the labels once, renders one prompt and one setup script per task, and
prints exactly the Agent calls the main agent must send in ONE message: a short
reference per task, which the PreToolUse hook expands into the full prompt.

Run again with ``--run RUN`` to launch the next wave: finished and running tasks are
not launched again; tasks whose dependencies are now done are. It first verifies the
unverified tasks again, and relaunches lost tasks (their agent is gone) reusing their
issue, worktree and commits, also from a new session.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .. import overrides, pool, runs, verify
from . import permissions
from ..errors import FatalError
from ..paths import find_project_root
from ..plans import load_plan_file
from ..render import make_environment, render
from .plan import resolve_plan_path

HELP = "create a run from a plan and print the Agent calls that launch its tasks"

DESCRIPTION = """\
Create a run from a plan (default: the most recently saved plan) and print the
spawn instructions: the Agent calls to send in ONE message, one short reference
per ready task. Each subagent then runs its task's setup script (issue, worktree,
environment) as its first action.

Tasks waiting on dependencies, or beyond the concurrency limit, are listed as
waiting; launch them later with `execute --run RUN_ID`, which never launches a
finished or running task again. It verifies unverified tasks again first, and
relaunches lost tasks (no sign of their agent for PARALLEL_LOST_AFTER seconds,
default 1800, and no end recorded) reusing their issue, worktree and commits.
While a run of the plan still has pending or running tasks, a new run of it is
refused unless --new-run is given.

The base is the plan's base_branch, else origin's default branch (else the
checked-out branch): tasks start from origin/<base> after one fetch, or from the
local branch with --base-local (execute says when the local branch is ahead)."""


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("execute", help=HELP, description=DESCRIPTION,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("plan", nargs="?", metavar="PLAN",
                   help="a plan file or a saved plan's name (default: the most recently saved plan)")
    p.add_argument("--run", metavar="RUN_ID", help="resume this run: launch the tasks that are ready now")
    p.add_argument("--foreground", action="store_true",
                   help="launch subagents in the foreground (run_in_background: false)")
    p.add_argument("--max-concurrency", type=int, metavar="N", default=None,
                   help=f"most subagents running at once (default: {runs.DEFAULT_MAX_CONCURRENCY}, Claude Code's cap)")
    p.add_argument("--mode", choices=["auto", "github", "local"], default=None,
                   help="where issues go (default: the plan's issues.mode, else auto: GitHub when gh is "
                        "installed and authenticated for the repository, else local files)")
    p.add_argument("--issue-updates", choices=list(runs.ISSUE_UPDATES), default="comment",
                   help="what a subagent does to its issue when it finishes (default: comment)")
    p.add_argument("--task", action="append", default=[], metavar="TASK_ID",
                   help="with --run: launch exactly this task (repeatable), whatever its state")
    p.add_argument("--retry-failed", action="store_true",
                   help="with --run: launch again what is not done: failed, setup failed and (after their "
                        "recheck) unverified tasks; their setup reuses their issue, worktree and commits")
    p.add_argument("--no-fetch", action="store_true", help="do not git fetch the base branch from origin")
    p.add_argument("--base-local", action="store_true",
                   help="start the tasks from the local base branch, with its commits that origin lacks "
                        "(default: origin/<base>; execute says when the local branch is ahead)")
    p.add_argument("--new-run", action="store_true",
                   help="start another run even though a run of this plan still has pending or running tasks "
                        "(default: refuse, and name the run to resume with --run)")
    p.add_argument("--no-pool", action="store_true",
                   help="do not hand out worktrees from the worktree pool in this run (see `pool --help`)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    project = find_project_root(args.project)
    if args.run and args.plan:
        raise FatalError("give a plan or --run RUN_ID, not both")
    if (args.task or args.retry_failed) and not args.run:
        raise FatalError("--task and --retry-failed need --run RUN_ID")
    if args.run and (args.new_run or args.base_local):
        raise FatalError("--new-run and --base-local start a new run; --run RUN_ID resumes one")
    runs.check_checkout(project)
    if args.max_concurrency is not None and args.max_concurrency < 1:
        raise FatalError("--max-concurrency must be at least 1")

    jinja = make_environment(project)
    if args.run:
        run_ = runs.load_run(project, args.run)
        if args.mode and args.mode not in ("auto", run_.mode):
            raise FatalError(f"run {run_.id} uses {run_.mode} issues; the mode of a run cannot change")
        resumed = True
        base_note = ""
        if not args.no_fetch and run_.data.get("has_origin"):
            _, base_note = runs.resolve_base(project, run_.data.get("base_branch") or run_.plan.base_branch,
                                             fetch=True, local=bool(run_.data.get("base_local")))
    else:
        path = resolve_plan_path(project, args.plan)
        plan = load_plan_file(path, project=project)
        _check_templates(project, plan, path)  # before anything exists: no run folder, issue or label
        for w in plan.warnings:
            print(w.format(str(path)), file=sys.stderr)
        try:
            shown = str(Path(path).resolve().relative_to(project))
        except ValueError:
            shown = str(path)
        if not args.new_run:
            refuse_second_run(project, plan.name, shown)
        worktree_pool = None if args.no_pool else _pool_for_run(project)
        run_ = runs.create_run(project, plan, plan_path=shown, mode=args.mode,
                               max_concurrency=args.max_concurrency or runs.DEFAULT_MAX_CONCURRENCY,
                               background=not args.foreground, issue_updates=args.issue_updates,
                               fetch=not args.no_fetch, worktree_pool=worktree_pool, base_local=args.base_local)
        resumed = False
        base_note = run_.data.get("base_note", "")

    foreground = args.foreground or not run_.data.get("background", True)
    states = runs.task_states(run_)
    if resumed:  # what was unverified may check out now (the branch pushed, the hook killed)
        unverified = [t for t in run_.tasks if states[t].state == "unverified"]
        if unverified and verify.recheck(project, run_.dir, run_.data, unverified):
            states = runs.task_states(run_)
    launch, waiting = runs.plan_launch(run_, states, max_concurrency=args.max_concurrency,
                                       only=args.task, retry_failed=args.retry_failed)
    if resumed and launch:
        _check_templates(project, run_.plan, None, resuming=True)
    if resumed or any(run_.plan.task(t).depends_on for t in launch):
        for tid in launch:  # dependency issues and branches are known now
            runs.render_task(run_, tid, jinja=jinja, states=states)
    if launch:
        runs.launch_tasks(run_, launch, foreground)
    print(spawn_instructions(run_, launch, waiting, states, foreground=foreground, resumed=resumed,
                             base_note=base_note, jinja=jinja), end="")
    return 0


def refuse_second_run(project: Path, plan_name: str, plan_path: str) -> None:
    """A run of this plan still has work: starting another would do every task (and issue) twice."""
    active = runs.active_runs(project, plan_name, plan_path)
    if not active:
        return
    run_id, counts = active[0]
    what = " and ".join(f"{n} {state}" for state, n in sorted(counts.items(), reverse=True))
    others = f" (and {len(active) - 1} other active run(s) of it)" if len(active) > 1 else ""
    raise FatalError(f"plan '{plan_name}' already has an active run {run_id} ({what} task(s)){others}: "
                     f"resume it with `execute --run {run_id}`, or add --new-run to start another run")


def _pool_for_run(project: Path):
    """The pool folder when the pool is on (``pool.decide``), after stopping a fill still running (setups need the CPU)."""
    try:
        decision = pool.decide(project)
    except FatalError as e:  # a damaged setting costs the speed-up, never the run
        print(f"warning: not using the worktree pool: {e}", file=sys.stderr)
        return None
    if not decision.on:
        return None
    pool.stop_fill(project)
    return pool.pool_dir(project)


def spawn_instructions(run_: runs.Run, launch, waiting, states, *, foreground: bool, resumed: bool,
                       base_note: str = "", jinja=None) -> str:
    """What the main agent reads: the Agent calls to send in one message, and what waits."""
    jinja = jinja or make_environment(run_.project)
    return render(jinja, "spawn-instructions.md.j2", **spawn_context(
        run_, launch, waiting, states, foreground=foreground, resumed=resumed, base_note=base_note))


def spawn_context(run_: runs.Run, launch, waiting, states, *, foreground: bool, resumed: bool,
                  base_note: str = "") -> dict:
    """The variables of spawn-instructions.md.j2 (documented in the README)."""
    first = run_.tasks[0]
    ctx = runs.template_context(run_, first)
    launched = set(launch)
    finished = [{"id": t, "state": states[t].state} for t in run_.tasks if states[t].state in runs.FINISHED]
    running = [t for t in run_.tasks if states[t].state == "running" and t not in launched]
    failed = [{"id": t, "reason": states[t].reason} for t in run_.tasks
              if states[t].state in ("failed", "setup_failed") and t not in launched]
    calls = []
    for tid in launch:
        call = run_.short_reference(tid, foreground=foreground)
        calls.append({"id": tid, "title": run_.plan.task(tid).title, "call": call,
                      "call_json": runs.reference_json(call)})
    return dict(run=ctx["run"], plan=ctx["plan"], project=ctx["project"],
                launch=calls, waiting=[{"id": t, "title": run_.plan.task(t).title, "reason": r} for t, r in waiting],
                finished=finished, running=running, failed=failed, foreground=foreground, resumed=resumed,
                base_note=base_note, permissions=permissions.summary_line(run_.project),
                pool_free=len(pool.free_slots(run_.project)) if run_.data.get("worktree_pool") else None)


def _check_templates(project: Path, plan, plan_file, resuming: bool = False) -> None:
    """`templates check` against this plan: a template that does not render stops the run here."""
    shown = f"{plan.name} ({overrides.display(Path(plan_file).resolve(), project)})" if plan_file else plan.name
    report = overrides.check_before_run(project, plan, shown, resuming=resuming)
    for finding in report.warnings:
        print(finding.format(), file=sys.stderr)

"""``parallel-setup merge [RUN]``: forecast, then the merge train, then land or open pull requests.

/parallel:merge runs this. The work is in ``parallel_setup/merge.py``; this module parses
arguments, prints, and when the train stops renders the resolver's prompt
(``merge-conflict.md.j2``) and prints the one Agent call that hands the stop to it.
"""

from __future__ import annotations

import argparse
import json
from typing import Any, Dict, List, Optional

from .. import merge, runs
from ..errors import FatalError
from ..paths import find_project_root
from ..render import make_environment, render

HELP = "merge a run's verified branches in dependency order, testing after each merge"
RESOLVER_TYPE = "parallel:parallel-merge-resolver"

DESCRIPTION = f"""\
Merge the verified (done) tasks of a run (default: the latest run), one at a time in
dependency order then plan order, on the integration branch parallel/<run-id> in its
own worktree (worktrees/merge-<run-id>; your checkout is never touched). The test
command runs after each merge; the integration branch only ever moves to a commit
whose tests passed.

First it prints the forecast: the merge order and a conflict matrix of every pair of
branches and of each against the current base, computed in memory with
`git merge-tree --write-tree` (git 2.38 or newer; on an older git the forecast is
skipped and the train still finds each conflict as it merges).

The train stops at the first conflict or red test, says which task, which files and
which earlier task it collides with, and leaves the integration worktree for you (or
the resolver subagent /parallel:merge starts) to fix. Run merge again: it verifies the
fix (no conflict left, tests green) and continues where it stopped. Tasks already
merged are never merged twice. Safe to interrupt at any point and run again.

Unverified, failed and still running tasks are never merged; they are listed with
their reason.

Exit status: 0 the train is green (or --dry-run), {merge.EXIT_STOPPED} the train stopped at a
conflict or a red test, 1 a problem to fix first (the message says what)."""


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("merge", help=HELP, description=DESCRIPTION,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run", nargs="?", metavar="RUN", help="run id (default: the latest run)")
    p.add_argument("--dry-run", action="store_true",
                   help="only print the forecast (order, conflicts, what is not merged); change nothing")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.add_argument("--strategy", choices=merge.STRATEGIES, default="merge",
                   help="merge: a merge commit per task (default); squash: one commit per task; "
                        "rebase: the task's commits replayed on top")
    p.add_argument("--test", action="append", default=[], metavar="CMD",
                   help="the test command to run after merging (repeatable; default: the plan's test commands)")
    when = p.add_mutually_exclusive_group()
    when.add_argument("--test-each", dest="test_each", action="store_true", default=True,
                      help="test after every merge (default): a red test names the task")
    when.add_argument("--test-at-end", dest="test_each", action="store_false",
                      help="test once after all merges (faster; a red test cannot name the task)")
    p.add_argument("--test-timeout", type=float, metavar="SECONDS", default=None,
                   help="stop a test command after this long (default: no limit)")
    p.add_argument("--task", action="append", default=[], metavar="TASK_ID",
                   help="merge only this task (repeatable); refused when a dependency is not merged")
    p.add_argument("--land", action="store_true",
                   help="when the whole train is green, fast-forward the base branch to it (refused if the "
                        "base moved in a way that is not a fast-forward or its checkout has uncommitted changes)")
    p.add_argument("--push", action="store_true", help="with --land: push the base branch to origin")
    prs = p.add_mutually_exclusive_group()
    prs.add_argument("--pr", action="store_true",
                     help="GitHub mode: one pull request per merged task, from its branch to the base, "
                          "'Closes #N' in its body (an open one is reused)")
    prs.add_argument("--integration-pr", action="store_true",
                     help="GitHub mode: one pull request from the integration branch listing every task")
    p.add_argument("--no-fetch", action="store_true", help="do not git fetch the base branch from origin first")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    project = find_project_root(args.project)
    if args.push and not args.land:
        raise FatalError("--push needs --land")
    if (args.pr or args.integration_pr) and args.land:
        raise FatalError("choose one way to land: --land, --pr or --integration-pr")
    run_ = runs.load_run(project, args.run)
    if (args.push or args.pr or args.integration_pr) and not runs.has_origin(project):
        raise FatalError("--push, --pr and --integration-pr need an origin remote; this repository has none")
    if (args.pr or args.integration_pr) and run_.mode != "github":
        raise FatalError(f"--pr and --integration-pr need a run in github mode; run {run_.id} uses local "
                         "issues (use --land)")
    out: List[str] = []
    say = (lambda s: None) if args.json else (lambda s: print("  " + s, flush=True))
    base = merge.current_base(run_, fetch=not args.no_fetch and bool(run_.data.get("has_origin")))
    cands, skipped = merge.select(run_)
    rec = merge.integration_record(run_)
    tip = merge._rev(project, f"refs/heads/{merge.integration_branch(run_)}") if rec else None
    already = merge.merged_tasks(run_, tip, run_.data.get("base_commit") or None)
    fc = merge.forecast(run_, cands, base=base)
    header = _header(run_, args)
    if not args.json:
        print("\n".join([header, ""] + merge.render_forecast(fc, already) + _skipped_lines(skipped)), flush=True)
    if args.dry_run:
        if args.json:
            print(json.dumps({"run": run_.id, "dry_run": True, "forecast": fc.to_dict(), "merged": already,
                              "skipped": [s.__dict__ for s in skipped]}, indent=2))
        return 0
    if not args.json:
        print("\nTrain:", flush=True)
    opts = merge.TrainOptions(strategy=args.strategy, tests=args.test or None, test_each=args.test_each,
                              only=args.task, test_timeout=args.test_timeout)
    with merge.TrainLock(run_):  # the train and the landing, one copy at a time
        return _train_and_land(run_, args, opts, say, fc, skipped)


def _train_and_land(run_, args, opts, say, fc, skipped) -> int:
    result = merge.run_train(run_, opts, say=say, locked=True)
    doc = {"run": run_.id, "forecast": fc.to_dict(), "train": result.to_dict(),
           "skipped": [s.__dict__ for s in skipped]}
    if result.stop is not None:
        resolver = write_resolver(run_, result)
        doc["resolver"] = resolver
        if args.json:
            print(json.dumps(doc, indent=2))
        else:
            print("\n".join(_stop_lines(run_, result, resolver)))
        return merge.EXIT_STOPPED
    if not result.order and not result.merged:
        doc["nothing_to_merge"] = True
        print(json.dumps(doc, indent=2) if args.json else "\nNothing to merge: no task is verified done yet.")
        return 0
    lines = _green_lines(result)
    if args.land:
        landed = merge.land(run_, result, push=args.push)
        doc["landed"] = landed
        lines.append(_landed_line(landed))
    elif args.pr or args.integration_pr:
        doc["pull_requests"] = open_prs(run_, result, integration=args.integration_pr)
        lines += [f"  #{p['number']} {p['url']} ({'reused' if p['reused'] else 'opened'}) {p['task']}"
                  for p in doc["pull_requests"]]
        fixed = resolved_in_train(run_)
        if args.pr and fixed:
            lines.append(f"Note: {', '.join(fixed)} needed a fix in the train (a conflict or a red test); "
                         "a task's own pull request does not carry it: --integration-pr does.")
    elif result.merged and result.green:
        lines.append(f"Next: land it with `parallel-setup merge {run_.id} --land` (add --push to push "
                     f"{run_.plan.base_branch})" + (", or open pull requests with --pr or --integration-pr"
                                                    if run_.mode == "github" else ""))
    if args.json:
        print(json.dumps(doc, indent=2))
    else:
        print("\n".join(lines))
    return 0


def _header(run_: runs.Run, args) -> str:
    tests = merge.test_commands(run_, args.test or None)
    when = "after each merge" if args.test_each else "once after all merges"
    return (f"Run {run_.id}: integration branch {merge.integration_branch(run_)} in "
            f"{run_.relative(merge.integration_worktree(run_))}, strategy {args.strategy}, "
            + (f"tests {when}: {' && '.join(tests)}" if tests else
               "no test command (the plan has none; give --test): merges are not tested"))


def _skipped_lines(skipped) -> List[str]:
    if not skipped:
        return []
    return ["", f"Not merged ({len(skipped)}):"] + [f"  {s.id}: {s.reason}" for s in skipped]


def _green_lines(result: merge.TrainResult) -> List[str]:
    if result.remaining:
        return [f"Not merged yet: {', '.join(result.remaining)}"]
    now = f" ({len(result.merged_now)} merged now)" if result.merged_now else " (nothing new to merge)"
    return ["", f"Green: {len(result.merged)} task{'s' if len(result.merged) != 1 else ''} on {result.branch} at "
                f"{result.tip[:8]}{now}, tests passing."]


def _landed_line(landed: dict) -> str:
    if landed.get("already"):
        text = f"Landed: {landed['base']} is already at {landed['to'][:8]}"
    else:
        text = f"Landed: {landed['base']} fast-forwarded {landed['from'][:8]}..{landed['to'][:8]}"
    if landed.get("pushed"):
        text += f", pushed to origin"
    if landed.get("closed_issues"):
        text += "; closed local issues " + ", ".join(f"#{n}" for n in landed["closed_issues"])
    return text + "."


def _stop_lines(run_: runs.Run, result: merge.TrainResult, resolver: dict) -> List[str]:
    s = result.stop
    assert s is not None
    lines = ["", f"Stopped: {s.message}"]
    if s.kind == "tests" and s.output_tail:
        lines += ["", "Test output (end):"] + ["  " + l for l in s.output_tail.strip().splitlines()[-15:]]
    how = ("resolve the conflicted files and `git add` them" if s.kind == "conflict"
           else "fix it and commit" if s.kind == "tests" else "do what the message says")
    lines += ["", f"To continue without Claude: {how} in the integration worktree "
                  f"({result.worktree}), then run `parallel-setup merge {run_.id}` again.",
              f"In Claude Code, /parallel:merge hands it to one resolver subagent with this Agent call:",
              runs.reference_json(resolver["call"])]
    return lines


def resolver_context(run_: runs.Run, s: "merge.Stop", *, worktree: str, branch: str, strategy: str,
                     tests: List[str], states: Dict[str, runs.TaskState]) -> Dict[str, Any]:
    """The variables ``merge-conflict.md.j2`` gets for a stop (``templates check`` renders a preview)."""

    def task_info(tid: Optional[str]) -> Optional[dict]:
        if not tid or tid not in run_.tasks:
            return None
        t = run_.plan.task(tid)
        st = states[tid]
        return {"id": tid, "title": t.title, "description": t.description, "branch": st.branch,
                "issue": st.issue, "files": list(t.files)}

    return {"run_id": run_.id, "project": str(run_.project), "stop": s.__dict__, "task": task_info(s.task),
            "collides_with": [task_info(t) for t in (s.collides_with or s.culprits)],
            "merged_before": list(s.merged_before), "worktree": worktree, "branch": branch,
            "base_branch": run_.plan.base_branch, "strategy": strategy, "tests": list(tests),
            "continue_command": f"parallel-setup merge {run_.id}"}


def write_resolver(run_: runs.Run, result: merge.TrainResult) -> dict:
    """Render ``merge-conflict.md.j2`` for the stop; returns the short Agent call that points at it."""
    s = result.stop
    assert s is not None
    name = f"resolve-{s.task or 'train'}.md"
    path = merge.merge_dir(run_) / name
    ctx = resolver_context(run_, s, worktree=result.worktree, branch=result.branch, strategy=result.strategy,
                           tests=result.tests, states=runs.task_states(run_))
    text = render(make_environment(run_.project), "merge-conflict.md.j2", **ctx)
    runs._write_atomic(path, text)
    # What the permission hook lets the resolver do when the repository opted in
    # (hooks/permissions.py, resolver_scope): work in this worktree, run these tests.
    runs._write_atomic(path.with_suffix(".json"), json.dumps(
        {"run": run_.id, "task": s.task, "worktree": result.worktree, "branch": result.branch,
         "tests": list(result.tests)}, indent=1) + "\n")
    call = {"description": f"resolve merge {s.task or ''}".strip(), "subagent_type": RESOLVER_TYPE,
            "prompt": f"Parallel merge: read {run_.relative(path)} and follow it exactly.",
            "run_in_background": False}  # the train continues only after the resolver is done
    return {"path": str(path), "call": call}


def open_prs(run_: runs.Run, result: merge.TrainResult, integration: bool) -> List[dict]:
    """Pull requests through ``parallel_setup.pulls.ensure_pr`` (GitHub mode)."""
    try:
        from .. import pulls  # H11b's module
    except ImportError:
        raise FatalError("--pr and --integration-pr need parallel_setup/pulls.py, which this version does "
                         "not have yet; land with --land, or push the branches and open the pull requests "
                         "yourself") from None
    repo = run_.data.get("repository") or ""
    base = run_.plan.base_branch
    states = runs.task_states(run_)
    made = []
    if integration:
        merge.push_branch(run_, result.branch)
        body = [f"Merge train of run {run_.id}: {len(result.merged)} tasks, merged in this order with "
                "the tests green after each.", ""]
        for tid in result.merged:
            st = states[tid]
            body.append(f"- {tid}: {run_.plan.task(tid).title}" + (f" (Closes #{st.issue})" if st.issue else ""))
        pr = pulls.ensure_pr(run_.project, repo, result.branch, base, f"{run_.plan.name}: merge train {run_.id}",
                             "\n".join(body) + "\n")
        made.append(dict(pr, task="(integration)"))
    else:
        for tid in result.merged:
            st = states[tid]
            merge.push_branch(run_, st.branch or "")
            body = (f"{run_.plan.task(tid).description.rstrip()}\n\n"
                    + (f"Closes #{st.issue}\n\n" if st.issue else "")
                    + f"Task {tid} of run {run_.id}; tested in the merge train on {result.branch}.\n")
            pr = pulls.ensure_pr(run_.project, repo, st.branch, base, run_.plan.task(tid).title, body)
            made.append(dict(pr, task=tid))
    run_.event("merge_prs", prs=made, integration=integration)
    return made


def resolved_in_train(run_: runs.Run) -> List[str]:
    """Tasks whose merge stopped (a conflict, red tests) before the train merged them."""
    stopped = {e.get("task") for e in runs.events.iter_events(run_.dir) if e.get("event") == "merge_stop"}
    return [t for t in run_.tasks if t in stopped]

"""``parallel-setup cleanup [RUN]``: remove what a run made, archiving any work first.

The logic is in ``parallel_setup/cleanup.py``; this module parses arguments and prints.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .. import cleanup, runs
from ..errors import FatalError
from ..paths import find_project_root

HELP = "remove what a run made (worktrees, branches, pool claims), archiving unmerged or uncommitted work first"

DESCRIPTION = """\
Remove what a run made, and only that: its task worktrees (with what the
environment step installed in them, such as .venv and node_modules), its task
branches, its spent pool claims, and the merge train's worktree and branch
parallel/<run-id>; with --remote, the branches it pushed to origin too. What the
run's records do not name, or git shows was not made by the run (a branch or a
worktree of the same name, the main checkout), is kept and listed with the reason.

Nothing is lost: a worktree with uncommitted changes (untracked files included)
or a branch that is neither merged into the base nor on origin is first saved as
a commit at refs/parallel/archive/<run-id>/<task-id>; recover it with
`git switch -c NAME refs/parallel/archive/<run-id>/<task-id>`. --discard skips
the archive. Safe to interrupt and run again. The run's records and logs in
.parallel/runs/<run-id>/ stay unless --purge-logs."""


def add_parser(sub) -> None:
    p = sub.add_parser("cleanup", help=HELP, description=DESCRIPTION,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run", nargs="?", metavar="RUN", help="run id (default: the latest run)")
    p.add_argument("--dry-run", action="store_true",
                   help="list what would be removed and archived, and the disk space it frees; change nothing")
    p.add_argument("--all-merged", action="store_true",
                   help="clean every run whose tasks are all done and merged into the base")
    p.add_argument("--remote", action="store_true",
                   help="also delete the branches the run pushed to origin (archiving any not merged)")
    p.add_argument("--discard", action="store_true",
                   help="do not archive uncommitted changes or unmerged branches: they are lost")
    p.add_argument("--purge-logs", action="store_true",
                   help="also remove the run's records and logs (.parallel/runs/<run-id>/) once all else is gone")
    p.add_argument("--include-running", action="store_true",
                   help="also clean tasks still running, when you know no agent works in them any more")
    p.add_argument("--json", action="store_true", help="print what was (or would be) done as JSON")
    p.set_defaults(func=run)


def _runs(project: Path, args) -> list:
    if args.all_merged:
        if args.run:
            raise FatalError("give a RUN or --all-merged, not both")
        chosen, skipped = [], []
        for run_id in runs.list_runs(project):
            r = runs.load_run(project, run_id)
            why = cleanup.all_merged(r)
            if why is None:
                chosen.append(r)
            else:
                skipped.append(f"{run_id}: {why}")
        if not args.json:
            for line in skipped:
                print(f"Not cleaned: {line}")
            if not chosen:
                print("No run has all its tasks merged into the base.")
        return chosen
    return [runs.load_run(project, args.run)]


def run(args) -> int:
    project = Path(args.project).resolve() if getattr(args, "project", None) else find_project_root()
    options = dict(remote=args.remote, discard=args.discard, purge_logs=args.purge_logs,
                   include_running=args.include_running)
    report = []
    failed = False
    if args.dry_run:
        for r in _runs(project, args):
            plan = cleanup.plan_cleanup(r, **options)
            report.append(plan.to_dict())
            if not args.json:
                print(cleanup.render_plan(plan, dry_run=True), end="")
    else:
        with cleanup.lock(project):
            for r in _runs(project, args):
                plan = cleanup.plan_cleanup(r, **options)
                results = cleanup.apply(r, plan)
                failed = failed or any(not res.ok for res in results)
                entry = plan.to_dict()
                entry["results"] = [{"kind": res.step.kind, "task": res.step.task, "target": res.step.target,
                                     "ok": res.ok, "message": res.message} for res in results]
                entry["freed"] = sum(res.step.bytes for res in results if res.ok)
                report.append(entry)
                if not args.json:
                    print(cleanup.render_results(plan, results), end="")
                    sys.stdout.flush()
    if args.json:
        print(json.dumps(report if args.all_merged else report[0], indent=2))
    return 1 if failed else 0

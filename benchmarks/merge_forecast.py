#!/usr/bin/env python3
"""How long the merge forecast takes for N done branches (target: under 5 s for 20).

    python3 benchmarks/merge_forecast.py [--branches 20] [--files 2000] [--reps 5] [--dir DIR]

Builds a real run: a repository of FILES files with a bare origin, a plan of BRANCHES tasks
made with ``create_run`` in local mode, each task set up by its real ``setup.sh`` (a local
issue, a worktree, a branch), one commit per task touching its own file and, for every
fifth task, a line another task changes too (so the forecast has conflicts to find). Then
it times ``merge.forecast`` (every pair plus each against the base, ``git merge-tree
--write-tree``, no working tree touched) REPS times and prints the median, min and max,
the number of in-memory merges and the conflicts found. The repository is made under DIR
(default: a temporary folder on the project's disk): say which disk when you report.
Not a timed test; exits 0.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from parallel_setup import events, merge, runs  # noqa: E402
from tests.support.git import git_commit, make_repo  # noqa: E402


def build(root: Path, branches: int, files: int) -> runs.Run:
    tree = {f"src/pkg{i % 20}/mod{i}.py": f"VALUE_{i} = {i}\n" for i in range(files)}
    tree["shared.txt"] = "".join(f"line {k}\n" for k in range(branches))
    repo = make_repo(root, files=tree)
    tasks = "".join(f"  - id: t{i:02d}\n    title: Task {i}\n    description: Change mod{i}.\n"
                    for i in range(branches))
    plan = repo / "plan.yaml"
    plan.write_text("schema_version: 1\nname: forecast-bench\ngoal: Many branches.\nbase_branch: main\n"
                    "issues:\n  mode: local\ndefaults:\n  setup: none\n  test: \"true\"\ntasks:\n" + tasks)
    run = runs.create_run(repo, plan, mode="local", fetch=False)
    shared = tree["shared.txt"].splitlines(keepends=True)
    for i, tid in enumerate(run.tasks):
        setup = runs.run_setup(run, tid)
        assert setup["status"] == "ok", setup
        wt = Path(setup["worktree"])
        change = {f"src/pkg{i % 20}/mod{i}.py": f"VALUE_{i} = {i * 10}\n"}
        if i % 5 in (0, 1):  # tasks 0 and 1, 5 and 6, ... change the same line: a conflict each pair
            lines = list(shared)
            lines[i - i % 5] = f"changed by {tid}\n"
            change["shared.txt"] = "".join(lines)
        git_commit(wt, f"{tid}\n\nCloses #{setup['issue']}", change)
        events.append_event(run.dir, "task_end", task=tid, state="done", facts={"branch": setup["branch"]})
    return run


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--branches", type=int, default=20)
    ap.add_argument("--files", type=int, default=2000)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--workers", type=int, default=4)
    ap.add_argument("--dir", default=None, help="where to build the repository (default: a temporary folder)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    os.environ.setdefault("GIT_AUTHOR_NAME", "bench")
    os.environ.setdefault("GIT_AUTHOR_EMAIL", "bench@example.invalid")
    os.environ.setdefault("GIT_COMMITTER_NAME", "bench")
    os.environ.setdefault("GIT_COMMITTER_EMAIL", "bench@example.invalid")
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        t0 = time.time()
        run = build(Path(tmp), args.branches, args.files)
        built = time.time() - t0
        cands, _ = merge.select(run)
        base = merge.current_base(run)
        times, fc = [], None
        for _ in range(args.reps):
            start = time.perf_counter()
            fc = merge.forecast(run, cands, base=base, workers=args.workers)
            times.append(time.perf_counter() - start)
        assert fc is not None
        result = {"branches": len(cands), "files": args.files, "merges": fc.pairs_checked,
                  "conflicts": len(fc.conflicts), "base_conflicts": len(fc.base_conflicts),
                  "workers": args.workers, "git": ".".join(map(str, merge.git_version(run.project))),
                  "median_s": round(statistics.median(times), 3), "min_s": round(min(times), 3),
                  "max_s": round(max(times), 3), "reps": args.reps, "build_s": round(built, 1),
                  "disk": str(Path(tmp).resolve().parent), "cpus": os.cpu_count(), "target_s": 5.0}
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(f"merge forecast, {result['branches']} branches on a {args.files}-file repository "
              f"({result['merges']} in-memory merges, git {result['git']}, {args.workers} workers, "
              f"{result['cpus']} CPUs, under {result['disk']}):")
        print(f"  median {result['median_s']:.3f} s (min {result['min_s']:.3f}, max {result['max_s']:.3f}, "
              f"{args.reps} reps); target under 5 s: {'met' if result['median_s'] < 5 else 'NOT met'}")
        print(f"  conflicts found: {result['conflicts']} pairs, {result['base_conflicts']} against the base")
    return 0


if __name__ == "__main__":
    sys.exit(main())

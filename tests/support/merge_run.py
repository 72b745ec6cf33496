"""A finished run to merge, built with the real parts: ``create_run`` in local mode, each
task's real ``setup.sh`` (a local issue, a worktree, a branch), real commits in the worktrees,
a bare ``origin``, and the ``task_end`` events the hooks would record.

Ten tasks (plan order; ``chain-b`` depends on ``chain-a``)::

    alpha, beta, gamma      disjoint new files
    conf-red, conf-green    both change line 1 of config.txt: a textual conflict
    rename                  renames lib.greet to lib.hello (and its check): green alone
    use-greet               adds banner.py calling lib.greet: green alone, red after rename
    chain-a, chain-b        a dependency chain (chain-b merges chain-a into its branch first)
    docs                    unverified (its report could not be verified)

Every branch is pushed to origin except ``gamma``'s. The test command is ``python3 run_checks.py``.
"""

from __future__ import annotations

from pathlib import Path

from parallel_setup import events, runs
from tests.support.git import git, git_commit, make_repo

TEST = "python3 run_checks.py"
RUN_CHECKS = """\
import glob, subprocess, sys
failed = [p for p in sorted(glob.glob("checks/check_*.py")) if subprocess.call([sys.executable, p]) != 0]
print("failed:", failed if failed else "none")
sys.exit(1 if failed else 0)
"""
BASE_FILES = {
    "README.md": "# widgets\n",
    "lib.py": "def greet(name):\n    return 'hi ' + name\n",
    "config.txt": "color=blue\nsize=10\n",
    "run_checks.py": RUN_CHECKS,
    "checks/check_lib.py": "import sys; sys.path.insert(0, '.')\nfrom lib import greet\nassert greet('a') == 'hi a'\n",
}
PLAN_TASKS = [
    ("alpha", "Add alpha.txt", []), ("beta", "Add beta.txt", []),
    ("conf-red", "Make the color red", []), ("rename", "Rename greet to hello", []),
    ("chain-a", "Start chain.txt", []), ("conf-green", "Make the color green", []),
    ("use-greet", "A banner that greets", []), ("chain-b", "Continue chain.txt", ["chain-a"]),
    ("gamma", "Add gamma.txt", []), ("docs", "Document it", []),
]
CHANGES = {
    "alpha": {"alpha.txt": "alpha\n"},
    "beta": {"beta.txt": "beta\n"},
    "gamma": {"gamma.txt": "gamma\n"},
    "conf-red": {"config.txt": "color=red\nsize=10\n"},
    "conf-green": {"config.txt": "color=green\nsize=10\n"},
    "rename": {"lib.py": "def hello(name):\n    return 'hi ' + name\n",
               "checks/check_lib.py": "import sys; sys.path.insert(0, '.')\nfrom lib import hello\n"
                                      "assert hello('a') == 'hi a'\n"},
    "use-greet": {"banner.py": "from lib import greet\n\ndef banner():\n    return greet('world').upper()\n",
                  "checks/check_banner.py": "import sys; sys.path.insert(0, '.')\nfrom banner import banner\n"
                                            "assert banner() == 'HI WORLD'\n"},
    "chain-a": {"chain.txt": "a\n"},
    "chain-b": {"chain.txt": "a\nb\n"},
    "docs": {"docs.md": "docs\n"},
}
UNPUSHED = ("gamma",)
UNVERIFIED = ("docs",)


def plan_yaml(tasks=PLAN_TASKS, repository: str | None = None) -> str:
    issues = ["issues:", "  mode: github", f"  repository: {repository}"] if repository else ["issues:", "  mode: local"]
    out = ["schema_version: 1", "name: merge-fixture", "goal: Ten small changes at once.", "base_branch: main",
           *issues, "defaults:", "  setup: none", f"  test: {TEST}", "tasks:"]
    for tid, title, deps in tasks:
        out += [f"  - id: {tid}", f"    title: {title}", f"    description: {title}."]
        if deps:
            out.append(f"    depends_on: [{', '.join(deps)}]")
    return "\n".join(out) + "\n"


def finish(run: runs.Run, task: str, state: str, **facts) -> None:
    """The ``task_end`` event the SubagentStop hook records after verifying a report."""
    events.append_event(run.dir, "task_end", task=task, state=state, failed_claims=[] if state == "done"
                        else ["push: not verified"], notes=[], reason=None, log=None,
                        facts=dict({"tests_exit": 0, "tests_command": TEST}, **facts))


def build(root: Path, *, tasks=PLAN_TASKS, changes=CHANGES, repository: str | None = None) -> runs.Run:
    """The repository at root/widgets (origin root/widgets.git) and its finished run.

    With ``repository`` the run is in GitHub mode (issues through gh: point the environment at
    a fake GitHub first); else local issue files.
    """
    repo = make_repo(root, files=BASE_FILES)
    plan = repo / "plan.yaml"
    plan.write_text(plan_yaml(tasks, repository), encoding="utf-8")
    git(repo, "add", "plan.yaml")
    git(repo, "commit", "-q", "-m", "plan")
    git(repo, "push", "-q", "origin", "main")
    run = runs.create_run(repo, plan, mode="github" if repository else "local", fetch=True, labels=False)
    branches = {}
    for tid, _title, deps in tasks:
        setup = runs.run_setup(run, tid)
        assert setup["status"] == "ok", setup
        wt, branch = Path(setup["worktree"]), setup["branch"]
        branches[tid] = branch
        for dep in deps:
            git(wt, "merge", "-q", "--no-edit", branches[dep])
        git_commit(wt, f"{tid}: {_title}\n\nCloses #{setup['issue']}", changes[tid])
        if tid not in UNPUSHED:
            git(wt, "push", "-q", "origin", branch)
        finish(run, tid, "unverified" if tid in UNVERIFIED else "done", branch=branch, issue=setup["issue"])
    return run

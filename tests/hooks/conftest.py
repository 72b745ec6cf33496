"""Hooks run as subprocesses from a plugin copy in a differently-named folder, fed real payloads."""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.support.git import git, git_commit
from tests.support.runs import RUN_ID, make_run

FIXTURES = Path(__file__).resolve().parent.parent / "data" / "fixtures" / "claude-code-2.1.328"
TASKS = [{"id": "alpha", "title": "Alpha"}, {"id": "beta", "title": "Beta"}, {"id": "gamma", "title": "Gamma"}]


def fixture(name: str) -> dict:
    return json.loads((FIXTURES / name).read_text(encoding="utf-8"))


def all_fixtures() -> list[str]:
    return sorted(str(p.relative_to(FIXTURES)) for p in FIXTURES.rglob("*.json"))


class Hooks:
    def __init__(self, plugin: Path, project: Path, data_dir: Path):
        self.plugin, self.project, self.data_dir = plugin, project, data_dir

    def run(self, event: str, payload, *, env: dict | None = None, args=None,
            python_flags=()) -> subprocess.CompletedProcess:
        if isinstance(payload, dict):
            payload = copy.deepcopy(payload)
            if isinstance(payload.get("cwd"), str):
                payload["cwd"] = str(self.project)
            data = json.dumps(payload).encode("utf-8")
        else:
            data = payload if isinstance(payload, bytes) else str(payload).encode("utf-8")
        full_env = dict(os.environ, CLAUDE_PLUGIN_ROOT=str(self.plugin), CLAUDE_PLUGIN_DATA=str(self.data_dir),
                        CLAUDE_PROJECT_DIR=str(self.project), PARALLEL_VERIFY_GH="0")
        full_env.pop("PARALLEL_DISABLE", None)
        full_env.update(env or {})
        cmd = ([sys.executable, *python_flags, str(self.plugin / "scripts" / "hook.py")]
               + ([event] if args is None else args))
        return subprocess.run(cmd, input=data, capture_output=True, cwd=self.project, env=full_env, timeout=60)

    def out(self, event: str, payload, **kw) -> dict | None:
        proc = self.run(event, payload, **kw)
        assert proc.returncode == 0, proc.stderr
        assert proc.stderr == b"", proc.stderr.decode()
        return json.loads(proc.stdout) if proc.stdout.strip() else None

    def events(self, kind: str | None = None) -> list[dict]:
        path = self.project / ".parallel" / "runs" / RUN_ID / "events.jsonl"
        rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        return [r for r in rows if kind is None or r["event"] == kind]


@pytest.fixture
def project(repo) -> Path:
    """A repository with a run of three tasks (local issues, base origin/main)."""
    make_run(repo, TASKS, created_at=time.time() - 10)
    return repo


@pytest.fixture
def hooks(plugin_copy, project, tmp_path) -> Hooks:
    return Hooks(plugin_copy, project, tmp_path / "plugin-data")


def make_task_branch(project: Path, issue: int, *, push: bool = True, commit: bool = True) -> str | None:
    """What a subagent leaves behind: a local issue file, a branch with a commit, pushed."""
    issues = project / ".parallel" / "issues"
    issues.mkdir(parents=True, exist_ok=True)
    (issues / f"{issue}.md").write_text(f"# issue {issue}\n", encoding="utf-8")
    branch = f"feature/task-{issue}"
    git(project, "branch", branch, "origin/main")
    sha = None
    if commit:
        wt = project / "worktrees" / f"task-{issue}"
        git(project, "worktree", "add", "-q", str(wt), branch)
        sha = git_commit(wt, f"task {issue}\n\nCloses #{issue}", {f"t{issue}.txt": "x\n"})
    if push:
        git(project, "push", "-q", "origin", branch)
    return sha


def report_text(task: str, issue: int, sha: str | None, *, status: str = "done", exit_code=0,
                reason=None) -> str:
    report = {"parallel_report": 1, "run": RUN_ID, "task": task, "status": status, "issue": issue,
              "branch": f"feature/task-{issue}", "worktree": f"worktrees/task-{issue}",
              "commits": [sha] if sha else [], "pushed": True,
              "tests": {"command": "pytest -q", "exit_code": exit_code}, "summary": "did it", "reason": reason}
    return f"All done.\n\n```json\n{json.dumps(report, indent=2)}\n```\n"


def setup_end(project: Path, task: str, issue: int, start: float = 1.0) -> None:
    from parallel_setup import events
    run_dir = project / ".parallel" / "runs" / RUN_ID
    run_info = json.loads((run_dir / "run.json").read_text())
    t0 = run_info["created_at"]
    events.append_event(run_dir, "setup_start", task=task, t=t0 + start, mode="local")
    for i, step in enumerate(("issue", "worktree", "env")):
        events.append_event(run_dir, "step_end", task=task, t=t0 + start + 0.5 * (i + 1), step=step, ok=True,
                            seconds=0.5)
    events.append_event(run_dir, "setup_end", task=task, t=t0 + start + 1.5, parallel_setup=1, status="ok",
                        mode="local", issue=issue, branch=f"feature/task-{issue}",
                        seconds={"issue": 0.5, "worktree": 0.5, "env": 0.5, "total": 1.5})

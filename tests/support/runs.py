"""Runs built by hand for hook and status tests: run.json, task folders, events at pinned times."""

from __future__ import annotations

import json
from pathlib import Path

from parallel_setup import events

T0 = 1795340000.0  # planning ended in every synthetic run
RUN_ID = "20261122-101500-3fa2"


def make_run(project: Path, tasks: list[dict], *, run_id: str = RUN_ID, created_at: float = T0,
             issue_mode: str = "local", base_ref: str = "origin/main", repository=None,
             prompts: bool = True) -> Path:
    """A run folder as ``execute`` leaves it: run.json, tasks/<id>/prompt.md, an empty event log."""
    run_dir = project / ".parallel" / "runs" / run_id
    (run_dir / "tasks").mkdir(parents=True)
    info = {"format": 1, "id": run_id, "created_at": created_at, "project": str(project),
            "plan_path": ".parallel/plans/demo.yaml",
            "plan": {"schema_version": 1, "name": "demo", "goal": "a demo", "tasks": tasks},
            "issue_mode": issue_mode, "mode_reason": "test", "repository": repository,
            "base_ref": base_ref, "labels": ["parallel"], "labels_ok": True, "max_concurrency": 20,
            "tasks": [t["id"] for t in tasks], "background": True}
    (run_dir / "run.json").write_text(json.dumps(info, indent=2), encoding="utf-8")
    for t in tasks:
        d = run_dir / "tasks" / t["id"]
        d.mkdir()
        if prompts:
            d.joinpath("prompt.md").write_text(
                f"# Task {t['id']}\n\nRun `bash .parallel/runs/{run_id}/tasks/{t['id']}/setup.sh` first.\n"
                + "x" * 4000 + "\n", encoding="utf-8")
    events.append_event(run_dir, "run_created", t=created_at, tasks=info["tasks"], mode=issue_mode,
                        mode_reason="test")
    return run_dir


def short_ref(run_id: str, task: str) -> str:
    return f"Parallel task {task}: read .parallel/runs/{run_id}/tasks/{task}/prompt.md and follow it exactly."


def add_setup(run_dir: Path, task: str, start: float, issue: int, steps: dict, *, ok: bool = True,
              failed_step: str | None = None, reason: str | None = None, gh: int = 0, retries: int = 0,
              rate: int | None = None) -> float:
    """setup.sh's events for one task, starting ``start`` seconds after T0; returns the end (relative)."""
    t = start
    events.append_event(run_dir, "setup_start", task=task, t=T0 + t, mode="local")
    for name, secs in steps.items():
        events.append_event(run_dir, "step_start", task=task, t=T0 + t, step=name)
        for k in range(retries if name == "issue" else 0):
            events.append_event(run_dir, "gh_call", task=task, t=T0 + t, op="issue create", attempt=k + 1,
                                exit=1, http_status=502, rate_remaining=None, retry_after=None)
            events.append_event(run_dir, "retry", task=task, t=T0 + t, step=name, attempt=k + 1,
                                reason="HTTP 502", sleep=0.5)
        if name == "issue":
            for k in range(gh):
                events.append_event(run_dir, "gh_call", task=task, t=T0 + t, op="issue create",
                                    attempt=retries + k + 1, exit=0, http_status=200,
                                    rate_remaining=rate, retry_after=None)
        t += secs
        step_ok = not (failed_step == name)
        events.append_event(run_dir, "step_end", task=task, t=T0 + t, step=name, ok=step_ok, seconds=secs,
                            **({"reason": reason} if not step_ok else {"detail": "ok"}))
        if not step_ok:
            break
    fields = {"parallel_setup": 1, "status": "ok" if ok else "failed", "mode": "local", "issue": issue,
              "branch": f"feature/task-{issue}", "worktree": f"/abs/worktrees/task-{issue}",
              "seconds": dict(steps, total=round(t - start, 3))}
    if not ok:
        fields.update(step=failed_step, reason=reason)
    events.append_event(run_dir, "setup_end", task=task, t=T0 + t, **fields)
    return t


def synthetic_run(project: Path) -> Path:
    """Five tasks at pinned times: done, failed (setup), unverified, running, waiting (next wave)."""
    tasks = [{"id": "user-model", "title": "User model"},
             {"id": "login-endpoint", "title": "Login"},
             {"id": "docs", "title": "Docs"},
             {"id": "signup-endpoint", "title": "Signup"},
             {"id": "password-reset", "title": "Reset", "depends_on": ["user-model"]}]
    run_dir = make_run(project, tasks)
    events.append_event(run_dir, "launch", t=T0 + 0.2, wave=["user-model", "login-endpoint", "docs",
                                                               "signup-endpoint"])
    for i, task in enumerate(["user-model", "login-endpoint", "docs", "signup-endpoint"]):
        events.append_event(run_dir, "spawn", task=task, t=T0 + 1.0 + 0.3 * i, tool_use_id=f"toolu_{i}",
                            background=True, ref_bytes=180, prompt_bytes=5200)
        events.append_event(run_dir, "agent_launched", task=task, t=T0 + 1.1 + 0.3 * i,
                            tool_use_id=f"toolu_{i}", agent_id=f"a{i}")
        events.append_event(run_dir, "agent_start", task=task, t=T0 + 1.2 + 0.3 * i, agent_id=f"a{i}",
                            agent_type="parallel:parallel-task-executor")
    add_setup(run_dir, "user-model", 3.0, 1, {"issue": 0.8, "worktree": 0.4, "env": 1.2}, gh=1, rate=4990)
    add_setup(run_dir, "login-endpoint", 3.3, 2, {"issue": 0.9, "worktree": 0.5}, ok=False,
              failed_step="worktree", reason="could not lock config file .git/config", gh=1, retries=1,
              rate=4988)
    add_setup(run_dir, "docs", 3.6, 3, {"issue": 1.0, "worktree": 0.5, "env": 0.1}, gh=1, rate=4987)
    add_setup(run_dir, "signup-endpoint", 3.9, 4, {"issue": 0.7, "worktree": 0.6, "env": 2.0}, gh=1, rate=4986)
    events.append_event(run_dir, "task_end", task="user-model", t=T0 + 40.0, state="done", failed_claims=[],
                        notes=[], reason=None, log=None,
                        facts={"branch": "feature/task-1", "issue": 1, "commits": 2, "tests_exit": 0,
                               "tests_command": "pytest -q"})
    events.append_event(run_dir, "task_end", task="login-endpoint", t=T0 + 6.0, state="failed",
                        failed_claims=[], reason="setup failed at worktree: could not lock config file",
                        log=f".parallel/runs/{RUN_ID}/tasks/login-endpoint/setup.log",
                        facts={"branch": "feature/task-2", "issue": 2})
    events.append_event(run_dir, "task_end", task="docs", t=T0 + 30.0, state="unverified",
                        failed_claims=["branch: feature/task-3 has no commits beyond origin/main"],
                        facts={"branch": "feature/task-3", "issue": 3, "commits": 0, "tests_exit": 0})
    return run_dir


def pinned_synthetic_project(tmp_path: Path, monkeypatch) -> Path:
    """A project holding :func:`synthetic_run`, with status's clock pinned 50 s after planning ended."""
    from parallel_setup import status

    project = tmp_path / "widgets"
    project.mkdir()
    synthetic_run(project)
    monkeypatch.setattr(status, "_now", lambda: T0 + 50.0)
    return project


# --------------------------------------------------------------------------
# A finished run made by the real setup scripts (cleanup, merge)


class FinishedRun:
    """What :func:`finished_run` made: the project, the run and each task's facts."""

    def __init__(self, project: Path, run, commits: dict, foreign: dict):
        self.project = project
        self.run = run
        #: task id -> the commit its branch ended at
        self.commits = commits
        #: what the user made with the run's names: {"branch": (name, commit), "worktree": path, ...}
        self.foreign = foreign

    def branch(self, task: str) -> str:
        import json as _json
        return _json.loads((self.run.task_dir(task) / "setup.json").read_text())["branch"]


def finished_run(root: Path) -> FinishedRun:
    """Six tasks set up by their real setup.sh (local issues, a bare origin), then worked on:

    * ``dirty``: its setup made a ``.venv`` and a ``node_modules``; one commit, unpushed, and
      uncommitted changes (a modified tracked file, an untracked file);
    * ``pushed``: one commit, pushed to origin;
    * ``unpushed``: one commit, not pushed, clean;
    * ``merged``: one commit, merged into main and pushed;
    * ``reused``: the user had a branch ``feature/task-5`` before the run, the name a GitHub-mode
      task 5 would take; local-mode tasks are named ``feature/local-N``, so the run never touches it;
    * ``replaced``: after its setup the user removed its worktree and branch and made their own
      of the same names (a worktree with uncommitted work, a branch at another commit).

    Every task has ended ``done`` in the event log.
    """
    import subprocess as _sp

    import yaml

    from parallel_setup import runs as _runs
    from parallel_setup.plans import parse_plan
    from tests.support.git import git, git_commit, make_repo

    project = make_repo(root)
    git(project, "switch", "-q", "-c", "feature/task-5")
    users_commit = git_commit(project, "the user's own work", {"mine.txt": "mine\n"})
    git(project, "switch", "-q", "main")
    tasks = [{"id": t, "title": f"Task {t}", "description": f"Do {t}."}
             for t in ("dirty", "pushed", "unpushed", "merged", "reused", "replaced")]
    tasks[0]["setup"] = ("python3 -m venv --without-pip .venv && mkdir -p node_modules/left-pad && "
                         "echo 'module.exports = 1' > node_modules/left-pad/index.js")
    plan = parse_plan(yaml.safe_dump({"schema_version": 1, "name": "finished", "goal": "A finished run.",
                                      "defaults": {"setup": "none"}, "tasks": tasks}, sort_keys=False),
                      "plan.yaml", max_tasks=100)
    run = _runs.create_run(project, plan, mode="local", fetch=False)
    for t in run.tasks:  # one after another: local issues 1..6 in plan order
        result = _runs.run_setup(run, t, timeout=120)
        assert result["status"] == "ok", result
    commits = {}
    for i, t in enumerate(run.tasks, start=1):
        wt = project / "worktrees" / f"local-{i}"
        if t in ("reused", "replaced") or not wt.exists():
            continue
        (wt / f"{t}.txt").write_text(f"{t}\n", encoding="utf-8")
        git(wt, "add", f"{t}.txt")  # only the work: not the .venv the environment step made
        git(wt, "commit", "-q", "-m", f"{t}: the task's work\n\nCloses #{i}")
        commits[t] = git(wt, "rev-parse", "HEAD").stdout.strip()
    wt1 = project / "worktrees" / "local-1"
    (wt1 / "README.md").write_text("# widgets\n\nchanged, not committed\n", encoding="utf-8")
    (wt1 / "notes.txt").write_text("untracked notes\n", encoding="utf-8")
    git(project / "worktrees" / "local-2", "push", "-q", "origin", "feature/local-2")
    git(project, "merge", "-q", "--no-ff", "-m", "Merge task merged", "feature/local-4")
    git(project, "push", "-q", "origin", "main")
    git(project, "fetch", "-q", "origin")
    # The user replaces task 6's worktree and branch with their own, of the same names.
    git(project, "worktree", "remove", str(project / "worktrees" / "local-6"))
    git(project, "branch", "-q", "-D", "feature/local-6")
    git(project, "worktree", "add", "-q", "-b", "feature/local-6", str(project / "worktrees" / "local-6"), "main")
    (project / "worktrees" / "local-6" / "users-draft.txt").write_text("draft\n", encoding="utf-8")
    for i, t in enumerate(run.tasks, start=1):
        report = {"parallel_report": 1, "run": run.id, "task": t, "status": "done", "issue": i,
                  "branch": f"feature/local-{i}", "commits": [commits[t]] if t in commits else [],
                  "pushed": t in ("pushed", "merged")}
        (run.task_dir(t) / "report.json").write_text(json.dumps(report), encoding="utf-8")
        events.append_event(run.dir, "task_end", task=t, state="done", failed_claims=[], notes=[],
                            reason=None, log=None, facts={"branch": f"feature/local-{i}"}, via="test")
    foreign = {"branch": ("feature/task-5", users_commit),
               "replaced_branch": ("feature/local-6", _sp.run(["git", "rev-parse", "feature/local-6"], cwd=project,
                                                             capture_output=True, text=True).stdout.strip()),
               "worktree": project / "worktrees" / "local-6"}
    return FinishedRun(project, run, commits, foreign)

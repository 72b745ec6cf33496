"""A run's state and metrics, rebuilt from its event log (standard library only).

Used by ``parallel-setup status`` and by the hooks' run summary. Metric definitions
follow DESIGN.md:

* run setup time: planning ended (``run.json`` ``created_at``) to the last task's setup end;
* parallel efficiency: sum of task setup times / (N x run setup time);
* error rate: failed tasks / tasks, and failed attempts / attempts (each ``step_end`` and
  each ``retry`` is an attempt; a ``retry`` or a ``step_end`` with ``ok: false`` failed);
* API usage: ``gh_call`` events (retries included) and the last known rate limit left;
* sequential estimate: the traditional flow for the same N with the measured step times:
  the spawn phase (planning ended to the last spawn) + every task's issue, worktree and env
  seconds one after another.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from . import events

STEPS = ("issue", "worktree", "env")
ENDED = ("done", "failed", "unverified")
STATES = ("done", "failed", "unverified", "running", "waiting")


def _now() -> float:
    return time.time()


@dataclass
class TaskStatus:
    id: str
    title: str = ""
    depends_on: list = field(default_factory=list)
    state: str = "waiting"          # waiting | running | done | failed | unverified
    phase: str = ""                 # next-wave | queued | starting | setup | setup-failed | working | ended
    issue: int | None = None
    issue_url: str | None = None
    branch: str | None = None
    agent_id: str | None = None
    spawned: float | None = None    # seconds since planning ended
    setup_start: float | None = None
    setup_end: float | None = None
    ended: float | None = None
    steps: dict = field(default_factory=dict)   # step -> {"start", "end", "seconds", "ok"}
    setup_seconds: float | None = None
    work_seconds: float | None = None
    total_seconds: float | None = None
    setup_status: str | None = None
    failed_claims: list = field(default_factory=list)
    notes: list = field(default_factory=list)
    reason: str | None = None
    log: str | None = None
    commits: int | None = None
    tests_exit: int | None = None
    tests_command: str | None = None
    gh_calls: int = 0
    retries: int = 0


@dataclass
class RunStatus:
    id: str
    project: str
    created_at: float
    now: float
    plan_name: str = ""
    issue_mode: str | None = None
    repository: str | None = None
    base_ref: str | None = None
    tasks: list = field(default_factory=list)
    counts: dict = field(default_factory=dict)
    metrics: dict = field(default_factory=dict)
    next_wave: list = field(default_factory=list)    # waiting tasks whose dependencies are done
    blocked: list = field(default_factory=list)      # waiting tasks with a failed dependency

    def task(self, task_id: str) -> TaskStatus | None:
        return next((t for t in self.tasks if t.id == task_id), None)

    def to_dict(self) -> dict:
        """Plain data for ``--json``; times rounded to milliseconds."""
        return _rounded(asdict(self))


def _rounded(value):
    if isinstance(value, float):
        return round(value, 3)
    if isinstance(value, dict):
        return {k: _rounded(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_rounded(v) for v in value]
    return value


def runs_root(project) -> Path:
    return Path(project) / ".parallel" / "runs"


def latest_run(project) -> str | None:
    root = runs_root(project)
    try:
        ids = [e.name for e in os.scandir(root) if e.is_dir() and (Path(e.path) / "run.json").is_file()]
    except OSError:
        return None
    return max(ids) if ids else None


def _plan_tasks(run_info: dict) -> list[dict]:
    plan = run_info.get("plan") if isinstance(run_info.get("plan"), dict) else {}
    tasks = plan.get("tasks") if isinstance(plan.get("tasks"), list) else []
    return [t for t in tasks if isinstance(t, dict) and isinstance(t.get("id"), str)]


def load_run(project, run_id: str, now: float | None = None) -> RunStatus:
    """The run's state. Raises FileNotFoundError when ``run.json`` is missing."""
    project = Path(project)
    run_dir = runs_root(project) / run_id
    with open(run_dir / "run.json", encoding="utf-8") as f:
        info = json.load(f)
    created = float(info.get("created_at") or 0)
    now = _now() if now is None else now
    plan_tasks = {t["id"]: t for t in _plan_tasks(info)}
    order = [t for t in info.get("tasks") or list(plan_tasks) if isinstance(t, str)]
    st = RunStatus(id=run_id, project=str(project), created_at=created, now=now,
                   plan_name=str((info.get("plan") or {}).get("name") or ""),
                   issue_mode=info.get("issue_mode"), repository=info.get("repository"),
                   base_ref=info.get("base_ref"))
    tasks = {tid: TaskStatus(id=tid, title=str(plan_tasks.get(tid, {}).get("title") or ""),
                             depends_on=list(plan_tasks.get(tid, {}).get("depends_on") or []))
             for tid in order}
    launched: set[str] = set()
    saw_launch = False
    agg = {"attempts": 0, "failed_attempts": 0, "gh_calls": 0, "gh_retries": 0, "rate_remaining": None,
           "spawn_last": None, "first_spawn": None}

    def rel(t):
        return float(t) - created if isinstance(t, (int, float)) else None

    for ev in events.iter_events(run_dir):
        kind, tid = ev.get("event"), ev.get("task")
        t = rel(ev.get("t"))
        if kind == "launch":
            saw_launch = True
            launched.update(x for x in ev.get("wave") or [] if isinstance(x, str))
            continue
        if kind == "gh_call":
            agg["gh_calls"] += 1
            if isinstance(ev.get("attempt"), int) and ev["attempt"] > 1:
                agg["gh_retries"] += 1
            if isinstance(ev.get("rate_remaining"), int):
                agg["rate_remaining"] = ev["rate_remaining"]
        if kind == "retry":
            agg["attempts"] += 1
            agg["failed_attempts"] += 1
        if kind == "step_end":
            agg["attempts"] += 1
            if ev.get("ok") is False:
                agg["failed_attempts"] += 1
        task = tasks.get(tid) if isinstance(tid, str) else None
        if task is None:
            continue
        if kind == "spawn":
            launched.add(tid)
            if task.spawned is None:
                task.spawned = t
            agg["spawn_last"] = t if agg["spawn_last"] is None else max(agg["spawn_last"], t)
        elif kind in ("agent_launched", "agent_start"):
            launched.add(tid)
            task.agent_id = ev.get("agent_id") or task.agent_id
            if task.spawned is None:
                task.spawned = t
        elif kind == "setup_start":
            task.setup_start = t
        elif kind == "step_start" and ev.get("step"):
            task.steps.setdefault(ev["step"], {})["start"] = t
        elif kind == "step_end" and ev.get("step"):
            step = task.steps.setdefault(ev["step"], {})
            secs = ev.get("seconds")
            step["end"] = t
            if isinstance(secs, (int, float)):
                step["seconds"] = float(secs)
                step.setdefault("start", t - float(secs))
            elif step.get("start") is not None:
                step["seconds"] = t - step["start"]
            step["ok"] = ev.get("ok", True) is not False
        elif kind == "gh_call":
            task.gh_calls += 1
        elif kind == "retry":
            task.retries += 1
        elif kind == "setup_end":
            task.setup_end = t
            task.setup_status = ev.get("status")
            task.issue = ev.get("issue") if isinstance(ev.get("issue"), int) else task.issue
            task.issue_url = ev.get("issue_url") or task.issue_url
            task.branch = ev.get("branch") or task.branch
            secs = ev.get("seconds") if isinstance(ev.get("seconds"), dict) else {}
            for name in STEPS:
                if isinstance(secs.get(name), (int, float)) and "seconds" not in task.steps.get(name, {}):
                    task.steps.setdefault(name, {})["seconds"] = float(secs[name])
            if task.setup_start is None and isinstance(secs.get("total"), (int, float)):
                task.setup_start = t - float(secs["total"])
            if ev.get("status") == "failed":
                task.reason = ev.get("reason") or task.reason
        elif kind == "task_end":
            task.ended = t
            task.state = ev.get("state") if ev.get("state") in ENDED else "unverified"
            task.failed_claims = list(ev.get("failed_claims") or [])
            task.notes = list(ev.get("notes") or [])
            task.reason = ev.get("reason") or task.reason
            task.log = ev.get("log") or task.log
            facts = ev.get("facts") if isinstance(ev.get("facts"), dict) else {}
            task.branch = facts.get("branch") or task.branch
            task.issue = facts.get("issue") if isinstance(facts.get("issue"), int) else task.issue
            task.commits = facts.get("commits") if isinstance(facts.get("commits"), int) else None
            task.tests_exit = facts.get("tests_exit") if isinstance(facts.get("tests_exit"), int) else None
            task.tests_command = facts.get("tests_command")

    if not saw_launch:  # no launch events: the first wave is every task without dependencies
        launched.update(tid for tid, task in tasks.items() if not task.depends_on)
    for tid, task in tasks.items():
        _finish_task(task, tid in launched, now - created, run_dir, project)
    st.tasks = list(tasks.values())
    st.counts = {s: sum(1 for t in st.tasks if t.state == s) for s in STATES}
    by_id = {t.id: t for t in st.tasks}
    for task in st.tasks:
        if task.state != "waiting" or task.phase != "next-wave":
            continue
        deps = [by_id.get(d) for d in task.depends_on]
        if any(d is not None and d.state in ("failed", "unverified") for d in deps):
            st.blocked.append(task.id)
        elif all(d is None or d.state == "done" for d in deps):
            st.next_wave.append(task.id)
    st.metrics = _metrics(st, agg)
    return st


def _finish_task(task: TaskStatus, launched: bool, elapsed: float, run_dir: Path, project: Path) -> None:
    if task.setup_start is not None and task.setup_end is not None:
        task.setup_seconds = max(0.0, task.setup_end - task.setup_start)
    if task.state in ENDED:
        task.phase = "ended"
        end = task.ended
    elif task.spawned is not None or task.setup_start is not None:
        task.state = "running"
        task.phase = ("working" if task.setup_end is not None and task.setup_status != "failed"
                      else "setup-failed" if task.setup_status == "failed"
                      else "setup" if task.setup_start is not None else "starting")
        end = elapsed
    else:
        task.state = "waiting"
        task.phase = "queued" if launched else "next-wave"
        end = None
    if end is not None and task.setup_end is not None:
        task.work_seconds = max(0.0, end - task.setup_end)
    start = task.spawned if task.spawned is not None else task.setup_start
    if end is not None and start is not None:
        task.total_seconds = max(0.0, end - start)
    if task.log is None and task.state in ("failed", "unverified", "running"):
        task.log = os.path.relpath(run_dir / "tasks" / task.id / "setup.log", project)


def _metrics(st: RunStatus, agg: dict) -> dict:
    set_up = [t for t in st.tasks if t.setup_seconds is not None]
    started = [t for t in st.tasks if t.state != "waiting" or t.phase == "queued"]
    pending_setup = [t.id for t in started if t.setup_end is None and t.state == "running"]
    m: dict = {"tasks": len(st.tasks), "tasks_set_up": len(set_up), "setup_pending": pending_setup}
    last_end = max((t.setup_end for t in set_up), default=None)
    run_setup = last_end if last_end is not None else None
    m["run_setup_seconds"] = run_setup
    m["run_setup_complete"] = bool(set_up) and not pending_setup
    total_task_setup = sum(t.setup_seconds for t in set_up)
    m["sum_task_setup_seconds"] = total_task_setup if set_up else None
    m["parallel_efficiency"] = (total_task_setup / (len(set_up) * run_setup)
                                if set_up and run_setup and run_setup > 0 else None)
    failed = st.counts.get("failed", 0)
    m["failed_tasks"] = failed
    m["task_error_rate"] = failed / len(st.tasks) if st.tasks else None
    m["attempts"] = agg["attempts"]
    m["failed_attempts"] = agg["failed_attempts"]
    m["attempt_error_rate"] = agg["failed_attempts"] / agg["attempts"] if agg["attempts"] else None
    m["gh_calls"] = agg["gh_calls"]
    m["gh_retries"] = agg["gh_retries"]
    m["rate_limit_remaining"] = agg["rate_remaining"]
    step_totals = {name: sum(t.steps.get(name, {}).get("seconds") or 0.0 for t in st.tasks) for name in STEPS}
    m["step_seconds"] = step_totals
    spawn_phase = agg["spawn_last"]
    m["spawn_phase_seconds"] = spawn_phase
    if set_up:
        m["sequential_estimate_seconds"] = (spawn_phase or 0.0) + sum(step_totals.values())
        m["speedup"] = (m["sequential_estimate_seconds"] / run_setup) if run_setup else None
    else:
        m["sequential_estimate_seconds"] = None
        m["speedup"] = None
    return m

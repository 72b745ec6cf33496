"""A run's state and metrics, rebuilt from its event log (standard library only).

Used by ``parallel-setup status`` and by the hooks' run summary. Metric definitions
follow DESIGN.md:

* run setup time: planning ended (``run.json`` ``created_at``) to the last task's setup end;
  with dependency waves, the sum of each wave's setup time, from that wave's ``launch`` to
  its last task's setup end (the waiting between waves is not setup);
* parallel efficiency: sum of task setup times / sum over waves of (tasks set up in the wave
  x the wave's setup time); one wave: sum / (N x run setup time);
* error rate: failed tasks (``failed`` and ``setup_failed``) / tasks, and failed attempts /
  attempts (each ``step_end`` and each ``retry`` is an attempt; a ``retry`` or a
  ``step_end`` with ``ok: false`` failed);
* API usage: ``gh_call`` events (retries included) and the last known rate limit left;
* sequential estimate: the traditional flow for the same N with the measured step times:
  the spawn phase (each wave's launch to its last spawn) + every task's issue, worktree and
  env seconds one after another.

Task states are not derived here: :mod:`task_state` derives them, for every reader.
"""

from __future__ import annotations

import json
import os
import time

from . import events, task_state

STEPS = ("issue", "worktree", "env")
ENDED = task_state.ENDED
STATES = task_state.STATES
#: A dependency in one of these states holds its dependents back until it is fixed.
STUCK = task_state.RETRYABLE + ("lost",)

# The Stop and UserPromptSubmit hooks import this module: it uses plain classes instead of
# ``dataclasses`` and ``os.path`` instead of ``pathlib`` (each import costs every hook call).
_REQUIRED = object()


def _now() -> float:
    return time.time()


class _Record:
    """A small data class: fields in ``_FIELDS`` order, set by keyword (or position), with
    defaults (a list or dict default is copied for each instance)."""

    __slots__ = ()
    _FIELDS: tuple = ()  # (name, default or _REQUIRED)

    def __init__(self, *args, **kwargs):
        if len(args) > len(self._FIELDS):
            raise TypeError(f"{type(self).__name__}() takes at most {len(self._FIELDS)} positional arguments")
        for (name, default), value in zip(self._FIELDS, args):
            if name in kwargs:
                raise TypeError(f"{type(self).__name__}() got multiple values for argument {name!r}")
            kwargs[name] = value
        for name, default in self._FIELDS:
            if name in kwargs:
                value = kwargs.pop(name)
            elif default is _REQUIRED:
                raise TypeError(f"{type(self).__name__}() missing required argument: {name!r}")
            else:
                value = default.copy() if isinstance(default, (list, dict)) else default
            setattr(self, name, value)
        if kwargs:
            raise TypeError(f"{type(self).__name__}() got an unexpected keyword argument {next(iter(kwargs))!r}")

    def _values(self) -> tuple:
        return tuple(getattr(self, name) for name, _ in self._FIELDS)

    def __eq__(self, other):
        return self._values() == other._values() if type(other) is type(self) else NotImplemented

    __hash__ = None

    def __repr__(self) -> str:
        return f"{type(self).__name__}(" + ", ".join(f"{name}={getattr(self, name)!r}"
                                                     for name, _ in self._FIELDS) + ")"


class TaskStatus(_Record):
    _FIELDS = (
        ("id", _REQUIRED),
        ("title", ""),
        ("depends_on", []),
        ("state", "pending"),         # a task_state.STATES value (the one derivation)
        ("phase", ""),                # next-wave | queued | starting | setup | working | verifying | ended
        ("issue", None),
        ("issue_url", None),
        ("branch", None),
        ("agent_id", None),
        ("spawned", None),            # seconds since planning ended
        ("setup_start", None),
        ("setup_end", None),
        ("ended", None),
        ("steps", {}),                # step -> {"start", "end", "seconds", "ok"}
        ("setup_seconds", None),
        ("work_seconds", None),
        ("total_seconds", None),
        ("setup_status", None),
        ("failed_claims", []),
        ("notes", []),
        ("reason", None),
        ("log", None),
        ("commits", None),
        ("tests_exit", None),
        ("tests_command", None),
        ("gh_calls", 0),
        ("retries", 0),
        ("permission_denials", []),   # [{"tool", "command"}]: calls Claude Code refused the subagent
    )
    __slots__ = tuple(name for name, _ in _FIELDS)


class RunStatus(_Record):
    _FIELDS = (
        ("id", _REQUIRED),
        ("project", _REQUIRED),
        ("created_at", _REQUIRED),
        ("now", _REQUIRED),
        ("plan_name", ""),
        ("issue_mode", None),
        ("repository", None),
        ("base_ref", None),
        ("tasks", []),
        ("counts", {}),
        ("metrics", {}),
        ("next_wave", []),            # pending tasks whose dependencies are done
        ("blocked", []),              # pending tasks with a dependency that needs fixing
    )
    __slots__ = tuple(name for name, _ in _FIELDS)

    def task(self, task_id: str) -> TaskStatus | None:
        return next((t for t in self.tasks if t.id == task_id), None)

    def to_dict(self) -> dict:
        """Plain data for ``--json`` (nested records become dicts); times rounded to milliseconds."""
        return _rounded(self)


def denials_text(task: TaskStatus, limit: int = 3) -> str:
    """``permission denied: Bash `git commit ...`; Write /abs/x`` for the tool calls Claude Code refused."""
    shown = []
    for d in task.permission_denials[:limit]:
        what = " ".join(str(d.get("command") or "").split())
        shown.append(f"{d.get('tool') or '?'}" + (f" `{what[:120]}{'...' if len(what) > 120 else ''}`" if what else ""))
    more = len(task.permission_denials) - limit
    return "permission denied: " + "; ".join(shown) + (f" (and {more} more)" if more > 0 else "")


def _rounded(value):
    if isinstance(value, float):
        return round(value, 3)
    if isinstance(value, _Record):
        return {name: _rounded(getattr(value, name)) for name, _ in value._FIELDS}
    if isinstance(value, dict):
        return {k: _rounded(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_rounded(v) for v in value]
    return value


def _runs_dir(project) -> str:
    return os.path.join(os.fspath(project), ".parallel", "runs")


def runs_root(project):
    """``project/.parallel/runs`` as a ``pathlib.Path``."""
    from pathlib import Path
    return Path(_runs_dir(project))


def latest_run(project) -> str | None:
    root = _runs_dir(project)
    try:
        ids = [e.name for e in os.scandir(root) if e.is_dir() and os.path.isfile(os.path.join(e.path, "run.json"))]
    except OSError:
        return None
    return max(ids) if ids else None


def _plan_tasks(run_info: dict) -> list[dict]:
    plan = run_info.get("plan") if isinstance(run_info.get("plan"), dict) else {}
    tasks = plan.get("tasks") if isinstance(plan.get("tasks"), list) else []
    return [t for t in tasks if isinstance(t, dict) and isinstance(t.get("id"), str)]


class RunDamaged(ValueError):
    """run.json exists but cannot be used (not JSON, not a run)."""


def read_run_info(run_dir: str) -> dict:
    """run.json as a dict. FileNotFoundError when missing; RunDamaged when it is not a run."""
    path = os.path.join(run_dir, "run.json")
    try:
        with open(path, encoding="utf-8") as f:
            info = json.load(f)
    except (UnicodeDecodeError, ValueError) as e:
        raise RunDamaged(f"{path} is damaged ({e}); restore it, or start a new run with /parallel:execute") from None
    if not isinstance(info, dict) or not isinstance(info.get("tasks", []), list):
        raise RunDamaged(f"{path} is not a run (expected a JSON object with a list of tasks); "
                         "restore it, or start a new run with /parallel:execute")
    return info


def load_run(project, run_id: str, now: float | None = None) -> RunStatus:
    """The run's state. Raises FileNotFoundError when ``run.json`` is missing, RunDamaged when
    it cannot be read. Task states come from :func:`task_state.derive` (the one derivation)."""
    project = os.fspath(project)
    run_dir = os.path.join(_runs_dir(project), run_id)
    info = read_run_info(run_dir)
    created = info.get("created_at")
    created = float(created) if events._finite(created) else 0.0
    now = _now() if now is None else now
    plan_tasks = {t["id"]: t for t in _plan_tasks(info)}
    order = [t for t in info.get("tasks") or list(plan_tasks) if isinstance(t, str)]
    st = RunStatus(id=run_id, project=project, created_at=created, now=now,
                   plan_name=str((info.get("plan") or {}).get("name") or ""),
                   issue_mode=info.get("issue_mode"), repository=info.get("repository"),
                   base_ref=info.get("base_ref"))
    tasks = {tid: TaskStatus(id=tid, title=str(plan_tasks.get(tid, {}).get("title") or ""),
                             depends_on=[d for d in plan_tasks.get(tid, {}).get("depends_on") or []
                                         if isinstance(d, str)])
             for tid in order}
    agg = {"attempts": 0, "failed_attempts": 0, "gh_calls": 0, "gh_retries": 0, "rate_remaining": None,
           "launches": [], "spawns": {}}
    records = task_state.attributed_events(run_dir)

    def rel(t):
        return float(t) - created

    for ev in records:
        kind, tid = ev.get("event"), ev.get("task")
        t = rel(ev["t"])
        if kind == "launch":
            agg["launches"].append((t, [x for x in ev.get("wave") or [] if x in tasks]))
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
            if task.spawned is None:
                task.spawned = t
            agg["spawns"].setdefault(tid, []).append(t)
        elif kind in ("agent_launched", "agent_start"):
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
            secs = ev.get("seconds") if isinstance(ev.get("seconds"), dict) else {}
            for name in STEPS:
                if isinstance(secs.get(name), (int, float)) and "seconds" not in task.steps.get(name, {}):
                    task.steps.setdefault(name, {})["seconds"] = float(secs[name])
            if task.setup_start is None and isinstance(secs.get("total"), (int, float)):
                task.setup_start = t - float(secs["total"])
        elif kind == "task_end":
            task.ended = t
            task.notes = [str(n) for n in ev.get("notes") or []]
            task.log = ev.get("log") or task.log
            facts = ev.get("facts") if isinstance(ev.get("facts"), dict) else {}
            task.commits = facts.get("commits") if isinstance(facts.get("commits"), int) else None
            task.tests_exit = facts.get("tests_exit") if isinstance(facts.get("tests_exit"), int) else None
            task.tests_command = facts.get("tests_command") if isinstance(facts.get("tests_command"), str) else None

    derived = task_state.derive(run_dir, order, now=now, records=records)
    for tid, task in tasks.items():
        d = derived[tid]
        task.state, task.reason, task.failed_claims = d.state, d.reason, list(d.failed_claims)
        task.issue, task.issue_url, task.branch = d.issue, d.issue_url, d.branch
        task.agent_id = d.agent_id or task.agent_id
        if d.state == "lost" and d.last_seen is not None:
            task.ended = rel(d.last_seen)
        _finish_task(task, d, now - created, run_dir, project)
    st.tasks = list(tasks.values())
    st.counts = task_state.counts(derived)
    by_id = {t.id: t for t in st.tasks}
    for task in st.tasks:
        if task.state != "pending" or task.phase != "next-wave":
            continue
        deps = [by_id.get(d) for d in task.depends_on]
        if any(d is not None and d.state in STUCK for d in deps):
            st.blocked.append(task.id)
        elif all(d is None or d.state == "done" for d in deps):
            st.next_wave.append(task.id)
    st.metrics = _metrics(st, agg)
    return st


def _finish_task(task: TaskStatus, derived, elapsed: float, run_dir: str, project: str) -> None:
    task.permission_denials = list(derived.permission_denials)
    if task.setup_start is not None and task.setup_end is not None:
        task.setup_seconds = max(0.0, task.setup_end - task.setup_start)
    if task.state in ENDED:
        task.phase = "ended"
        if task.ended is None and task.state == "setup_failed":
            task.ended = task.setup_end
        end = task.ended
    elif task.state == "running":
        task.phase = ("verifying" if derived.ending is not None
                      else "working" if task.setup_end is not None
                      else "setup" if task.setup_start is not None
                      else "starting" if task.spawned is not None else "queued")
        end = elapsed
    else:
        task.phase = "next-wave"
        end = None
    if end is not None and task.setup_end is not None:
        task.work_seconds = max(0.0, end - task.setup_end)
    start = task.spawned if task.spawned is not None else task.setup_start
    if end is not None and start is not None:
        task.total_seconds = max(0.0, end - start)
    if task.log is None and task.state not in ("done", "pending"):
        task.log = os.path.relpath(os.path.join(run_dir, "tasks", task.id, "setup.log"), project)


def _waves(st: RunStatus, agg: dict) -> list[dict]:
    """Each launch wave's setup: from its launch (the first: planning ended) to its last task
    set up. Without launch events (a hand-made run) every task is one wave."""
    launches = agg["launches"] or [(0.0, [t.id for t in st.tasks])]
    waves = [{"number": i + 1, "launched": 0.0 if i == 0 else t, "tasks": [], "set_up": [], "spawn_last": None}
             for i, (t, _) in enumerate(launches)]
    for task in st.tasks:
        if task.setup_end is None:
            continue
        begin = task.setup_start if task.setup_start is not None else task.setup_end
        index = 0
        for i, (t, members) in enumerate(launches):  # the latest launch of this task before its setup
            if t <= begin + 1e-6 and (task.id in members or not members):
                index = i
        waves[index]["set_up"].append(task)
    for i, (t, members) in enumerate(launches):
        waves[i]["tasks"] = list(members)
        for tid in members:
            spawns = [s for s in agg["spawns"].get(tid, []) if s >= waves[i]["launched"] - 1e-6]
            if spawns:
                last = min(spawns)
                waves[i]["spawn_last"] = last if waves[i]["spawn_last"] is None else max(waves[i]["spawn_last"], last)
    out = []
    for w in waves:
        ends = [task.setup_end for task in w["set_up"]]
        setup = max(0.0, max(ends) - w["launched"]) if ends else None
        spawn = None if w["spawn_last"] is None else max(0.0, w["spawn_last"] - w["launched"])
        out.append({"number": w["number"], "launched": w["launched"], "tasks": len(w["tasks"]),
                    "tasks_set_up": len(ends), "setup_seconds": setup,
                    "sum_task_setup_seconds": sum(task.setup_seconds or 0.0 for task in w["set_up"]),
                    "spawn_phase_seconds": spawn})
    return out


#: How each state is named in a sentence.
STATE_WORDS = {"setup_failed": "setup failed"}


def counts_text(counts: dict) -> str:
    """``1 done, 0 failed, 1 setup failed, ...``: the five common states always, the rare ones when present."""
    shown = [s for s in STATES if counts.get(s) or s in ("done", "failed", "unverified", "running", "pending")]
    order = ("done", "failed", "setup_failed", "unverified", "lost", "running", "pending")
    return ", ".join(f"{counts.get(s, 0)} {STATE_WORDS.get(s, s)}" for s in order if s in shown)


def _metrics(st: RunStatus, agg: dict) -> dict:
    set_up = [t for t in st.tasks if t.setup_seconds is not None]
    pending_setup = [t.id for t in st.tasks if t.state == "running" and t.setup_end is None]
    m: dict = {"tasks": len(st.tasks), "tasks_set_up": len(set_up), "setup_pending": pending_setup}
    waves = [w for w in _waves(st, agg) if w["setup_seconds"] is not None]
    m["waves"] = waves
    run_setup = sum(w["setup_seconds"] for w in waves) if waves else None
    m["run_setup_seconds"] = run_setup
    m["run_setup_complete"] = bool(set_up) and not pending_setup
    total_task_setup = sum(t.setup_seconds for t in set_up)
    m["sum_task_setup_seconds"] = total_task_setup if set_up else None
    capacity = sum(w["tasks_set_up"] * w["setup_seconds"] for w in waves)
    m["parallel_efficiency"] = total_task_setup / capacity if set_up and capacity > 0 else None
    failed = st.counts.get("failed", 0) + st.counts.get("setup_failed", 0)
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
    spawns = [w["spawn_phase_seconds"] for w in waves if w["spawn_phase_seconds"] is not None]
    spawn_phase = sum(spawns) if spawns else None
    m["spawn_phase_seconds"] = spawn_phase
    if set_up:
        m["sequential_estimate_seconds"] = (spawn_phase or 0.0) + sum(step_totals.values())
        m["speedup"] = (m["sequential_estimate_seconds"] / run_setup) if run_setup else None
    else:
        m["sequential_estimate_seconds"] = None
        m["speedup"] = None
    return m

"""Runs: create one from a plan, render every task's files, load it again, decide what to launch.

The Python API the ``execute`` command, the demo and the benchmarks share::

    from parallel_setup import runs
    run = runs.create_run(project, ".parallel/plans/x.yaml", mode="local", fetch=False)
    for task_id in run.tasks:
        result = runs.run_setup(run, task_id)      # bash setup.sh; its final JSON line as a dict
    states = runs.task_states(run)                 # what each task is doing, from the event log
    launch, waiting = runs.plan_launch(run, states)

``create_run`` writes ``.parallel/runs/<run-id>/`` (see docs/architecture.md):
``run.json``, ``events.jsonl``, and per task ``prompt.md``, ``setup.sh``,
``issue-title.txt``, ``issue-body.md``, ``local-issue.md`` (and ``env-setup.sh`` when the
task has its own setup command). It never runs plan text: titles and bodies are files
the setup script reads; every other value in the script is shell-quoted.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple, Union

from . import __version__, environments, events, ports, task_state, trusted
from .errors import FatalError
from .gitutil import default_branch, ensure_excluded, git, git_common_dir, is_bare
from .issue_mode import ModeDecision, decide_mode
from .paths import (BRANCH_PREFIX, LOCAL_BRANCH_PREFIX, LOCAL_WORKTREE_PREFIX, WORKTREE_PREFIX,  # noqa: F401
                    name_prefixes, run_dir as _run_dir, runs_dir)
from .plans import GITHUB_BODY_MAX, GITHUB_TITLE_MAX, Plan, PlanInvalid, Task, load_plan_file, parse_plan
from .render import make_environment, render

FORMAT = 1
DEFAULT_MAX_CONCURRENCY = 20  # Claude Code's own cap on concurrent subagents
SUBAGENT_TYPE = "parallel:parallel-task-executor"
#: Seconds within which setup.sh's waits (another copy, GitHub, git) end: well inside
#: Claude Code's 2-minute default Bash timeout. PARALLEL_SETUP_DEADLINE overrides it.
SETUP_DEADLINE = 90
ISSUE_UPDATES = ("comment", "none")
LABEL_COLOR = "5319e7"
LABEL_DESCRIPTION = "Created by parallel (Claude Code plugin)"

#: A task's state, as ``task_states`` reports it (see ``task_state``).
STATES = task_state.STATES
FINISHED = ("done", "unverified")
TaskState = task_state.TaskState


# --------------------------------------------------------------------------
# The run


@dataclass
class Run:
    """A run on disk: ``.parallel/runs/<id>/``. ``data`` is run.json."""

    project: Path
    id: str
    data: Dict[str, Any]
    plan: Plan

    @property
    def dir(self) -> Path:
        return _run_dir(self.project, self.id)

    run_dir = dir  # the demo's name for it

    @property
    def tasks(self) -> List[str]:
        return list(self.data["tasks"])

    @property
    def mode(self) -> str:
        return self.data["issue_mode"]

    @property
    def created_at(self) -> float:
        return float(self.data["created_at"])

    def task_dir(self, task_id: str) -> Path:
        self._check(task_id)
        return self.dir / "tasks" / task_id

    def prompt_path(self, task_id: str) -> Path:
        return self.task_dir(task_id) / "prompt.md"

    def setup_script(self, task_id: str) -> Path:
        return self.task_dir(task_id) / "setup.sh"

    def setup_result(self, task_id: str) -> Optional[dict]:
        """setup.json (the setup script's final line), or None."""
        return _read_json(self.task_dir(task_id) / "setup.json")

    def relative(self, path: Path) -> str:
        try:
            return str(path.relative_to(self.project))
        except ValueError:
            return str(path)

    def short_reference(self, task_id: str, foreground: bool = False) -> Dict[str, Any]:
        """The Agent call input the main agent writes for a task (at most 300 bytes as JSON)."""
        call: Dict[str, Any] = {
            "description": task_id,
            "subagent_type": SUBAGENT_TYPE,
            # The description carries the task id; the prompt only points at the file
            # (the PreToolUse hook swaps in its content). 281 bytes at most with a 40-character id.
            "prompt": f"Parallel task: read {self.relative(self.prompt_path(task_id))} and follow it exactly.",
        }
        if foreground:
            call["run_in_background"] = False
        return call

    def event(self, event: str, **fields: Any) -> dict:
        return events.append_event(self.dir, event, **fields)

    def _check(self, task_id: str) -> None:
        if task_id not in self.data["tasks"]:
            raise FatalError(f"run {self.id} has no task '{task_id}' (tasks: {', '.join(self.data['tasks'])})")


def reference_json(call: Mapping[str, Any]) -> str:
    """An Agent call's input as compact JSON (what the size limit is measured on)."""
    return json.dumps(call, ensure_ascii=False, separators=(",", ":"))


def new_run_id(now: Optional[float] = None, suffix: Optional[str] = None) -> str:
    """``YYYYmmdd-HHMMSS-xxxx`` (UTC, 4 random hex digits)."""
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime(time.time() if now is None else now))
    return f"{stamp}-{suffix or secrets.token_hex(2)}"


def _read_json(path: Path) -> Optional[dict]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _write_atomic(path: Path, text: str, mode: Optional[int] = None) -> None:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(text, encoding="utf-8")
    if mode is not None:
        os.chmod(tmp, mode)
    os.replace(tmp, path)


# --------------------------------------------------------------------------
# Creating a run


def _load_plan(plan: Union[Plan, str, os.PathLike], project: Path) -> Tuple[Plan, Optional[str]]:
    if isinstance(plan, Plan):
        return plan, None
    path = Path(plan)
    if not path.is_absolute() and not path.exists():
        path = project / path
    loaded = load_plan_file(path, project=project)
    try:
        shown = str(path.resolve().relative_to(project))
    except ValueError:
        shown = str(path)
    return loaded, shown


def check_run_inputs(project: Path, plan: Plan) -> None:
    """What the schema cannot check: paths stay inside the repository, the base is a branch name."""
    problems = []
    for f in plan.copy_files:
        p = Path(f)
        if p.is_absolute() or ".." in p.parts or f.startswith("~"):
            problems.append(f"defaults.copy_files: {f!r} must be a path inside the repository (no '..', not absolute)")
    if plan.base_branch is not None:
        proc = git(project, "check-ref-format", "--branch", plan.base_branch, check=False)
        if proc.returncode != 0 or plan.base_branch.startswith("-"):
            problems.append(f"base_branch {plan.base_branch!r} is not a valid branch name")
    if problems:
        raise FatalError("the plan cannot be run:\n  " + "\n  ".join(problems))


def has_origin(project: Path) -> bool:
    return git(project, "remote", "get-url", "origin", check=False).returncode == 0


def _ref_exists(project: Path, ref: str) -> bool:
    return git(project, "show-ref", "--verify", "--quiet", ref, check=False).returncode == 0


@dataclass(frozen=True)
class Base:
    """Where a run's tasks branch from, and why."""

    branch: str  # the base branch's name
    ref: str  # ``origin/<branch>``, or ``<branch>`` (no origin, origin lacks it, or base_local)
    note: str  # how it was chosen, for the spawn instructions
    local_ahead: int  # commits on the local branch that origin/<branch> lacks (0: none, or no such pair)


def choose_base(project: Path, base_branch: Optional[str], fetch: bool = True, local: bool = False,
                pinned_by: str = "plan") -> Base:
    """The base of a run: the plan's ``base_branch``, else origin's default branch.

    ``origin/<base>`` (fetched once, here) when there is an origin, else the local branch.
    ``local``: the local branch even when origin has one (``execute --base-local``); the
    note says when the local branch has commits origin lacks, and how many.
    ``pinned_by``: who named ``base_branch`` (``plan``, or ``caller``), for the error when it is missing.
    """
    chosen_by = pinned_by if base_branch is not None else "default"
    if base_branch is None:
        found = default_branch(project, ask_remote=fetch)
        if found is None:
            raise FatalError("cannot choose a base branch: HEAD is detached and origin does not say its default "
                             "branch; set base_branch in the plan")
        base_branch, how = found
    else:
        how = "the plan's base_branch"
    notes = [how]
    origin = has_origin(project)
    if origin and fetch:
        proc = git(project, "fetch", "--quiet", "origin", base_branch, check=False, timeout=180)
        # A fetch of one branch updates origin/<base> when the remote is configured normally.
        notes.append("fetched" if proc.returncode == 0 else
                     f"git fetch origin {base_branch} failed ({(proc.stderr.strip().splitlines() or ['?'])[-1]})")
    on_origin = origin and _ref_exists(project, f"refs/remotes/origin/{base_branch}")
    on_local = _ref_exists(project, f"refs/heads/{base_branch}")
    if not on_origin and not on_local:
        raise FatalError(_missing_base(project, base_branch, chosen_by, "; ".join(notes[1:])))
    ahead = 0
    if on_origin and on_local:
        count = git(project, "rev-list", "--count", f"origin/{base_branch}..refs/heads/{base_branch}", check=False)
        ahead = int(count.stdout.strip() or 0) if count.returncode == 0 else 0
    if local:
        if not on_local:
            raise FatalError(f"--base-local: there is no local branch '{base_branch}' (only origin/{base_branch})")
        ref = base_branch
        notes.append("the local branch, as --base-local asked"
                     + (f": {_commits(ahead)} ahead of origin/{base_branch}" if ahead else ""))
    elif on_origin:
        ref = f"origin/{base_branch}"
        if ahead:
            notes.append(f"local {base_branch} is {_commits(ahead)} ahead of origin/{base_branch}: the tasks start "
                         f"without them; push them, or add --base-local to start from local {base_branch}")
    else:
        ref = base_branch
        notes.append(f"origin has no {base_branch}: the local branch" if origin else "no origin remote: the local branch")
    return Base(base_branch, ref, "; ".join(notes), ahead)


def resolve_base(project: Path, base_branch: Optional[str], fetch: bool = True,
                 local: bool = False) -> Tuple[str, str]:
    """``(ref, note)`` of ``choose_base``: the start point for task branches and how it was found."""
    base = choose_base(project, base_branch, fetch=fetch, local=local, pinned_by="caller")
    return base.ref, base.note


def _commits(n: int) -> str:
    return f"{n} commit{'s' if n != 1 else ''}"


def _missing_base(project: Path, branch: str, chosen_by: str, fetch_note: str) -> str:
    """The error for a base branch that does not exist, with the branches that do and the fix.

    ``chosen_by``: ``plan`` (the plan's base_branch), ``default`` (origin's default) or ``caller``.
    """
    listed = git(project, "for-each-ref", "--format=%(refname:short)", "refs/heads/", "refs/remotes/origin/",
                 check=False).stdout.split()
    names = [n for n in listed if n not in ("origin", "origin/HEAD")]
    what = {"plan": f"base branch '{branch}' (the plan's base_branch)",
            "default": f"the default base branch '{branch}'"}.get(chosen_by, f"base branch '{branch}'")
    msg = f"{what} exists neither on origin nor locally" + (f" ({fetch_note})" if fetch_note else "")
    if not names:
        return msg + "; the repository has no branches yet: make a first commit"
    shown = ", ".join(names[:10]) + (f" and {len(names) - 10} more" if len(names) > 10 else "")
    if chosen_by == "caller":
        return msg + f" (branches: {shown})"
    msg += f". Branches: {shown}. Set base_branch in the plan to one of them"
    if chosen_by == "plan":
        default = default_branch(project, ask_remote=True)
        if default and default[0] != branch:
            msg += f", or remove it to start from {default[0]}, {default[1]}"
    return msg


def check_checkout(project: Path) -> None:
    """Refuse a bare repository: tasks need a checkout to add their worktrees from."""
    if is_bare(project):
        raise FatalError(f"{project} is a bare repository (no working tree): parallel adds each task's worktree "
                         "beside a checkout; clone it (git clone " + str(project) + ") and run there")


def _plan_labels(plan: Plan) -> List[str]:
    seen: List[str] = []
    for label in [*plan.labels, *(l for t in plan.tasks for l in t.labels)]:
        if label not in seen:
            seen.append(label)
    return seen


def create_labels(run_dir: Path, repository: str, labels: Sequence[str],
                  env: Optional[Mapping[str, str]] = None, gh: str = "gh",
                  timeout: float = 30) -> Dict[str, Any]:
    """Create each label once, idempotently (an existing label is fine). Records the events."""
    created, existing, failed = [], [], {}
    for label in labels:
        start = time.time()
        try:
            proc = subprocess.run([gh, "label", "create", label, "-R", repository, "--color", LABEL_COLOR,
                                   "--description", LABEL_DESCRIPTION],
                                  env=dict(env) if env is not None else None, capture_output=True, text=True,
                                  timeout=timeout, stdin=subprocess.DEVNULL)
            code, err = proc.returncode, (proc.stderr.strip().splitlines() or [""])[-1]
        except subprocess.TimeoutExpired:
            code, err = 124, f"timed out after {timeout:g} s"
        except OSError as e:
            code, err = 127, e.strerror or str(e)
        events.append_event(run_dir, "gh_call", op="label_create", attempt=1, exit=code, http_status=None,
                            rate_remaining=None, retry_after=None, seconds=round(time.time() - start, 3))
        if code == 0:
            created.append(label)
        elif "already exists" in err:
            existing.append(label)
        else:
            failed[label] = err or f"exit {code}"
    ok = not failed
    result = {"created": created, "existing": existing, "failed": failed, "ok": ok}
    events.append_event(run_dir, "labels", **result)
    return result


def create_run(project: Union[str, os.PathLike], plan: Union[Plan, str, os.PathLike], *,
               plan_path: Optional[str] = None, mode: Optional[str] = None,
               decision: Optional[ModeDecision] = None, env: Optional[Mapping[str, str]] = None,
               max_concurrency: int = DEFAULT_MAX_CONCURRENCY, background: bool = True,
               issue_updates: str = "comment", labels: bool = True, fetch: bool = True,
               worktree_pool: Optional[Union[str, os.PathLike]] = None, base_local: bool = False,
               run_id: Optional[str] = None, now: Optional[float] = None) -> Run:
    """Create a run from a plan (a Plan or a plan file) and render every task's files.

    Args:
        project: the repository (its main checkout).
        plan: a validated Plan, or the path of a plan file (validated here).
        plan_path: how run.json names the plan file (default: the path given, or None).
        mode: ``github``, ``local`` or ``auto``; default: the plan's ``issues.mode``.
        decision: a ready ModeDecision (skips detection; tests and benchmarks).
        env: the environment for ``gh`` (mode detection and label creation); default os.environ.
        max_concurrency: most subagents launched at once.
        background: whether subagents run in the background (Claude Code's default).
        issue_updates: ``comment`` (the subagent comments its result on the issue) or ``none``.
        labels: create the plan's labels on GitHub once for the run (github mode).
        fetch: ``git fetch origin <base>`` once before the tasks branch from it.
        base_local: start from the local base branch even when origin has it (``--base-local``).
        worktree_pool: the worktree pool the setup scripts claim worktrees from
            (``pool.pool_dir(project)``), or None for ``git worktree add`` every time.
        run_id, now: pin the run id and the "planning ended" time (snapshots, tests).

    Returns the Run; ``run.setup_script(task_id)`` is ready to execute.
    """
    started = time.time() if now is None else now
    project = Path(project).resolve()
    if git_common_dir(project) is None:
        raise FatalError(f"{project} is not a git repository; parallel needs one (git init, and a first commit)")
    check_checkout(project)
    plan_obj, shown = _load_plan(plan, project)
    plan_path = plan_path if plan_path is not None else shown
    if issue_updates not in ISSUE_UPDATES:
        raise FatalError(f"issue updates must be one of {', '.join(ISSUE_UPDATES)}, not {issue_updates!r}")
    if max_concurrency < 1:
        raise FatalError("--max-concurrency must be at least 1")
    check_run_inputs(project, plan_obj)
    ensure_excluded(project)
    base = choose_base(project, plan_obj.base_branch, fetch=fetch, local=base_local)
    base_ref, base_note = base.ref, base.note
    # Every task of the run branches from this commit, even if base_ref moves on meanwhile.
    base_commit = git(project, "rev-parse", "--verify", "--quiet", base_ref + "^{commit}").stdout.strip()
    if decision is None:
        decision = decide_mode(project, mode or plan_obj.issue_mode, plan_obj.repository,
                               env=dict(env) if env is not None else None)

    run_id = run_id or new_run_id(started)
    rdir = _run_dir(project, run_id)
    try:
        (rdir / "tasks").mkdir(parents=True, exist_ok=False)
    except FileExistsError:
        raise FatalError(f"run {run_id} already exists") from None

    wanted_labels = _plan_labels(plan_obj)
    data: Dict[str, Any] = {
        "format": FORMAT, "id": run_id, "created_at": round(started, 6), "project": str(project),
        "plan_path": plan_path, "plan": plan_obj.data,
        "issue_mode": decision.mode, "mode_reason": decision.reason,
        "repository": decision.repository_full, "base_branch": base.branch, "base_local": base_local,
        "base_ref": base_ref, "base_commit": base_commit, "base_note": base_note, "base_local_ahead": base.local_ahead, "worktree_pool": str(worktree_pool) if worktree_pool else None,
        "labels": wanted_labels, "labels_ok": True, "labels_note": "",
        "max_concurrency": max_concurrency, "tasks": [t.id for t in plan_obj.tasks],
        "background": background, "issue_updates": issue_updates, "has_origin": has_origin(project),
        "version": __version__,
    }
    events.append_event(rdir, "run_created", t=started, tasks=data["tasks"], mode=decision.mode,
                        mode_reason=decision.reason)
    for op, code, seconds in decision.gh_calls:
        events.append_event(rdir, "gh_call", op=op, attempt=1, exit=code, http_status=None,
                            rate_remaining=None, retry_after=None, seconds=seconds)
    if decision.mode == "github" and wanted_labels:
        if labels:
            gh = (env or os.environ).get("PARALLEL_GH") or "gh"
            result = create_labels(rdir, decision.repository_full or "", wanted_labels, env=env, gh=gh)
            if not result["ok"]:
                data["labels_ok"] = False
                data["labels_note"] = ("could not create labels (" + "; ".join(
                    f"{k}: {v}" for k, v in result["failed"].items()) + "): issues are created without labels")
        else:
            data["labels_note"] = "labels not created by execute (the setup scripts fall back to none if missing)"
    _write_atomic(rdir / "run.json", json.dumps(data, indent=2, ensure_ascii=False) + "\n")
    run = Run(project, run_id, data, plan_obj)
    jinja = make_environment(project)
    for task in plan_obj.tasks:
        render_task(run, task.id, jinja=jinja)
    return run


# --------------------------------------------------------------------------
# Loading


def list_runs(project: Path) -> List[str]:
    """Run ids, oldest first (ids sort by time)."""
    root = runs_dir(project)
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir() if (p / "run.json").is_file())


def latest_run_id(project: Path) -> Optional[str]:
    found = list_runs(project)
    return found[-1] if found else None


def load_run(project: Union[str, os.PathLike], run_id: Optional[str] = None) -> Run:
    """A run by id (default: the latest one)."""
    project = Path(project).resolve()
    run_id = run_id or latest_run_id(project)
    if run_id is None:
        raise FatalError(f"no runs in {runs_dir(project)}; start one with /parallel:execute")
    if not isinstance(run_id, str) or run_id in (".", "..") or "/" in run_id or "\0" in run_id:
        raise FatalError(f"{run_id!r} is not a run id (runs are named like 20261122-101500-3fa2)")
    path = _run_dir(project, run_id) / "run.json"
    if not path.is_file():
        known = ", ".join(list_runs(project)[-5:]) or "none"
        raise FatalError(f"no run '{run_id}' in {runs_dir(project)} (recent runs: {known})")
    data = _read_json(path)
    fix = "restore it from a backup, or start a new run with /parallel:execute"
    if data is None:
        raise FatalError(f"{path} is damaged (not a JSON object); {fix}")
    missing = [k for k in ("plan", "tasks", "issue_mode", "base_ref", "created_at") if k not in data]
    if missing or not isinstance(data.get("tasks"), list) or not isinstance(data.get("plan"), dict):
        raise FatalError(f"{path} is damaged (missing or wrong: {', '.join(missing) or 'tasks/plan'}); {fix}")
    try:
        plan = parse_plan(json.dumps(data["plan"]), f"{path} (plan snapshot)", max_tasks=10**6)
    except PlanInvalid as e:
        raise FatalError(f"{path} is damaged: its plan snapshot is not a valid plan ({len(e.problems)} "
                         f"problem(s), first: {e.problems[0].message}); {fix}") from None
    if [t.id for t in plan.tasks] != data["tasks"]:
        raise FatalError(f"{path} is damaged: its task list does not match its plan; {fix}")
    return Run(project, run_id, data, plan)


def active_runs(project: Path, plan_name: str, plan_path: Optional[str] = None) -> List[Tuple[str, Dict[str, int]]]:
    """Runs of this plan (same name, or same plan file) with a task still pending or running.

    Newest first, each with its counts of pending and running tasks (from ``task_states``).
    """
    found = []
    for run_id in reversed(list_runs(project)):
        try:
            run = load_run(project, run_id)
        except (FatalError, KeyError, TypeError, ValueError):
            continue  # a damaged run is status's business, not a reason to refuse a new one
        if run.plan.name != plan_name and not (plan_path and run.data.get("plan_path") == plan_path):
            continue
        counts: Dict[str, int] = {}
        for st in task_states(run).values():
            if st.state in ("pending", "running"):
                counts[st.state] = counts.get(st.state, 0) + 1
        if counts:
            found.append((run_id, counts))
    return found


# --------------------------------------------------------------------------
# Rendering a task


def marker_for(run_id: str, task_id: str) -> str:
    """The idempotency marker put in every issue body (found again by the setup script)."""
    return f"<!-- parallel-setup run={run_id} task={task_id} -->"


def _task_dict(task: Task) -> Dict[str, Any]:
    return {"id": task.id, "title": task.title, "description": task.description, "files": list(task.files),
            "depends_on": list(task.depends_on), "setup": task.setup, "test": task.test,
            "labels": list(task.labels)}


def template_context(run: Run, task_id: str, states: Optional[Dict[str, "TaskState"]] = None) -> Dict[str, Any]:
    """Every variable the templates get for one task (documented in the README)."""
    task = run.plan.task(task_id)
    tdir = run.task_dir(task_id)
    data = run.data
    labels = [] if not data.get("labels_ok", True) else [
        l for l in [*run.plan.labels, *task.labels] if l]
    labels = list(dict.fromkeys(labels))
    if task.setup == "none":
        env_setup, env_shown = "none", "none"
    elif task.setup == "auto":
        env_setup, env_shown = "auto", "auto"
    else:
        env_setup = "command"
        lines = [l for l in task.setup.strip().splitlines() if l.strip()]
        env_shown = lines[0] + (" ..." if len(lines) > 1 else "") if lines else task.setup
    deps = []
    for dep_id in task.depends_on:
        dep = run.plan.task(dep_id)
        st = (states or {}).get(dep_id)
        deps.append({"id": dep_id, "title": dep.title,
                     "state": st.state if st else "pending",
                     "issue": st.issue if st else None, "issue_url": st.issue_url if st else None,
                     "branch": st.branch if st else None})
    lease = ports.from_env_file(tdir / ports.ENV_FILENAME, run.project, run.id, task_id)
    return {
        "version": __version__,
        "run_id": run.id,
        "task_id": task_id,
        "run": {"id": run.id, "dir": str(run.dir), "mode": run.mode, "mode_reason": data.get("mode_reason", ""),
                "repository": data.get("repository"), "base_ref": data["base_ref"],
                "base_commit": data.get("base_commit") or "", "worktree_pool": data.get("worktree_pool"),
                "labels": labels, "labels_ok": data.get("labels_ok", True),
                "labels_note": data.get("labels_note", ""), "background": data.get("background", True),
                "issue_updates": data.get("issue_updates", "comment"), "has_origin": data.get("has_origin", False),
                "task_count": len(data["tasks"])},
        "plan": {"name": run.plan.name, "goal": run.plan.goal, "base_branch": data.get("base_branch") or run.plan.base_branch,
                 "task_count": len(run.plan.tasks), "copy_files": list(run.plan.copy_files)},
        "task": _task_dict(task),
        "dependencies": deps,
        "project": str(run.project),
        "mode": run.mode,
        "repository": data.get("repository"),
        "base_ref": data["base_ref"],
        "base_commit": data.get("base_commit") or "",
        "worktree_pool": data.get("worktree_pool") or "",
        "labels": labels,
        "marker": marker_for(run.id, task_id),
        "copy_files": list(run.plan.copy_files),
        "env_setup": env_setup,
        "env_command_shown": env_shown,
        "env_auto": environments.auto_rows(),
        "env_key": environments.key_parts(run.project, data.get("base_commit") or "HEAD", task.setup),
        "ports": dict(lease.env(), env_file=str(tdir / ports.ENV_FILENAME)) if lease else None,
        "branch_prefix": name_prefixes(run.mode)[0],
        "worktree_prefix": name_prefixes(run.mode)[1],
        "setup_deadline": SETUP_DEADLINE,
        "run_dir": str(run.dir),
        "task_dir": str(tdir),
        "setup_script": str(tdir / "setup.sh"),
        "setup_log": str(tdir / "setup.log"),
        "setup_json": str(tdir / "setup.json"),
        "prompt_path": str(tdir / "prompt.md"),
        "issues_dir": str(run.project / ".parallel" / "issues"),
    }


def render_task(run: Run, task_id: str, jinja=None, states: Optional[Dict[str, "TaskState"]] = None) -> Path:
    """Write a task's prompt.md, setup.sh, issue title/body files; returns the task folder."""
    jinja = jinja or make_environment(run.project)
    tdir = run.task_dir(task_id)
    tdir.mkdir(parents=True, exist_ok=True)
    env_file = tdir / ports.ENV_FILENAME
    lease = ports.lease_task(run.project, run.id, task_id, env_file)  # the one it holds already on a re-render
    _write_atomic(env_file, ports.env_file_text(lease))
    ctx = template_context(run, task_id, states)
    title = render(jinja, "issue-title.txt.j2", **ctx).strip()
    if not title:
        raise FatalError(f"task '{task_id}': the issue title template rendered an empty title")
    body = render(jinja, "issue-body.md.j2", **ctx)
    if ctx["marker"] not in body:  # an override without the marker: idempotency needs it
        body = body.rstrip("\n") + "\n\n" + ctx["marker"] + "\n"
    check_issue_text(task_id, title, body)
    _write_atomic(tdir / "issue-title.txt", title + "\n")
    _write_atomic(tdir / "issue-body.md", body)
    _write_atomic(tdir / "local-issue.md", f"# {title}\n\n{body}")
    task = run.plan.task(task_id)
    if ctx["env_setup"] == "command":
        _write_atomic(tdir / "env-setup.sh", f"# setup command of task {task_id} (from the plan)\n"
                      + task.setup.rstrip("\n") + "\n", 0o755)
    _write_atomic(tdir / "setup.sh", render(jinja, "setup.sh.j2", **ctx), 0o755)
    trusted.record_setup(tdir)  # the permission hook approves only these bytes
    _write_atomic(tdir / "prompt.md", render(jinja, "subagent-prompt.md.j2", **ctx))
    return tdir


def check_issue_text(task_id: str, title: str, body: str) -> None:
    """GitHub refuses an issue whose title or body is too long, or a title of several lines:
    say so before any issue is created, naming the task."""
    problems = []
    if len(title) > GITHUB_TITLE_MAX:
        problems.append(f"the issue title is {len(title)} characters; GitHub allows {GITHUB_TITLE_MAX}")
    if "\n" in title or "\r" in title:
        problems.append("the issue title template rendered more than one line")
    if len(body) > GITHUB_BODY_MAX:
        problems.append(f"the issue body is {len(body):,} characters; GitHub allows {GITHUB_BODY_MAX:,} "
                        "(shorten the task's description, or the issue-body template)")
    if problems:
        raise FatalError(f"task '{task_id}': " + "; ".join(problems))


# --------------------------------------------------------------------------
# Running a setup script (tests, demo, benchmarks)


def run_setup(run: Run, task_id: str, env: Optional[Mapping[str, str]] = None,
              timeout: Optional[float] = None) -> Dict[str, Any]:
    """Execute a task's setup.sh as a subagent would; its final JSON line as a dict.

    Adds ``_exit`` (the exit status) and ``_stderr`` to the dict. Raises FatalError if the
    script printed no JSON line.
    """
    proc = subprocess.run(["bash", str(run.setup_script(task_id))], cwd=run.project,
                          env=dict(env) if env is not None else None, capture_output=True, text=True,
                          timeout=timeout, stdin=subprocess.DEVNULL)
    lines = [l for l in proc.stdout.splitlines() if l.strip()]
    try:
        result = json.loads(lines[-1])
    except (IndexError, ValueError):
        raise FatalError(f"setup.sh of task {task_id} printed no JSON line (exit {proc.returncode}): "
                         f"{proc.stderr.strip()[-500:]}") from None
    result["_exit"] = proc.returncode
    result["_stderr"] = proc.stderr
    return result


# --------------------------------------------------------------------------
# What each task is doing, and what to launch next


def task_states(run: Run, now: Optional[float] = None) -> Dict[str, TaskState]:
    """Each task's state from the event log: the one derivation (``task_state.derive``)
    status, the hooks and the HTML page use too."""
    return task_state.derive(run.dir, run.tasks, now=now)


def launch_tasks(run: Run, task_ids: Sequence[str], foreground: bool) -> dict:
    """Record a launch of ``task_ids`` (the ``launch`` event) and start a new attempt of each:
    the hooks' ``ended-<task>`` marker of an earlier attempt is removed, so the relaunched
    agent's end is recorded too (the event log keeps the earlier end)."""
    number = 1 + sum(1 for _ in events.read_events(run.dir, event="launch"))
    for tid in task_ids:
        try:
            (run.dir / "hooks" / f"ended-{tid}").unlink()
        except FileNotFoundError:
            pass
    return run.event("launch", wave=list(task_ids), number=number, foreground=foreground)


def plan_launch(run: Run, states: Optional[Dict[str, TaskState]] = None, *,
                max_concurrency: Optional[int] = None, only: Iterable[str] = (),
                retry_failed: bool = False) -> Tuple[List[str], List[Tuple[str, str]]]:
    """Which tasks to launch now, and which wait (with why).

    Ready: not launched yet, or lost (its agent is gone: relaunched, reusing its issue,
    worktree and commits), or failed, setup_failed or unverified with ``retry_failed``; and every dependency
    done, that is verified: a dependency that ended unverified or failed holds its
    dependents back (``/parallel:status`` shows them as blocked) until it is fixed, or
    until ``only`` launches them anyway. Running tasks count against ``max_concurrency``. ``only`` launches exactly
    those tasks, whatever their state (a task that stopped without reporting).
    """
    states = states if states is not None else task_states(run)
    cap = max_concurrency or int(run.data.get("max_concurrency") or DEFAULT_MAX_CONCURRENCY)
    only = list(only)
    for tid in only:
        run._check(tid)
    launch: List[str] = []
    waiting: List[Tuple[str, Any]] = []
    running = sum(1 for s in states.values() if s.state == "running" and s.id not in only)
    budget = max(0, cap - running)
    for tid in run.tasks:
        st = states[tid]
        if only:
            if tid in only:
                launch.append(tid)
            continue
        if st.state in ("done", "running"):
            continue
        if st.state in task_state.RETRYABLE and not retry_failed:
            continue  # a lost task is relaunched without being asked: its agent is gone
        deps = run.plan.task(tid).depends_on
        unmet = [d for d in deps if states[d].state != "done"]
        if unmet:
            waiting.append((tid, unmet))
        elif len(launch) >= budget:
            waiting.append((tid, f"ready; over the concurrency limit of {cap}"
                                 + (f" ({running} running)" if running else "")))
        else:
            launch.append(tid)
    shown = {"pending": "not started", "setup_failed": "setup failed"}
    stuck = task_state.RETRYABLE

    def why(unmet: Any) -> str:
        if isinstance(unmet, str):
            return unmet
        text = "waits for " + ", ".join(
            f"{d} ({'launching now' if d in launch else shown.get(states[d].state, states[d].state)})" for d in unmet)
        if any(states[d].state in stuck and d not in launch for d in unmet):
            text += ": not done until that is fixed (or launch this one anyway with --task)"
        return text

    return launch, [(tid, why(u)) for tid, u in waiting]

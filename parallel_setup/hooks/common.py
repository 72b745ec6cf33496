"""What every handler shares: the payload, the run it belongs to, small on-disk markers.

Markers live in ``.parallel/runs/<run>/hooks/`` as one small file each, so
concurrent hooks never rewrite a shared file:

* ``spawn-<tool_use_id>``  the task an Agent call spawned (PreToolUse);
* ``agent-<agent_id>``     the task a subagent runs ("" while unknown);
* ``blocked-<agent_id>``   the SubagentStop gate fired once for this agent;
* ``ended-<task_id>``      the current attempt's end is being recorded or was (once per attempt:
  ``runs.launch_tasks`` removes it when execute launches the task again).
"""

from __future__ import annotations

import json
import os
import re

from .. import events

#: A run/task reference in an Agent prompt (the short spawn reference or the full prompt).
REF_RE = re.compile(r"\.parallel/runs/([A-Za-z0-9._-]+)/tasks/([A-Za-z0-9._-]+)/")
SAFE_ID = re.compile(r"^[A-Za-z0-9._-]{1,200}$")
AGENT_TYPE = "parallel-task-executor"
#: The merge train's resolver (agents/parallel-merge-resolver.md; hooks/resolver.py).
RESOLVER_TYPE = "parallel-merge-resolver"
AGENT_TOOLS = ("Agent", "Task")

#: The run the current hook works on, for the error log (see errors.py).
CURRENT = {"run_dir": None}

join = os.path.join  # paths are plain strings here: importing pathlib would cost every hook call


def safe_id(value) -> str | None:
    return value if isinstance(value, str) and SAFE_ID.match(value) and value not in (".", "..") else None


class Ctx:
    """One hook call: its event, payload and project (the folder holding .parallel/runs).

    Every path it gives is a ``str``.
    """

    def __init__(self, event: str, payload: dict, project: str):
        self.event = event
        self.payload = payload
        self.project = os.fspath(project)
        self.runs = join(self.project, ".parallel", "runs")

    # -- payload fields, type-checked ---------------------------------------------------
    def get(self, key, kind=str):
        value = self.payload.get(key)
        return value if isinstance(value, kind) else None

    def tool_input(self) -> dict:
        value = self.payload.get("tool_input")
        return value if isinstance(value, dict) else {}

    # -- runs -----------------------------------------------------------------------------
    def run_dir(self, run: str) -> str:
        return join(self.runs, run)

    def task_dir(self, run: str, task: str) -> str:
        return join(self.runs, run, "tasks", task)

    def run_exists(self, run: str | None) -> bool:
        return bool(safe_id(run)) and os.path.isfile(join(self.runs, run, "run.json"))

    def run_tasks(self, run: str | None) -> list:
        """The task ids run.json lists ([] when the run is missing or damaged)."""
        if not safe_id(run):
            return []
        info = load_json(join(self.runs, run, "run.json"))
        tasks = info.get("tasks") if isinstance(info, dict) else None
        return [t for t in tasks if safe_id(t)] if isinstance(tasks, list) else []

    def is_task(self, run: str | None, task: str | None) -> bool:
        """``task`` is one of the run's tasks (never ``..`` or a folder someone added)."""
        return bool(safe_id(task)) and task in self.run_tasks(run)

    def own_file(self, run: str, task: str, name: str) -> str | None:
        """The path of a file the run wrote for a task, when nothing on the way is a symlink
        and its real path is inside the run's folder; else None (never follow a link out)."""
        if not self.is_task(run, task) or not safe_id(name):
            return None
        run_dir = self.run_dir(run)
        path = join(run_dir, "tasks", task, name)
        for part in (run_dir, join(run_dir, "tasks"), join(run_dir, "tasks", task), path):
            if os.path.islink(part):
                return None
        real_run = os.path.realpath(run_dir)
        if os.path.realpath(path) != join(real_run, "tasks", task, name):
            return None
        return path if os.path.isfile(path) else None

    def run_ids(self) -> list[str]:
        """Run ids, newest first (ids start with a UTC timestamp)."""
        try:
            names = [e.name for e in os.scandir(self.runs) if e.is_dir() and safe_id(e.name)]
        except OSError:
            return []
        return sorted(names, reverse=True)

    def use_run(self, run: str) -> str:
        path = self.run_dir(run)
        CURRENT["run_dir"] = path
        return path

    def ref_in(self, text) -> tuple[str, str] | None:
        """The (run, task) a text refers to, when that task exists."""
        if not isinstance(text, str):
            return None
        for match in REF_RE.finditer(text):
            run, task = match.group(1), match.group(2)
            if self.is_task(run, task):
                return run, task
        return None

    # -- markers --------------------------------------------------------------------------
    def marker(self, run: str, kind: str, key: str) -> str:
        return join(self.runs, run, "hooks", f"{kind}-{key}")

    def write_marker(self, run: str, kind: str, key: str, value: str = "") -> None:
        path = self.marker(run, kind, key)
        folder, name = os.path.split(path)
        os.makedirs(folder, exist_ok=True)
        tmp = join(folder, f".{name}.{os.getpid()}")
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(value)
        os.replace(tmp, path)

    def claim_marker(self, run: str, kind: str, key: str, value: str = "") -> bool:
        """Create the marker if absent; True only for the one caller that created it."""
        path = self.marker(run, kind, key)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            return False
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(value)
        return True

    def drop_marker(self, run: str, kind: str, key: str) -> None:
        try:
            os.unlink(self.marker(run, kind, key))
        except FileNotFoundError:
            pass

    def find_marker(self, kind: str, key) -> tuple[str, str] | None:
        """(run, content) of the newest run holding this marker."""
        key = safe_id(key)
        if key is None:
            return None
        for run in self.run_ids():
            try:
                with open(self.marker(run, kind, key), encoding="utf-8") as f:
                    return run, f.read().strip()
            except (FileNotFoundError, NotADirectoryError):
                continue
        return None

    def find_agent(self, agent_id) -> tuple[str, str | None] | None:
        """(run, task or None) of one of our subagents."""
        found = self.find_marker("agent", agent_id)
        if found is None:
            return None
        return found[0], (found[1] or None)

    def active_run(self) -> str | None:
        """The newest run with at least one spawned task."""
        for run in self.run_ids():
            try:
                if any(name.startswith("spawn-") for name in os.listdir(join(self.runs, run, "hooks"))):
                    return run
            except OSError:
                continue
        return None

    # -- events ---------------------------------------------------------------------------
    def record(self, run: str, event: str, task: str | None = None, **fields) -> None:
        events.append_event(self.run_dir(run), event, task=task, **fields)


def context(event: str, text: str) -> dict:
    """Hook output that adds ``text`` to the main agent's next model request."""
    return {"hookSpecificOutput": {"hookEventName": event, "additionalContext": text}}


def read_text(path: str, follow: bool = True) -> str:
    """A file's text; ``follow=False`` refuses a symlink in its last part (``O_NOFOLLOW``)."""
    flags = os.O_RDONLY | (0 if follow else getattr(os, "O_NOFOLLOW", 0))
    with open(os.open(path, flags), encoding="utf-8") as f:
        return f.read()


def load_json(path: str):
    try:
        return json.loads(read_text(path))
    except (OSError, ValueError):
        return None

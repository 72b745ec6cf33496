"""What a run created: one task's issue, branch and worktree, as the run's own records say.

``task_ownership(run, task_id)`` is the one place that reads those records, so cleanup
(and anything else that removes or reuses what a run made) never decides from a name
alone. The records it reads today:

* ``setup.json`` (the setup script's final line): the issue, its URL, the branch and the
  worktree path;
* ``.git/worktrees/<name>/parallel-owner``: ``<run-id> <task-id>``, written by the setup
  script right after it created (or claimed from the pool) the worktree, and by nobody else;
* the branch's reflog: the setup script creates the branch with ``git worktree add -b`` or
  ``git switch -c`` at the run's base commit, which git logs as ``branch: Created from ...``,
  during the task's worktree step (its ``step_start``/``step_end`` events). A branch of the
  same name that existed before the run, or that was deleted and made again since, has
  another first entry (deleting a branch deletes its reflog);
* ``setup.log``: ``git worktree add`` printed ``Preparing worktree (new branch 'B')`` (an
  existing branch is ``checking out 'B'``), or the worktree came from the pool (whose claim
  only ever creates a new branch);
* ``report.json`` (the completion report): whether the task says it pushed.

The git side of those checks is in ``provenance.py``. Standard library only.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

from . import events
from .provenance import branch_created_by_run, worktree_owner


def _read_json(path: Path) -> Optional[dict]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def worktree_step_windows(run, task_id: str) -> List[Tuple[float, float]]:
    """When the task's setup ran its worktree step (start, end), from the run's event log."""
    windows, start = [], None
    for e in events.iter_events(run.dir):
        if e.get("task") != task_id or e.get("step") != "worktree" or not isinstance(e.get("t"), (int, float)):
            continue
        if e.get("event") == "step_start":
            start = float(e["t"])
        elif e.get("event") == "step_end" and start is not None:
            windows.append((start, float(e["t"])))
            start = None
    if start is not None:  # a setup killed during the step
        windows.append((start, float("inf")))
    return windows


def setup_made_branch(run, task_id: str, branch: str) -> bool:
    """The task's setup log shows it made ``branch`` new (not checked out one that existed)."""
    try:
        log = (run.task_dir(task_id) / "setup.log").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return False
    # git worktree add -b prints this; a pool claim only ever runs git switch -c for a new branch.
    return f"Preparing worktree (new branch '{branch}')" in log or "\n--- pool: claimed slot-" in log


def task_ownership(run, task_id: str) -> Dict[str, Any]:
    """What the run's records say task ``task_id`` of ``run`` (a ``runs.Run``) created.

    Returns ``issue`` (int or None), ``issue_url``, ``branch``, ``worktree`` (absolute path
    or None), ``branch_created`` and ``worktree_created`` (bools: this run's setup made
    them, checked against git now) and ``pushed`` (what the completion report says: bool,
    or None without a report).
    """
    project = Path(run.project)
    task_dir = run.task_dir(task_id)
    setup = _read_json(task_dir / "setup.json") or {}
    report = _read_json(task_dir / "report.json") or {}
    issue = setup.get("issue") if isinstance(setup.get("issue"), int) else None
    branch = setup.get("branch") if isinstance(setup.get("branch"), str) and setup.get("branch") else None
    worktree = setup.get("worktree") if isinstance(setup.get("worktree"), str) and setup.get("worktree") else None
    if worktree and not os.path.isabs(worktree):
        worktree = str(project / worktree)
    worktree_created = bool(worktree) and worktree_owner(Path(worktree), project) == f"{run.id} {task_id}"
    branch_created = bool(branch) and setup_made_branch(run, task_id, branch) and branch_created_by_run(
        project, branch, run.created_at, run.data.get("base_commit"), worktree_step_windows(run, task_id))
    pushed = report.get("pushed") if isinstance(report.get("pushed"), bool) else None
    return {"issue": issue, "issue_url": setup.get("issue_url") or None, "branch": branch,
            "worktree": worktree, "branch_created": branch_created,
            "worktree_created": worktree_created, "pushed": pushed}

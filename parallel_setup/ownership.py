"""What a run created: one task's issue, branch and worktree, as the run's own records say.

``task_ownership(run, task_id)`` is the one place that reads those records, so cleanup
(and anything else that removes or reuses what a run made) never decides from a name
alone. The setup script (``templates/setup.sh.j2``) writes them in the task's folder:

* ``issue.intent`` before it creates the issue, ``issue.record`` (``NUMBER URL``) once it
  exists;
* ``ownership``, one line per write, appended: ``intent branch NAME BASE`` and ``intent
  worktree PATH`` before it makes them (only when nothing of that name exists), ``created
  branch NAME`` and ``created worktree PATH`` once they exist;
* ``.git/worktrees/<name>/parallel-owner`` (``<run-id> <task-id>``) in the worktree's own
  git folder, once the worktree is complete;
* ``report.json`` (the completion report): whether the task says it pushed.

An intent without its ``created`` line is what a setup killed in the middle leaves: the
thing is still the run's when it exists and nothing else can have made it (a worktree at
the recorded path; a branch still at the base commit it was made from). The setup script
decides the same way when it runs again.

The records say what the run made once; git says whether what is there NOW is still that
(``provenance.py``): a worktree the user removed and made again under the same path has no
``parallel-owner`` (or another one), and a branch deleted and made again has a new first
reflog entry, outside the task's worktree step. Both are checked here, so ``*_created``
means "this run made it, and it is still the thing it made".
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

from . import events
from .provenance import branch_created_by_run, worktree_owner
from .runs import _read_json

#: The task folder's file of intent/created lines.
OWNERSHIP_FILE = "ownership"


def read_records(task_dir: Path) -> Dict[str, Dict[str, str]]:
    """The ``ownership`` file: ``{"intent": {"branch": NAME, "worktree": PATH}, "created": {...}}``.

    ``intent`` branch values keep the base after a space (``NAME BASE``); the last line of
    each kind wins. A missing or unreadable file is no records.
    """
    records: Dict[str, Dict[str, str]] = {"intent": {}, "created": {}}
    try:
        text = (Path(task_dir) / OWNERSHIP_FILE).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return records
    for line in text.splitlines():
        state, _, rest = line.partition(" ")
        kind, _, value = rest.partition(" ")
        if state in records and kind in ("branch", "worktree") and value:
            records[state][kind] = value
    return records


def read_issue_record(task_dir: Path) -> Tuple[Optional[int], Optional[str]]:
    """``issue.record``: (number, url), or (None, None)."""
    try:
        number, _, url = (Path(task_dir) / "issue.record").read_text(encoding="utf-8").strip().partition(" ")
    except OSError:
        return None, None
    return (int(number), url.strip() or None) if number.isdigit() else (None, None)


def worktree_step_windows(run, task_id: str) -> List[Tuple[float, float]]:
    """When the task's setup ran its worktree step (start, end), from the run's event log."""
    windows, start = [], None
    for e in events.iter_events(run.dir):
        if e.get("task") != task_id or e.get("step") != "worktree" or not isinstance(e.get("t"), (int, float)):
            continue
        if e.get("event") == "step_start":
            if start is not None:  # a setup killed during the step: its window lasts until the next one starts
                windows.append((start, float(e["t"])))
            start = float(e["t"])
        elif e.get("event") == "step_end" and start is not None:
            windows.append((start, float(e["t"])))
            start = None
    if start is not None:  # a setup killed during the step
        windows.append((start, float("inf")))
    return windows


def _branch_tip(project: Path, branch: str) -> Optional[str]:
    try:
        proc = subprocess.run(["git", "rev-parse", "--verify", "--quiet", f"refs/heads/{branch}"], cwd=project,
                              capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return proc.stdout.strip() or None if proc.returncode == 0 else None


def task_ownership(run, task_id: str) -> Dict[str, Any]:
    """What the run's records say task ``task_id`` of ``run`` (a ``runs.Run``) created.

    Returns ``issue`` (int or None), ``issue_url``, ``branch``, ``worktree`` (absolute path
    or None), ``branch_created`` and ``worktree_created`` (bools: this run's setup made
    them, a half-made one included) and ``pushed`` (what the completion report says: bool,
    or None without a report). A branch or worktree the setup found already there and
    refused is named (``branch``/``worktree``) with ``*_created`` False.
    """
    project = Path(run.project)
    task_dir = run.task_dir(task_id)
    records = read_records(task_dir)
    setup = _read_json(task_dir / "setup.json") or {}
    report = _read_json(task_dir / "report.json") or {}
    issue, issue_url = read_issue_record(task_dir)
    if issue is None and isinstance(setup.get("issue"), int):
        issue, issue_url = setup["issue"], setup.get("issue_url") or None

    intent_branch, _, intent_base = records["intent"].get("branch", "").partition(" ")
    branch = records["created"].get("branch") or intent_branch or setup.get("branch") or None
    if branch and records["created"].get("branch") == branch:
        branch_created = True
    else:  # made by a setup killed before it could say so: still at the commit it was made from
        branch_created = bool(branch and branch == intent_branch and intent_base
                              and _branch_tip(project, branch) == intent_base)
    # ... and git's reflog shows that creation, during the task's worktree step, not a later one.
    branch_created = branch_created and branch_created_by_run(
        project, branch, run.created_at, run.data.get("base_commit"), worktree_step_windows(run, task_id))

    worktree = records["created"].get("worktree") or records["intent"].get("worktree") or setup.get("worktree")
    if worktree and not os.path.isabs(worktree):
        worktree = str(project / worktree)
    worktree = worktree or None
    owner = worktree_owner(Path(worktree), project) if worktree else None
    if worktree and records["created"].get("worktree") == worktree:
        # Complete once, so it carries the owner file; without it, someone made another one there.
        worktree_created = owner == f"{run.id} {task_id}"
    elif worktree and records["intent"].get("worktree") == worktree:
        # Recorded before it was made, made only when nothing was there: ours if it exists
        # and no other owner is recorded in it (a half-made one has none yet).
        worktree_created = os.path.lexists(worktree) and owner in (None, f"{run.id} {task_id}")
    else:  # a run from before the ownership file: the worktree's own record
        worktree_created = bool(worktree) and owner == f"{run.id} {task_id}"
    pushed = report.get("pushed") if isinstance(report.get("pushed"), bool) else None
    return {"issue": issue, "issue_url": issue_url, "branch": branch, "worktree": worktree,
            "branch_created": branch_created, "worktree_created": worktree_created, "pushed": pushed}

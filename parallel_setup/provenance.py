"""What git itself says about who made a worktree or a branch (standard library only).

The checks cleanup makes again right before it removes anything, whatever the run's records
say: a worktree's ``parallel-owner`` file in its admin folder (``.git/worktrees/<name>/``),
and the oldest entry of a branch's reflog (git logs a branch's creation as
``branch: Created from ...``; deleting a branch deletes its reflog, so a branch deleted and
made again has a new first entry).
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

#: Slack for the clocks of the run's record and of git's reflog (seconds).
CLOCK_SLACK = 5.0


def _git(project: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["git", *args], cwd=project, capture_output=True, text=True, timeout=60)


def worktree_admin_dir(worktree: Path, project: Optional[Path] = None) -> Optional[Path]:
    """The worktree's folder in the main repository (``.git/worktrees/<name>``), or None.

    Found from the worktree's ``.git`` file, or (given the main checkout ``project``) from the
    admin folder whose ``gitdir`` names it: a removal killed half-way may have deleted the
    ``.git`` file already.
    """
    try:
        line = (Path(worktree) / ".git").read_text(encoding="utf-8").splitlines()[0]
    except (OSError, IndexError):
        line = ""
    if line.startswith("gitdir: "):
        admin = Path(line[len("gitdir: "):].strip())
        if not admin.is_absolute():
            admin = Path(worktree) / admin
        return admin if admin.is_dir() else None
    if project is None:
        return None
    wanted = os.path.join(os.path.realpath(worktree), ".git")
    for gitdir in (Path(project) / ".git" / "worktrees").glob("*/gitdir"):
        try:
            named = gitdir.read_text(encoding="utf-8").strip()
        except OSError:
            continue
        if os.path.realpath(os.path.dirname(named)) == os.path.dirname(wanted):
            return gitdir.parent
    return None


def worktree_owner(worktree: Path, project: Optional[Path] = None) -> Optional[str]:
    """What the worktree's ``parallel-owner`` file says (``<run-id> <task-id>``), or None."""
    admin = worktree_admin_dir(worktree, project)
    if admin is None:
        return None
    try:
        return (admin / "parallel-owner").read_text(encoding="utf-8").strip() or None
    except OSError:
        return None


def branch_creation(project: Path, branch: str) -> Optional[Dict[str, Any]]:
    """The oldest reflog entry of ``refs/heads/<branch>``: ``{"commit", "time", "message"}``, or None."""
    proc = _git(project, "reflog", "show", "--format=%H %gd %gs", "--date=unix", f"refs/heads/{branch}", "--")
    if proc.returncode != 0:
        return None
    lines = [l for l in proc.stdout.splitlines() if l.strip()]
    if not lines:
        return None
    commit, selector, message = (lines[-1].split(" ", 2) + ["", ""])[:3]
    try:  # refs/heads/x@{1796171799}
        when = float(selector.rsplit("@{", 1)[1].rstrip("}"))
    except (IndexError, ValueError):
        return None
    return {"commit": commit, "time": when, "message": message}


def branch_created_by_run(project: Path, branch: str, created_at: float, base_commit: Optional[str],
                          windows: Optional[List[Tuple[float, float]]] = None) -> bool:
    """True when git's reflog says the branch was created after the run started, at its base commit,
    and (given the task's worktree-step ``windows``) while one of them ran."""
    first = branch_creation(project, branch)
    if first is None or not first["message"].startswith("branch: Created from"):
        return False
    if first["time"] + CLOCK_SLACK < created_at:
        return False
    if windows is not None and not any(start - CLOCK_SLACK <= first["time"] <= end + CLOCK_SLACK
                                       for start, end in windows):
        return False
    return not base_commit or first["commit"] == base_commit

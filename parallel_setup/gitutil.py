"""Small git helpers shared by the commands (standard library only)."""

from __future__ import annotations

import subprocess
from pathlib import Path

from .paths import STATE_DIRNAME, WORKTREES_DIRNAME


def git(project: Path, *args: str, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess:
    proc = subprocess.run(["git", *args], cwd=project, capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        from .errors import FatalError
        raise FatalError(f"git {' '.join(args)} failed: {proc.stderr.strip() or proc.stdout.strip()}")
    return proc


def git_common_dir(project: Path) -> Path | None:
    proc = git(project, "rev-parse", "--path-format=absolute", "--git-common-dir", check=False)
    return Path(proc.stdout.strip()) if proc.returncode == 0 and proc.stdout.strip() else None


def ensure_excluded(project: Path) -> bool:
    """Add ``.parallel/`` and ``worktrees/`` to .git/info/exclude, once.

    Keeps ``git status`` of the main checkout clean. Returns False outside git.
    """
    common = git_common_dir(project)
    if common is None:
        return False
    exclude = common / "info" / "exclude"
    wanted = [f"/{STATE_DIRNAME}/", f"/{WORKTREES_DIRNAME}/"]
    try:
        existing = exclude.read_text(encoding="utf-8").splitlines() if exclude.exists() else []
    except OSError:
        existing = []
    missing = [w for w in wanted if w not in existing]
    if missing:
        exclude.parent.mkdir(parents=True, exist_ok=True)
        with open(exclude, "a", encoding="utf-8") as f:
            if existing and existing[-1] != "":
                f.write("\n")
            f.write("# added by parallel-setup (run state and task worktrees)\n")
            f.write("".join(w + "\n" for w in missing))
    return True

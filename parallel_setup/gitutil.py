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


def is_bare(project: Path) -> bool:
    """Whether ``project`` is a bare repository (a git directory with no working tree)."""
    proc = git(project, "rev-parse", "--is-bare-repository", check=False)
    return proc.returncode == 0 and proc.stdout.strip() == "true"


def default_branch(project: Path, ask_remote: bool = True) -> tuple[str, str] | None:
    """``(branch, how it was found)``: origin's default branch, else the checked-out branch.

    Origin's default is ``refs/remotes/origin/HEAD`` (set by ``git clone``), else, when
    ``ask_remote``, what ``git ls-remote --symref origin HEAD`` says (one network call).
    Without either, the local HEAD's branch. None when HEAD is detached and origin says nothing.
    """
    has_origin = git(project, "remote", "get-url", "origin", check=False).returncode == 0
    unknown = ""
    if has_origin:
        proc = git(project, "symbolic-ref", "--quiet", "--short", "refs/remotes/origin/HEAD", check=False)
        name = proc.stdout.strip()
        if proc.returncode == 0 and name.startswith("origin/") and name != "origin/HEAD":
            return name[len("origin/"):], "origin's default branch"
        if ask_remote:
            try:
                proc = git(project, "ls-remote", "--symref", "origin", "HEAD", check=False, timeout=60)
            except subprocess.TimeoutExpired:
                proc = None
            for line in (proc.stdout.splitlines() if proc and proc.returncode == 0 else []):
                if line.startswith("ref: refs/heads/") and line.endswith("\tHEAD"):
                    return line[len("ref: refs/heads/"):-len("\tHEAD")], "origin's default branch"
            unknown = "origin did not say its default branch"
        else:
            unknown = "origin's default branch is not known locally"
    proc = git(project, "symbolic-ref", "--quiet", "--short", "HEAD", check=False)
    if proc.returncode == 0 and proc.stdout.strip():
        why = unknown or "no origin remote"
        return proc.stdout.strip(), f"the checked-out branch ({why})"
    return None


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

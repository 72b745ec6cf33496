"""Small git helpers shared by the commands (standard library only)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from .paths import STATE_DIRNAME, WORKTREES_DIRNAME


#: What .git/info/exclude gets: the per-machine state only (runs, local issues, the pool and
#: anything else under .parallel/), never .parallel/templates/ or .parallel/plans/, which a
#: team commits to share; and the task worktrees. Order matters: a ``!`` line re-includes.
EXCLUDED = [f"/{STATE_DIRNAME}/*", f"!/{STATE_DIRNAME}/templates/", f"!/{STATE_DIRNAME}/plans/",
            f"/{WORKTREES_DIRNAME}/"]
#: The line earlier versions wrote, which hid the templates and plans too: migrated.
OLD_EXCLUDED = f"/{STATE_DIRNAME}/"
OLD_COMMENT = "# added by parallel-setup (run state and task worktrees)"


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
    """Keep ``git status`` of the main checkout clean of per-machine state (``EXCLUDED``).

    Adds what is missing to .git/info/exclude, once, and replaces the old ``/.parallel/``
    line (which excluded the shareable templates and plans too). Returns False outside git.
    """
    common = git_common_dir(project)
    if common is None:
        return False
    exclude = common / "info" / "exclude"
    try:
        existing = exclude.read_text(encoding="utf-8").splitlines() if exclude.exists() else []
    except OSError:
        existing = []
    kept = [line for line in existing if line.strip() not in (OLD_EXCLUDED, OLD_COMMENT)]
    missing = [w for w in EXCLUDED if w not in kept]
    if not missing and kept == existing:
        return True
    if missing:
        if kept and kept[-1] != "":
            kept.append("")
        kept.append("# added by parallel-setup (per-machine run state and task worktrees; "
                    ".parallel/templates/ and .parallel/plans/ can be committed)")
        kept += missing
    exclude.parent.mkdir(parents=True, exist_ok=True)
    tmp = exclude.with_name(f"exclude.tmp.{os.getpid()}")
    tmp.write_text("\n".join(kept) + "\n", encoding="utf-8")
    os.replace(tmp, exclude)
    return True

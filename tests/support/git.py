"""Real git repositories for tests: a working clone with a bare local ``origin``."""

from __future__ import annotations

import subprocess
from pathlib import Path


def git(cwd: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    """Run git with a fixed default branch so local config cannot change results."""
    proc = subprocess.run(["git", "-c", "init.defaultBranch=main", *args], cwd=cwd,
                          capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise AssertionError(f"git {' '.join(args)} failed in {cwd}:\n{proc.stderr}")
    return proc


def git_commit(repo: Path, message: str = "commit", files: dict[str, str] | None = None) -> str:
    for name, content in (files or {}).items():
        path = repo / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content, encoding="utf-8")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "--allow-empty", "-m", message)
    return git(repo, "rev-parse", "HEAD").stdout.strip()


def make_repo(root: Path, *, origin: bool = True, files: dict[str, str] | None = None,
              name: str = "widgets") -> Path:
    """A repository at root/name with one commit on main, pushed to a bare root/name.git."""
    repo = root / name
    repo.mkdir(parents=True)
    git(repo, "init", "-q")
    git_commit(repo, "initial", files or {"README.md": "# widgets\n", "src/app.py": "print('hi')\n"})
    if origin:
        bare = root / f"{name}.git"
        git(root, "init", "-q", "--bare", str(bare))
        git(repo, "remote", "add", "origin", str(bare))
        git(repo, "push", "-q", "-u", "origin", "main")
        git(repo, "fetch", "-q", "origin")
    return repo


def branches(repo: Path) -> list[str]:
    out = git(repo, "for-each-ref", "--format=%(refname:short)", "refs/heads/").stdout
    return sorted(out.split())


def worktrees(repo: Path) -> list[str]:
    out = git(repo, "worktree", "list", "--porcelain").stdout
    return [line.split(" ", 1)[1] for line in out.splitlines() if line.startswith("worktree ")]

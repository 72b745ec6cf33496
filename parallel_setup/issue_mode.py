"""Where a run's issues go: GitHub through ``gh``, or local files.

``decide_mode`` returns the mode and, always, the reason, which ``execute`` prints:

* ``local`` when asked for (plan ``issues.mode: local`` or ``--mode local``);
* ``github`` when ``gh`` is on PATH, the repository is known (the plan's
  ``issues.repository``, else the ``origin`` remote's URL, https or ssh form, any
  host) and ``gh auth status --hostname HOST`` succeeds;
* otherwise ``local`` in ``auto`` mode, and an error when ``github`` was demanded.

Standard library only.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional

from .errors import FatalError

DEFAULT_HOST = "github.com"


@dataclass(frozen=True)
class Repository:
    host: str
    owner: str
    name: str

    @property
    def full(self) -> str:
        """``HOST/OWNER/REPO``, the form ``gh -R`` accepts for any host."""
        return f"{self.host}/{self.owner}/{self.name}"

    @property
    def slug(self) -> str:
        return f"{self.owner}/{self.name}"


@dataclass(frozen=True)
class ModeDecision:
    mode: str  # "github" or "local"
    reason: str
    repository: Optional[Repository] = None
    gh_calls: tuple = ()  # (op, exit code, seconds) of the gh calls made to decide

    @property
    def repository_full(self) -> Optional[str]:
        return self.repository.full if self.repository else None


_SCP_LIKE = re.compile(r"^(?:[^@/]+@)?(?P<host>[^:/]+):(?P<path>(?!/).+)$")


def parse_remote_url(url: str) -> Optional[Repository]:
    """The repository a git remote URL points to, or None for a local path.

    Accepts ``https://host/owner/repo(.git)``, ``http://``, ``ssh://[user@]host[:port]/owner/repo``,
    ``git://`` and the scp-like ``[user@]host:owner/repo(.git)``.
    """
    url = url.strip()
    if not url:
        return None
    m = re.match(r"^(?P<scheme>[a-z][a-z0-9+.-]*)://(?P<rest>.*)$", url, re.I)
    if m:
        if m.group("scheme").lower() == "file":
            return None
        rest = m.group("rest")
        authority, _, path = rest.partition("/")
        host = authority.rsplit("@", 1)[-1]
        host = re.sub(r":\d*$", "", host)
    else:
        if url.startswith(("/", ".", "~")) or os.path.exists(url):
            return None
        m = _SCP_LIKE.match(url)
        if not m:
            return None
        host, path = m.group("host"), m.group("path")
    parts = [p for p in path.split("/") if p]
    if len(parts) < 2 or not host:
        return None
    owner, name = parts[-2], parts[-1]
    if name.endswith(".git"):
        name = name[:-4]
    if not owner or not name:
        return None
    return Repository(host.lower(), owner, name)


def parse_repository(text: str, default_host: str) -> Repository:
    """``[HOST/]OWNER/REPO`` as written in a plan."""
    parts = text.strip().split("/")
    if len(parts) == 2:
        return Repository(default_host, parts[0], parts[1])
    if len(parts) == 3:
        return Repository(parts[0].lower(), parts[1], parts[2])
    raise FatalError(f"issues.repository {text!r} is not [HOST/]OWNER/REPO")


def origin_url(project: Path) -> Optional[str]:
    try:
        proc = subprocess.run(["git", "remote", "get-url", "origin"], cwd=project,
                              capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return proc.stdout.strip() if proc.returncode == 0 and proc.stdout.strip() else None


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    # gh prints "X host: authentication failed" then the explanation; keep both short.
    return " ".join(lines[-2:])[:300] if lines else ""


Runner = Callable[..., "subprocess.CompletedProcess[str]"]


def decide_mode(project: Path, requested: str = "auto", plan_repository: Optional[str] = None,
                env: Optional[Dict[str, str]] = None, gh: Optional[str] = None,
                timeout: float = 20) -> ModeDecision:
    """Decide the issue mode; see the module docstring. ``env`` is the environment for gh."""
    if requested not in ("auto", "github", "local"):
        raise FatalError(f"issue mode must be auto, github or local, not {requested!r}")
    if requested == "local":
        return ModeDecision("local", "local issues were asked for (issues under .parallel/issues/)")

    def fallback(why: str) -> ModeDecision:
        if requested == "github":
            raise FatalError(f"GitHub issues were asked for, but {why}. "
                             "Fix that, or use --mode local (issues as files under .parallel/issues/).")
        return ModeDecision("local", f"{why}; issues are local files under .parallel/issues/")

    env = dict(os.environ if env is None else env)
    gh_path = shutil.which(gh or env.get("PARALLEL_GH") or "gh", path=env.get("PATH"))
    url = origin_url(project)
    origin_repo = parse_remote_url(url) if url else None
    if plan_repository:
        default_host = (origin_repo.host if origin_repo else None) or env.get("GH_HOST") or DEFAULT_HOST
        repo = parse_repository(plan_repository, default_host)
        source = "the plan's issues.repository"
    elif origin_repo:
        repo, source = origin_repo, "the origin remote"
    else:
        repo = None
        source = ""
    if gh_path is None:
        return fallback("the gh CLI is not installed (not on PATH)")
    if repo is None:
        why = ("the origin remote is not a hosted repository URL" if url
               else "the repository has no origin remote") + " and the plan names no issues.repository"
        return fallback(why)
    calls: List[tuple] = []
    start = time.time()
    try:
        proc = subprocess.run([gh_path, "auth", "status", "--hostname", repo.host], env=env,
                              capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
        code, detail = proc.returncode, _last_line(proc.stderr + "\n" + proc.stdout)
    except subprocess.TimeoutExpired:
        code, detail = 124, f"timed out after {timeout:g} s"
    except OSError as e:
        code, detail = 127, e.strerror or str(e)
    calls.append(("auth_status", code, round(time.time() - start, 3)))
    if code != 0:
        d = fallback(f"gh is not authenticated for {repo.host} (gh auth status: {detail or f'exit {code}'})")
        return ModeDecision(d.mode, d.reason, None, tuple(calls))
    return ModeDecision("github", f"gh is authenticated for {repo.host}; repository {repo.slug} from {source}",
                        repo, tuple(calls))

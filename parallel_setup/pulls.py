"""Pull requests through the ``gh`` CLI: create one for a branch or reuse the open one.

::

    from parallel_setup import pulls
    pr = pulls.ensure_pr(project, "github.com/acme/widgets", "feature/task-3", "main",
                         "Add the cache layer", "Closes #3")
    pr  # {"number": 12, "url": "https://github.com/acme/widgets/pull/12", "reused": False}
    pulls.list_prs(project, repository, head="feature/task-3")   # open ones, newest first
    pulls.view_pr(project, repository, 12)                       # state, mergeable, mergeStateStatus...

``repository`` is ``[HOST/]OWNER/REPO`` (what run.json records), or None to let gh use the
project's git remote. ``env`` is the environment for gh (default: ``os.environ``);
``PARALLEL_GH`` in it names the gh binary. The body goes to gh on stdin, never as an
argument. Safe to run again: an open pull request from the same head is reused, also
when a create that seemed to fail (a timeout) had in fact made one.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
from typing import Any, Dict, List, Mapping, Optional, Sequence, Union

from .errors import FatalError

#: The fields list and view return (all of them in gh 2.23's ``--json``).
PR_FIELDS = ("number", "url", "state", "title", "headRefName", "baseRefName", "isDraft")
VIEW_FIELDS = PR_FIELDS + ("body", "mergeable", "mergeStateStatus", "closed", "mergedAt")
ATTEMPTS = 3
TIMEOUT = 60.0
_TRANSIENT = re.compile(r"HTTP 5\d\d|timed out|timeout|connection (reset|refused)|EOF|temporar|"
                        r"secondary rate limit|i/o", re.IGNORECASE)


class GhError(FatalError):
    """gh failed; ``stderr`` holds its last line."""

    def __init__(self, message: str, stderr: str = ""):
        super().__init__(message)
        self.stderr = stderr


def _gh(project: Union[str, os.PathLike], args: Sequence[str], env: Optional[Mapping[str, str]],
        stdin: Optional[str] = None, timeout: float = TIMEOUT) -> str:
    environ = dict(os.environ if env is None else env)
    gh = environ.get("PARALLEL_GH") or "gh"
    environ.update(GH_PROMPT_DISABLED="1", GH_NO_UPDATE_NOTIFIER="1", NO_COLOR="1")
    environ.pop("GH_DEBUG", None)
    try:
        proc = subprocess.run([gh, *args], cwd=str(project), env=environ, capture_output=True, text=True,
                              input=stdin if stdin is not None else "", timeout=timeout)
    except subprocess.TimeoutExpired:
        raise GhError(f"gh {args[0]} {args[1]} timed out after {timeout:g} s", "timed out") from None
    except OSError as e:
        raise GhError(f"cannot run {gh}: {e.strerror or e}", str(e)) from None
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or [f"exit status {proc.returncode}"])[-1]
        raise GhError(f"gh {args[0]} {args[1]} failed: {proc.stderr.strip() or last}", last)
    return proc.stdout


def _repo_args(repository: Optional[str]) -> List[str]:
    return ["-R", repository] if repository else []


def list_prs(project, repository: Optional[str], head: Optional[str] = None, base: Optional[str] = None,
             state: str = "open", env: Optional[Mapping[str, str]] = None, limit: int = 100) -> List[Dict[str, Any]]:
    """Pull requests (``state`` open, closed, merged or all), newest first, as gh's JSON."""
    args = ["pr", "list", *_repo_args(repository), "--state", state, "--limit", str(limit),
            "--json", ",".join(PR_FIELDS)]
    if head:
        args += ["--head", head]
    if base:
        args += ["--base", base]
    out = _gh(project, args, env)
    try:
        found = json.loads(out or "[]")
    except ValueError:
        raise GhError(f"gh pr list printed no JSON: {out[:200]!r}") from None
    return [p for p in found if isinstance(p, dict)]


def view_pr(project, repository: Optional[str], pr: Union[int, str],
            env: Optional[Mapping[str, str]] = None) -> Dict[str, Any]:
    """One pull request by number, URL or head branch, with its merge state
    (``mergeable``: MERGEABLE, CONFLICTING, UNKNOWN; ``mergeStateStatus``: CLEAN, DIRTY, BLOCKED...)."""
    out = _gh(project, ["pr", "view", str(pr), *_repo_args(repository), "--json", ",".join(VIEW_FIELDS)], env)
    try:
        return json.loads(out)
    except ValueError:
        raise GhError(f"gh pr view printed no JSON: {out[:200]!r}") from None


def _open_for_head(project, repository, head, base, env) -> Optional[Dict[str, Any]]:
    found = list_prs(project, repository, head=head, state="open", env=env)
    found = [p for p in found if p.get("headRefName") == head]
    same_base = [p for p in found if p.get("baseRefName") == base]
    return (same_base or found or [None])[0]


def ensure_pr(project, repository: Optional[str], head: str, base: str, title: str, body: str,
              env: Optional[Mapping[str, str]] = None) -> Dict[str, Any]:
    """The open pull request from ``head`` (reused), or a new one into ``base``.

    Returns ``{"number", "url", "reused"}`` (plus ``base``: the base of a reused one may
    differ). Raises :class:`GhError` (a FatalError) with gh's message when gh fails for good.
    """
    if not head or not base:
        raise FatalError("a pull request needs a head and a base branch")
    last: Optional[GhError] = None
    for attempt in range(1, ATTEMPTS + 1):
        try:
            existing = _open_for_head(project, repository, head, base, env)
            if existing is not None:
                return {"number": int(existing["number"]), "url": existing["url"], "reused": True,
                        "base": existing.get("baseRefName")}
            out = _gh(project, ["pr", "create", *_repo_args(repository), "--head", head, "--base", base,
                                "--title", title, "--body-file", "-"], env, stdin=body)
        except GhError as e:
            last = e
            if attempt < ATTEMPTS and (_TRANSIENT.search(e.stderr or "") or "already exists" in str(e)):
                time.sleep(0.5 * attempt)
                continue  # the next look-up finds a pull request the failed call made
            raise
        urls = [l.strip() for l in out.splitlines() if re.search(r"/pull/\d+$", l.strip())]
        if not urls:
            raise GhError(f"gh pr create printed no pull request URL: {out.strip()[-200:]!r}")
        return {"number": int(urls[-1].rsplit("/", 1)[1]), "url": urls[-1], "reused": False, "base": base}
    raise last or GhError("gh pr create failed")


__all__ = ["ensure_pr", "list_prs", "view_pr", "GhError"]

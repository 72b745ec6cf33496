"""A fake GitHub API server that the real ``gh`` CLI can talk to.

``gh`` treats the host ``github.localhost`` as a development host: it speaks plain
HTTP to ``api.github.localhost`` (GraphQL at ``/graphql``, REST under ``/``).
Pointing ``HTTP_PROXY`` at this server makes every such request arrive here as an
absolute-URI proxy request (``POST http://api.github.localhost/graphql``), so the
unmodified ``gh`` binary works against it with no GitHub account::

    with FakeGitHub(issue_latency=3.0) as gh_server:
        subprocess.run(["gh", "issue", "create", "-R", "github.localhost/acme/widgets",
                        "--title", "T", "--body", "B"], env=gh_server.env(), check=True)
        assert gh_server.issues("acme/widgets")[0]["number"] == 1

It answers what ``gh`` 2.23 sends for ``issue create/list/view/comment/close/edit``,
``label create/list``, ``api rate_limit`` and ``auth status``, keeps a request log and
counters for assertions, and injects faults (latency, 5xx, secondary and primary rate
limits, hangs, rejected tokens, titles that always fail). Faults are configured with
Python methods or, from another process, with HTTP endpoints under
``http://127.0.0.1:PORT/_admin/`` (see :class:`FakeGitHub`).

Standard library only; importing this module has no side effects. Run it standalone
with ``python -m parallel_setup.fake_github --port 0 --issue-latency 3``.
"""

from __future__ import annotations

import argparse
import fnmatch
import http.server
import json
import os
import re
import shutil
import signal
import socket
import sys
import tempfile
import threading
import time
from http import HTTPStatus
from typing import Any, Callable, Dict, Iterable, List, Optional, Tuple, Union
from urllib.parse import parse_qs, quote, unquote, urlsplit

__all__ = ["FakeGitHub", "FAULT_KINDS", "main"]

#: Fault kinds accepted by :meth:`FakeGitHub.fail_next` and :meth:`FakeGitHub.fail_always`.
FAULT_KINDS = (
    "500",
    "502",
    "503",
    "504",
    "secondary_rate_limit",
    "primary_rate_limit",
    "timeout",
    "disconnect",
    "bad_credentials",
)

SECONDARY_RATE_LIMIT_MESSAGE = (
    "You have exceeded a secondary rate limit. Please wait a few minutes before you try "
    "again. If you reach out to GitHub Support for help, please include the request ID "
    "{request_id}."
)
PRIMARY_RATE_LIMIT_MESSAGE = "API rate limit exceeded for user ID 1."
DOCS = "https://docs.github.com/rest"
RATE_LIMIT_WINDOW = 3600
MAX_HANG = 600.0

_HTML_ERROR = (
    "<!DOCTYPE html>\n<html>\n<head><title>{code} {reason}</title></head>\n"
    "<body><h1>{code} {reason}</h1>\n"
    "<p>We couldn't respond to your request in time. Sorry about that. "
    "Please try resubmitting your request and contact us if the problem persists.</p>\n"
    "</body>\n</html>\n"
)

_OPERATION_RE = re.compile(r"\b(query|mutation)\s+([A-Za-z_][A-Za-z0-9_]*)")
_ALIASED_FIELD_RE = re.compile(
    r"([A-Za-z_][A-Za-z0-9_]*)\s*:\s*(user|team|label|organization|milestone|project)"
    r"\s*\(([^)]*)\)"
)


def _now_iso(t: Optional[float] = None) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() if t is None else t))


class _Fault:
    """One scripted failure rule; ``count`` None means it never runs out."""

    def __init__(
        self,
        kind: str,
        count: Optional[int],
        match: Union[None, str, Callable[[Dict[str, Any]], bool]],
        retry_after: int,
        title_contains: Optional[str],
        hang: float,
        body: str,
    ) -> None:
        kind = str(kind)
        if kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault kind {kind!r}; expected one of {', '.join(FAULT_KINDS)}")
        if body not in ("html", "json"):
            raise ValueError(f"fault body must be 'html' or 'json', not {body!r}")
        self.kind = kind
        self.count = count
        self.match = match
        self.retry_after = int(retry_after)
        self.title_contains = title_contains
        self.hang = min(float(hang), MAX_HANG)
        self.body = body

    def matches(self, info: Dict[str, Any]) -> bool:
        if self.title_contains is not None:
            title = info.get("issue_title")
            if title is None or self.title_contains not in title:
                return False
        if self.match is None:
            return True
        if callable(self.match):
            return bool(self.match(dict(info)))
        targets = (info["kind"], f"{info['method']} {info['path']}")
        return any(fnmatch.fnmatchcase(t, self.match) for t in targets)

    def describe(self) -> Dict[str, Any]:
        return {
            "kind": self.kind,
            "count": self.count,
            "match": self.match if not callable(self.match) else repr(self.match),
            "retry_after": self.retry_after,
            "title_contains": self.title_contains,
            "hang": self.hang,
            "body": self.body,
        }


class _Repo:
    """In-memory repository: labels and issues, numbered 1, 2, 3 ..."""

    def __init__(self, index: int, owner: str, name: str) -> None:
        self.owner = owner
        self.name = name
        self.id = f"R_kgDO{index:06d}"
        self.labels: Dict[str, Dict[str, Any]] = {}  # lower-cased name -> label
        self.issues: List[Dict[str, Any]] = []  # index = number - 1

    @property
    def full_name(self) -> str:
        return f"{self.owner}/{self.name}"


class FakeGitHub:
    """A fake GitHub (GraphQL + REST) served on 127.0.0.1 for the real ``gh`` CLI.

    Args:
        host: the GitHub host ``gh`` is told to use (``GH_HOST``); the API host is
            ``api.<host>``. Only ``github.localhost`` makes ``gh`` speak plain HTTP.
        issue_latency: seconds each issue creation takes (applied before the issue
            number is assigned, concurrently for concurrent requests).
        request_latency: seconds added to every API request.
        repos: repositories (``"owner/name"``) that exist from the start.
        auto_create_repos: when true, any repository is created on first use; when
            false, unknown repositories answer like GitHub's "Could not resolve".
        reject_auth: when true every API request gets ``401 Bad credentials``.
        token: when set, only this token is accepted (others get 401).
        rate_limit: the primary rate limit per resource (``core`` and ``graphql``).
        port: the port to bind on 127.0.0.1 (0 picks a free one).
        user: the login of the authenticated user.

    Admin HTTP endpoints (plain requests to ``http://127.0.0.1:PORT``, JSON in and out):
        ``GET /_admin/requests``, ``GET /_admin/issues[?repo=owner/name]``,
        ``GET /_admin/counters``, ``GET /_admin/faults``;
        ``POST /_admin/fail_next`` and ``/_admin/fail_always`` (the keyword arguments
        of those methods, ``match`` as a glob), ``/_admin/clear_faults``,
        ``/_admin/issue_latency`` and ``/_admin/request_latency`` (``{"seconds": S}``),
        ``/_admin/rate_limit`` (``{"remaining": R, "limit": L, "reset": EPOCH}``),
        ``/_admin/auth`` (``{"reject": true}``), ``/_admin/repos`` (``{"repo": "o/n"}``),
        ``/_admin/reset`` (forget issues, labels, log, faults).
    """

    def __init__(
        self,
        host: str = "github.localhost",
        issue_latency: float = 0.0,
        request_latency: float = 0.0,
        repos: Iterable[str] = (),
        auto_create_repos: bool = True,
        reject_auth: bool = False,
        token: Optional[str] = None,
        rate_limit: int = 5000,
        port: int = 0,
        user: str = "octocat",
    ) -> None:
        self.host = host
        self.api_host = f"api.{host}"
        self.user = user
        self.token = token
        self.auto_create_repos = auto_create_repos
        self._port = port
        self._lock = threading.RLock()
        self._stopping = threading.Event()
        self._server: Optional[http.server.ThreadingHTTPServer] = None
        self._thread: Optional[threading.Thread] = None
        self._config_dir: Optional[str] = None
        self._connections: set = set()
        self._issue_latency = float(issue_latency)
        self._request_latency = float(request_latency)
        self._reject_auth = bool(reject_auth)
        self._repos: Dict[str, _Repo] = {}
        self._nodes: Dict[str, Tuple[str, Any]] = {}  # node id -> (type, object)
        self._faults: List[_Fault] = []
        self._log: List[Dict[str, Any]] = []
        self._seq = 0
        self._label_seq = 0
        self._comment_seq = 0
        self._issues_created = 0
        self._faults_injected = 0
        self._rate_limit = int(rate_limit)
        reset = int(time.time()) + RATE_LIMIT_WINDOW
        self._pools = {
            name: {"limit": self._rate_limit, "remaining": self._rate_limit, "reset": reset}
            for name in ("core", "graphql", "search")
        }
        for repo in repos:
            self.add_repo(repo)

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> int:
        """Bind 127.0.0.1, serve in a daemon thread and return the port."""
        if self._server is not None:
            return self.port
        handler = type("_BoundHandler", (_Handler,), {"fake": self})
        server = _Server(("127.0.0.1", self._port), handler)
        self._stopping.clear()
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.1},
            name="fake-github", daemon=True,
        )
        self._thread.start()
        return self.port

    def stop(self) -> None:
        """Stop serving, wake hanging requests and remove the temporary gh config dir."""
        self._stopping.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            with self._lock:
                connections = list(self._connections)
            for connection in connections:  # idle keep-alive connections
                try:
                    connection.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        if self._config_dir is not None:
            shutil.rmtree(self._config_dir, ignore_errors=True)
            self._config_dir = None

    def __enter__(self) -> "FakeGitHub":
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        """The bound port (only valid after :meth:`start`)."""
        if self._server is None:
            raise RuntimeError("FakeGitHub is not started")
        return self._server.server_address[1]

    @property
    def url(self) -> str:
        """``http://127.0.0.1:PORT``: the proxy URL for gh and the base of ``/_admin/``."""
        return f"http://127.0.0.1:{self.port}"

    def env(self, extra: Optional[Dict[str, str]] = None, config_dir: Optional[str] = None,
            base: Optional[Dict[str, str]] = None) -> Dict[str, str]:
        """Environment for running ``gh`` against this server.

        Args:
            extra: variables added last (override everything).
            config_dir: ``GH_CONFIG_DIR``; by default a temporary directory owned by
                the server (removed by :meth:`stop`) so user config never interferes.
            base: the starting environment; ``os.environ`` by default.
        """
        if config_dir is None:
            with self._lock:
                if self._config_dir is None:
                    self._config_dir = tempfile.mkdtemp(prefix="fake-github-gh-")
                config_dir = self._config_dir
        env = dict(os.environ if base is None else base)
        for name in ("GITHUB_TOKEN", "GH_ENTERPRISE_TOKEN", "GITHUB_ENTERPRISE_TOKEN", "GH_REPO",
                     "GH_DEBUG", "DEBUG", "GH_PAGER", "PAGER"):
            env.pop(name, None)
        env.update(self.gh_variables(config_dir))
        if extra:
            env.update(extra)
        return env

    def gh_variables(self, config_dir: Optional[str] = None) -> Dict[str, str]:
        """Only the variables gh needs (what :func:`main` prints), without ``os.environ``."""
        variables = {
            "GH_HOST": self.host,
            "GH_TOKEN": self.token or "test",
            "GH_PROMPT_DISABLED": "1",
            "GH_NO_UPDATE_NOTIFIER": "1",
            "HTTP_PROXY": self.url,
            "http_proxy": self.url,
            "NO_PROXY": "",
            "no_proxy": "",
            "NO_COLOR": "1",
        }
        if config_dir is not None:
            variables["GH_CONFIG_DIR"] = config_dir
        return variables

    # ------------------------------------------------------------------ admin API

    def set_issue_latency(self, seconds: float) -> None:
        """Seconds every issue creation takes from now on."""
        with self._lock:
            self._issue_latency = float(seconds)

    def set_request_latency(self, seconds: float) -> None:
        """Seconds added to every API request from now on."""
        with self._lock:
            self._request_latency = float(seconds)

    def set_reject_auth(self, reject: bool = True) -> None:
        """Answer every API request with ``401 Bad credentials`` (or stop doing so)."""
        with self._lock:
            self._reject_auth = bool(reject)

    def set_rate_limit(self, remaining: Optional[int] = None, limit: Optional[int] = None,
                       reset: Optional[int] = None, resource: Optional[str] = None) -> None:
        """Set the primary rate limit pool(s): ``core``, ``graphql`` (default: all)."""
        with self._lock:
            for name, pool in self._pools.items():
                if resource is not None and name != resource:
                    continue
                if limit is not None:
                    pool["limit"] = int(limit)
                if remaining is not None:
                    pool["remaining"] = int(remaining)
                if reset is not None:
                    pool["reset"] = int(reset)

    def fail_next(self, kind: Union[str, int], count: int = 1,
                  match: Union[None, str, Callable[[Dict[str, Any]], bool]] = None,
                  retry_after: int = 1, title_contains: Optional[str] = None,
                  hang: float = 30.0, body: str = "html") -> None:
        """Fail the next ``count`` matching API requests.

        Args:
            kind: one of :data:`FAULT_KINDS`: ``"500"``/``"502"``/``"503"``/``"504"``
                (``body`` ``"html"`` like GitHub's front end, or ``"json"``),
                ``"secondary_rate_limit"`` (403 + ``Retry-After``),
                ``"primary_rate_limit"`` (``X-RateLimit-Remaining: 0``; 403 for REST,
                200 with a ``RATE_LIMITED`` error for GraphQL, as GitHub does),
                ``"timeout"`` (no answer for ``hang`` seconds, then the connection is
                closed), ``"disconnect"`` (connection closed at once),
                ``"bad_credentials"`` (401).
            count: how many matching requests fail.
            match: which requests: None for all, a glob matched against the GraphQL
                operation name (``"IssueCreate"``) or ``"METHOD /path"``
                (``"GET /rate_limit"``, ``"POST /repos/*/labels"``), or a callable
                given the request info dict.
            retry_after: the ``Retry-After`` seconds for ``secondary_rate_limit``.
            title_contains: only issue creations whose title contains this text.
            hang: seconds a ``timeout`` fault holds the request (at most 600).
            body: ``"html"`` or ``"json"`` error body for the 5xx kinds.
        """
        self._add_fault(_Fault(str(kind), int(count), match, retry_after, title_contains, hang, body))

    def fail_always(self, kind: Union[str, int],
                    match: Union[None, str, Callable[[Dict[str, Any]], bool]] = None,
                    title_contains: Optional[str] = None, retry_after: int = 1,
                    hang: float = 30.0, body: str = "html") -> None:
        """Fail every matching request until :meth:`clear_faults` (see :meth:`fail_next`).

        ``fail_always("502", title_contains="flaky")`` makes one task fail for good
        while the others succeed.
        """
        self._add_fault(_Fault(str(kind), None, match, retry_after, title_contains, hang, body))

    def clear_faults(self) -> None:
        """Forget every scripted failure."""
        with self._lock:
            self._faults.clear()

    def faults(self) -> List[Dict[str, Any]]:
        """The scripted failures still pending."""
        with self._lock:
            return [f.describe() for f in self._faults]

    def add_repo(self, repo: str) -> Dict[str, Any]:
        """Create ``owner/name`` if absent and return its summary."""
        owner, _, name = repo.partition("/")
        if not owner or not name:
            raise ValueError(f"repository must be owner/name, not {repo!r}")
        with self._lock:
            r = self._repo(owner, name, create=True)
            return {"id": r.id, "owner": r.owner, "name": r.name}

    def issues(self, repo: Optional[str] = None) -> List[Dict[str, Any]]:
        """Issues (oldest first) of ``owner/name``, or of every repository, as plain dicts."""
        with self._lock:
            repos = list(self._repos.values())
            if repo is not None:
                repos = [r for r in repos if r.full_name.lower() == repo.lower()]
            return [self._issue_public(r, i) for r in repos for i in r.issues]

    def labels(self, repo: str) -> List[Dict[str, Any]]:
        """Labels of ``owner/name`` in creation order."""
        with self._lock:
            r = self._repos.get(repo.lower())
            return [dict(l) for l in r.labels.values()] if r else []

    @property
    def requests(self) -> List[Dict[str, Any]]:
        """The request log (copies): ``method``, ``path``, ``kind``, ``operation``,
        ``status``, ``time`` (epoch), ``duration``, ``fault``, ``issue_title``."""
        with self._lock:
            return [dict(entry) for entry in self._log]

    def counters(self) -> Dict[str, Any]:
        """Totals for assertions: ``issues_created``, ``requests``, ``by_kind``,
        ``by_status``, ``faults_injected``, ``rate_limit_remaining``."""
        with self._lock:
            by_kind: Dict[str, int] = {}
            by_status: Dict[str, int] = {}
            for entry in self._log:
                by_kind[entry["kind"]] = by_kind.get(entry["kind"], 0) + 1
                key = str(entry["status"])
                by_status[key] = by_status.get(key, 0) + 1
            return {
                "issues_created": self._issues_created,
                "requests": len(self._log),
                "by_kind": by_kind,
                "by_status": by_status,
                "faults_injected": self._faults_injected,
                "rate_limit_remaining": {k: p["remaining"] for k, p in self._pools.items()},
            }

    def reset(self) -> None:
        """Forget repositories, issues, labels, the log, faults and rate-limit use."""
        with self._lock:
            self._repos.clear()
            self._nodes.clear()
            self._faults.clear()
            self._log.clear()
            self._issues_created = 0
            self._faults_injected = 0
            reset = int(time.time()) + RATE_LIMIT_WINDOW
            for pool in self._pools.values():
                pool.update(limit=self._rate_limit, remaining=self._rate_limit, reset=reset)

    # ------------------------------------------------------------------ internals

    def _add_fault(self, fault: _Fault) -> None:
        with self._lock:
            self._faults.append(fault)

    def _take_fault(self, info: Dict[str, Any]) -> Optional[_Fault]:
        with self._lock:
            for fault in self._faults:
                if fault.matches(info):
                    if fault.count is not None:
                        fault.count -= 1
                        if fault.count <= 0:
                            self._faults.remove(fault)
                    self._faults_injected += 1
                    return fault
        return None

    def _repo(self, owner: str, name: str, create: Optional[bool] = None) -> Optional[_Repo]:
        key = f"{owner}/{name}".lower()
        with self._lock:
            repo = self._repos.get(key)
            if repo is None and (self.auto_create_repos if create is None else create):
                repo = _Repo(len(self._repos) + 1, owner, name)
                self._repos[key] = repo
                self._nodes[repo.id] = ("Repository", repo)
            return repo

    def _pool(self, name: str) -> Dict[str, int]:
        pool = self._pools[name]
        now = int(time.time())
        if now >= pool["reset"]:
            pool["remaining"] = pool["limit"]
            pool["reset"] = now + RATE_LIMIT_WINDOW
        return pool

    def _rate_headers(self, resource: str, remaining: Optional[int] = None) -> List[Tuple[str, str]]:
        with self._lock:
            pool = self._pool(resource)
            left = pool["remaining"] if remaining is None else remaining
            return [
                ("X-RateLimit-Limit", str(pool["limit"])),
                ("X-RateLimit-Remaining", str(left)),
                ("X-RateLimit-Used", str(pool["limit"] - left)),
                ("X-RateLimit-Reset", str(pool["reset"])),
                ("X-RateLimit-Resource", resource),
            ]

    def _issue_url(self, repo: _Repo, number: int) -> str:
        return f"https://{self.host}/{repo.owner}/{repo.name}/issues/{number}"

    def _create_label(self, repo: _Repo, name: str, color: str = "ededed",
                      description: str = "") -> Dict[str, Any]:
        with self._lock:
            self._label_seq += 1
            label = {
                "id": f"LA_kwDO{self._label_seq:08d}",
                "node_id": f"LA_kwDO{self._label_seq:08d}",
                "name": name,
                "color": (color or "ededed").lstrip("#").lower(),
                "description": description or "",
                "default": False,
                "createdAt": _now_iso(),
                "updatedAt": _now_iso(),
                "url": f"http://{self.api_host}/repos/{repo.full_name}/labels/{quote(name)}",
                "html_url": f"https://{self.host}/{repo.full_name}/labels/{quote(name)}",
            }
            repo.labels[name.lower()] = label
            self._nodes[label["id"]] = ("Label", label)
            return label

    def _create_issue(self, repo: _Repo, title: str, body: str,
                      label_ids: Iterable[str] = (), label_names: Iterable[str] = ()) -> Dict[str, Any]:
        with self._lock:
            labels = [self._nodes[i][1] for i in label_ids if i in self._nodes]
            for name in label_names:
                label = repo.labels.get(name.lower()) or self._create_label(repo, name)
                labels.append(label)
            number = len(repo.issues) + 1
            now = _now_iso()
            issue = {
                "id": f"I_kwDO{repo.id[-6:]}{number:06d}",
                "number": number,
                "title": title,
                "body": body or "",
                "state": "OPEN",
                "stateReason": None,
                "labels": labels,
                "comments": [],
                "createdAt": now,
                "updatedAt": now,
                "closedAt": None,
                "repo": repo,
            }
            repo.issues.append(issue)
            self._nodes[issue["id"]] = ("Issue", issue)
            self._issues_created += 1
            return issue

    def _issue_public(self, repo: _Repo, issue: Dict[str, Any]) -> Dict[str, Any]:
        return {
            "repo": repo.full_name,
            "id": issue["id"],
            "number": issue["number"],
            "url": self._issue_url(repo, issue["number"]),
            "title": issue["title"],
            "body": issue["body"],
            "state": issue["state"],
            "labels": [l["name"] for l in issue["labels"]],
            "comments": [c["body"] for c in issue["comments"]],
            "createdAt": issue["createdAt"],
            "closedAt": issue["closedAt"],
        }

    def _label_node(self, label: Dict[str, Any]) -> Dict[str, Any]:
        return {k: label[k] for k in ("id", "name", "description", "color", "createdAt")} | {
            "url": label["html_url"], "isDefault": False, "updatedAt": label["updatedAt"]}

    def _issue_node(self, issue: Dict[str, Any]) -> Dict[str, Any]:
        repo: _Repo = issue["repo"]
        labels = [self._label_node(l) for l in issue["labels"]]
        comments = [
            {"id": c["id"], "body": c["body"], "url": c["url"], "createdAt": c["createdAt"],
             "author": {"login": self.user}, "authorAssociation": "OWNER",
             "includesCreatedEdit": False, "isMinimized": False, "minimizedReason": "",
             "reactionGroups": [], "viewerDidAuthor": True}
            for c in issue["comments"]
        ]
        return {
            "__typename": "Issue",
            "id": issue["id"],
            "number": issue["number"],
            "url": self._issue_url(repo, issue["number"]),
            "title": issue["title"],
            "body": issue["body"],
            "state": issue["state"],
            "stateReason": issue["stateReason"],
            "closed": issue["state"] == "CLOSED",
            "closedAt": issue["closedAt"],
            "createdAt": issue["createdAt"],
            "updatedAt": issue["updatedAt"],
            "isPinned": False,
            "author": {"login": self.user, "name": self.user, "id": "U_kgDO000001", "is_bot": False},
            "labels": {"nodes": labels, "totalCount": len(labels)},
            "comments": {"nodes": comments, "totalCount": len(comments),
                         "pageInfo": {"hasNextPage": False, "endCursor": ""}},
            "assignees": {"nodes": [], "totalCount": 0},
            "projectCards": {"nodes": [], "totalCount": 0},
            "projectItems": {"nodes": [], "totalCount": 0},
            "milestone": None,
            "reactionGroups": [],
        }

    def _issue_rest(self, issue: Dict[str, Any]) -> Dict[str, Any]:
        repo: _Repo = issue["repo"]
        return {
            "id": int(issue["id"][-6:]), "node_id": issue["id"], "number": issue["number"],
            "title": issue["title"], "body": issue["body"], "state": issue["state"].lower(),
            "html_url": self._issue_url(repo, issue["number"]),
            "url": f"http://{self.api_host}/repos/{repo.full_name}/issues/{issue['number']}",
            "labels": [{k: l[k] for k in ("id", "node_id", "name", "color", "description", "default")}
                       for l in issue["labels"]],
            "user": {"login": self.user}, "comments": len(issue["comments"]),
            "created_at": issue["createdAt"], "updated_at": issue["updatedAt"],
            "closed_at": issue["closedAt"],
        }

    def _add_comment(self, issue: Dict[str, Any], body: str) -> Dict[str, Any]:
        with self._lock:
            self._comment_seq += 1
            n = self._comment_seq
            comment = {
                "id": f"IC_kwDO{n:08d}", "database_id": n, "body": body,
                "createdAt": _now_iso(),
                "url": f"{self._issue_url(issue['repo'], issue['number'])}#issuecomment-{n}",
            }
            issue["comments"].append(comment)
            issue["updatedAt"] = comment["createdAt"]
            return comment

    # ----------------------------------------------------------- GraphQL handlers

    def graphql(self, operation: str, query: str, variables: Dict[str, Any]) -> Dict[str, Any]:
        """Answer one GraphQL request; returns the JSON document (``data``/``errors``)."""
        handler = getattr(self, f"_gql_{operation}", None)
        if handler is None:
            return _gql_error(f"fake_github does not support the GraphQL operation {operation!r}",
                              "UNSUPPORTED")
        document = handler(query, variables)
        if document.get("data") is not None:
            sel, fragments = _parse_document(query)
            if sel is not None:
                document["data"] = _project(document["data"], sel, fragments)
        return document

    def _gql_repo(self, variables: Dict[str, Any], key: str = "name") -> Union[_Repo, Dict[str, Any]]:
        owner = variables.get("owner", "")
        name = variables.get(key) or variables.get("repo") or variables.get("name") or ""
        repo = self._repo(owner, name)
        if repo is None:
            return _gql_error(f"Could not resolve to a Repository with the name '{owner}/{name}'.",
                              "NOT_FOUND", ["repository"])
        return repo

    def _repo_node(self, repo: _Repo) -> Dict[str, Any]:
        return {
            "id": repo.id, "name": repo.name, "owner": {"login": repo.owner},
            "nameWithOwner": repo.full_name, "url": f"https://{self.host}/{repo.full_name}",
            "hasIssuesEnabled": True, "hasWikiEnabled": True, "hasProjectsEnabled": True,
            "description": "", "viewerPermission": "ADMIN", "isPrivate": False,
            "defaultBranchRef": {"name": "main"}, "parent": None,
            "mergeCommitAllowed": True, "rebaseMergeAllowed": True, "squashMergeAllowed": True,
        }

    def _gql_RepositoryInfo(self, query: str, variables: Dict[str, Any]) -> Dict[str, Any]:
        repo = self._gql_repo(variables)
        if isinstance(repo, dict):
            return repo
        return {"data": {"repository": self._repo_node(repo)}}

    def _gql_UserCurrent(self, query: str, variables: Dict[str, Any]) -> Dict[str, Any]:
        return {"data": {"viewer": {"login": self.user}}}

    def _gql_RepositoryResolveMetadataIDs(self, query: str, variables: Dict[str, Any]) -> Dict[str, Any]:
        """Aliased look-ups by name (``l000: label(name: "bug") {id,name}`` ...)."""
        match = re.search(r"repository\s*\(\s*owner\s*:\s*\"([^\"]*)\"\s*,\s*name\s*:\s*\"([^\"]*)\"",
                          query)
        repo = self._repo(match.group(1), match.group(2)) if match else None
        data: Dict[str, Any] = {}
        repo_data: Dict[str, Any] = {}
        for alias, field, args in _ALIASED_FIELD_RE.findall(query):
            m = re.search(r"(?:login|name|slug)\s*:\s*\"((?:[^\"\\]|\\.)*)\"", args)
            value = json.loads(f'"{m.group(1)}"') if m else ""
            if field == "label":
                label = repo.labels.get(value.lower()) if repo else None
                repo_data[alias] = {"id": label["id"], "name": label["name"]} if label else None
            elif field == "user":
                data[alias] = {"id": f"U_{value}", "login": value}
            else:
                repo_data[alias] = None
        if repo_data or match:
            data["repository"] = repo_data
        return {"data": data}

    def _gql_RepositoryLabelList(self, query: str, variables: Dict[str, Any]) -> Dict[str, Any]:
        repo = self._gql_repo(variables, "repo")
        if isinstance(repo, dict):
            return repo
        with self._lock:
            nodes = [self._label_node(l) for l in repo.labels.values()]
        return {"data": {"repository": {"labels": {
            "nodes": nodes, "totalCount": len(nodes),
            "pageInfo": {"hasNextPage": False, "endCursor": ""}}}}}

    def _gql_LabelList(self, query: str, variables: Dict[str, Any]) -> Dict[str, Any]:
        repo = self._gql_repo(variables, "repo")
        if isinstance(repo, dict):
            return repo
        q = (variables.get("query") or "").lower()
        with self._lock:
            nodes = [self._label_node(l) for l in repo.labels.values() if q in l["name"].lower()]
        order = variables.get("orderBy") or {}
        if order.get("field") == "NAME":
            nodes.sort(key=lambda n: n["name"].lower())
        if order.get("direction") == "DESC":
            nodes.reverse()
        limit = variables.get("limit") or len(nodes)
        return {"data": {"repository": {"labels": {
            "nodes": nodes[:limit], "totalCount": len(nodes),
            "pageInfo": {"hasNextPage": False, "endCursor": ""}}}}}

    def _gql_IssueCreate(self, query: str, variables: Dict[str, Any]) -> Dict[str, Any]:
        data = variables.get("input") or {}
        entry = self._nodes.get(data.get("repositoryId", ""))
        if not entry or entry[0] != "Repository":
            return _gql_error(f"Could not resolve to a node with the global id of "
                              f"'{data.get('repositoryId')}'", "NOT_FOUND", ["createIssue"])
        issue = self._create_issue(entry[1], data.get("title", ""), data.get("body", ""),
                                   data.get("labelIds") or ())
        return {"data": {"createIssue": {"issue": self._issue_node(issue)}}}

    def _gql_IssueList(self, query: str, variables: Dict[str, Any]) -> Dict[str, Any]:
        repo = self._gql_repo(variables, "repo")
        if isinstance(repo, dict):
            return repo
        states = variables.get("states") or ["OPEN"]
        if isinstance(states, str):
            states = [states]
        wanted = [l.lower() for l in variables.get("labels") or []]
        with self._lock:
            issues = [i for i in reversed(repo.issues) if i["state"] in states]
            if wanted:
                issues = [i for i in issues
                          if all(w in {l["name"].lower() for l in i["labels"]} for w in wanted)]
            total = len(issues)
            start = int(variables.get("endCursor") or 0)
            limit = int(variables.get("limit") or 30)
            page = issues[start:start + limit]
            nodes = [self._issue_node(i) for i in page]
        more = start + limit < total
        return {"data": {"repository": {"hasIssuesEnabled": True, "issues": {
            "totalCount": total, "nodes": nodes,
            "pageInfo": {"hasNextPage": more, "endCursor": str(start + limit) if more else ""}}}}}

    def _gql_IssueSearch(self, query: str, variables: Dict[str, Any]) -> Dict[str, Any]:
        """``search(type: ISSUE, query: "repo:o/n state:open label:x words")``."""
        terms = re.findall(r'(\w+):"([^"]*)"|(\w+):(\S+)|"([^"]*)"|(\S+)', variables.get("query") or "")
        filters: Dict[str, List[str]] = {}
        words: List[str] = []
        for quoted_key, quoted_value, key, value, phrase, word in terms:
            if quoted_key or key:
                filters.setdefault((quoted_key or key).lower(), []).append(quoted_value or value)
            else:
                words.append((phrase or word).lower())
        with self._lock:
            repos = [r for r in self._repos.values()
                     if not filters.get("repo") or r.full_name.lower() in
                     [v.lower() for v in filters["repo"]]]
            issues = [i for r in repos for i in reversed(r.issues)]
            for state in filters.get("state") or filters.get("is", []):
                if state.upper() in ("OPEN", "CLOSED"):
                    issues = [i for i in issues if i["state"] == state.upper()]
            for label in filters.get("label", []):
                issues = [i for i in issues if label.lower() in {l["name"].lower() for l in i["labels"]}]
            for word in words:
                issues = [i for i in issues if word in (i["title"] + " " + i["body"]).lower()]
            limit = int(variables.get("limit") or 30)
            nodes = [self._issue_node(i) for i in issues[:limit]]
        return {"data": {"repository": {"hasIssuesEnabled": True},
                         "search": {"issueCount": len(issues), "nodes": nodes,
                                    "pageInfo": {"hasNextPage": False, "endCursor": ""}}}}

    def _gql_IssueByNumber(self, query: str, variables: Dict[str, Any]) -> Dict[str, Any]:
        repo = self._gql_repo(variables, "repo")
        if isinstance(repo, dict):
            return repo
        number = int(variables.get("number") or variables.get("issue_number") or 0)
        with self._lock:
            issue = repo.issues[number - 1] if 0 < number <= len(repo.issues) else None
            node = self._issue_node(issue) if issue else None
        if node is None:
            return {"data": {"repository": {"hasIssuesEnabled": True, "issue": None}},
                    "errors": [{"type": "NOT_FOUND", "path": ["repository", "issue"],
                                "message": f"Could not resolve to an issue or pull request "
                                           f"with the number of {number}."}]}
        return {"data": {"repository": {"hasIssuesEnabled": True, "issue": node}}}

    def _gql_CommentsForIssue(self, query: str, variables: Dict[str, Any]) -> Dict[str, Any]:
        """``node(id: $id) { ...on Issue { comments ... } }``."""
        with self._lock:
            entry = self._nodes.get(variables.get("id") or "")
            node = self._issue_node(entry[1]) if entry and entry[0] == "Issue" else None
        if node is None:
            return _gql_error(f"Could not resolve to a node with the global id of "
                              f"'{variables.get('id')}'", "NOT_FOUND", ["node"])
        return {"data": {"node": node}}

    def _mutation_target(self, variables: Dict[str, Any], id_key: str,
                         path: str) -> Tuple[Dict[str, Any], Optional[Dict[str, Any]], Optional[Dict[str, Any]]]:
        """A mutation's ``input``, the issue its ``id_key`` names, and the GraphQL error when there is none."""
        data = variables.get("input") or {}
        node_id = data.get(id_key, "")
        entry = self._nodes.get(node_id or "")
        if not entry or entry[0] != "Issue":
            return data, None, _gql_error(f"Could not resolve to a node with the global id of '{node_id}'",
                                          "NOT_FOUND", [path])
        return data, entry[1], None

    def _gql_CommentCreate(self, query: str, variables: Dict[str, Any]) -> Dict[str, Any]:
        data, issue, error = self._mutation_target(variables, "subjectId", "addComment")
        if error:
            return error
        comment = self._add_comment(issue, data.get("body", ""))
        return {"data": {"addComment": {"commentEdge": {"node": {
            "id": comment["id"], "url": comment["url"], "body": comment["body"]}}}}}

    def _set_state(self, variables: Dict[str, Any], state: str, path: str) -> Dict[str, Any]:
        data, issue, error = self._mutation_target(variables, "issueId", path)
        if error:
            return error
        with self._lock:
            issue["state"] = state
            issue["stateReason"] = data.get("stateReason", "COMPLETED") if state == "CLOSED" else "REOPENED"
            issue["closedAt"] = _now_iso() if state == "CLOSED" else None
            issue["updatedAt"] = _now_iso()
            node = self._issue_node(issue)
        return {"data": {path: {"issue": node}}}

    def _gql_IssueClose(self, query: str, variables: Dict[str, Any]) -> Dict[str, Any]:
        return self._set_state(variables, "CLOSED", "closeIssue")

    def _gql_IssueReopen(self, query: str, variables: Dict[str, Any]) -> Dict[str, Any]:
        return self._set_state(variables, "OPEN", "reopenIssue")

    def _gql_IssueUpdate(self, query: str, variables: Dict[str, Any]) -> Dict[str, Any]:
        data, issue, error = self._mutation_target(variables, "id", "updateIssue")
        if error:
            return error
        with self._lock:
            for key in ("title", "body"):
                if data.get(key) is not None:
                    issue[key] = data[key]
            if data.get("labelIds") is not None:
                issue["labels"] = [self._nodes[i][1] for i in data["labelIds"] if i in self._nodes]
            issue["updatedAt"] = _now_iso()
            node = self._issue_node(issue)
        return {"data": {"updateIssue": {"issue": node}}}

    def _gql_LabelAdd(self, query: str, variables: Dict[str, Any]) -> Dict[str, Any]:
        data, issue, error = self._mutation_target(variables, "labelableId", "addLabelsToLabelable")
        if error:
            return error
        with self._lock:
            have = {l["id"] for l in issue["labels"]}
            for label_id in data.get("labelIds") or []:
                if label_id in self._nodes and label_id not in have:
                    issue["labels"].append(self._nodes[label_id][1])
        return {"data": {"addLabelsToLabelable": {"__typename": "AddLabelsToLabelablePayload"}}}

    def _gql_LabelRemove(self, query: str, variables: Dict[str, Any]) -> Dict[str, Any]:
        data, issue, error = self._mutation_target(variables, "labelableId", "removeLabelsFromLabelable")
        if error:
            return error
        with self._lock:
            drop = set(data.get("labelIds") or [])
            issue["labels"] = [l for l in issue["labels"] if l["id"] not in drop]
        return {"data": {"removeLabelsFromLabelable": {"__typename": "RemoveLabelsFromLabelablePayload"}}}

    # -------------------------------------------------------------- REST handlers

    def rest(self, method: str, path: str, query: Dict[str, List[str]],
             body: Any) -> Tuple[int, Any, List[Tuple[str, str]]]:
        """Answer one REST request: ``(status, json_document, extra_headers)``."""
        parts = [unquote(p) for p in path.strip("/").split("/")] if path.strip("/") else []
        if method == "GET" and not parts:
            return 200, {"current_user_url": f"http://{self.api_host}/user"}, [
                ("X-OAuth-Scopes", "gist, read:org, repo, workflow"),
                ("X-Accepted-OAuth-Scopes", "")]
        if method == "GET" and parts == ["rate_limit"]:
            return 200, self._rate_limit_document(), []
        if method == "GET" and parts == ["user"]:
            return 200, {"login": self.user, "id": 1, "type": "User"}, []
        if len(parts) >= 3 and parts[0] == "repos":
            repo = self._repo(parts[1], parts[2])
            if repo is None:
                return 404, {"message": "Not Found", "documentation_url": DOCS}, []
            rest = parts[3:]
            if rest[:1] == ["labels"]:
                return self._rest_labels(method, repo, rest[1:], body)
            if rest[:1] == ["issues"]:
                return self._rest_issues(method, repo, rest[1:], query, body)
            if not rest and method == "GET":
                return 200, {"id": int(repo.id[-6:]), "node_id": repo.id, "name": repo.name,
                             "full_name": repo.full_name, "owner": {"login": repo.owner},
                             "has_issues": True, "default_branch": "main", "private": False}, []
        return 404, {"message": "Not Found", "documentation_url": DOCS}, []

    def _rate_limit_document(self) -> Dict[str, Any]:
        with self._lock:
            resources = {}
            for name in self._pools:
                pool = self._pool(name)
                resources[name] = {"limit": pool["limit"], "used": pool["limit"] - pool["remaining"],
                                   "remaining": pool["remaining"], "reset": pool["reset"]}
            return {"resources": resources, "rate": dict(resources["core"])}

    def _rest_labels(self, method: str, repo: _Repo, rest: List[str],
                     body: Any) -> Tuple[int, Any, List[Tuple[str, str]]]:
        body = body if isinstance(body, dict) else {}
        with self._lock:
            if method == "GET" and not rest:
                return 200, [self._label_rest(l) for l in repo.labels.values()], []
            if method == "POST" and not rest:
                name = str(body.get("name") or "")
                if not name:
                    return 422, _validation_failed("missing_field", "name"), []
                if name.lower() in repo.labels:
                    return 422, _validation_failed("already_exists", "name"), []
                label = self._create_label(repo, name, body.get("color") or "ededed",
                                           body.get("description") or "")
                return 201, self._label_rest(label), []
            label = repo.labels.get(rest[0].lower()) if rest else None
            if label is None:
                return 404, {"message": "Not Found", "documentation_url": DOCS}, []
            if method == "GET":
                return 200, self._label_rest(label), []
            if method == "PATCH":
                new_name = body.get("new_name") or body.get("name")
                if new_name and new_name.lower() != label["name"].lower():
                    del repo.labels[label["name"].lower()]
                    repo.labels[new_name.lower()] = label
                if new_name:
                    label["name"] = new_name
                if body.get("color"):
                    label["color"] = str(body["color"]).lstrip("#").lower()
                if body.get("description") is not None:
                    label["description"] = body["description"]
                label["updatedAt"] = _now_iso()
                return 200, self._label_rest(label), []
            if method == "DELETE":
                del repo.labels[label["name"].lower()]
                return 204, None, []
        return 404, {"message": "Not Found", "documentation_url": DOCS}, []

    @staticmethod
    def _label_rest(label: Dict[str, Any]) -> Dict[str, Any]:
        return {k: label[k] for k in ("id", "node_id", "url", "name", "color", "default", "description")}

    def _rest_issues(self, method: str, repo: _Repo, rest: List[str], query: Dict[str, List[str]],
                     body: Any) -> Tuple[int, Any, List[Tuple[str, str]]]:
        body = body if isinstance(body, dict) else {}
        if method == "POST" and not rest:
            if not body.get("title"):
                return 422, _validation_failed("missing_field", "title"), []
            issue = self._create_issue(repo, str(body["title"]), str(body.get("body") or ""),
                                       label_names=[str(n) for n in body.get("labels") or []])
            with self._lock:
                return 201, self._issue_rest(issue), [
                    ("Location", f"http://{self.api_host}/repos/{repo.full_name}/issues/{issue['number']}")]
        with self._lock:
            if method == "GET" and not rest:
                state = (query.get("state") or ["open"])[0]
                issues = [i for i in reversed(repo.issues)
                          if state == "all" or i["state"].lower() == state]
                per_page = int((query.get("per_page") or ["30"])[0])
                return 200, [self._issue_rest(i) for i in issues[:per_page]], []
            number = int(rest[0]) if rest and rest[0].isdigit() else 0
            issue = repo.issues[number - 1] if 0 < number <= len(repo.issues) else None
            if issue is None:
                return 404, {"message": "Not Found", "documentation_url": DOCS}, []
            if method == "GET" and len(rest) == 1:
                return 200, self._issue_rest(issue), []
            if method == "PATCH" and len(rest) == 1:
                for key in ("title", "body"):
                    if key in body:
                        issue[key] = body[key]
                if body.get("state") in ("open", "closed"):
                    issue["state"] = body["state"].upper()
                    issue["closedAt"] = _now_iso() if body["state"] == "closed" else None
                return 200, self._issue_rest(issue), []
            if rest[1:] == ["comments"] and method == "POST":
                comment = self._add_comment(issue, str(body.get("body") or ""))
                return 201, {"id": comment["database_id"], "node_id": comment["id"],
                             "body": comment["body"], "html_url": comment["url"]}, []
            if rest[1:] == ["comments"] and method == "GET":
                return 200, [{"body": c["body"], "html_url": c["url"]} for c in issue["comments"]], []
        return 404, {"message": "Not Found", "documentation_url": DOCS}, []

    # ---------------------------------------------------------------- admin HTTP

    def admin(self, method: str, path: str, query: Dict[str, List[str]],
              body: Any) -> Tuple[int, Any]:
        """Answer one ``/_admin/...`` request: ``(status, json_document)``."""
        action = path[len("/_admin/"):].strip("/")
        args = body if isinstance(body, dict) else {}
        try:
            if method == "GET":
                if action == "requests":
                    return 200, self.requests
                if action == "issues":
                    return 200, self.issues((query.get("repo") or [None])[0])
                if action == "counters":
                    return 200, self.counters()
                if action == "faults":
                    return 200, self.faults()
                if action == "labels":
                    return 200, self.labels((query.get("repo") or [""])[0])
            elif method == "POST":
                if action in ("fail_next", "fail_always"):
                    getattr(self, action)(**args)
                    return 200, {"ok": True, "faults": self.faults()}
                if action == "clear_faults":
                    self.clear_faults()
                elif action == "issue_latency":
                    self.set_issue_latency(args.get("seconds", 0))
                elif action == "request_latency":
                    self.set_request_latency(args.get("seconds", 0))
                elif action == "rate_limit":
                    self.set_rate_limit(**args)
                elif action == "auth":
                    self.set_reject_auth(bool(args.get("reject", True)))
                elif action == "repos":
                    return 200, self.add_repo(str(args.get("repo", "")))
                elif action == "reset":
                    self.reset()
                else:
                    return 404, {"error": f"unknown admin action {action!r}"}
                return 200, {"ok": True}
        except (TypeError, ValueError) as exc:
            return 400, {"error": str(exc)}
        return 404, {"error": f"unknown admin endpoint {method} {path}"}


_TOKEN_RE = re.compile(
    r'"""(?:[^"\\]|\\.|"(?!""))*"""|"(?:[^"\\]|\\.)*"|\.\.\.|[A-Za-z_][A-Za-z0-9_]*'
    r"|-?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?|[{}()\[\]:!$=@,]|#[^\n]*|\s+"
)


class _Selection:
    """A parsed GraphQL selection set: fields, inline fragments and fragment spreads."""

    def __init__(self) -> None:
        # ("field", key, name, child) | ("inline", type, child) | ("spread", name)
        self.items: List[Tuple[Any, ...]] = []


def _tokens(text: str) -> List[str]:
    out = []
    for tok in _TOKEN_RE.findall(text or ""):
        if tok.isspace() or tok == "," or tok.startswith("#"):
            continue
        out.append(tok)
    return out


def _parse_document(text: str) -> Tuple[Optional[_Selection], Dict[str, _Selection]]:
    """Parse ``text`` into (the operation's selection, named fragments).

    Arguments, variables and directives are skipped; only the shape of the answer
    matters here. Returns ``(None, {})`` when the text cannot be parsed.
    """
    toks = _tokens(text)
    pos = 0
    fragments: Dict[str, _Selection] = {}
    operation: Optional[_Selection] = None

    def skip_balanced(open_: str, close: str) -> None:
        nonlocal pos
        depth = 0
        while pos < len(toks):
            if toks[pos] == open_:
                depth += 1
            elif toks[pos] == close:
                depth -= 1
                if depth == 0:
                    pos += 1
                    return
            pos += 1

    def skip_directives() -> None:
        nonlocal pos
        while pos < len(toks) and toks[pos] == "@":
            pos += 2
            if pos < len(toks) and toks[pos] == "(":
                skip_balanced("(", ")")

    def selection() -> _Selection:
        nonlocal pos
        sel = _Selection()
        pos += 1  # "{"
        while pos < len(toks) and toks[pos] != "}":
            if toks[pos] == "...":
                pos += 1
                if toks[pos] == "on":
                    type_name = toks[pos + 1]
                    pos += 2
                    skip_directives()
                    sel.items.append(("inline", type_name, selection()))
                elif toks[pos] in ("{", "@"):
                    skip_directives()
                    sel.items.append(("inline", None, selection()))
                else:
                    sel.items.append(("spread", toks[pos]))
                    pos += 1
                    skip_directives()
                continue
            name = toks[pos]
            key = name
            pos += 1
            if pos < len(toks) and toks[pos] == ":":
                name = toks[pos + 1]
                pos += 2
            if pos < len(toks) and toks[pos] == "(":
                skip_balanced("(", ")")
            skip_directives()
            child = selection() if pos < len(toks) and toks[pos] == "{" else None
            sel.items.append(("field", key, name, child))
        pos += 1  # "}"
        return sel

    try:
        while pos < len(toks):
            tok = toks[pos]
            if tok == "fragment":
                name = toks[pos + 1]
                pos += 4  # fragment NAME on TYPE
                skip_directives()
                fragments[name] = selection()
            elif tok in ("query", "mutation", "subscription") or tok == "{":
                while toks[pos] != "{":
                    if toks[pos] == "(":
                        skip_balanced("(", ")")
                    else:
                        pos += 1
                sel = selection()
                operation = operation or sel
            else:
                pos += 1
    except IndexError:
        return None, {}
    return operation, fragments


def _project(value: Any, sel: Optional[_Selection], fragments: Dict[str, _Selection]) -> Any:
    """Keep only the fields ``sel`` asks for (strict clients reject extra fields)."""
    if sel is None or value is None:
        return value
    if isinstance(value, list):
        return [_project(v, sel, fragments) for v in value]
    if not isinstance(value, dict):
        return value
    out: Dict[str, Any] = {}
    typename = value.get("__typename")
    for item in sel.items:
        if item[0] == "field":
            _, key, name, child = item
            if key in value:
                raw = value[key]
            elif name == "__typename":
                raw = typename
            else:
                raw = value.get(name)
            projected = _project(raw, child, fragments)
            if isinstance(out.get(key), dict) and isinstance(projected, dict):
                out[key].update(projected)
            else:
                out[key] = projected
        else:
            if item[0] == "inline":
                if item[1] is not None and typename is not None and item[1] != typename:
                    continue
                inner = item[2]
            else:
                inner = fragments.get(item[1])
                if inner is None:
                    continue
            for k, v in _project(value, inner, fragments).items():
                if isinstance(out.get(k), dict) and isinstance(v, dict):
                    out[k].update(v)
                else:
                    out[k] = v
    return out


def _gql_error(message: str, kind: str, path: Optional[List[str]] = None) -> Dict[str, Any]:
    error: Dict[str, Any] = {"type": kind, "message": message,
                             "locations": [{"line": 1, "column": 1}]}
    if path:
        error["path"] = path
    return {"data": None if not path else {path[0]: None}, "errors": [error]}


def _validation_failed(code: str, field: str) -> Dict[str, Any]:
    return {"message": "Validation Failed",
            "errors": [{"resource": "Label" if field == "name" else "Issue", "code": code,
                        "field": field}],
            "documentation_url": DOCS}


def _operation_name(query: str, declared: Optional[str]) -> str:
    if declared:
        return declared
    match = _OPERATION_RE.search(query or "")
    if match:
        return match.group(2)
    return "anonymous"


class _Server(http.server.ThreadingHTTPServer):
    """Threaded server with daemon threads that stays quiet when clients hang up."""

    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        if not isinstance(sys.exc_info()[1], (ConnectionError, TimeoutError)):
            super().handle_error(request, client_address)


class _Handler(http.server.BaseHTTPRequestHandler):
    """Routes proxy requests for the API host, and ``/_admin/`` requests."""

    fake: FakeGitHub
    protocol_version = "HTTP/1.1"
    server_version = "GitHub.com"
    sys_version = ""
    timeout = 120

    def setup(self) -> None:
        super().setup()
        with self.fake._lock:
            self.fake._connections.add(self.connection)

    def finish(self) -> None:
        with self.fake._lock:
            self.fake._connections.discard(self.connection)
        try:
            super().finish()
        except OSError:
            pass

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        """Silence the default stderr access log; see :attr:`FakeGitHub.requests`."""

    def do_CONNECT(self) -> None:
        """Refuse HTTPS tunnels: only the plain-HTTP ``api.<host>`` is served."""
        self._send(502, b"fake_github only serves http://" + self.fake.api_host.encode() + b"\n",
                   [("Content-Type", "text/plain")], close=True)

    def do_GET(self) -> None:
        self._dispatch()

    do_POST = do_PATCH = do_PUT = do_DELETE = do_HEAD = do_GET

    # --------------------------------------------------------------- plumbing

    def _send(self, status: int, body: bytes, headers: Iterable[Tuple[str, str]] = (),
              close: bool = False) -> None:
        self.send_response(status)
        for name, value in headers:
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        if close:
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _dispatch(self) -> None:
        fake = self.fake
        started = time.time()
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        split = urlsplit(self.path)
        host = (split.hostname or self.headers.get("Host", "").split(":")[0]).lower()
        path = split.path or "/"
        query = parse_qs(split.query)
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = None

        if path.startswith("/_admin/") and host in ("", "127.0.0.1", "localhost"):
            status, doc = fake.admin(self.command, path, query, body)
            self._send(status, json.dumps(doc, indent=1).encode() + b"\n",
                       [("Content-Type", "application/json")])
            return

        with fake._lock:
            fake._seq += 1
            seq = fake._seq
        request_id = f"FAKE:{os.getpid():X}:{seq:06X}"
        is_graphql = path == "/graphql" and self.command == "POST"
        query_text = body.get("query", "") if is_graphql and isinstance(body, dict) else ""
        variables = (body.get("variables") or {}) if is_graphql and isinstance(body, dict) else {}
        operation = _operation_name(query_text, body.get("operationName")
                                    if isinstance(body, dict) else None) if is_graphql else None
        kind = operation if is_graphql else f"{self.command} {path}"
        title = None
        if operation == "IssueCreate":
            title = (variables.get("input") or {}).get("title")
        elif (self.command == "POST" and re.fullmatch(r"/repos/[^/]+/[^/]+/issues", path)
              and isinstance(body, dict)):
            title = body.get("title")
        creates_issue = title is not None
        info: Dict[str, Any] = {
            "seq": seq, "time": started, "method": self.command, "host": host, "path": path,
            "kind": kind, "operation": operation, "issue_title": title, "status": None,
            "duration": None, "fault": None, "request_id": request_id,
        }
        with fake._lock:
            fake._log.append(info)
            request_latency = fake._request_latency
            issue_latency = fake._issue_latency
            reject = fake._reject_auth

        status, headers, payload, close = self._answer(
            info, is_graphql, query_text, variables, query, body, request_id,
            request_latency, issue_latency if creates_issue else 0.0, reject)
        with fake._lock:
            info["status"] = status
            info["duration"] = round(time.time() - started, 6)
        if status == 0:  # timeout / disconnect: drop the connection without a response
            self.close_connection = True
            try:
                self.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            return
        headers = [("X-GitHub-Request-Id", request_id),
                   ("X-GitHub-Media-Type", "github.v3; format=json")] + headers
        try:
            self._send(status, payload, headers, close=close)
        except OSError:
            self.close_connection = True

    def _answer(self, info: Dict[str, Any], is_graphql: bool, query_text: str,
                variables: Dict[str, Any], query: Dict[str, List[str]], body: Any,
                request_id: str, request_latency: float, issue_latency: float,
                reject: bool) -> Tuple[int, List[Tuple[str, str]], bytes, bool]:
        fake = self.fake
        if request_latency > 0:
            fake._stopping.wait(request_latency)
        resource = "graphql" if is_graphql else "core"
        json_type = ("Content-Type", "application/json; charset=utf-8")

        def doc(status: int, document: Any, extra: Iterable[Tuple[str, str]] = (),
                remaining: Optional[int] = None) -> Tuple[int, List[Tuple[str, str]], bytes, bool]:
            data = b"" if document is None else json.dumps(document).encode()
            return status, [json_type, *fake._rate_headers(resource, remaining), *extra], data, False

        if info["host"] != fake.api_host:
            return 502, [("Content-Type", "text/plain")], (
                f"fake_github only serves {fake.api_host}, not {info['host']!r}\n").encode(), True

        token = (self.headers.get("Authorization") or "").partition(" ")[2]
        if reject or (fake.token is not None and token != fake.token):
            info["fault"] = "bad_credentials" if not reject else "reject_auth"
            return doc(401, {"message": "Bad credentials", "documentation_url": DOCS})

        counted = info["path"] != "/rate_limit"
        with fake._lock:
            pool = fake._pool(resource)
            exhausted = counted and pool["remaining"] <= 0
            if counted and not exhausted:
                pool["remaining"] -= 1
        if exhausted:
            info["fault"] = "rate_limit_exhausted"
            return self._primary_limit(is_graphql, doc)

        fault = fake._take_fault(info)
        if fault is not None:
            info["fault"] = fault.kind
            return self._fault(fault, is_graphql, request_id, doc)

        if issue_latency > 0:
            fake._stopping.wait(issue_latency)

        if is_graphql:
            if not query_text:
                return doc(400, {"message": "Problems parsing JSON", "documentation_url": DOCS})
            return doc(200, fake.graphql(info["operation"], query_text, variables))
        status, document, extra = fake.rest(self.command, info["path"], query, body)
        return doc(status, document, extra)

    def _primary_limit(self, is_graphql: bool, doc: Callable[..., Any]) -> Any:
        if is_graphql:  # GitHub answers GraphQL with 200 and a RATE_LIMITED error
            return doc(200, {"errors": [{"type": "RATE_LIMITED", "message": PRIMARY_RATE_LIMIT_MESSAGE}]},
                       remaining=0)
        return doc(403, {"message": PRIMARY_RATE_LIMIT_MESSAGE + " (But here's the good news: "
                         "Authenticated requests get a higher rate limit. Check out the "
                         "documentation for more details.)",
                         "documentation_url": DOCS + "/overview/resources-in-the-rest-api#rate-limiting"},
                   remaining=0)

    def _fault(self, fault: _Fault, is_graphql: bool, request_id: str,
               doc: Callable[..., Any]) -> Tuple[int, List[Tuple[str, str]], bytes, bool]:
        fake = self.fake
        if fault.kind == "timeout":
            fake._stopping.wait(fault.hang)
            return 0, [], b"", True
        if fault.kind == "disconnect":
            return 0, [], b"", True
        if fault.kind == "bad_credentials":
            return doc(401, {"message": "Bad credentials", "documentation_url": DOCS})
        if fault.kind == "secondary_rate_limit":
            return doc(403, {"documentation_url": "https://docs.github.com/free-pro-team@latest/rest/"
                                                  "overview/resources-in-the-rest-api#secondary-rate-limits",
                             "message": SECONDARY_RATE_LIMIT_MESSAGE.format(request_id=request_id)},
                       [("Retry-After", str(fault.retry_after))])
        if fault.kind == "primary_rate_limit":
            return self._primary_limit(is_graphql, doc)
        code = int(fault.kind)
        reason = HTTPStatus(code).phrase
        if fault.body == "json":
            return doc(code, {"message": f"Server Error: {reason}", "documentation_url": DOCS})
        status, headers, _, close = doc(code, None)
        headers = [("Content-Type", "text/html; charset=utf-8")] + headers[1:]
        return status, headers, _HTML_ERROR.format(code=code, reason=reason).encode(), close


def main(argv: Optional[List[str]] = None) -> int:
    """Run a fake GitHub until interrupted and print the environment for ``gh``."""
    parser = argparse.ArgumentParser(
        prog="python -m parallel_setup.fake_github",
        description="Serve a fake GitHub API on 127.0.0.1 for the real gh CLI.")
    parser.add_argument("--port", type=int, default=0, help="port to bind (0: any free port)")
    parser.add_argument("--host", default="github.localhost", help="GH_HOST to serve")
    parser.add_argument("--issue-latency", type=float, default=0.0, metavar="SECONDS",
                        help="seconds each issue creation takes")
    parser.add_argument("--request-latency", type=float, default=0.0, metavar="SECONDS",
                        help="seconds added to every request")
    parser.add_argument("--repo", action="append", default=[], metavar="OWNER/NAME",
                        help="repository to create up front (repeatable)")
    parser.add_argument("--no-auto-create", action="store_true",
                        help="unknown repositories are not found instead of created")
    parser.add_argument("--reject-auth", action="store_true",
                        help="answer every request with 401 Bad credentials")
    parser.add_argument("--config-dir", default=None,
                        help="GH_CONFIG_DIR to print (default: a temporary directory)")
    args = parser.parse_args(argv)
    server = FakeGitHub(host=args.host, issue_latency=args.issue_latency,
                        request_latency=args.request_latency, repos=args.repo,
                        auto_create_repos=not args.no_auto_create, reject_auth=args.reject_auth,
                        port=args.port)
    server.start()
    config_dir = args.config_dir or server.env()["GH_CONFIG_DIR"]
    print(f"# fake GitHub for gh at {server.url} (admin: {server.url}/_admin/requests)")
    for name, value in server.gh_variables(config_dir).items():
        print(f"export {name}={value!s}" if value else f"export {name}=")
    print(f"# then: gh issue create -R {args.host}/acme/widgets --title T --body B")
    sys.stdout.flush()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        while not stop.wait(3600):
            pass
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The :class:`FakeGitHub` server: its settings, lifecycle, request log, and routing to the API's parts."""

from __future__ import annotations

import http.server
import os
import shutil
import socket
import tempfile
import threading
import time
from typing import Any, Dict, Iterable, List, Optional, Tuple
from urllib.parse import unquote

from .common import DOCS, _Repo, _gql_error
from .faults import FaultsMixin, _Fault
from .graphql import _parse_document, _project
from .issues import IssuesMixin
from .labels import LabelsMixin
from .ratelimits import RATE_LIMIT_WINDOW, RateLimitsMixin
from .repos import ReposMixin
from .pulls import PullsMixin
from .search import SearchMixin
from .transport import _Handler, _Server


class FakeGitHub(ReposMixin, IssuesMixin, LabelsMixin, PullsMixin, SearchMixin, FaultsMixin,
                 RateLimitsMixin):
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
        ``GET /_admin/pulls[?repo=owner/name]``, ``GET /_admin/counters``, ``GET /_admin/faults``;
        ``POST /_admin/fail_next`` and ``/_admin/fail_always`` (the keyword arguments
        of those methods, ``match`` as a glob), ``/_admin/clear_faults``,
        ``/_admin/issue_latency`` and ``/_admin/request_latency`` (``{"seconds": S}``),
        ``/_admin/rate_limit`` (``{"remaining": R, "limit": L, "reset": EPOCH}``),
        ``/_admin/auth`` (``{"reject": true}``), ``/_admin/repos`` (``{"repo": "o/n"}``),
        ``/_admin/pull_state`` (the keyword arguments of :meth:`set_pull_state`),
        ``/_admin/reset`` (forget issues, labels, pull requests, log, faults).
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
        self._unresponsive = 0.0  # > 0: hold every new connection this long, unanswered
        self._answer_again = threading.Event()
        self._connections_held = 0
        self._rate_limit = int(rate_limit)
        reset = int(time.time()) + RATE_LIMIT_WINDOW
        self._pools = {
            name: {"limit": self._rate_limit, "remaining": self._rate_limit, "reset": reset}
            for name in ("core", "graphql", "search")
        }
        for repo in repos:
            self.add_repo(repo)

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
        self._answer_again.set()
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
                "connections_held": self._connections_held,
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
                if action == "pulls":
                    return 200, self.pulls((query.get("repo") or [None])[0])
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
                elif action == "pull_state":
                    return 200, self.set_pull_state(**args)
                elif action == "reset":
                    self.reset()
                else:
                    return 404, {"error": f"unknown admin action {action!r}"}
                return 200, {"ok": True}
        except (TypeError, ValueError) as exc:
            return 400, {"error": str(exc)}
        return 404, {"error": f"unknown admin endpoint {method} {path}"}

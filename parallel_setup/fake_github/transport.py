"""HTTP: the proxy requests gh sends for ``api.<host>``, routed to the fake's handlers."""

from __future__ import annotations

import http.server
import json
import os
import re
import socket
import sys
import time
from http import HTTPStatus
from typing import TYPE_CHECKING, Any, Callable, Dict, Iterable, List, Optional, Tuple
from urllib.parse import parse_qs, urlsplit

from .common import DOCS
from .faults import _HTML_ERROR, PRIMARY_RATE_LIMIT_MESSAGE, SECONDARY_RATE_LIMIT_MESSAGE, _Fault
from .graphql import _operation_name

if TYPE_CHECKING:
    from .server import FakeGitHub


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

    def handle(self) -> None:
        fake = self.fake
        with fake._lock:
            hold, answer_again = fake._unresponsive, fake._answer_again
            if hold > 0:
                fake._connections_held += 1
        if hold > 0:  # accepted, never read, never answered; closed after the bound
            answer_again.wait(hold)
            self.close_connection = True
            return
        super().handle()

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

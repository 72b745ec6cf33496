"""Scripted failures: 5xx, rate limits, hangs, disconnects, rejected tokens."""

from __future__ import annotations

import fnmatch
import threading
from typing import Any, Callable, Dict, List, Optional, Union


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


MAX_HANG = 600.0


_HTML_ERROR = (
    "<!DOCTYPE html>\n<html>\n<head><title>{code} {reason}</title></head>\n"
    "<body><h1>{code} {reason}</h1>\n"
    "<p>We couldn't respond to your request in time. Sorry about that. "
    "Please try resubmitting your request and contact us if the problem persists.</p>\n"
    "</body>\n</html>\n"
)


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


class FaultsMixin:
    """Configure scripted failures (:meth:`fail_next`, :meth:`fail_always`) and take them per request."""

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

    def set_unresponsive(self, hold: Optional[float] = 30.0) -> None:
        """Accept every new connection and never answer it: nothing is read or sent for
        ``hold`` seconds (at most 600), then the connection is closed. A GitHub that is
        up but hung, at the connection level, so no request reaches the log (the admin
        endpoints hang too: clear it from Python). ``None`` or 0 answers again, at once
        (held connections are closed)."""
        with self._lock:
            self._answer_again.set()
            self._answer_again = threading.Event()
            self._unresponsive = min(float(hold or 0.0), MAX_HANG)

    def faults(self) -> List[Dict[str, Any]]:
        """The scripted failures still pending."""
        with self._lock:
            return [f.describe() for f in self._faults]

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

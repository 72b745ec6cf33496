"""What every part of the fake GitHub shares: repositories, timestamps, error documents."""

from __future__ import annotations

import time
from typing import Any, Callable, Dict, List, Optional


DOCS = "https://docs.github.com/rest"


def _now_iso(t: Optional[float] = None) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() if t is None else t))


class _Repo:
    """In-memory repository: labels, issues and pull requests, numbered 1, 2, 3 ... in one sequence."""

    def __init__(self, index: int, owner: str, name: str) -> None:
        self.owner = owner
        self.name = name
        self.id = f"R_kgDO{index:06d}"
        self.labels: Dict[str, Dict[str, Any]] = {}  # lower-cased name -> label
        self.issues: List[Dict[str, Any]] = []  # oldest first
        self.pulls: List[Dict[str, Any]] = []  # oldest first
        self.last_number = 0  # issues and pull requests share the numbers, as on GitHub

    def next_number(self) -> int:
        self.last_number += 1
        return self.last_number

    def issue(self, number: int) -> Optional[Dict[str, Any]]:
        return next((i for i in self.issues if i["number"] == number), None)

    def pull(self, number: int) -> Optional[Dict[str, Any]]:
        return next((p for p in self.pulls if p["number"] == number), None)

    @property
    def full_name(self) -> str:
        return f"{self.owner}/{self.name}"


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


def _page(items: List[Any], variables: Dict[str, Any], to_node: Callable[[Any], Dict[str, Any]]) -> Dict[str, Any]:
    """One page of a connection (``totalCount``, ``nodes``, ``pageInfo``), by gh's ``limit`` and ``endCursor``."""
    start = int(variables.get("endCursor") or 0)
    limit = int(variables.get("limit") or 30)
    more = start + limit < len(items)
    return {"totalCount": len(items), "nodes": [to_node(i) for i in items[start:start + limit]],
            "pageInfo": {"hasNextPage": more, "endCursor": str(start + limit) if more else ""}}

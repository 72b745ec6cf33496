"""Search: ``search(type: ISSUE, query: ...)`` as ``gh issue list --search`` sends it."""

from __future__ import annotations

import re
from typing import Any, Dict, List


class SearchMixin:
    """The search API over issues."""

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

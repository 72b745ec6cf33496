"""Labels: ``gh label create/list``, label look-ups by name, adding and removing labels."""

from __future__ import annotations

import json
import re
from typing import Any, Dict, List, Tuple
from urllib.parse import quote

from .common import DOCS, _Repo, _now_iso, _validation_failed


_ALIASED_FIELD_RE = re.compile(
    r"([A-Za-z_][A-Za-z0-9_]*)\s*:\s*(user|team|label|organization|milestone|project)"
    r"\s*\(([^)]*)\)"
)


class LabelsMixin:
    """Labels of a repository (REST and GraphQL)."""

    def labels(self, repo: str) -> List[Dict[str, Any]]:
        """Labels of ``owner/name`` in creation order."""
        with self._lock:
            r = self._repos.get(repo.lower())
            return [dict(l) for l in r.labels.values()] if r else []

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

    def _label_node(self, label: Dict[str, Any]) -> Dict[str, Any]:
        return {k: label[k] for k in ("id", "name", "description", "color", "createdAt")} | {
            "url": label["html_url"], "isDefault": False, "updatedAt": label["updatedAt"]}

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

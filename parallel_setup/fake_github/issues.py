"""Issues and their comments: create, list, view, comment, close, reopen, edit (GraphQL and REST)."""

from __future__ import annotations

from typing import Any, Dict, Iterable, List, Optional, Tuple
from urllib.parse import quote

from .common import DOCS, _Repo, _gql_error, _now_iso, _page, _validation_failed


class IssuesMixin:
    """Issues of a repository."""

    def issues(self, repo: Optional[str] = None) -> List[Dict[str, Any]]:
        """Issues (oldest first) of ``owner/name``, or of every repository, as plain dicts."""
        with self._lock:
            return [self._issue_public(r, i) for r in self._repos_named(repo) for i in r.issues]

    def _issue_url(self, repo: _Repo, number: int) -> str:
        return f"https://{self.host}/{repo.owner}/{repo.name}/issues/{number}"

    def add_issues(self, repo: str, count: int, title: str = "Other work", body: str = "") -> None:
        """Create ``count`` issues directly (a busy repository), as if other people had."""
        owner, _, name = repo.partition("/")
        target = self._repo(owner, name, create=True)
        for k in range(count):
            self._create_issue(target, f"{title} {k + 1}", body)

    def _create_issue(self, repo: _Repo, title: str, body: str,
                      label_ids: Iterable[str] = (), label_names: Iterable[str] = ()) -> Dict[str, Any]:
        with self._lock:
            labels = [self._nodes[i][1] for i in label_ids if i in self._nodes]
            for name in label_names:
                label = repo.labels.get(name.lower()) or self._create_label(repo, name)
                labels.append(label)
            number = repo.next_number()
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
            connection = _page(issues, variables, self._issue_node)
        return {"data": {"repository": {"hasIssuesEnabled": True, "issues": connection}}}

    def _gql_IssueByNumber(self, query: str, variables: Dict[str, Any]) -> Dict[str, Any]:
        repo = self._gql_repo(variables, "repo")
        if isinstance(repo, dict):
            return repo
        number = int(variables.get("number") or variables.get("issue_number") or 0)
        with self._lock:
            issue = repo.issue(number)
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
                since = (query.get("since") or [""])[0]  # ISO 8601 UTC, compared as text
                issues = [i for i in reversed(repo.issues)
                          if (state == "all" or i["state"].lower() == state) and i["updatedAt"] >= since]
                per_page = min(100, int((query.get("per_page") or ["30"])[0]))
                page = max(1, int((query.get("page") or ["1"])[0]))
                found = issues[(page - 1) * per_page:page * per_page]
                links = []
                if page * per_page < len(issues):  # gh --paginate follows rel="next"
                    args = {k: v[0] for k, v in query.items()}
                    args["page"] = str(page + 1)
                    url = f"http://{self.api_host}/repos/{repo.full_name}/issues?" + "&".join(
                        f"{quote(k)}={quote(v)}" for k, v in sorted(args.items()))
                    links = [("Link", f'<{url}>; rel="next"')]
                return 200, [self._issue_rest(i) for i in found], links
            number = int(rest[0]) if rest and rest[0].isdigit() else 0
            issue = repo.issue(number)
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

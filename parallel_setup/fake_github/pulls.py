"""Pull requests: ``gh pr create``, ``gh pr list --head``, ``gh pr view`` and their merge state.

The operations are the ones gh 2.23 sends, watched with ``GH_DEBUG=api`` (see
``tests/test_fake_github.py``'s pull request tests).
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional

from .common import _Repo, _gql_error, _now_iso, _page


class PullsMixin:
    """Pull requests of a repository; the head and base branches are names only (no git here)."""

    def pulls(self, repo: Optional[str] = None) -> List[Dict[str, Any]]:
        """Pull requests (oldest first) of ``owner/name``, or of every repository, as plain dicts."""
        with self._lock:
            return [self._pull_public(r, p) for r in self._repos_named(repo) for p in r.pulls]

    def _pull_url(self, repo: _Repo, number: int) -> str:
        return f"https://{self.host}/{repo.owner}/{repo.name}/pull/{number}"

    def _pull_public(self, repo: _Repo, pull: Dict[str, Any]) -> Dict[str, Any]:
        return {"repo": repo.full_name, "id": pull["id"], "number": pull["number"],
                "url": self._pull_url(repo, pull["number"]), "title": pull["title"], "body": pull["body"],
                "state": pull["state"], "head": pull["headRefName"], "base": pull["baseRefName"],
                "draft": pull["isDraft"], "mergeable": pull["mergeable"], "createdAt": pull["createdAt"]}

    def _pull_node(self, pull: Dict[str, Any]) -> Dict[str, Any]:
        repo: _Repo = pull["repo"]
        owner = {"id": "U_kgDO000001", "login": repo.owner, "name": repo.owner}
        page = {"hasNextPage": False, "endCursor": ""}
        return {
            "__typename": "PullRequest", "id": pull["id"], "number": pull["number"],
            "url": self._pull_url(repo, pull["number"]), "title": pull["title"], "body": pull["body"],
            "state": pull["state"], "closed": pull["state"] != "OPEN", "merged": pull["state"] == "MERGED",
            "isDraft": pull["isDraft"], "headRefName": pull["headRefName"], "baseRefName": pull["baseRefName"],
            "isCrossRepository": False, "headRepositoryOwner": owner,
            "headRepository": {"id": repo.id, "name": repo.name},
            "mergeable": pull["mergeable"], "mergeStateStatus": pull["mergeStateStatus"],
            "createdAt": pull["createdAt"], "updatedAt": pull["updatedAt"], "closedAt": pull["closedAt"],
            "mergedAt": pull["mergedAt"], "maintainerCanModify": True,
            "author": {"login": self.user, "name": self.user, "id": "U_kgDO000001", "is_bot": False},
            # What gh pr view asks for that this fake does not model: empty, as on a fresh PR.
            "additions": 0, "deletions": 0, "commits": {"totalCount": 0, "nodes": []},
            "reviewRequests": {"nodes": []}, "reviews": {"nodes": [], "totalCount": 0, "pageInfo": page},
            "assignees": {"nodes": [], "totalCount": 0}, "labels": {"nodes": [], "totalCount": 0},
            "projectCards": {"nodes": [], "totalCount": 0}, "milestone": None,
            "comments": {"nodes": [], "totalCount": 0, "pageInfo": page}, "reactionGroups": [],
            "statusCheckRollup": {"nodes": []},
        }

    def _gql_PullRequestForBranch(self, query: str, variables: Dict[str, Any]) -> Dict[str, Any]:
        """Open pull requests from a head branch (``gh pr create`` looks for one first)."""
        repo = self._gql_repo(variables, "repo")
        if isinstance(repo, dict):
            return repo
        head = variables.get("headRefName") or ""
        states = variables.get("states") or ["OPEN", "CLOSED", "MERGED"]
        with self._lock:
            nodes = [self._pull_node(p) for p in reversed(repo.pulls)
                     if p["headRefName"] == head and p["state"] in states]
        return {"data": {"repository": {"pullRequests": {"nodes": nodes},
                                        "defaultBranchRef": {"name": "main"}}}}

    def _create_pull(self, repo: _Repo, title: str, body: str, head: str, base: str,
                     draft: bool = False) -> Dict[str, Any]:
        with self._lock:
            number = repo.next_number()
            now = _now_iso()
            pull = {"id": f"PR_kwDO{repo.id[-6:]}{number:06d}", "number": number, "title": title,
                    "body": body or "", "state": "OPEN", "isDraft": bool(draft), "headRefName": head,
                    "baseRefName": base, "mergeable": "MERGEABLE", "mergeStateStatus": "CLEAN",
                    "createdAt": now, "updatedAt": now, "closedAt": None, "mergedAt": None, "repo": repo}
            repo.pulls.append(pull)
            self._nodes[pull["id"]] = ("PullRequest", pull)
            return pull

    def _gql_PullRequestCreate(self, query: str, variables: Dict[str, Any]) -> Dict[str, Any]:
        data = variables.get("input") or {}
        entry = self._nodes.get(data.get("repositoryId", ""))
        if not entry or entry[0] != "Repository":
            return _gql_error(f"Could not resolve to a node with the global id of "
                              f"'{data.get('repositoryId')}'", "NOT_FOUND", ["createPullRequest"])
        repo: _Repo = entry[1]
        head, base = str(data.get("headRefName") or ""), str(data.get("baseRefName") or "")
        with self._lock:
            if any(p["headRefName"] == head and p["baseRefName"] == base and p["state"] == "OPEN"
                   for p in repo.pulls):
                return _gql_error(f"A pull request already exists for {repo.owner}:{head}.",
                                  "UNPROCESSABLE", ["createPullRequest"])
        if not head or head == base:
            return _gql_error(f"No commits between {base} and {head}", "UNPROCESSABLE", ["createPullRequest"])
        pull = self._create_pull(repo, str(data.get("title") or ""), str(data.get("body") or ""), head, base,
                                 bool(data.get("draft")))
        return {"data": {"createPullRequest": {"pullRequest": self._pull_node(pull)}}}

    def _gql_PullRequestList(self, query: str, variables: Dict[str, Any]) -> Dict[str, Any]:
        """``gh pr list [--head B] [--base B] [--state S]``, newest first, paged like GitHub."""
        repo = self._gql_repo(variables, "repo")
        if isinstance(repo, dict):
            return repo
        states = variables.get("state") or ["OPEN"]
        if isinstance(states, str):
            states = [states]
        head, base = variables.get("headBranch"), variables.get("baseBranch")
        with self._lock:
            pulls = [p for p in reversed(repo.pulls) if p["state"] in states
                     and (not head or p["headRefName"] == head) and (not base or p["baseRefName"] == base)]
            connection = _page(pulls, variables, self._pull_node)
        return {"data": {"repository": {"pullRequests": connection}}}

    def _gql_PullRequestByNumber(self, query: str, variables: Dict[str, Any]) -> Dict[str, Any]:
        """``gh pr view N``."""
        repo = self._gql_repo(variables, "repo")
        if isinstance(repo, dict):
            return repo
        number = int(variables.get("pr_number") or variables.get("number") or 0)
        with self._lock:
            pull = repo.pull(number)
            node = self._pull_node(pull) if pull else None
        if node is None:
            return {"data": {"repository": {"pullRequest": None}},
                    "errors": [{"type": "NOT_FOUND", "path": ["repository", "pullRequest"],
                                "message": f"Could not resolve to a PullRequest with the number of {number}."}]}
        return {"data": {"repository": {"pullRequest": node}}}

    def set_pull_state(self, repo: str, number: int, state: Optional[str] = None,
                       mergeable: Optional[str] = None, merge_state_status: Optional[str] = None) -> Dict[str, Any]:
        """Change a pull request as GitHub would after a merge, a close or a push to its base.

        ``state``: ``OPEN``, ``CLOSED`` or ``MERGED``; ``mergeable``: ``MERGEABLE``,
        ``CONFLICTING`` or ``UNKNOWN``; ``merge_state_status``: ``CLEAN``, ``DIRTY``,
        ``BLOCKED``, ``BEHIND``, ``UNSTABLE``... Returns the pull request as :meth:`pulls` does.
        """
        owner, _, name = repo.partition("/")
        with self._lock:
            r = self._repo(owner, name, create=False)
            pull = r.pull(int(number)) if r else None
            if pull is None:
                raise ValueError(f"no pull request #{number} in {repo}")
            now = _now_iso()
            if state is not None:
                state = state.upper()
                if state not in ("OPEN", "CLOSED", "MERGED"):
                    raise ValueError(f"state must be OPEN, CLOSED or MERGED, not {state!r}")
                pull["state"] = state
                pull["closedAt"] = now if state != "OPEN" else None
                pull["mergedAt"] = now if state == "MERGED" else None
            if mergeable is not None:
                pull["mergeable"] = mergeable.upper()
                if merge_state_status is None:
                    pull["mergeStateStatus"] = "DIRTY" if pull["mergeable"] == "CONFLICTING" else "CLEAN"
            if merge_state_status is not None:
                pull["mergeStateStatus"] = merge_state_status.upper()
            pull["updatedAt"] = now
            return self._pull_public(r, pull)

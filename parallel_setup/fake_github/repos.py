"""Repositories: created on first use (or up front), ``RepositoryInfo``, ``UserCurrent``."""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Union

from .common import _Repo, _gql_error


class ReposMixin:
    """Repositories by ``owner/name`` and the GraphQL queries about them."""

    def add_repo(self, repo: str) -> Dict[str, Any]:
        """Create ``owner/name`` if absent and return its summary."""
        owner, _, name = repo.partition("/")
        if not owner or not name:
            raise ValueError(f"repository must be owner/name, not {repo!r}")
        with self._lock:
            r = self._repo(owner, name, create=True)
            return {"id": r.id, "owner": r.owner, "name": r.name}

    def _repo(self, owner: str, name: str, create: Optional[bool] = None) -> Optional[_Repo]:
        key = f"{owner}/{name}".lower()
        with self._lock:
            repo = self._repos.get(key)
            if repo is None and (self.auto_create_repos if create is None else create):
                repo = _Repo(len(self._repos) + 1, owner, name)
                self._repos[key] = repo
                self._nodes[repo.id] = ("Repository", repo)
            return repo

    def _repos_named(self, repo: Optional[str]) -> List[_Repo]:
        """Every repository, or the one named ``owner/name`` (case-insensitive); call under the lock."""
        repos = list(self._repos.values())
        return repos if repo is None else [r for r in repos if r.full_name.lower() == repo.lower()]

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

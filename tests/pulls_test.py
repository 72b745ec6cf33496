"""parallel_setup.pulls with the real gh against the fake GitHub."""

from __future__ import annotations

import pytest

from parallel_setup import pulls
from tests.support.github import REPO, fake_github, gh_env, requires_gh  # noqa: F401

pytestmark = requires_gh


def test_ensure_pr_creates_once_then_reuses_the_open_one(fake_github, gh_env, tmp_path):
    body = "Closes #3\n\n`$(rm -rf /)` and \"quotes\" stay text\n"
    first = pulls.ensure_pr(tmp_path, REPO, "feature/task-3", "main", "Task 3: cache", body, env=gh_env)
    assert first == {"number": 1, "url": "https://github.localhost/acme/widgets/pull/1", "reused": False,
                     "base": "main"}
    again = pulls.ensure_pr(tmp_path, REPO, "feature/task-3", "main", "Task 3: cache", body, env=gh_env)
    assert again == dict(first, reused=True)
    (pr,) = fake_github.pulls("acme/widgets")
    assert (pr["title"], pr["body"], pr["head"], pr["base"]) == ("Task 3: cache", body, "feature/task-3", "main")
    other = pulls.ensure_pr(tmp_path, REPO, "feature/task-4", "main", "Task 4", "Closes #4", env=gh_env)
    assert (other["number"], other["reused"]) == (2, False)


def test_a_merged_pr_is_not_reused(fake_github, gh_env, tmp_path):
    pulls.ensure_pr(tmp_path, REPO, "feature/a", "main", "A", "a", env=gh_env)
    fake_github.set_pull_state("acme/widgets", 1, state="MERGED")
    assert pulls.ensure_pr(tmp_path, REPO, "feature/a", "main", "A again", "a", env=gh_env)["reused"] is False


def test_a_transient_failure_is_retried_without_a_duplicate(fake_github, gh_env, tmp_path):
    fake_github.fail_next("502", match="PullRequestCreate")
    made = pulls.ensure_pr(tmp_path, REPO, "feature/b", "main", "B", "b", env=gh_env)
    assert (made["number"], made["reused"]) == (1, False)
    assert len(fake_github.pulls("acme/widgets")) == 1


def test_list_and_view_with_the_merge_state(fake_github, gh_env, tmp_path):
    pulls.ensure_pr(tmp_path, REPO, "feature/c", "main", "C", "Closes #9", env=gh_env)
    fake_github.set_pull_state("acme/widgets", 1, mergeable="CONFLICTING")
    assert [(p["number"], p["headRefName"], p["state"]) for p in
            pulls.list_prs(tmp_path, REPO, head="feature/c", env=gh_env)] == [(1, "feature/c", "OPEN")]
    assert pulls.list_prs(tmp_path, REPO, head="feature/none", env=gh_env) == []
    view = pulls.view_pr(tmp_path, REPO, 1, env=gh_env)
    assert {k: view[k] for k in ("number", "body", "mergeable", "mergeStateStatus", "state")} == {
        "number": 1, "body": "Closes #9", "mergeable": "CONFLICTING", "mergeStateStatus": "DIRTY", "state": "OPEN"}


def test_gh_failing_for_good_is_a_clear_error(fake_github, gh_env, tmp_path):
    fake_github.set_reject_auth(True)
    with pytest.raises(pulls.GhError) as exc:
        pulls.ensure_pr(tmp_path, REPO, "feature/d", "main", "D", "d", env=gh_env)
    assert str(exc.value) == ("gh pr list failed: HTTP 401: Bad credentials (http://api.github.localhost/graphql)\n"
                              "Try authenticating with:  gh auth login")
    assert fake_github.pulls() == []


def test_missing_gh_is_named(tmp_path, gh_env):
    with pytest.raises(pulls.GhError) as exc:
        pulls.list_prs(tmp_path, REPO, env=dict(gh_env, PARALLEL_GH=str(tmp_path / "no-gh")))
    assert str(exc.value).startswith(f"cannot run {tmp_path / 'no-gh'}: ")


def test_without_a_repository_gh_uses_the_projects_github_remote(fake_github, gh_env, tmp_path):
    from tests.support.git import git, make_repo
    project = make_repo(tmp_path, origin=False)
    git(project, "remote", "add", "origin", "https://github.localhost/acme/widgets.git")
    made = pulls.ensure_pr(project, None, "feature/e", "main", "E", "Closes #1", env=gh_env)
    assert made["url"] == "https://github.localhost/acme/widgets/pull/1"
    assert pulls.ensure_pr(project, "", "feature/e", "main", "E", "Closes #1", env=gh_env)["reused"] is True

"""ownership.task_ownership: what a run created, from the records the real setup.sh writes."""

from __future__ import annotations

import json
from pathlib import Path

from parallel_setup import ownership, runs
from tests.setup_crash_test import kill_in_checkout
from tests.setup_script_test import local_run, make_plan
from tests.support.git import git


def test_a_finished_setup_owns_its_issue_branch_and_worktree(repo):
    run = local_run(repo, make_plan(1))
    result = runs.run_setup(run, "t01")
    (run.task_dir("t01") / "report.json").write_text(json.dumps({"pushed": True}))
    assert ownership.task_ownership(run, "t01") == {
        "issue": 1, "issue_url": ".parallel/issues/1.md", "branch": "feature/local-1",
        "worktree": str(repo / "worktrees" / "local-1"), "branch_created": True, "worktree_created": True,
        "pushed": True}
    assert ownership.read_records(run.task_dir("t01")) == {
        "intent": {"branch": f"feature/local-1 {run.data['base_commit']}",
                   "worktree": str(repo / "worktrees" / "local-1")},
        "created": {"branch": "feature/local-1", "worktree": str(repo / "worktrees" / "local-1")}}
    assert result["status"] == "ok"


def test_a_setup_killed_in_the_checkout_still_owns_what_it_half_made(repo, tmp_path):
    run = local_run(repo, make_plan(1))
    kill_in_checkout(run, tmp_path)

    own = ownership.task_ownership(run, "t01")
    assert (own["issue"], own["branch"], own["worktree"]) == (1, "feature/local-1", str(repo / "worktrees" / "local-1"))
    assert own["branch_created"] is True and own["worktree_created"] is True
    assert own["pushed"] is None
    # Once the branch moved on (someone committed on it), an intent alone no longer proves it ours.
    git(repo, "commit", "-q", "--allow-empty", "-m", "elsewhere")
    git(repo, "update-ref", "refs/heads/feature/local-1", "HEAD")
    assert ownership.task_ownership(run, "t01")["branch_created"] is False


def test_a_setup_that_refused_a_foreign_branch_owns_nothing_but_its_issue(repo):
    git(repo, "branch", "feature/local-1")
    run = local_run(repo, make_plan(1))
    (run.task_dir("t01") / "ownership").write_text("")  # nothing recorded yet
    setup_json = {"status": "failed", "issue": 1, "branch": "feature/local-1",
                  "worktree": str(repo / "worktrees" / "local-1")}
    (run.task_dir("t01") / "setup.json").write_text(json.dumps(setup_json))
    own = ownership.task_ownership(run, "t01")
    assert own["branch"] == "feature/local-1" and own["branch_created"] is False
    assert own["worktree_created"] is False and own["issue"] == 1


def test_no_records_at_all(repo):
    run = local_run(repo, make_plan(1))
    assert ownership.task_ownership(run, "t01") == {
        "issue": None, "issue_url": None, "branch": None, "worktree": None,
        "branch_created": False, "worktree_created": False, "pushed": None}
    assert not Path(run.task_dir("t01") / "ownership").exists()

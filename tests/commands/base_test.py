"""``execute``: which branch a run starts from, and a second run of the same plan.

Real git throughout: a working clone with a bare local ``origin``.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from parallel_setup import runs
from tests.commands.execute_test import execute, finish, run_id_in, write_plan
from tests.support.git import git, git_commit, make_repo


@pytest.fixture(autouse=True)
def _no_gh(monkeypatch, tmp_path):
    monkeypatch.setenv("PARALLEL_GH", str(tmp_path / "no-such-gh"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))


def master_repo(root: Path) -> Path:
    """A clone whose origin's default branch is ``master`` (and has no ``main`` anywhere)."""
    repo = make_repo(root)
    git(repo, "branch", "-m", "main", "master")
    git(repo, "push", "-q", "-u", "origin", "master")
    git(root / "widgets.git", "symbolic-ref", "HEAD", "refs/heads/master")
    git(repo, "push", "-q", "origin", "--delete", "main")
    git(repo, "fetch", "-q", "--prune", "origin")
    return repo


def sha(repo: Path, ref: str) -> str:
    return git(repo, "rev-parse", ref).stdout.strip()


def test_a_master_repository_just_works(tmp_path, capsys):
    """No origin/HEAD (as after `git remote add`): origin is asked for its default branch."""
    repo = master_repo(tmp_path)
    assert git(repo, "symbolic-ref", "-q", "refs/remotes/origin/HEAD", check=False).returncode != 0
    write_plan(repo, n=1)
    code, out, err = execute(repo, capsys)
    assert code == 0, err
    assert "- Base: origin/master (origin's default branch; fetched)\n" in out
    run = runs.load_run(repo, run_id_in(out))
    assert (run.data["base_branch"], run.data["base_ref"]) == ("master", "origin/master")
    assert run.data["base_commit"] == sha(repo, "origin/master")


def test_origin_head_of_a_clone_names_the_default_branch(tmp_path, capsys):
    origin_side = master_repo(tmp_path)
    git(tmp_path, "clone", "-q", str(tmp_path / "widgets.git"), "clone")
    clone = tmp_path / "clone"
    assert git(clone, "symbolic-ref", "--short", "refs/remotes/origin/HEAD").stdout.strip() == "origin/master"
    git(clone, "checkout", "-q", "-b", "topic")  # the checked-out branch is not the base
    write_plan(clone, n=1)
    code, out, err = execute(clone, capsys, "--no-fetch")
    assert code == 0, err
    assert "- Base: origin/master (origin's default branch)\n" in out
    assert runs.load_run(clone, run_id_in(out)).data["base_commit"] == sha(origin_side, "master")


def test_without_origin_the_checked_out_branch_is_the_base(tmp_path, capsys):
    repo = make_repo(tmp_path, origin=False)
    git(repo, "branch", "-m", "main", "trunk")
    write_plan(repo, n=1)
    code, out, err = execute(repo, capsys)
    assert code == 0, err
    assert "- Base: trunk (the checked-out branch (no origin remote); no origin remote: the local branch)\n" in out


def test_a_pinned_base_that_is_missing_names_the_branches_and_the_fix(tmp_path, capsys):
    repo = master_repo(tmp_path)
    path = write_plan(repo, n=1, base_branch="main")
    code, out, err = execute(repo, capsys, "--no-fetch")
    assert (code, out) == (1, "")
    assert err == ("parallel-setup: base branch 'main' (the plan's base_branch) exists neither on origin nor "
                   "locally. Branches: master, origin/master. Set base_branch in the plan to one of them, or "
                   "remove it to start from master, origin's default branch\n")
    assert not (repo / ".parallel" / "runs").exists()  # nothing half made
    assert path.is_file()


def test_local_commits_ahead_of_origin_are_named_and_base_local_uses_them(tmp_path, capsys):
    repo = make_repo(tmp_path)
    git_commit(repo, "local one", {"one.txt": "1\n"})
    local = git_commit(repo, "local two", {"two.txt": "2\n"})
    write_plan(repo, n=1)
    code, out, err = execute(repo, capsys)
    assert code == 0, err
    assert ("- Base: origin/main (origin's default branch; fetched; local main is 2 commits ahead of origin/main: "
            "the tasks start without them; push them, or add --base-local to start from local main)\n") in out
    run = runs.load_run(repo, run_id_in(out))
    assert run.data["base_commit"] == sha(repo, "origin/main") != local
    assert run.data["base_local_ahead"] == 2

    code, out, err = execute(repo, capsys, "--base-local", "--new-run")
    assert code == 0, err
    assert ("- Base: main (origin's default branch; fetched; the local branch, as --base-local asked: "
            "2 commits ahead of origin/main)\n") in out
    run = runs.load_run(repo, run_id_in(out))
    assert (run.data["base_ref"], run.data["base_commit"], run.data["base_local"]) == ("main", local, True)
    result = runs.run_setup(run, "t1")
    assert result["status"] == "ok", result
    assert Path(result["worktree"], "two.txt").read_text() == "2\n"  # the task has the local commits


def test_base_local_without_a_local_branch_is_refused(tmp_path, capsys):
    repo = make_repo(tmp_path)
    git(repo, "checkout", "-q", "--detach")
    git(repo, "branch", "-q", "-D", "main")
    write_plan(repo, n=1)
    code, _, err = execute(repo, capsys, "--base-local")
    assert (code, err) == (1, "parallel-setup: --base-local: there is no local branch 'main' (only origin/main)\n")


def test_a_bare_repository_is_refused_with_the_reason(tmp_path, capsys):
    repo = make_repo(tmp_path)
    plan = write_plan(repo, n=1)
    bare = tmp_path / "widgets.git"
    code, out, err = execute(bare, capsys, str(plan))
    assert (code, out) == (1, "")
    assert err == (f"parallel-setup: {bare} is a bare repository (no working tree): parallel adds each task's "
                   f"worktree beside a checkout; clone it (git clone {bare}) and run there\n")
    assert not (bare / ".parallel").exists()


def test_a_second_run_of_an_active_plan_is_refused_and_names_the_run(repo, capsys):
    write_plan(repo, n=2)
    code, out, err = execute(repo, capsys)
    assert code == 0, err
    first = run_id_in(out)
    code, out, err = execute(repo, capsys)
    assert (code, out) == (1, "")
    assert err == (f"parallel-setup: plan 'demo' already has an active run {first} (2 running task(s)): resume it "
                   f"with `execute --run {first}`, or add --new-run to start another run\n")
    assert runs.list_runs(repo) == [first]

    finish(repo, first, "t1")
    code, _, err = execute(repo, capsys)
    assert "(1 running task(s))" in err and code == 1
    code, out, err = execute(repo, capsys, "--new-run")
    assert code == 0, err
    second = run_id_in(out)
    assert second != first and runs.list_runs(repo) == sorted([first, second])
    code, _, err = execute(repo, capsys, "--run", first, "--new-run")
    assert (code, err) == (1, "parallel-setup: --new-run and --base-local start a new run; --run RUN_ID resumes one\n")


def test_a_plan_whose_runs_all_finished_starts_a_new_run(repo, capsys):
    write_plan(repo, n=1)
    code, out, err = execute(repo, capsys)
    first = run_id_in(out)
    finish(repo, first, "t1", state="failed")
    code, out, err = execute(repo, capsys)
    assert code == 0, err
    assert run_id_in(out) != first

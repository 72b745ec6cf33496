"""setup.sh in a repository with submodules: each task's worktree gets them, or a note says why not.

Real git: a library repository added as a submodule (recursively, with its own submodule) of a
working clone with a bare origin.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from parallel_setup import runs
from tests.setup_script_test import local_run, make_plan
from tests.support.git import git, git_commit, make_repo


@pytest.fixture
def allow_file_submodules(monkeypatch, tmp_path):
    """git 2.38.1+ refuses file:// submodules unless protocol.file.allow says so."""
    cfg = Path(os.environ["GIT_CONFIG_GLOBAL"])
    mine = tmp_path / "gitconfig"
    mine.write_text(cfg.read_text() + "[protocol \"file\"]\n\tallow = always\n")
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", str(mine))


def repo_with_submodules(root: Path) -> Path:
    inner = make_repo(root, origin=False, name="inner", files={"inner.txt": "inner\n"})
    lib = make_repo(root, origin=False, name="lib", files={"lib.txt": "lib\n"})
    git(lib, "-c", "protocol.file.allow=always", "submodule", "add", "-q", str(inner), "vendor/inner")
    git_commit(lib, "add inner")
    repo = make_repo(root)
    git(repo, "-c", "protocol.file.allow=always", "submodule", "add", "-q", str(lib), "lib")
    git_commit(repo, "add lib")
    git(repo, "push", "-q", "origin", "main")
    return repo


def test_submodules_are_initialised_in_each_worktree(tmp_path, allow_file_submodules):
    repo = repo_with_submodules(tmp_path)
    run = local_run(repo, make_plan(2))
    for task in run.tasks:
        result = runs.run_setup(run, task)
        assert result["status"] == "ok", result
        wt = Path(result["worktree"])
        assert (wt / "lib" / "lib.txt").read_text() == "lib\n"
        assert (wt / "lib" / "vendor" / "inner" / "inner.txt").read_text() == "inner\n"  # recursive
        assert "submodules initialised (git submodule update --init --recursive)" in result["notes"]


def test_submodules_that_cannot_be_initialised_leave_a_note_saying_why(tmp_path, allow_file_submodules,
                                                                         monkeypatch):
    repo = repo_with_submodules(tmp_path)
    run = local_run(repo, make_plan(1))
    (tmp_path / "lib").rename(tmp_path / "lib-moved")  # the submodule's URL no longer answers
    result = runs.run_setup(run, "t01")
    assert result["status"] == "ok", result  # the task can still work on the rest of the repository
    (note,) = [n for n in result["notes"] if n.startswith("submodules")]
    assert note.startswith("submodules NOT initialised: git submodule update --init --recursive failed (")
    assert f"'{tmp_path / 'lib'}'" in note and note.endswith("); run it in the worktree")
    assert list((Path(result["worktree"]) / "lib").iterdir()) == []


def test_a_repository_without_submodules_gets_no_note(repo):
    run = local_run(repo, make_plan(1))
    result = runs.run_setup(run, "t01")
    assert result["status"] == "ok" and not [n for n in result["notes"] if "submodule" in n]

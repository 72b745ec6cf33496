"""setup.sh killed, run twice at once, run against a hung GitHub, and run again.

Real setup.sh processes (bash), real git with a bare origin, the real gh against the fake
GitHub. A kill is SIGKILL: to the script alone (what Claude Code's Bash timeout does to
the shell, leaving a gh call in flight) or to its whole process group.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Callable, Dict, Optional

import pytest

from parallel_setup import events, ownership, runs
from parallel_setup.fake_github import FakeGitHub
from tests.setup_script_test import FAST, REPO_SLUG, github_run, local_run, make_plan, setup_env
from tests.support.git import branches, git, worktrees
from tests.support.github import requires_gh


@pytest.fixture
def server():
    with FakeGitHub() as s:
        yield s


@pytest.fixture
def gh_env(server, tmp_path_factory):
    return setup_env(server, tmp_path_factory.mktemp("gh-config"))


class Setup:
    """One setup.sh process, its output in files (a killed script's children may keep pipes open)."""

    def __init__(self, run: runs.Run, task: str, env: Dict[str, str], out_dir: Path, name: str = "a"):
        self.out = out_dir / f"{task}-{name}.out"
        self.err = out_dir / f"{task}-{name}.err"
        with open(self.out, "w") as out, open(self.err, "w") as err:
            self.proc = subprocess.Popen(["bash", str(run.setup_script(task))], cwd=run.project, env=env,
                                         stdin=subprocess.DEVNULL, stdout=out, stderr=err, start_new_session=True)

    def kill(self, group: bool = False, reap: bool = True) -> None:
        if group:
            os.killpg(self.proc.pid, signal.SIGKILL)
        else:
            self.proc.kill()
        if reap:
            self.proc.wait(timeout=30)
        else:  # killed, not yet reaped by its parent: a zombie holding its pid
            wait_for(lambda: Path(f"/proc/{self.proc.pid}/stat").read_text().split(") ")[1][0] == "Z",
                     "the zombie")

    def result(self, timeout: float = 120) -> dict:
        self.proc.wait(timeout=timeout)
        lines = [l for l in self.out.read_text().splitlines() if l.strip()]
        assert lines, f"no JSON line (exit {self.proc.returncode}): {self.err.read_text()[-2000:]}"
        result = json.loads(lines[-1])
        result["_exit"] = self.proc.returncode
        return result


def wait_for(check: Callable[[], bool], what: str, timeout: float = 60) -> None:
    end = time.time() + timeout
    while not check():
        assert time.time() < end, f"timed out waiting for {what}"
        time.sleep(0.02)


def kill_in_checkout(run: runs.Run, tmp_path: Path, group: bool = True) -> None:
    """Start the task's setup, and SIGKILL it while git worktree add checks files out (the
    first checkout stalls there, as a large one does, in a post-checkout hook; later ones are quick)."""
    started = tmp_path / "checkout-started"
    hook = run.project / ".git" / "hooks" / "post-checkout"
    hook.write_text(f"#!/bin/sh\nif [ ! -e '{started}' ]; then : > '{started}'; sleep 3; fi\n")
    hook.chmod(0o755)
    first = Setup(run, "t01", setup_env(), tmp_path)
    wait_for(started.exists, "the checkout")
    first.kill(group=group)


def assert_one_complete_setup(run: runs.Run, result: dict, task: str = "t01") -> None:
    """A finished setup: its worktree on its branch at the base commit, recorded as the run's."""
    assert result["status"] == "ok", result
    wt = Path(result["worktree"])
    assert str(wt) in worktrees(run.project)
    assert git(wt, "branch", "--show-current").stdout.strip() == result["branch"]
    assert git(wt, "rev-parse", "HEAD").stdout.strip() == run.data["base_commit"]
    assert (wt / "README.md").exists()
    own = ownership.task_ownership(run, task)
    assert own["issue"] == result["issue"] and own["branch"] == result["branch"]
    assert own["worktree"] == str(wt) and own["branch_created"] and own["worktree_created"]


# --------------------------------------------------------------------------
# Killed at any point, then run again


@requires_gh
@pytest.mark.parametrize("reap", [True, pytest.param(False, marks=pytest.mark.skipif(
    not Path("/proc/self/stat").exists(), reason="zombies are seen through /proc"))], ids=["reaped", "zombie"])
def test_killed_before_the_issue_call_then_run_again(repo, server, gh_env, tmp_path, reap):
    server.set_issue_latency(1)
    run = github_run(repo, make_plan(1))
    first = Setup(run, "t01", gh_env, tmp_path)
    wait_for(lambda: (run.task_dir("t01") / "setup.lock.1").exists(), "the lock")
    first.kill(group=True, reap=reap)
    again = Setup(run, "t01", gh_env, tmp_path, "b").result()
    first.proc.wait(timeout=30)
    assert_one_complete_setup(run, again)
    assert len(server.issues(REPO_SLUG)) == 1
    assert (run.task_dir("t01") / "setup.lock.2").read_text().startswith("released ")


@requires_gh
@pytest.mark.parametrize("group", [False, True], ids=["script-only", "process-group"])
def test_killed_during_the_issue_call_the_rerun_waits_for_it_and_makes_no_second_issue(
        repo, server, gh_env, tmp_path, group):
    server.set_issue_latency(2)
    gh_env = dict(gh_env, PARALLEL_GH_TIMEOUT="4")
    run = github_run(repo, make_plan(1))
    first = Setup(run, "t01", gh_env, tmp_path)
    wait_for(lambda: any(r["operation"] == "IssueCreate" for r in server.requests), "the issue call")
    # The script only (as Claude Code's Bash timeout does): its gh call is still in flight.
    # The whole group: gh dies too, but GitHub got the request and still creates the issue.
    first.kill(group=group)
    again = Setup(run, "t01", gh_env, tmp_path, "b").result()

    assert_one_complete_setup(run, again)
    assert len(server.issues(REPO_SLUG)) == 1
    assert again["reused"]["issue"] is True
    log = (run.task_dir("t01") / "setup.log").read_text()
    assert "lock: took over from an earlier copy of this setup that is gone" in log
    assert ("the earlier copy's issue_create was killed in flight; waiting until it would have timed out" if group
            else "waiting for the earlier copy's issue_create") in log


@requires_gh
def test_killed_right_after_the_issue_call_then_run_again(repo, server, gh_env, tmp_path):
    hook = repo / ".git" / "hooks" / "post-checkout"
    hook.write_text("#!/bin/sh\nsleep 1\n")  # keep the worktree step long enough to land in it or before
    hook.chmod(0o755)
    run = github_run(repo, make_plan(1))
    first = Setup(run, "t01", gh_env, tmp_path)
    wait_for(lambda: server.issues(REPO_SLUG), "the issue")
    first.kill(group=True)
    again = Setup(run, "t01", gh_env, tmp_path, "b").result()
    assert_one_complete_setup(run, again)
    assert len(server.issues(REPO_SLUG)) == 1


@pytest.mark.parametrize("group", [True, False], ids=["process-group", "script-only"])
def test_killed_during_the_checkout_the_rerun_repairs_its_own_worktree(repo, tmp_path, group):
    run = local_run(repo, make_plan(1))
    kill_in_checkout(run, tmp_path, group=group)
    again = Setup(run, "t01", setup_env(), tmp_path, "b").result()

    assert_one_complete_setup(run, again)
    assert again["branch"] == "feature/local-1"
    log = (run.task_dir("t01") / "setup.log").read_text()
    assert "removing the half-made worktrees/local-1" in log
    if not group:  # the killed script's git worktree add was still running: the re-run let it end first
        assert "lock: waiting for the earlier copy's git worktree add" in log
    assert len(worktrees(repo)) == 2


def test_a_failing_post_checkout_hook_is_the_reason_and_a_rerun_after_the_fix_works(repo):
    hook = repo / ".git" / "hooks" / "post-checkout"
    hook.write_text("#!/bin/sh\necho 'git-lfs: object 3f2a missing for assets/logo.png' >&2\nexit 1\n")
    hook.chmod(0o755)
    run = local_run(repo, make_plan(1))
    failed = runs.run_setup(run, "t01", env=setup_env())
    assert failed["status"] == "failed" and failed["step"] == "worktree"
    assert failed["reason"] == ("git worktree add failed: the post-checkout hook failed: "
                                "git-lfs: object 3f2a missing for assets/logo.png")
    hook.unlink()  # the cause is fixed
    again = runs.run_setup(run, "t01", env=setup_env())
    assert_one_complete_setup(run, again)


# --------------------------------------------------------------------------
# Two copies at once


def two_copies_at_once(run: runs.Run, env: Dict[str, str], tmp_path: Path) -> dict:
    """The same setup twice at the same moment: both end ok with one issue and one worktree,
    one of them having waited for the other and reused what it made."""
    a, b = Setup(run, "t01", env, tmp_path, "a"), Setup(run, "t01", env, tmp_path, "b")
    ra, rb = a.result(), b.result()
    assert ra["status"] == rb["status"] == "ok", (ra, rb)
    assert ra["issue"] == rb["issue"] == 1 and ra["worktree"] == rb["worktree"]
    assert sorted([ra["reused"]["issue"], rb["reused"]["issue"]]) == [False, True]
    assert_one_complete_setup(run, ra)
    assert len(worktrees(run.project)) == 2
    return ra


@requires_gh
def test_two_copies_at_once_make_one_issue_one_branch_one_worktree(repo, server, gh_env, tmp_path):
    server.set_issue_latency(1)
    two_copies_at_once(github_run(repo, make_plan(1)), gh_env, tmp_path)
    assert len(server.issues(REPO_SLUG)) == 1 and server.counters()["issues_created"] == 1
    assert branches(repo) == ["feature/task-1", "main"]


def test_two_local_copies_at_once_neither_removes_the_others_worktree(repo, tmp_path):
    run = local_run(repo, make_plan(1))
    two_copies_at_once(run, setup_env(PARALLEL_LOCAL_ISSUE_LATENCY="0.5"), tmp_path)
    assert sorted(p.name for p in (repo / ".parallel" / "issues").glob("*.md")) == ["1.md"]
    assert branches(repo) == ["feature/local-1", "main"]


@requires_gh
def test_a_copy_that_waited_too_long_says_busy_and_writes_nothing(repo, server, gh_env, tmp_path):
    server.set_issue_latency(4)
    run = github_run(repo, make_plan(1))
    first = Setup(run, "t01", gh_env, tmp_path, "a")
    wait_for(lambda: (run.task_dir("t01") / "setup.lock.1").exists(), "the lock")
    busy = Setup(run, "t01", dict(gh_env, PARALLEL_LOCK_WAIT="0.5"), tmp_path, "b").result()

    assert busy["_exit"] == 75 and busy["status"] == "busy" and busy["step"] == "lock"
    assert busy["holder_pid"] == first.proc.pid
    assert busy["reason"] == (f"another copy of this setup is still running (pid {first.proc.pid}); run this "
                              "same command again: it waits for that copy and then reuses what it made")
    assert not (run.task_dir("t01") / "setup.json").exists()
    assert first.result()["status"] == "ok"
    assert [e["event"] for e in events.read_events(run.dir) if e["task"] == "t01"].count("setup_end") == 1


# --------------------------------------------------------------------------
# Never adopt what the run did not make


@requires_gh
def test_an_existing_branch_the_run_did_not_create_is_refused_and_left_alone(repo, server, gh_env):
    git(repo, "branch", "feature/task-1")
    git(repo, "commit", "-q", "--allow-empty", "-m", "someone's work")
    git(repo, "update-ref", "refs/heads/feature/task-1", "HEAD")
    theirs = git(repo, "rev-parse", "feature/task-1").stdout.strip()
    run = github_run(repo, make_plan(1))
    result = runs.run_setup(run, "t01", env=gh_env)

    assert result["_exit"] == 1 and result["step"] == "worktree"
    assert result["reason"] == (
        "branch feature/task-1 already exists and was not created by this run's setup of task t01: it may "
        "hold someone else's commits, so it is not used. Keep it under another name (git branch -m "
        "feature/task-1 feature/task-1-old) or delete it if nothing in it is needed (git branch -D "
        "feature/task-1), then run setup again")
    assert git(repo, "rev-parse", "feature/task-1").stdout.strip() == theirs
    assert len(worktrees(repo)) == 1
    own = ownership.task_ownership(run, "t01")
    assert own["issue"] == 1 and own["branch"] == "feature/task-1"
    assert own["branch_created"] is False and own["worktree_created"] is False
    # Renamed away as told: the same command now works.
    git(repo, "branch", "-m", "feature/task-1", "feature/task-1-old")
    assert_one_complete_setup(run, runs.run_setup(run, "t01", env=gh_env))


@requires_gh
def test_a_branch_of_that_name_on_the_remote_is_refused(repo, server, gh_env):
    git(repo, "push", "-q", "origin", "main:feature/task-1")  # someone else's, pushed from another clone
    git(repo, "fetch", "-q", "origin")
    run = github_run(repo, make_plan(1))
    result = runs.run_setup(run, "t01", env=gh_env)
    assert result["_exit"] == 1 and result["step"] == "worktree"
    assert result["reason"] == (
        "a remote already has a branch named feature/task-1 (refs/remotes/origin/feature/task-1) that this run "
        "did not create: pushing this task's work there would clash. Rename or delete that remote branch, or "
        "fetch and check what it holds, then run setup again")
    assert "feature/task-1" not in branches(repo)


def test_local_numbering_skips_a_number_taken_on_the_remote(repo):
    git(repo, "push", "-q", "origin", "main:feature/local-1")
    git(repo, "fetch", "-q", "origin")
    result = runs.run_setup(local_run(repo, make_plan(1)), "t01")
    assert result["status"] == "ok" and result["branch"] == "feature/local-2"


@requires_gh
def test_someone_elses_worktree_is_refused(repo, server, gh_env):
    git(repo, "worktree", "add", "-b", "mine", "worktrees/task-1")
    run = github_run(repo, make_plan(1))
    result = runs.run_setup(run, "t01", env=gh_env)
    assert result["_exit"] == 1 and result["step"] == "worktree"
    assert result["reason"] == (
        "worktrees/task-1 already exists and was not made by this task (no owner recorded): it is left alone. "
        "If nothing in it is needed, remove it (git worktree remove worktrees/task-1, or move the folder away), "
        "then run setup again")
    assert (repo / "worktrees" / "task-1").is_dir()


# --------------------------------------------------------------------------
# Names that never collide


@requires_gh
def test_a_github_run_after_a_local_run_gets_its_own_names(repo, server, gh_env):
    local = runs.run_setup(local_run(repo, make_plan(1)), "t01")
    assert (local["branch"], local["worktree"]) == ("feature/local-1", str(repo / "worktrees" / "local-1"))
    run = github_run(repo, make_plan(1))
    result = runs.run_setup(run, "t01", env=gh_env)
    assert (result["issue"], result["branch"]) == (1, "feature/task-1")
    assert_one_complete_setup(run, result)


def test_local_numbering_does_not_restart_onto_an_earlier_runs_branch(repo):
    first = runs.run_setup(local_run(repo, make_plan(1)), "t01")
    wt = Path(first["worktree"])
    (wt / "work.txt").write_text("done\n")
    git(wt, "add", "work.txt")
    git(wt, "commit", "-qm", "first run's work")
    kept = git(repo, "rev-parse", first["branch"]).stdout.strip()
    git(repo, "worktree", "remove", str(wt))
    git(repo, "clean", "-q", "-fdx")  # .parallel/issues/ is gone; the branch is not
    assert not (repo / ".parallel").exists()

    run = local_run(repo, make_plan(1))
    again = runs.run_setup(run, "t01")
    assert again["status"] == "ok" and again["issue"] == 2 and again["branch"] == "feature/local-2"
    assert git(repo, "rev-parse", first["branch"]).stdout.strip() == kept


# --------------------------------------------------------------------------
# A GitHub that never answers


def _path_without_timeout(tmp_path: Path) -> str:
    """A PATH with every tool but `timeout` (stock macOS has none)."""
    bin_dir = tmp_path / "no-timeout-bin"
    bin_dir.mkdir()
    for d in os.environ["PATH"].split(os.pathsep):
        if not os.path.isdir(d):
            continue
        for name in os.listdir(d):
            target = bin_dir / name
            if name != "timeout" and not target.exists() and os.access(os.path.join(d, name), os.X_OK):
                target.symlink_to(os.path.join(d, name))
    return str(bin_dir)


@requires_gh
@pytest.mark.parametrize("timeout_binary", [True, False], ids=["timeout", "no-timeout-binary"])
def test_a_hung_github_ends_the_issue_step_at_its_deadline(repo, server, gh_env, tmp_path, timeout_binary):
    run = github_run(repo, make_plan(1))
    server.set_unresponsive(hold=120)
    env = dict(gh_env, PARALLEL_SETUP_DEADLINE="6", PARALLEL_GH_TIMEOUT="2")
    if not timeout_binary:
        env["PATH"] = _path_without_timeout(tmp_path)
    started = time.time()
    result = Setup(run, "t01", env, tmp_path).result(timeout=100)
    took = time.time() - started
    server.set_unresponsive(None)

    assert result["status"] == "failed" and result["step"] == "issue"
    assert result["reason"].startswith("gh timed out after ")
    assert result["reason"].endswith("setup's deadline of 6 s would pass; PARALLEL_SETUP_DEADLINE)")
    assert took < 60  # the deadline is 6 s; without it this waits for the 120 s hold
    calls = [e for e in events.read_events(run.dir, event="gh_call") if e["task"] == "t01"]
    assert calls and all(e["exit"] == 124 for e in calls)


# --------------------------------------------------------------------------
# The marker lookup in a busy repository


@requires_gh
def test_the_marker_lookup_finds_its_issue_behind_hundreds_of_newer_ones(repo, server, gh_env):
    run = github_run(repo, make_plan(1))
    first = runs.run_setup(run, "t01", env=gh_env)
    assert first["status"] == "ok"
    (run.task_dir("t01") / "issue.record").unlink()  # died right after the API call
    git(repo, "worktree", "remove", first["worktree"])
    server.add_issues(REPO_SLUG, 600)  # a busy repository: 600 newer issues
    again = runs.run_setup(run, "t01", env=gh_env)
    assert again["status"] == "ok" and again["issue"] == first["issue"] and again["reused"]["issue"] is True
    assert server.counters()["issues_created"] == 601


# --------------------------------------------------------------------------
# Only real lock contention is retried


@pytest.mark.parametrize("message, contention", [
    ("fatal: cannot lock ref 'refs/heads/feature/task-1': reference already exists", False),
    ("fatal: a branch named 'feature/task-1' already exists", False),
    ("fatal: '/repo/worktrees/task-1' already exists", False),
    ("fatal: cannot lock ref 'refs/heads/feature/task-1': Unable to create "
     "'/repo/.git/refs/heads/feature/task-1.lock': File exists.", True),
    ("error: could not lock config file .git/config: File exists", True),
    ("fatal: Unable to create '/repo/.git/worktrees/task-1/index.lock': File exists.", True),
])
def test_only_real_lock_contention_counts_as_contention(repo, message, contention):
    """setup.sh's own is_lock_error, run by bash on git's messages."""
    script = local_run(repo, make_plan(1)).setup_script("t01").read_text()
    function = script[script.index("is_lock_error() {"):]
    function = function[:function.index("\n}\n") + 3]
    proc = subprocess.run(["bash", "-c", function + 'is_lock_error "$1"', "bash", message])
    assert (proc.returncode == 0) is contention


def test_a_task_folder_that_cannot_be_written_fails_at_once(repo, tmp_path):
    if os.geteuid() == 0:
        pytest.skip("root writes into read-only folders")
    run = local_run(repo, make_plan(1))
    task_dir = run.task_dir("t01")
    task_dir.chmod(0o555)
    try:
        result = Setup(run, "t01", setup_env(), tmp_path).result(timeout=60)
    finally:
        task_dir.chmod(0o755)
    assert result["status"] == "failed" and result["step"] == "init"
    assert result["reason"] == f"cannot create {task_dir}/setup.lock.1 (is the task folder writable?)"


@requires_gh
def test_killed_at_moments_spread_over_the_whole_setup_every_rerun_finishes_the_job(repo, server, gh_env, tmp_path):
    """The issue's 30 random kills, at fixed moments: from the lock to the end of the checkout."""
    server.set_issue_latency(0.5)
    hook = repo / ".git" / "hooks" / "post-checkout"
    hook.write_text("#!/bin/sh\nsleep 0.5\n")  # a checkout that takes a while
    hook.chmod(0o755)
    delays = [0.02, 0.1, 0.25, 0.4, 0.6, 0.8, 1.0, 1.3, 1.6, 2.0]
    gh_env = dict(gh_env, PARALLEL_GH_TIMEOUT="3")  # how long a re-run waits for a call killed in flight
    run = github_run(repo, make_plan(len(delays)))
    results = {}
    for k, (task, delay) in enumerate(zip(run.tasks, delays)):
        first = Setup(run, task, gh_env, tmp_path, "a")
        time.sleep(delay)
        first.kill(group=bool(k % 2))
        results[task] = Setup(run, task, gh_env, tmp_path, "b").result()

    assert {t: r["status"] for t, r in results.items()} == {t: "ok" for t in run.tasks}, results
    for task, result in results.items():
        assert_one_complete_setup(run, result, task)
    numbers = sorted(r["issue"] for r in results.values())
    assert numbers == sorted(set(numbers)) and len(server.issues(REPO_SLUG)) == len(delays)


def test_a_local_number_claimed_by_a_killed_copy_is_finished_not_skipped(repo):
    run = local_run(repo, make_plan(1))
    first = runs.run_setup(run, "t01")
    issue_file = repo / ".parallel" / "issues" / "1.md"
    # The state a copy killed between claiming number 1 and writing the issue leaves.
    issue_file.write_text("")
    (run.task_dir("t01") / "issue.record").unlink()
    again = runs.run_setup(run, "t01")
    assert again["status"] == "ok" and again["issue"] == first["issue"] == 1
    assert issue_file.read_text() == (run.task_dir("t01") / "local-issue.md").read_text()
    assert sorted(p.name for p in issue_file.parent.iterdir()) == ["1.md"]

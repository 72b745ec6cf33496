"""The worktree pool: ``parallel-setup pool``, execute handing its worktrees out, the setup claiming them.

Real git throughout: a working clone with a bare origin, real ``git worktree`` moves,
setup scripts run concurrently as the subagents would.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from parallel_setup import cli, disk, pool, runs
from tests.commands.execute_test import calls_in, execute, run_id_in, write_plan
from tests.setup_script_test import make_plan
from tests.support.git import git, git_commit, worktrees


@pytest.fixture(autouse=True)
def _no_gh(monkeypatch, tmp_path):
    monkeypatch.setenv("PARALLEL_GH", str(tmp_path / "no-such-gh"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    monkeypatch.delenv("PARALLEL_WORKTREE_POOL", raising=False)


def cmd(repo: Path, capsys, *args: str):
    code = cli.main(["-C", str(repo), "pool", *args])
    out, err = capsys.readouterr()
    return code, out, err


def head(path: Path) -> str:
    return git(path, "rev-parse", "HEAD").stdout.strip()


def wait_for_fill(out: str) -> None:
    """Wait for the background fill whose pid ``out`` names (a child of this test process)."""
    pid = int(out.split("(pid ", 1)[1].split(",", 1)[0])
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0


def setup_all(run: runs.Run) -> dict:
    with ThreadPoolExecutor(max_workers=len(run.tasks)) as ex:
        results = list(ex.map(lambda t: runs.run_setup(run, t, timeout=120), run.tasks))
    return dict(zip(run.tasks, results))


# --------------------------------------------------------------------------
# The command


def test_off_by_default_and_fill_says_how_to_turn_it_on(repo, capsys):
    off = "no run yet to size it from; on by default after the first run if it fits the disk budget"
    assert cmd(repo, capsys, "status") == (0, f"Worktree pool: off ({off})\n", "")
    code, out, err = cmd(repo, capsys, "fill")
    assert code == 1
    assert err == ("parallel-setup: the worktree pool is off in this repository; turn it on with: "
                   "parallel-setup pool on --size N (or give fill --size N)\n")
    assert not pool.pool_dir(repo).exists()
    # What /parallel:plan runs: one line, never a failure, nothing created.
    assert cmd(repo, capsys, "fill", "--if-on") == (0, f"Worktree pool: off ({off}).\n", "")
    assert not pool.pool_dir(repo).exists()


def test_on_fills_in_the_background_at_origins_default_branch(repo, capsys):
    code, out, err = cmd(repo, capsys, "on", "--size", "3")
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0] == "Worktree pool on: 3 worktrees at main, in worktrees/.pool/ (setting: .parallel/pool.json)"
    assert lines[1].startswith("Worktree pool: filling up to 3 worktrees at main in the background (pid ")
    assert lines[1].endswith(" free now; environment: auto; log: .parallel/pool/fill.log)")
    wait_for_fill(lines[1])
    slots = pool.free_slots(repo)
    assert len(slots) == 3
    base = git(repo, "rev-parse", "origin/main").stdout.strip()
    for s in slots:
        assert s.commit == base and head(s.path) == base
        assert git(s.path, "status", "--porcelain").stdout == ""
        assert str(s.path) in worktrees(repo)
    assert json.loads(pool.settings_path(repo).read_text()) == {"size": 3, "base_branch": "main"}
    assert "done: 3 free, 3 created, 0 moved, 0 failed, 3 environment step(s) run" in pool.log_path(repo).read_text()
    # The pool is excluded like worktrees/: the main checkout stays clean.
    assert git(repo, "status", "--porcelain").stdout == ""
    code, out, _ = cmd(repo, capsys, "status")
    used = disk.disk_usage(pool.pool_dir(repo))
    assert used > 0
    assert out == (f"Worktree pool: on, 3 worktrees at main (origin/main is {base[:12]}), environment: auto\n"
                   f"Free: 3, 3 with their environment step done, in worktrees/.pool/ ({disk.human_size(used)} on disk)\n")
    # Topping up a full pool creates nothing.
    code, out, _ = cmd(repo, capsys, "fill")
    assert code == 0 and "done: 3 free, 0 created, 0 moved, 0 failed, 0 environment step(s) run" in out


def test_off_removes_the_free_worktrees_and_the_setting(repo, capsys):
    assert cmd(repo, capsys, "on", "--size", "2", "--no-fill")[0] == 0
    assert cmd(repo, capsys, "fill")[0] == 0
    paths = [s.path for s in pool.free_slots(repo)]
    assert len(paths) == 2
    assert cmd(repo, capsys, "off") == (0, "Worktree pool off: 2 free worktree(s) removed.\n", "")
    assert not any(p.exists() for p in paths) and not pool.pool_dir(repo).exists()
    assert worktrees(repo) == [str(repo)]
    assert json.loads(pool.settings_path(repo).read_text()) == {"off": True}  # off for good, whatever the default
    assert cmd(repo, capsys, "off") == (0, "Worktree pool off: 0 free worktree(s) removed (it was not on).\n", "")


def test_bad_sizes_and_unknown_branches_are_refused(repo, capsys):
    with pytest.raises(SystemExit):
        cli.main(["-C", str(repo), "pool", "on", "--size", "0"])
    assert "--size: must be from 1 to 100" in capsys.readouterr().err
    code, _, err = cmd(repo, capsys, "on", "--base", "no-such-branch")
    assert code == 1
    assert err == ("parallel-setup: base branch 'no-such-branch' exists neither on origin nor locally "
                   "(branches: main, origin/main)\n")
    assert not pool.settings_path(repo).exists()


def test_a_damaged_setting_is_named_and_does_not_break_planning(repo, capsys):
    pool.settings_path(repo).parent.mkdir(parents=True, exist_ok=True)
    pool.settings_path(repo).write_text('{"size": "lots"}')
    code, _, err = cmd(repo, capsys, "fill")
    assert code == 1
    assert err == (f"parallel-setup: {pool.settings_path(repo)} needs a size from 1 to 100 and a base_branch; "
                   "turn the pool on again with: parallel-setup pool on --size N\n")
    code, out, _ = cmd(repo, capsys, "fill", "--if-on")
    assert code == 0
    assert out.startswith("Worktree pool: not filled (") and "needs a size from 1 to 100" in out


def test_one_fill_at_a_time_and_a_dead_fills_lock_is_taken_over(repo, capsys):
    assert cmd(repo, capsys, "on", "--size", "1", "--no-fill")[0] == 0
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        pool.lock_path(repo).parent.mkdir(parents=True, exist_ok=True)
        pool.lock_path(repo).write_text(f"{sleeper.pid}\n")
        code, _, err = cmd(repo, capsys, "fill")
        assert (code, err) == (1, f"parallel-setup: the worktree pool is being filled already (pid {sleeper.pid})\n")
        code, out, _ = cmd(repo, capsys, "fill", "--if-on")
        assert (code, out) == (0, f"Worktree pool: a fill is already running (pid {sleeper.pid}); 0 free now\n")
    finally:
        sleeper.kill()
        sleeper.wait()
    # Its holder is gone: the next fill takes the lock over and releases it.
    code, out, err = cmd(repo, capsys, "fill")
    assert code == 0, err
    assert len(pool.free_slots(repo)) == 1 and not pool.lock_path(repo).exists()


def test_off_stops_a_running_fill_and_leaves_no_half_made_worktree(repo, capsys):
    assert cmd(repo, capsys, "on", "--size", "40", "--no-fill")[0] == 0
    env = dict(os.environ, PYTHONPATH=str(Path(pool.__file__).resolve().parent.parent))
    proc = subprocess.Popen([sys.executable, "-m", "parallel_setup", "-C", str(repo), "pool", "fill"],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 30
    while not pool.free_slots(repo):
        assert time.time() < deadline and proc.poll() is None, proc.stderr.read() if proc.poll() else "no slot"
        time.sleep(0.02)
    code, out, err = cmd(repo, capsys, "off")
    assert code == 0, err
    assert proc.wait(timeout=30) == 143  # SIGTERM, with its lock released
    assert not pool.lock_path(repo).exists()
    cmd(repo, capsys, "off")  # whatever it finished between the two
    assert worktrees(repo) == [str(repo)]
    assert not pool.pool_dir(repo).exists() or not any(pool.pool_dir(repo).iterdir())


# --------------------------------------------------------------------------
# execute and the setup scripts


def test_execute_hands_out_pool_worktrees_and_falls_back_when_they_run_out(repo, capsys):
    assert cmd(repo, capsys, "on", "--size", "3", "--no-fill")[0] == 0
    assert cmd(repo, capsys, "fill")[0] == 0
    slot_paths = {s.path for s in pool.free_slots(repo)}
    write_plan(repo, n=5)
    code, out, err = execute(repo, capsys)
    assert code == 0, err
    assert "- Worktree pool: 3 ready worktree(s); the other tasks run git worktree add\n" in out
    assert len(calls_in(out)) == 5
    run = runs.load_run(repo, run_id_in(out))
    assert run.data["worktree_pool"] == str(pool.pool_dir(repo))
    results = setup_all(run)
    assert all(r["status"] == "ok" for r in results.values()), results
    assert sorted(r["pool"] for r in results.values()) == [False, False, True, True, True]
    for tid, r in results.items():
        wt = Path(r["worktree"])
        assert git(wt, "branch", "--show-current").stdout.strip() == r["branch"]
        assert head(wt) == run.data["base_commit"]
        assert git(wt, "status", "--porcelain").stdout == ""
        log = (run.task_dir(tid) / "setup.log").read_text()
        assert ("from origin/main (a worktree from the pool)" in log) is r["pool"]
        assert ("--- git worktree add (attempt 1): exit 0" in log) is not r["pool"]
    assert not any(p.exists() for p in slot_paths)  # every slot moved to a task
    assert pool.free_slots(repo) == []
    assert sorted(worktrees(repo)) == sorted([str(repo)] + [r["worktree"] for r in results.values()])
    # A second run of a task reuses its worktree, pool or not.
    again = runs.run_setup(run, run.tasks[0])
    assert again["status"] == "ok" and again["reused"]["worktree"] is True


def test_twenty_setups_race_for_ten_worktrees_and_none_is_handed_out_twice(repo, capsys):
    assert cmd(repo, capsys, "on", "--size", "10", "--no-fill")[0] == 0
    assert cmd(repo, capsys, "fill")[0] == 0
    write_plan(repo, n=20)
    code, out, err = execute(repo, capsys)
    assert code == 0, err
    run = runs.load_run(repo, run_id_in(out))
    results = setup_all(run)
    assert all(r["status"] == "ok" for r in results.values()), [r.get("reason") for r in results.values()]
    assert sum(r["pool"] for r in results.values()) == 10
    assert len({r["worktree"] for r in results.values()}) == 20
    assert len({r["branch"] for r in results.values()}) == 20
    claimed = [line for tid in run.tasks for line in (run.task_dir(tid) / "setup.log").read_text().splitlines()
               if line.startswith("--- pool: claimed")]
    assert len(claimed) == len({line.split()[3] for line in claimed}) == 10


def test_a_pool_filled_before_the_base_moved_on_is_brought_up_to_date_at_claim(repo, capsys):
    assert cmd(repo, capsys, "on", "--size", "2", "--no-fill")[0] == 0
    assert cmd(repo, capsys, "fill")[0] == 0
    old = git(repo, "rev-parse", "origin/main").stdout.strip()
    new = git_commit(repo, "later", {"src/new.py": "NEW = 1\n"})
    git(repo, "push", "-q", "origin", "main")  # execute fetches it
    write_plan(repo, n=1)
    code, out, err = execute(repo, capsys)
    assert code == 0, err
    run = runs.load_run(repo, run_id_in(out))
    assert run.data["base_commit"] == new != old
    (result,) = setup_all(run).values()
    assert result["status"] == "ok" and result["pool"] is True
    wt = Path(result["worktree"])
    assert head(wt) == new and (wt / "src" / "new.py").read_text() == "NEW = 1\n"
    assert git(wt, "status", "--porcelain").stdout == ""
    # The next fill moves the remaining old worktree to the new commit instead of checking out anew.
    code, out, _ = cmd(repo, capsys, "fill")
    assert code == 0 and "done: 2 free, 1 created, 1 moved, 0 failed" in out
    assert {s.commit for s in pool.free_slots(repo)} == {new}


def test_no_pool_and_pool_off_mean_git_worktree_add(repo, capsys):
    assert cmd(repo, capsys, "on", "--size", "2", "--no-fill")[0] == 0
    assert cmd(repo, capsys, "fill")[0] == 0
    write_plan(repo, n=2)
    code, out, err = execute(repo, capsys, "--no-pool")
    assert code == 0, err
    assert "Worktree pool" not in out
    run = runs.load_run(repo, run_id_in(out))
    assert run.data["worktree_pool"] is None
    assert not any(r["pool"] for r in setup_all(run).values())
    assert len(pool.free_slots(repo)) == 2  # untouched


def test_execute_stops_a_fill_still_running_so_the_setups_get_the_cpu(repo, capsys):
    assert cmd(repo, capsys, "on", "--size", "60", "--no-fill")[0] == 0
    assert cmd(repo, capsys, "fill", "--background")[0] == 0
    deadline = time.time() + 30
    while not pool.free_slots(repo):
        assert time.time() < deadline
        time.sleep(0.02)
    write_plan(repo, n=2)
    code, out, err = execute(repo, capsys)
    assert code == 0, err
    assert pool.fill_running(repo) is None
    assert "done:" not in pool.log_path(repo).read_text()  # stopped, not finished
    run = runs.load_run(repo, run_id_in(out))
    results = setup_all(run)
    assert all(r["status"] == "ok" for r in results.values()), [r.get("reason") for r in results.values()]
    assert any(r["pool"] for r in results.values())



def test_a_repository_with_submodules_still_gets_pool_worktrees(repo, tmp_path, capsys):
    """git refuses to move a worktree whose submodules are checked out; pool worktrees never
    check them out (nor does git worktree add), so the move works."""
    lib = tmp_path / "lib"
    lib.mkdir()
    git(lib, "init", "-q")
    git_commit(lib, "lib", {"lib.py": "X = 1\n"})
    git(repo, "-c", "protocol.file.allow=always", "submodule", "add", "-q", str(lib), "vendor/lib")
    git(repo, "commit", "-q", "-m", "add a submodule")
    git(repo, "push", "-q", "origin", "main")
    assert cmd(repo, capsys, "on", "--size", "1", "--no-fill")[0] == 0
    assert cmd(repo, capsys, "fill")[0] == 0
    write_plan(repo, n=1)
    code, out, err = execute(repo, capsys)
    assert code == 0, err
    (result,) = setup_all(runs.load_run(repo, run_id_in(out))).values()
    assert result["status"] == "ok" and result["pool"] is True
    assert (Path(result["worktree"]) / ".gitmodules").is_file()


def test_an_empty_pool_or_a_damaged_setting_never_stops_a_run(repo, capsys):
    assert cmd(repo, capsys, "on", "--size", "2", "--no-fill")[0] == 0
    write_plan(repo, n=1)
    code, out, err = execute(repo, capsys)
    assert code == 0, err
    assert "- Worktree pool: empty (every task runs git worktree add)\n" in out
    pool.settings_path(repo).write_text("{not json")
    code, out, err = execute(repo, capsys, "--new-run")
    assert code == 0, err
    assert err.startswith(f"warning: not using the worktree pool: {pool.settings_path(repo)} is not valid JSON")
    assert runs.load_run(repo, run_id_in(out)).data["worktree_pool"] is None


# --------------------------------------------------------------------------
# On by default where it is cheap


def a_past_run(repo: Path, tasks: int = 3) -> None:
    plan = make_plan(tasks)
    runs.create_run(repo, plan, mode="local", fetch=False)


def test_on_by_default_after_a_run_sized_from_it_within_the_disk_budget(repo, capsys):
    a_past_run(repo, 3)
    decision = pool.decide(repo)
    assert decision.on and decision.source == "default" and decision.settings.size == 3
    assert decision.settings.setup == "none"  # what the run's tasks had
    assert 0 < decision.estimate < pool.DEFAULT_BUDGET
    code, out, _ = cmd(repo, capsys, "fill", "--if-on")
    assert code == 0 and out.startswith("Worktree pool: filling up to 3 worktrees at main in the background (pid ")
    wait_for_fill(out)
    assert len(pool.free_slots(repo)) == 3
    code, out, _ = cmd(repo, capsys, "status")
    assert out.splitlines()[0].startswith("Worktree pool: on, 3 worktrees at main (origin/main is ")
    assert "environment: none (on by default: 3 worktrees (the most tasks of the recent runs) take about " in out
    # execute hands them out (--new-run: the past run of this plan never finished).
    write_plan(repo)
    code, out, err = execute(repo, capsys, "--new-run")
    assert code == 0, err
    run = runs.load_run(repo, run_id_in(out))
    assert run.data["worktree_pool"] == str(pool.pool_dir(repo))


def test_the_default_pool_stays_off_over_the_disk_budget_and_cleanup_removes_its_slots(repo, capsys, monkeypatch):
    a_past_run(repo, 3)
    assert cmd(repo, capsys, "fill", "--size", "2")[0] == 0  # slots left from when it fitted
    monkeypatch.setenv(pool.BUDGET_ENV, "1K")
    decision = pool.decide(repo)
    assert not decision.on and decision.estimate > 1024
    assert decision.reason == (f"3 worktrees would take about {disk.human_size(decision.estimate)}, over the disk budget "
                               "of 1.0 KB (pool on --size N to use it anyway; pool auto --budget SIZE to raise the "
                               "budget)")
    code, out, _ = cmd(repo, capsys, "fill", "--if-on")
    assert out == f"Worktree pool: off ({decision.reason}). Removed 2 free worktree(s) it no longer uses.\n"
    assert pool.free_slots(repo) == [] and worktrees(repo) == [str(repo)]
    write_plan(repo)
    code, out, err = execute(repo, capsys, "--new-run")  # the past run of this plan never finished
    assert code == 0, err
    assert runs.load_run(repo, run_id_in(out)).data["worktree_pool"] is None
    # A budget set with pool auto, and pool off winning over the default.
    monkeypatch.delenv(pool.BUDGET_ENV)
    assert cmd(repo, capsys, "auto", "--budget", "1G")[1].startswith("Worktree pool: back to the default; on now (")
    assert json.loads(pool.settings_path(repo).read_text()) == {"budget": 1024 ** 3}
    cmd(repo, capsys, "off")
    assert not pool.decide(repo).on and pool.decide(repo).source == "off"


def test_remove_stale_keeps_fitting_slots_and_removes_extra_and_unfit_ones(repo, capsys):
    assert cmd(repo, capsys, "on", "--size", "2", "--setup", "echo ready > ready.txt", "--no-fill")[0] == 0
    assert cmd(repo, capsys, "fill", "--size", "3")[0] == 0
    assert pool.remove_stale(repo) == 1  # one beyond the size
    assert len(pool.free_slots(repo)) == 2
    git_commit(repo, "a lockfile appears", {"requirements.txt": "nothing==1\n"})
    git(repo, "push", "-q", "origin", "main")
    assert pool.remove_stale(repo) == 2  # their environment no longer fits
    assert pool.free_slots(repo) == []

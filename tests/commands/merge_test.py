"""``parallel-setup merge``: the forecast, the train, its stops, resuming, landing.

Every test builds a finished run with the real parts (tests/support/merge_run.py): the real
setup scripts in local mode, real commits in the task worktrees, a bare origin. Nothing
about git is simulated.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import tarfile
import time
from io import BytesIO
from pathlib import Path

import pytest

from parallel_setup import cli, events, merge, runs
from tests.support import merge_run
from tests.support.git import git
from tests.support.github import REPO, fake_github, gh_env, requires_gh  # noqa: F401

ROOT = Path(__file__).resolve().parents[2]
RUN_ID = "20261202-010000-5e1f"
SMALL = [t for t in merge_run.PLAN_TASKS if t[0] in ("alpha", "beta", "chain-a", "chain-b", "gamma")]


@pytest.fixture(autouse=True)
def _pinned(monkeypatch, tmp_path):
    monkeypatch.setattr(runs, "new_run_id", lambda now=None, suffix=None: RUN_ID)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))


def main(run: runs.Run, capsys, *args: str):
    code = cli.main(["-C", str(run.project), "merge", *args])
    out, err = capsys.readouterr()
    return code, out, err


def as_json(run, capsys, *args):
    code, out, err = main(run, capsys, "--json", *args)
    return code, json.loads(out), err


def integration_tip(run) -> str:
    return git(run.project, "rev-parse", merge.integration_branch(run)).stdout.strip()


def green_at(run, commit: str, tmp_path: Path) -> bool:
    """Run the plan's test command on a commit's files (a fresh export, no worktree involved)."""
    dest = tmp_path / f"export-{commit[:8]}-{time.monotonic_ns()}"
    dest.mkdir()
    data = subprocess.run(["git", "archive", commit], cwd=run.project, capture_output=True, check=True).stdout
    tarfile.open(fileobj=BytesIO(data)).extractall(dest)
    return subprocess.run(["bash", "-c", merge_run.TEST], cwd=dest, capture_output=True).returncode == 0


def trailers(run, ref: str) -> list:
    out = git(run.project, "log", "--format=%(trailers:key=Parallel-Task,valueonly)", ref).stdout
    return [l.split("/", 1)[1] for l in out.split() if l.startswith(run.id + "/")]


def kinds(run) -> list:
    return [e["event"] for e in events.read_events(run.dir) if e["event"].startswith("merge_") or e["event"] == "landed"]


# --------------------------------------------------------------------------
# The forecast


def test_dry_run_forecast_names_exactly_the_conflicting_pair_and_changes_nothing(tmp_path, capsys):
    run = merge_run.build(tmp_path)
    before = git(run.project, "for-each-ref").stdout
    code, doc, err = as_json(run, capsys, "--dry-run")
    assert (code, err) == (0, "")
    fc = doc["forecast"]
    assert fc["available"] is True
    assert fc["order"] == ["alpha", "beta", "conf-red", "rename", "chain-a", "conf-green", "use-greet",
                           "chain-b", "gamma"]
    assert fc["conflicts"] == [{"a": "conf-red", "b": "conf-green", "files": ["config.txt"]}]
    assert fc["base_conflicts"] == [] and fc["errors"] == []
    assert fc["pairs_checked"] == 9 * 8 // 2 + 9
    assert doc["skipped"] == [{"id": "docs", "state": "unverified", "reason": "not verified: push: not verified"}]
    assert git(run.project, "for-each-ref").stdout == before  # no branch made
    assert not merge.integration_worktree(run).exists()
    assert kinds(run) == []


def test_dry_run_text(tmp_path, capsys, snapshot):
    run = merge_run.build(tmp_path)
    code, out, err = main(run, capsys, "--dry-run", "--no-fetch")
    assert (code, err) == (0, "")
    base = git(run.project, "rev-parse", "origin/main").stdout.strip()
    out = re.sub(r"in memory, \d+\.\d\d s", "in memory, <t> s", out.replace(base[:8], "<base>"))
    assert out == snapshot


def test_forecast_against_a_base_that_moved(tmp_path, capsys):
    run = merge_run.build(tmp_path, tasks=SMALL)
    git(run.project, "checkout", "-q", "main")
    (run.project / "chain.txt").write_text("z\n")
    git(run.project, "add", "chain.txt")
    git(run.project, "commit", "-q", "-m", "chain on main")
    git(run.project, "push", "-q", "origin", "main")
    code, doc, _ = as_json(run, capsys, "--dry-run")
    assert code == 0
    assert doc["forecast"]["base_conflicts"] == [{"a": "chain-a", "b": "base", "files": ["chain.txt"]},
                                                 {"a": "chain-b", "b": "base", "files": ["chain.txt"]}]
    assert doc["forecast"]["conflicts"] == []


def test_an_older_git_skips_the_forecast_and_says_so(tmp_path, capsys, monkeypatch):
    run = merge_run.build(tmp_path, tasks=CONFLICT)
    monkeypatch.setattr(merge, "git_version", lambda cwd=None: (2, 37, 1))
    code, out, err = main(run, capsys, "--dry-run", "--no-fetch")
    assert code == 0
    assert ("\nno conflict forecast: git 2.37.1 is older than 2.38, which added `git merge-tree --write-tree` "
            "(a merge without a working tree). The train still finds every conflict when it merges, one task "
            "at a time in its own worktree.\n") in out
    code, doc, err = as_json(run, capsys, "--no-fetch")  # and the train still stops at the conflict
    assert code == merge.EXIT_STOPPED and doc["forecast"]["available"] is False
    assert (doc["train"]["stop"]["task"], doc["train"]["stop"]["collides_with"]) == ("conf-green", ["conf-red"])


# --------------------------------------------------------------------------
# The train


def test_train_stops_at_the_conflict_then_the_semantic_conflict_never_red_then_lands(tmp_path, capsys):
    run = merge_run.build(tmp_path)
    wt = merge.integration_worktree(run)

    # 1. the textual conflict
    code, doc, err = as_json(run, capsys)
    assert code == merge.EXIT_STOPPED, err
    stop = doc["train"]["stop"]
    assert (stop["kind"], stop["task"], stop["files"], stop["collides_with"]) == (
        "conflict", "conf-green", ["config.txt"], ["conf-red"])
    assert doc["train"]["merged"] == ["alpha", "beta", "conf-red", "rename", "chain-a"]
    tip = integration_tip(run)
    assert green_at(run, tip, tmp_path)
    assert trailers(run, tip)[0] == "chain-a"
    prompt = Path(doc["resolver"]["path"]).read_text()
    assert prompt.startswith("# Resolve the merge train's stop at task `conf-green`")
    assert "- `config.txt`" in prompt and "- `conf-red` (Make the color red)" in prompt
    assert doc["resolver"]["call"] == {
        "description": "resolve merge conf-green", "subagent_type": "parallel:parallel-merge-resolver",
        "prompt": f"Parallel merge: read .parallel/runs/{run.id}/merge/resolve-conf-green.md and follow it exactly.",
        "run_in_background": False}

    # a re-run before the fix stops again, at the same place, and moves nothing
    code, doc, _ = as_json(run, capsys)
    assert code == merge.EXIT_STOPPED and doc["train"]["stop"]["task"] == "conf-green"
    assert "still conflicted" in doc["train"]["stop"]["message"]
    assert integration_tip(run) == tip

    # 2. resolved (the files edited and staged, as the resolver does): the semantic conflict
    (wt / "config.txt").write_text("color=red-green\nsize=10\n")
    git(wt, "add", "config.txt")
    code, doc, err = as_json(run, capsys)
    assert code == merge.EXIT_STOPPED, err
    stop = doc["train"]["stop"]
    assert (stop["kind"], stop["task"], stop["semantic"], stop["test_exit"]) == ("tests", "use-greet", True, 1)
    assert stop["merged_before"] == ["alpha", "beta", "conf-red", "rename", "chain-a", "conf-green"]
    assert stop["culprits"] == ["rename"]  # each earlier task tried alone with use-greet: only rename is red
    assert stop["message"].startswith(
        "tests failed after merging use-greet (the merge itself was clean): `python3 run_checks.py` exit 1. "
        "use-greet was green alone (its tests passed on its branch): a semantic conflict with rename (each "
        "merged alone with it: red). The integration branch")
    assert not (wt.parent / (wt.name + "-probe")).exists()
    assert "ImportError: cannot import name 'greet'" in stop["output_tail"]
    tip = integration_tip(run)
    assert trailers(run, tip)[0] == "conf-green"
    assert green_at(run, tip, tmp_path)  # the branch stays at the last green merge
    assert git(wt, "rev-parse", "HEAD^").stdout.strip() == tip  # the red merge is in the worktree only

    # 3. fixed and committed in the worktree: it continues and lands
    (wt / "banner.py").write_text((wt / "banner.py").read_text().replace("greet", "hello"))
    git(wt, "commit", "-q", "-am", "Use hello after the rename")
    code, doc, err = as_json(run, capsys, "--land", "--push")
    assert code == 0, err
    assert doc["train"]["green"] is True
    assert doc["train"]["merged_now"] == ["use-greet", "chain-b", "gamma"]
    tip = integration_tip(run)
    assert git(run.project, "rev-parse", "main").stdout.strip() == tip
    assert git(run.project, "ls-remote", "origin", "refs/heads/main").stdout.split()[0] == tip
    assert sorted(trailers(run, "main")) == sorted(doc["train"]["merged"])  # each task exactly once
    assert len(trailers(run, "main")) == 9
    assert green_at(run, tip, tmp_path)
    assert (run.project / "banner.py").exists()  # the user's checkout of main was fast-forwarded
    assert doc["landed"]["closed_issues"] == list(range(1, 10))
    issue = (run.project / ".parallel" / "issues" / "6.md").read_text()
    commit = merge.merged_tasks(run, tip)["conf-green"]
    assert f"**Closed**: merged into `main` as {commit} (task conf-green, run {run.id}," in issue
    assert "docs" not in doc["train"]["merged"]

    # 4. a second run is a no-op
    code, out, err = main(run, capsys, "--land")
    assert code == 0, err
    assert out.endswith(f"Green: 9 tasks on parallel/{run.id} at {tip[:8]} (nothing new to merge), tests passing.\n"
                        f"Landed: main is already at {tip[:8]}.\n")
    assert integration_tip(run) == tip
    issue_again = (run.project / ".parallel" / "issues" / "6.md").read_text()
    assert issue_again == issue
    seen = kinds(run)
    for kind in ("merge_start", "merge_task", "merge_tests", "merge_stop", "landed"):
        assert kind in seen
    tasks = [e for e in events.read_events(run.dir, event="merge_task") if e["result"] == "merged"]
    assert sorted(e["task"] for e in tasks) == sorted(doc_merged := trailers(run, "main")) and len(doc_merged) == 9
    assert all(isinstance(e["seconds"], float) for e in tasks)


def test_sigkill_mid_train_then_run_again_completes(tmp_path, capsys):
    run = merge_run.build(tmp_path, tasks=SMALL)
    counter = tmp_path / "tests-run"
    slow = f"{merge_run.TEST} && echo x >> {counter} && if [ $(wc -l < {counter}) -ge 3 ]; then sleep 120; fi"
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.Popen([sys.executable, "-m", "parallel_setup", "-C", str(run.project), "merge", "--no-fetch",
                             "--test", slow], cwd=run.project, env=env, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and not (counter.exists() and len(counter.read_text().split()) >= 3):
        time.sleep(0.1)
    assert counter.exists() and len(counter.read_text().split()) >= 3
    os.killpg(proc.pid, signal.SIGKILL)  # during the third test: merged, not yet moved
    proc.wait()
    assert trailers(run, merge.integration_branch(run)) == ["beta", "alpha"]

    code, doc, err = as_json(run, capsys, "--no-fetch")
    assert code == 0, err
    assert doc["train"]["merged"] == ["alpha", "beta", "chain-a", "chain-b", "gamma"]
    assert doc["train"]["merged_now"] == ["chain-a", "chain-b", "gamma"]
    assert sorted(trailers(run, merge.integration_branch(run))) == sorted(doc["train"]["merged"])
    assert green_at(run, integration_tip(run), tmp_path)


def test_two_processes_at_once_one_waits_its_turn_and_nothing_is_merged_twice(tmp_path, capsys):
    run = merge_run.build(tmp_path, tasks=SMALL)
    started = tmp_path / "started"
    slow = f"touch {started}; sleep 3; {merge_run.TEST}"
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    cmd = [sys.executable, "-m", "parallel_setup", "-C", str(run.project), "merge", "--no-fetch", "--test", slow]
    first = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while time.time() < deadline and not started.exists():
        time.sleep(0.05)
    second = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    out, err = first.communicate(timeout=300)
    assert first.returncode == 0, err
    assert second.returncode == 1
    assert f"another `parallel-setup merge` of run {run.id} is running (pid {first.pid} since" in second.stderr
    assert sorted(trailers(run, integration_tip(run))) == ["alpha", "beta", "chain-a", "chain-b", "gamma"]


def test_a_second_copy_at_once_is_refused(tmp_path, capsys):
    run = merge_run.build(tmp_path, tasks=SMALL)
    with merge.TrainLock(run):
        code, out, err = main(run, capsys, "--no-fetch")
    assert code == 1
    assert re.fullmatch(rf"parallel-setup: another `parallel-setup merge` of run {run.id} is running "
                        r"\(pid \d+ since \d\d:\d\d:\d\d\); wait for it to finish, then run merge again\n", err)
    assert not merge.integration_worktree(run).exists()


def test_task_refuses_a_dependency_not_merged(tmp_path, capsys):
    run = merge_run.build(tmp_path, tasks=SMALL)
    code, out, err = main(run, capsys, "--no-fetch", "--task", "chain-b")
    assert code == 1
    assert err == ("parallel-setup: task chain-b depends on chain-a, which is not merged yet: merge it first "
                   "(or name it with --task too)\n")
    code, doc, err = as_json(run, capsys, "--no-fetch", "--task", "chain-a")
    assert code == 0 and doc["train"]["merged"] == ["chain-a"]
    code, doc, err = as_json(run, capsys, "--no-fetch", "--task", "chain-b")
    assert code == 0 and doc["train"]["merged"] == ["chain-a", "chain-b"]


def test_unverified_task_is_never_merged_even_by_name(tmp_path, capsys):
    run = merge_run.build(tmp_path, tasks=[t for t in merge_run.PLAN_TASKS if t[0] in ("alpha", "docs")])
    code, out, err = main(run, capsys, "--no-fetch", "--task", "docs")
    assert code == 1
    assert err == "parallel-setup: task docs cannot be merged: not verified: push: not verified\n"


@pytest.mark.parametrize("strategy", ["squash", "rebase"])
def test_other_strategies_merge_each_task_once(tmp_path, capsys, strategy):
    run = merge_run.build(tmp_path, tasks=SMALL)
    code, doc, err = as_json(run, capsys, "--no-fetch", "--strategy", strategy)
    assert code == 0, err
    tip = integration_tip(run)
    assert sorted(trailers(run, tip)) == sorted(["alpha", "beta", "chain-a", "chain-b", "gamma"])
    assert git(run.project, "rev-list", "--merges", f"origin/main..{tip}").stdout == ""  # linear history
    assert (run.project / "chain.txt").exists() is False  # the user's checkout is untouched
    assert git(run.project, "show", f"{tip}:chain.txt").stdout == "a\nb\n"
    code, doc, err = as_json(run, capsys, "--no-fetch", "--strategy", strategy)
    assert code == 0 and doc["train"]["merged_now"] == [] and integration_tip(run) == tip


# --------------------------------------------------------------------------
# Landing


def test_land_refuses_a_base_that_moved_and_a_dirty_checkout(tmp_path, capsys):
    run = merge_run.build(tmp_path, tasks=SMALL)
    git(run.project, "checkout", "-q", "main")
    (run.project / "README.md").write_text("# widgets, edited\n")  # uncommitted, in the main checkout
    code, out, err = main(run, capsys, "--no-fetch", "--land")
    assert code == 1
    assert err == (f"parallel-setup: not landing: the checkout of main at {run.project} has uncommitted changes "
                   "(README.md); commit or stash them, then run merge --land again\n")
    git(run.project, "commit", "-q", "-am", "main moved")
    code, out, err = main(run, capsys, "--no-fetch", "--land")
    assert code == 1
    assert err == ("parallel-setup: not landing: main moved since the train started (1 commit not in "
                   f"parallel/{run.id}), so this is not a fast-forward. Bring them in and test again: "
                   f"git -C {merge.integration_worktree(run)} merge main, then run merge again\n")
    # doing what it says lands it
    git(merge.integration_worktree(run), "merge", "-q", "--no-edit", "main")
    code, out, err = main(run, capsys, "--no-fetch", "--land")
    assert code == 0, err
    assert git(run.project, "rev-parse", "main").stdout == git(run.project, "rev-parse", merge.integration_branch(run)).stdout


def test_push_needs_land_and_pr_needs_github(tmp_path, capsys):
    run = merge_run.build(tmp_path, tasks=SMALL[:1])
    assert main(run, capsys, "--push")[1:] == ("", "parallel-setup: --push needs --land\n")
    git(run.project, "remote", "rename", "origin", "upstream")
    assert main(run, capsys, "--land", "--push")[1:] == (
        "", "parallel-setup: --push, --pr and --integration-pr need an origin remote; this repository has none\n")
    git(run.project, "remote", "rename", "upstream", "origin")
    code, out, err = main(run, capsys, "--pr")
    assert (code, err) == (1, f"parallel-setup: --pr and --integration-pr need a run in github mode; run {run.id} "
                              "uses local issues (use --land)\n")


# --------------------------------------------------------------------------
# In /parallel:status


def test_status_shows_each_tasks_merge_state_and_the_train_timeline(tmp_path, capsys):
    tasks = [t for t in merge_run.PLAN_TASKS if t[0] in ("alpha", "conf-red", "conf-green", "docs")]
    run = merge_run.build(tmp_path, tasks=tasks)
    code, out, err = main(run, capsys, "--no-fetch")
    assert code == merge.EXIT_STOPPED
    page = tmp_path / "status.html"
    assert cli.main(["-C", str(run.project), "status", "--width", "100", "--html", str(page)]) == 0
    out = capsys.readouterr().out
    merge_part = out[out.index("\nMerge train ("):]
    assert merge_part.startswith(f"\nMerge train (parallel/{run.id} at {integration_tip(run)[:8]}, 2 merged; "
                                 "stopped at conf-green: conflict)\n"
                                 "  alpha       merged\n  conf-red    merged\n  conf-green  stopped (conflict)\n"
                                 "  docs        not merged\n\nMerge timeline (0 s = the first train started)\n")
    assert re.search(r"\n +\d+\.\d s  conf-green: conflict in \d+\.\d s\n +\d+\.\d s  stopped at conf-green: conflict\n",
                     merge_part)
    assert out.index("Timeline (0 s = planning ended") < out.index("\nMerge train (")
    text = page.read_text()
    assert '<td class="conflict" data-pair="conf-red conf-green" title="config.txt">x</td>' in text
    assert '<td class="merge-stopped">stopped (conflict)</td>' in text
    assert "Not merged: docs (not verified: push: not verified)" in text
    assert cli.main(["-C", str(run.project), "status", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)["merge"]
    assert doc["merged"] == ["alpha", "conf-red"] and doc["stop"]["task"] == "conf-green"
    assert doc["tasks"]["docs"] == ""


def test_forecast_benchmark_runs_and_finds_its_conflicts(tmp_path):
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "merge_forecast.py"), "--branches", "7",
                           "--files", "40", "--reps", "1", "--json", "--dir", str(tmp_path)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(proc.stdout)
    assert (result["branches"], result["merges"]) == (7, 7 * 6 // 2 + 7)
    assert (result["conflicts"], result["base_conflicts"]) == (2, 0)  # t00 x t01 and t05 x t06
    assert result["min_s"] <= result["median_s"] <= result["max_s"]


# --------------------------------------------------------------------------
# Recovery


CONFLICT = [t for t in merge_run.PLAN_TASKS if t[0] in ("alpha", "conf-red", "conf-green", "chain-a", "chain-b")]


@pytest.mark.parametrize("strategy", ["merge", "squash", "rebase"])
def test_a_resolved_conflict_continues_with_every_strategy(tmp_path, capsys, strategy):
    run = merge_run.build(tmp_path, tasks=CONFLICT)
    wt = merge.integration_worktree(run)
    code, doc, err = as_json(run, capsys, "--no-fetch", "--strategy", strategy)
    assert code == merge.EXIT_STOPPED, err
    assert (doc["train"]["stop"]["task"], doc["train"]["stop"]["collides_with"]) == ("conf-green", ["conf-red"])
    (wt / "config.txt").write_text("color=red-green\nsize=10\n")
    git(wt, "add", "config.txt")
    code, doc, err = as_json(run, capsys, "--no-fetch", "--strategy", strategy)
    assert code == 0, (err, doc["train"]["stop"])
    tip = integration_tip(run)
    assert sorted(trailers(run, tip)) == ["alpha", "chain-a", "chain-b", "conf-green", "conf-red"]
    assert git(run.project, "show", f"{tip}:config.txt").stdout == "color=red-green\nsize=10\n"
    assert git(run.project, "show", f"{tip}:chain.txt").stdout == "a\nb\n"


def test_markers_left_in_a_resolution_are_refused(tmp_path, capsys):
    run = merge_run.build(tmp_path, tasks=CONFLICT)
    wt = merge.integration_worktree(run)
    assert main(run, capsys, "--no-fetch")[0] == merge.EXIT_STOPPED
    git(wt, "add", "config.txt")  # staged with git's markers still in it
    code, doc, err = as_json(run, capsys, "--no-fetch")
    assert code == merge.EXIT_STOPPED
    assert doc["train"]["stop"]["kind"] == "markers" and doc["train"]["stop"]["files"] == ["config.txt"]
    assert sorted(trailers(run, integration_tip(run))) == ["alpha", "chain-a", "conf-red"]


def test_a_merge_left_half_made_is_redone(tmp_path, capsys):
    """What a train killed inside `git merge` leaves: a merge in progress and no stop recorded."""
    run = merge_run.build(tmp_path, tasks=SMALL)
    code, doc, err = as_json(run, capsys, "--no-fetch", "--task", "alpha")
    assert code == 0
    wt = merge.integration_worktree(run)
    beta = git(run.project, "rev-parse", runs.task_states(run)["beta"].branch).stdout.strip()
    git(wt, "merge", "--no-ff", "--no-commit", beta)
    code, out, err = main(run, capsys, "--no-fetch")
    assert code == 0, err
    assert "  an interrupted merge was left in the integration worktree: starting that task again\n" in out
    tip = integration_tip(run)
    assert sorted(trailers(run, tip)) == ["alpha", "beta", "chain-a", "chain-b", "gamma"]
    assert green_at(run, tip, tmp_path)


def test_a_red_merge_is_redone_when_the_task_branch_was_fixed_instead(tmp_path, capsys):
    tasks = [t for t in merge_run.PLAN_TASKS if t[0] in ("rename", "use-greet")]
    run = merge_run.build(tmp_path, tasks=tasks)
    code, doc, err = as_json(run, capsys, "--no-fetch")
    assert code == merge.EXIT_STOPPED and doc["train"]["stop"]["task"] == "use-greet"
    # the fix goes on the task's branch (in its worktree), not in the integration worktree
    task_wt = Path(runs.task_states(run)["use-greet"].worktree)
    (task_wt / "banner.py").write_text("import lib\n\ndef banner():\n"
                                       "    return getattr(lib, 'hello', getattr(lib, 'greet', None))('world').upper()\n")
    git(task_wt, "commit", "-q", "-am", "banner: works before and after the rename")
    code, out, err = main(run, capsys, "--no-fetch")
    assert code == 0, out + err
    assert "  use-greet: its branch moved since the red merge: merging it again\n" in out
    tip = integration_tip(run)
    assert green_at(run, tip, tmp_path)
    assert "getattr" in git(run.project, "show", f"{tip}:banner.py").stdout


def test_resolver_prompt_for_a_semantic_conflict(tmp_path, capsys, snapshot):
    tasks = [t for t in merge_run.PLAN_TASKS if t[0] in ("alpha", "rename", "use-greet")]
    run = merge_run.build(tmp_path, tasks=tasks)
    code, doc, err = as_json(run, capsys, "--no-fetch")
    assert code == merge.EXIT_STOPPED
    prompt = Path(doc["resolver"]["path"]).read_text()  # merge-conflict.md.j2, rendered
    for tid, st in runs.task_states(run).items():
        prompt = prompt.replace(f"`{st.branch}`", f"`<branch of {tid}>`").replace(f"..{st.branch}`", f"..<branch of {tid}>`")
    assert prompt.replace(str(run.project), "<project>") == snapshot


def test_a_user_override_of_the_resolver_template_wins(tmp_path, capsys):
    run = merge_run.build(tmp_path, tasks=CONFLICT)
    override = run.project / ".parallel" / "templates" / "merge-conflict.md.j2"
    override.parent.mkdir(parents=True, exist_ok=True)
    override.write_text("Ours: {{ stop.kind }} at {{ task.id }} in {{ stop.files | join(',') }}\n")
    code, doc, err = as_json(run, capsys, "--no-fetch")
    assert code == merge.EXIT_STOPPED
    assert Path(doc["resolver"]["path"]).read_text() == "Ours: conflict at conf-green in config.txt\n"


# --------------------------------------------------------------------------
# Pull requests (GitHub mode, the real gh against the fake GitHub)


def _github_run(tmp_path, monkeypatch, gh_env):
    pytest.importorskip("parallel_setup.pulls", reason="--pr needs parallel_setup/pulls.py (H11b)")
    for k, v in gh_env.items():
        monkeypatch.setenv(k, v)
    monkeypatch.setenv("PARALLEL_VERIFY_GH", "0")
    return merge_run.build(tmp_path, tasks=SMALL, repository=REPO)


@requires_gh
def test_pr_opens_one_pull_request_per_task_with_closes_and_reuses_them(tmp_path, capsys, monkeypatch,
                                                                         fake_github, gh_env):
    run = _github_run(tmp_path, monkeypatch, gh_env)
    code, doc, err = as_json(run, capsys, "--no-fetch", "--pr")
    assert code == 0, err
    prs = fake_github.pulls("acme/widgets")
    states = runs.task_states(run)
    assert sorted((p["head"], p["base"]) for p in prs) == sorted(
        (states[t].branch, "main") for t in ["alpha", "beta", "chain-a", "chain-b", "gamma"])
    for p in prs:
        task = next(t for t in run.tasks if states[t].branch == p["head"])
        assert f"Closes #{states[task].issue}\n" in p["body"]
    assert git(run.project, "ls-remote", "origin", "refs/heads/" + states["gamma"].branch).stdout  # pushed first
    assert [p["reused"] for p in doc["pull_requests"]] == [False] * 5
    code, doc, err = as_json(run, capsys, "--no-fetch", "--pr")
    assert code == 0 and [p["reused"] for p in doc["pull_requests"]] == [True] * 5
    assert len(fake_github.pulls("acme/widgets")) == 5


@requires_gh
def test_integration_pr_lists_every_task(tmp_path, capsys, monkeypatch, fake_github, gh_env):
    run = _github_run(tmp_path, monkeypatch, gh_env)
    code, doc, err = as_json(run, capsys, "--no-fetch", "--integration-pr")
    assert code == 0, err
    [pr] = fake_github.pulls("acme/widgets")
    assert (pr["head"], pr["base"]) == (merge.integration_branch(run), "main")
    states = runs.task_states(run)
    for t in ["alpha", "beta", "chain-a", "chain-b", "gamma"]:
        assert f"- {t}: {run.plan.task(t).title} (Closes #{states[t].issue})\n" in pr["body"]
    assert git(run.project, "ls-remote", "origin", merge.integration_branch(run)).stdout.split()[0] == \
        integration_tip(run)


def test_nothing_verified_makes_nothing(tmp_path, capsys):
    run = merge_run.build(tmp_path, tasks=[t for t in merge_run.PLAN_TASKS if t[0] == "docs"])
    code, out, err = main(run, capsys, "--no-fetch", "--land")
    assert (code, err) == (0, "")
    assert out.endswith("\nNot merged (1):\n  docs: not verified: push: not verified\n\nTrain:\n\n"
                        "Nothing to merge: no task is verified done yet.\n")
    assert not merge.integration_worktree(run).exists()
    assert git(run.project, "branch", "--list", "parallel/*").stdout == ""


def test_test_at_end_cannot_name_the_task_and_moves_nothing(tmp_path, capsys):
    tasks = [t for t in merge_run.PLAN_TASKS if t[0] in ("alpha", "rename", "use-greet")]
    run = merge_run.build(tmp_path, tasks=tasks)
    base = git(run.project, "rev-parse", "origin/main").stdout.strip()
    code, doc, err = as_json(run, capsys, "--no-fetch", "--test-at-end")
    assert code == merge.EXIT_STOPPED
    stop = doc["train"]["stop"]
    assert stop["message"].startswith("tests failed after merging alpha, rename, use-greet: "
                                      "`python3 run_checks.py` exit 1. Run merge again with --test-each to find the task.")
    assert integration_tip(run) == base and doc["train"]["merged"] == []
    tests = events.read_events(run.dir, event="merge_tests")
    assert [(e["tasks"], e["exit"]) for e in tests] == [(["alpha", "rename", "use-greet"], 1)]
    # as it says: one at a time finds the task and its culprit
    code, doc, err = as_json(run, capsys, "--no-fetch")
    assert code == merge.EXIT_STOPPED
    assert (doc["train"]["stop"]["task"], doc["train"]["stop"]["culprits"]) == ("use-greet", ["rename"])
    assert doc["train"]["merged"] == ["alpha", "rename"]


def test_a_resolution_committed_by_hand_with_its_own_message_counts_as_merged(tmp_path, capsys):
    run = merge_run.build(tmp_path, tasks=CONFLICT)
    wt = merge.integration_worktree(run)
    assert main(run, capsys, "--no-fetch")[0] == merge.EXIT_STOPPED
    (wt / "config.txt").write_text("color=red-green\nsize=10\n")
    git(wt, "commit", "-q", "-am", "my own message, no trailer")
    code, doc, err = as_json(run, capsys, "--no-fetch")
    assert code == 0, err
    assert doc["train"]["merged"] == ["alpha", "conf-red", "chain-a", "conf-green", "chain-b"]
    code, doc, err = as_json(run, capsys, "--no-fetch")
    assert code == 0 and doc["train"]["merged_now"] == []


def test_an_untracked_file_left_with_a_fix_is_not_lost_or_tested_in(tmp_path, capsys):
    tasks = [t for t in merge_run.PLAN_TASKS if t[0] in ("rename", "use-greet")]
    run = merge_run.build(tmp_path, tasks=tasks)
    wt = merge.integration_worktree(run)
    assert main(run, capsys, "--no-fetch")[0] == merge.EXIT_STOPPED
    (wt / "banner.py").write_text("from compat import greet\n\ndef banner():\n    return greet('world').upper()\n")
    (wt / "compat.py").write_text("from lib import hello as greet\n")  # new, not added
    git(wt, "commit", "-q", "-am", "banner through compat")  # -a leaves compat.py out
    code, doc, err = as_json(run, capsys, "--no-fetch")
    assert code == merge.EXIT_STOPPED
    assert (doc["train"]["stop"]["kind"], doc["train"]["stop"]["files"]) == ("dirty", ["compat.py"])
    assert (wt / "compat.py").exists()
    assert trailers(run, integration_tip(run)) == ["rename"]
    git(wt, "add", "compat.py")
    git(wt, "commit", "-q", "-m", "add compat")
    code, doc, err = as_json(run, capsys, "--no-fetch")
    assert code == 0, err
    assert green_at(run, integration_tip(run), tmp_path)


def test_a_probe_worktree_left_by_a_killed_train_is_removed_and_only_ours(tmp_path, capsys):
    run = merge_run.build(tmp_path, tasks=SMALL[:2])
    assert main(run, capsys, "--no-fetch", "--task", "alpha")[0] == 0
    wt = merge.integration_worktree(run)
    probe = wt.with_name(wt.name + "-probe")
    git(run.project, "worktree", "add", "-q", "--detach", str(probe), "main")
    merge._record_owner(probe, f"{run.id} merge-probe")  # what _culprits leaves when killed
    assert main(run, capsys, "--no-fetch")[0] == 0
    assert not probe.exists()
    git(run.project, "worktree", "add", "-q", "--detach", str(probe), "main")  # someone else's: kept
    assert main(run, capsys, "--no-fetch")[0] == 0
    assert probe.exists()


def test_stop_text_is_what_claude_reads(tmp_path, capsys, snapshot):
    run = merge_run.build(tmp_path, tasks=CONFLICT)
    code, out, err = main(run, capsys, "--no-fetch")
    assert (code, err) == (merge.EXIT_STOPPED, "")
    for tid, st in runs.task_states(run).items():  # branch names are the setup script's business
        out = out.replace(f"({st.branch})", f"(<branch of {tid}>)")
    out = re.sub(r"\b[0-9a-f]{8}\b", "<sha>", out.replace(str(run.project), "<project>").replace(run.id, "<run>"))
    out = re.sub(r"in memory, \d+\.\d\d s", "in memory, <t> s", out)
    assert out == snapshot

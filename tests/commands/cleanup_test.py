"""parallel-setup cleanup against a run made by the real setup scripts (real git, a bare origin).

The fixture (``tests/support/runs.py::finished_run``) has a task with uncommitted changes and
a ``.venv``/``node_modules`` from its environment step, a pushed and an unpushed branch, a
merged one, a branch name the user had before the run, and a worktree and branch the user
made again with the run's names after its setup.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from parallel_setup import cleanup, runs
from parallel_setup.cli import main
from tests.support.git import branches, git, git_commit, worktrees
from tests.support.runs import finished_run

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def fin(tmp_path):
    return finished_run(tmp_path)


def cli(project: Path, *args: str, env=None) -> subprocess.CompletedProcess:
    """The CLI in its own process (so a test can SIGKILL it)."""
    return subprocess.run([sys.executable, "-m", "parallel_setup", "-C", str(project), "cleanup", *args],
                          cwd=ROOT, capture_output=True, text=True, timeout=300,
                          env=dict(os.environ, **(env or {})))


def repo_state(project: Path) -> dict:
    """Everything cleanup could change: every ref, every worktree, the files under worktrees/."""
    refs = git(project, "for-each-ref", "--format=%(refname) %(objectname)").stdout.splitlines()
    files = sorted(str(p.relative_to(project)) for p in (project / "worktrees").rglob("*"))
    remote = git(project, "ls-remote", "origin").stdout.splitlines()
    return {"refs": refs, "worktrees": worktrees(project), "files": files, "remote": remote}


def archive(fin, task: str) -> str:
    return f"refs/parallel/archive/{fin.run.id}/{task}"


def show(project: Path, rev: str, path: str) -> str:
    return git(project, "show", f"{rev}:{path}").stdout


def assert_cleaned(fin) -> None:
    """The end state of a complete cleanup of the fixture (without --remote)."""
    p = fin.project
    users_branch, users_commit = fin.foreign["branch"]
    replaced, replaced_commit = fin.foreign["replaced_branch"]
    # Only the user's branches are left, where they were.
    assert branches(p) == ["feature/local-6", "feature/task-5", "main"]
    assert git(p, "rev-parse", users_branch).stdout.strip() == users_commit
    assert git(p, "rev-parse", replaced).stdout.strip() == replaced_commit
    # Only the main checkout and the user's worktree (with its uncommitted draft) are left.
    assert [Path(w) for w in worktrees(p)] == [p, fin.foreign["worktree"]]
    assert (fin.foreign["worktree"] / "users-draft.txt").read_text() == "draft\n"
    assert sorted(x.name for x in (p / "worktrees").iterdir()) == ["local-6"]
    # The dirty task's worktree state, as a commit on top of its branch: changes and untracked file.
    dirty = archive(fin, "dirty")
    assert git(p, "rev-parse", dirty + "^").stdout.strip() == fin.commits["dirty"]
    assert show(p, dirty, "README.md") == "# widgets\n\nchanged, not committed\n"
    assert show(p, dirty, "notes.txt") == "untracked notes\n"
    assert show(p, dirty, "dirty.txt") == "dirty\n"
    listed = git(p, "ls-tree", "-r", "--name-only", dirty).stdout.split()
    assert not [f for f in listed if f.startswith((".venv", "node_modules"))], listed
    # The unpushed clean branch, as it was; nothing for the pushed and the merged ones.
    assert git(p, "rev-parse", archive(fin, "unpushed")).stdout.strip() == fin.commits["unpushed"]
    archives = git(p, "for-each-ref", "--format=%(refname)", "refs/parallel/").stdout.split()
    assert archives == [archive(fin, "dirty"), archive(fin, "unpushed")]
    # git fsck finds every archived commit reachable.
    assert git(p, "fsck", "--no-progress").returncode == 0
    unreachable = git(p, "fsck", "--unreachable", "--no-reflogs", "--no-progress").stdout
    for task in ("dirty", "unpushed"):
        assert fin.commits[task] not in unreachable
    assert git(p, "rev-parse", archive(fin, "dirty")).stdout.strip() not in unreachable
    # The pushed branch is still on origin (no --remote), the merged one is in main.
    assert "refs/heads/feature/local-2" in git(p, "ls-remote", "origin").stdout
    assert git(p, "merge-base", "--is-ancestor", fin.commits["merged"], "main").returncode == 0


def test_cleanup_removes_exactly_the_runs_things_and_archives_the_work(fin):
    p = fin.project
    before = repo_state(p)
    dry = cli(p, "--dry-run", "--json")
    assert dry.returncode == 0, dry.stderr
    assert repo_state(p) == before, "--dry-run changed something"
    planned = json.loads(dry.stdout)

    real = cli(p, "--json")
    assert real.returncode == 0, real.stderr
    done = json.loads(real.stdout)
    assert [(r["kind"], r["task"], r["target"]) for r in done["results"]] == \
        [(s["kind"], s["task"], s["target"]) for s in planned["steps"]]
    assert all(r["ok"] for r in done["results"]), done["results"]
    assert done["freed"] == planned["bytes"] > 0
    assert {(k["task"], k["target"]) for k in done["kept"]} == {
        ("replaced", "worktrees/local-6"), ("replaced", "feature/local-6")}
    assert_cleaned(fin)

    again = cli(p)
    assert again.returncode == 0, again.stderr
    assert "Nothing to remove: everything this run made is gone already." in again.stdout
    assert cleanup.plan_cleanup(fin.run).steps == []


def _normalized(text: str, fin) -> str:
    text = text.replace(fin.run.id, "<RUN>")
    text = re.sub(r"\(([0-9a-f]{12})\)", "(<COMMIT>)", text)
    return re.sub(r"\d+(\.\d)? (bytes|KB|MB|GB|TB)\b", "<SIZE>", text)


def test_dry_run_output_lists_what_goes_and_what_stays(fin, capsys, snapshot):
    assert main(["-C", str(fin.project), "cleanup", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert _normalized(out, fin) == snapshot
    assert main(["-C", str(fin.project), "cleanup"]) == 0
    out = capsys.readouterr().out
    assert _normalized(out, fin) == snapshot
    assert_cleaned(fin)


def test_sigkill_between_any_two_steps_then_again_loses_nothing(fin):
    """Killed (SIGKILL, for real) at its 1st kill point, run again and killed at its 2nd, then its
    3rd...: kill points are after each step that changed something, between an archive's commit
    and its ref, and between marking a worktree for removal and removing it. Each run redoes what
    it finds half done (an archive is made again only when the worktree changed) and gets further;
    the end state is the same as one uninterrupted cleanup."""
    kills = 0
    while True:
        proc = cli(fin.project, env={"PARALLEL_CLEANUP_KILL_AFTER": str(kills + 1)})
        if proc.returncode != -signal.SIGKILL:
            break
        kills += 1
        assert kills < 40, "cleanup never finished"
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert kills >= 5
    assert_cleaned(fin)


def test_killed_half_way_through_removing_a_worktree(fin):
    """git worktree remove killed after deleting part of the folder (the .git file among it):
    the next cleanup finishes the removal; the archive made before it has the work."""
    p = fin.project
    wt1 = p / "worktrees" / "local-1"
    proc = cli(p, env={"PARALLEL_CLEANUP_KILL_AFTER": "3"})  # the archive (its commit, its ref) and the .venv
    assert proc.returncode == -signal.SIGKILL
    assert not (wt1 / ".venv").exists() and (wt1 / "notes.txt").exists()
    admin = p / ".git" / "worktrees" / "local-1"
    (admin / cleanup.REMOVING_MARKER).write_text("x\n")  # what the killed removal had written
    for name in (".git", "notes.txt", "dirty.txt"):
        (wt1 / name).unlink()
    assert cli(p).returncode == 0
    assert not wt1.exists()
    assert_cleaned(fin)


def test_two_cleanups_at_once_do_not_both_act(fin):
    before = repo_state(fin.project)
    with cleanup.lock(fin.project):
        proc = cli(fin.project)
    assert proc.returncode == 1
    assert proc.stderr == (f"parallel-setup: another parallel-setup cleanup is running in this repository "
                           f"(pid {os.getpid()}); wait for it to finish, then run cleanup again\n")
    assert repo_state(fin.project) == before


def test_remote_deletes_only_what_the_run_pushed_and_archives_it_first(fin):
    p = fin.project
    git(p, "push", "-q", "origin", "feature/task-5")  # the user's branch, on origin too
    git(p, "push", "-q", "origin", "feature/local-3")  # the user pushed the run's branch; its task did not
    proc = cli(p, "--remote")
    assert proc.returncode == 0, proc.stderr
    assert "  unpushed             origin/feature/local-3: the task's report does not say it pushed it\n" in proc.stdout
    remote = git(p, "ls-remote", "--heads", "origin").stdout
    assert "refs/heads/feature/local-2" not in remote
    assert "refs/heads/feature/task-5" in remote and "refs/heads/main" in remote
    assert "refs/heads/feature/local-3" in remote
    # Not merged and now on no branch anywhere: archived before origin's copy went.
    assert git(p, "rev-parse", archive(fin, "pushed")).stdout.strip() == fin.commits["pushed"]


def test_discard_by_name_skips_the_archive(fin):
    proc = cli(fin.project, "--discard")
    assert proc.returncode == 0, proc.stderr
    assert ("Note: dirty: --discard: not archived, so lost: 2 uncommitted change(s) in worktrees/local-1; "
            "the unmerged commits of its branch\n") in proc.stdout
    assert git(fin.project, "for-each-ref", "refs/parallel/").stdout == ""
    assert not (fin.project / "worktrees" / "local-1").exists()


def test_a_running_task_is_kept_unless_asked(fin):
    fin.run.event("launch", wave=["unpushed"])  # launched again: running
    plan = cleanup.plan_cleanup(fin.run)
    assert not [s for s in plan.steps if s.task == "unpushed"]
    assert [k.reason for k in plan.kept if k.task == "unpushed"] == [
        "the task is still running (an agent may be working in it; --include-running to clean it anyway)"]
    assert [s.kind for s in cleanup.plan_cleanup(fin.run, include_running=True).steps
            if s.task == "unpushed"] == ["archive", "worktree", "branch"]


def test_all_merged_cleans_only_runs_whose_tasks_are_all_merged(fin, capsys, tmp_path, monkeypatch):
    p = fin.project
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))  # only the second run's record is there
    other = finished_run_all_merged(p)
    assert main(["-C", str(p), "cleanup", "--all-merged", "--purge-logs"]) == 0
    out = capsys.readouterr().out
    assert f"Not cleaned: {fin.run.id}: task dirty's branch feature/local-1 is not merged into the base" in out
    assert f"Cleanup of run {other.id}" in out
    assert not other.dir.exists()  # --purge-logs: nothing of it was kept
    assert "Note: forgot the permission hook's records of 1 setup script(s) that are gone\n" in out
    assert "feature/local-7" not in branches(p)
    assert (fin.run.dir / "run.json").exists() and (p / "worktrees" / "local-1").exists()
    assert main(["-C", str(p), "cleanup", fin.run.id, "--purge-logs"]) == 0
    assert ("Note: --purge-logs: the run's records and logs stay, since some of what it names is kept\n"
            in capsys.readouterr().out)
    assert (fin.run.dir / "run.json").exists()


def finished_run_all_merged(project: Path) -> runs.Run:
    """A second run of one task whose branch is merged into main."""
    import yaml
    from parallel_setup.plans import parse_plan
    plan = parse_plan(yaml.safe_dump({"schema_version": 1, "name": "one", "goal": "One task.",
                                      "defaults": {"setup": "none"},
                                      "tasks": [{"id": "only", "title": "Only", "description": "Do it."}]}),
                      "plan.yaml", max_tasks=10)
    run = runs.create_run(project, plan, mode="local", fetch=False)
    result = runs.run_setup(run, "only", timeout=120)
    assert result["status"] == "ok", result
    wt = Path(result["worktree"])
    git_commit(wt, "only: work", {"only.txt": "only\n"})
    git(project, "merge", "-q", "--no-ff", "-m", "merge only", result["branch"])
    git(project, "push", "-q", "origin", "main")
    git(project, "fetch", "-q", "origin")
    run.event("task_end", task="only", state="done", failed_claims=[], notes=[], reason=None, log=None,
              facts={}, via="test")
    return run


def test_the_merge_trains_worktree_and_branch_go_with_the_run_archived(fin):
    """parallel/<run-id> in its own worktree (what parallel-setup merge makes), holding a merge
    that is in no other branch: archived as _integration, then removed."""
    p = fin.project
    branch = f"parallel/{fin.run.id}"
    wt = p / "worktrees" / f"merge-{fin.run.id}"
    base = fin.run.data["base_commit"]
    record = {"branch": branch, "worktree": str(wt), "base_commit": base, "branch_created": True,
              "worktree_created": True}
    (fin.run.dir / "merge").mkdir()
    (fin.run.dir / "merge" / "integration.json").write_text(json.dumps(record))
    git(p, "branch", "--no-track", branch, base)  # as merge.ensure_integration does
    git(p, "worktree", "add", "-q", "--detach", "--", str(wt), branch)
    (p / ".git" / "worktrees" / wt.name / "parallel-owner").write_text(f"{fin.run.id} merge\n")
    git(wt, "merge", "-q", "--no-ff", "-m", "Merge task unpushed", "feature/local-3")
    merge_commit = git(wt, "rev-parse", "HEAD").stdout.strip()
    git(p, "update-ref", f"refs/heads/{branch}", merge_commit)
    proc = cli(p, "--json")
    assert proc.returncode == 0, proc.stderr
    steps = [(r["kind"], r["task"], r["target"]) for r in json.loads(proc.stdout)["results"]]
    assert steps[-3:] == [("archive", None, archive(fin, "_integration")), ("worktree", None, str(wt.relative_to(p))),
                          ("branch", None, branch)]
    assert not wt.exists() and branch not in branches(p)
    assert git(p, "rev-parse", archive(fin, "_integration")).stdout.strip() == merge_commit
    assert_cleaned_except_archives(fin, extra=[archive(fin, "_integration")])


def assert_cleaned_except_archives(fin, extra):
    archives = git(fin.project, "for-each-ref", "--format=%(refname)", "refs/parallel/").stdout.split()
    assert archives == sorted([archive(fin, "dirty"), archive(fin, "unpushed"), *extra])
    assert branches(fin.project) == ["feature/local-6", "feature/task-5", "main"]


def test_a_pool_claim_goes_and_the_free_pool_worktrees_stay(tmp_path):
    import yaml
    from parallel_setup import pool
    from parallel_setup.plans import parse_plan
    from tests.support.git import make_repo
    project = make_repo(tmp_path)
    pool.fill(project, 2, "main")
    plan = parse_plan(yaml.safe_dump({"schema_version": 1, "name": "p", "goal": "Pool.", "defaults": {"setup": "none"},
                                      "tasks": [{"id": "one", "title": "One", "description": "Do it."}]}),
                      "plan.yaml", max_tasks=10)
    run = runs.create_run(project, plan, mode="local", fetch=False, worktree_pool=pool.pool_dir(project))
    result = runs.run_setup(run, "one", timeout=120)
    assert result["status"] == "ok" and result["pool"] is True, result
    claims = sorted(pool.pool_dir(project).glob("slot-*.claim"))
    assert len(claims) == 1 and not claims[0].with_suffix("").exists()
    free = [s.path for s in pool.free_slots(project)]
    assert len(free) == 1
    run.event("task_end", task="one", state="done", failed_claims=[], notes=[], reason=None, log=None,
              facts={}, via="test")
    plan_ = cleanup.plan_cleanup(run)
    assert [(s.kind, s.target) for s in plan_.steps] == [
        ("worktree", "worktrees/local-1"), ("branch", "feature/local-1"),
        ("claim", str(claims[0].relative_to(project)))]
    with cleanup.lock(project):
        assert all(r.ok for r in cleanup.apply(run, plan_))
    assert not claims[0].exists() and not (project / "worktrees" / "local-1").exists()
    assert [s.path for s in pool.free_slots(project)] == free  # the free worktree is the pool's, not the run's
    assert [Path(w) for w in worktrees(project)] == [project, free[0]]


def test_real_cli_parallel_cleanup_shows_the_dry_run_and_asks_before_removing(fin, plugin_copy, tmp_path):
    """/parallel:cleanup through the real Claude Code CLI: the (scripted) model runs the dry run
    the command names and asks; nothing is removed before the user answers."""
    from tests.support.claude_cli import run_claude
    from tests.support.messages_api import MessagesAPIServer, first_user_text, text, tool_results, tool_use

    seen = {}

    def model(req):
        prompt = first_user_text(req)
        results = tool_results(req)
        if results:
            seen["dry_run"] = results[-1]["content"]
            return [text("CLEANUP-ASKED: go ahead?")]
        seen["prompt"] = prompt
        m = re.search(r'"([^"\n]*/scripts/parallel-setup)" cleanup --dry-run\n', prompt)
        if not m:
            return [text("CLEANUP-CONFUSED")]
        return [tool_use("Bash", {"command": f'"{m.group(1)}" cleanup --dry-run', "description": "Dry run"})]

    before = repo_state(fin.project)
    with MessagesAPIServer(model) as api:
        proc = run_claude("/parallel:cleanup", cwd=fin.project, plugin_dir=plugin_copy, api_url=api.url,
                          home=tmp_path / "home", timeout=180)
        assert proc.returncode == 0, proc.stderr
        assert not api.errors, api.errors
    assert "CLEANUP-ASKED: go ahead?" in proc.stdout, proc.stdout + proc.stderr
    assert "<command-name>/parallel:cleanup</command-name>" in seen["prompt"]
    assert "Then stop and wait for the answer." in seen["prompt"]
    dry = seen["dry_run"] if isinstance(seen["dry_run"], str) else json.dumps(seen["dry_run"])
    assert f"Cleanup of run {fin.run.id} (dry run: nothing is changed)" in dry
    assert f"archive   dirty                refs/parallel/archive/{fin.run.id}/dirty" in dry
    assert repo_state(fin.project) == before


def test_a_locked_worktree_and_the_branch_checked_out_in_it_stay(fin):
    p = fin.project
    git(p, "worktree", "lock", "--reason", "on a USB disk", str(p / "worktrees" / "local-3"))
    plan = cleanup.plan_cleanup(fin.run)
    assert [(k.target, k.reason) for k in plan.kept if k.task == "unpushed"] == [
        ("worktrees/local-3", "locked (git worktree unlock it first)"),
        ("feature/local-3", "checked out in worktrees/local-3")]
    assert not [s for s in plan.steps if s.task == "unpushed"]


def test_no_run_and_an_unknown_run_are_clear_errors(tmp_path, fin, capsys):
    from tests.support.git import make_repo
    empty = make_repo(tmp_path / "empty", origin=False)
    assert main(["-C", str(empty), "cleanup"]) == 1
    assert capsys.readouterr().err == (f"parallel-setup: no runs in {empty / '.parallel' / 'runs'}; "
                                       "start one with /parallel:execute\n")
    assert main(["-C", str(fin.project), "cleanup", "20990101-000000-beef"]) == 1
    assert capsys.readouterr().err == (f"parallel-setup: no run '20990101-000000-beef' in "
                                       f"{fin.project / '.parallel' / 'runs'} (recent runs: {fin.run.id})\n")
    assert main(["-C", str(fin.project), "cleanup", fin.run.id, "--all-merged"]) == 1
    assert capsys.readouterr().err == "parallel-setup: give a RUN or --all-merged, not both\n"


def test_all_merged_counts_a_squash_merge_the_merge_train_recorded(fin):
    """A squash merge leaves the task's branch out of the base's history; the train's record of
    the commit it made (merge_task, result merged), in the base, counts as merged."""
    p = fin.project
    assert cleanup.all_merged(fin.run) == "task dirty's branch feature/local-1 is not merged into the base"
    for task in fin.run.tasks:
        branch = fin.branch(task)
        if git(p, "show-ref", "--verify", "--quiet", f"refs/heads/{branch}", check=False).returncode:
            continue
        if git(p, "merge-base", "--is-ancestor", branch, "main", check=False).returncode == 0:
            continue
        git(p, "merge", "-q", "--squash", branch)
        git(p, "commit", "-q", "-m", f"{task} (squashed)")
        fin.run.event("merge_task", task=task, result="merged", commit=git(p, "rev-parse", "HEAD").stdout.strip())
    git(p, "push", "-q", "origin", "main")
    git(p, "fetch", "-q", "origin")
    assert cleanup.all_merged(fin.run) is None

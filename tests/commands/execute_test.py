"""``parallel-setup execute``: runs, modes, waves, the spawn instructions."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

from parallel_setup import cli, events, runs
from parallel_setup.fake_github import FakeGitHub
from parallel_setup.issue_mode import parse_remote_url
from tests.support.git import git
from tests.support.github import requires_gh

RUN_RE = re.compile(r"\d{8}-\d{6}-[0-9a-f]{4}")


def write_plan(repo: Path, tasks=None, n: int = 3, **top) -> Path:
    data = {"schema_version": 1, "name": "demo", "goal": "Try execute.", "defaults": {"setup": "none"}}
    data.update(top)
    data["tasks"] = tasks or [{"id": f"t{i}", "title": f"Task {i}", "description": "d"} for i in range(1, n + 1)]
    path = repo / ".parallel" / "plans" / "demo.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return path


def execute(repo: Path, capsys, *args: str):
    code = cli.main(["-C", str(repo), "execute", *args])
    out, err = capsys.readouterr()
    return code, out, err


def calls_in(out: str) -> list:
    return [json.loads(line) for line in out.splitlines() if line.startswith('{"description"')]


def run_id_in(out: str) -> str:
    return RUN_RE.search(out).group(0)


def finish(repo: Path, run_id: str, task: str, state: str = "done") -> None:
    events.append_event(repo / ".parallel" / "runs" / run_id, "task_end", task=task, state=state)


@pytest.fixture(autouse=True)
def _no_gh(monkeypatch, tmp_path):
    """Auto mode sees no gh unless a test provides one; no user templates."""
    monkeypatch.setenv("PARALLEL_GH", str(tmp_path / "no-such-gh"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))


def test_local_run_prints_one_message_of_agent_calls(repo, capsys, snapshot, monkeypatch):
    monkeypatch.setattr(runs, "new_run_id", lambda now=None, suffix=None: "20261122-101500-3fa2")
    write_plan(repo, tasks=[
        {"id": "model", "title": "Model", "description": "d"},
        {"id": "api", "title": "API", "description": "d", "depends_on": ["model"]},
        {"id": "docs", "title": "Docs", "description": "d"},
    ])
    code, out, err = execute(repo, capsys)
    assert code == 0, err
    assert out == snapshot
    run = runs.load_run(repo, "20261122-101500-3fa2")
    assert run.mode == "local"
    assert [c["description"] for c in calls_in(out)] == ["model", "docs"]
    for c in calls_in(out):
        assert c["subagent_type"] == "parallel:parallel-task-executor"
        assert f".parallel/runs/{run.id}/tasks/{c['description']}/prompt.md" in c["prompt"]
        assert "run_in_background" not in c
    (launch,) = events.read_events(run.dir, event="launch")
    assert launch["wave"] == ["model", "docs"]
    assert events.read_events(run.dir, event="run_created")[0]["t"] == run.created_at
    for tid in run.tasks:
        for name in ("prompt.md", "setup.sh", "issue-title.txt", "issue-body.md"):
            assert (run.task_dir(tid) / name).is_file()
    # The run state and worktrees/ are excluded: the main checkout shows only the plan (which a
    # team may commit, like .parallel/templates/), also after a setup.
    assert git(repo, "status", "--porcelain", "-uall").stdout == "?? .parallel/plans/demo.yaml\n"
    assert runs.run_setup(run, "model")["status"] == "ok"
    assert git(repo, "status", "--porcelain", "-uall").stdout == "?? .parallel/plans/demo.yaml\n"


def test_short_reference_at_most_300_bytes():
    run = runs.Run(Path("/p"), "20261122-101500-3fa2", {"tasks": ["x" * 40]}, None)
    for foreground in (False, True):
        call = run.short_reference("x" * 40, foreground=foreground)
        assert len(runs.reference_json(call).encode()) <= 300
        assert len(json.dumps(call).encode()) <= 300


def test_resume_launches_the_next_wave_and_never_a_finished_task(repo, capsys):
    write_plan(repo, tasks=[
        {"id": "a", "title": "A", "description": "d"},
        {"id": "b", "title": "B", "description": "d", "depends_on": ["a"]},
        {"id": "c", "title": "C", "description": "d", "depends_on": ["a", "b"]},
    ])
    _, out, _ = execute(repo, capsys, "demo")
    run_id = run_id_in(out)
    assert [c["description"] for c in calls_in(out)] == ["a"]
    assert "- b: waits for a (launching now)" in out and "- c: waits for a (launching now), b (not started)" in out
    assert f"/parallel:execute --run {run_id}" in out

    _, out, _ = execute(repo, capsys, "--run", run_id)  # a still running: nothing new
    assert calls_in(out) == [] and "Still running (not launched again): a" in out

    finish(repo, run_id, "a")
    _, out, _ = execute(repo, capsys, "--run", run_id)
    assert [c["description"] for c in calls_in(out)] == ["b"]
    assert "Finished: a (done)" in out

    finish(repo, run_id, "b", "failed")
    _, out, _ = execute(repo, capsys, "--run", run_id)
    assert calls_in(out) == [] and "Failed (not launched again; add --retry-failed to relaunch): b" in out
    _, out, _ = execute(repo, capsys, "--run", run_id, "--retry-failed")
    assert [c["description"] for c in calls_in(out)] == ["b"]
    finish(repo, run_id, "b")
    _, out, _ = execute(repo, capsys, "--run", run_id, "--foreground")
    (call,) = calls_in(out)
    assert call["description"] == "c" and call["run_in_background"] is False
    waves = [e["wave"] for e in events.read_events(repo / ".parallel" / "runs" / run_id, event="launch")]
    assert waves == [["a"], ["b"], ["b"], ["c"]]


def test_an_unverified_dependency_holds_its_dependents_back(repo, capsys):
    """Done means verified: the next wave waits, as /parallel:status shows it (blocked)."""
    write_plan(repo, tasks=[{"id": "a", "title": "A", "description": "d"},
                            {"id": "b", "title": "B", "description": "d", "depends_on": ["a"]}])
    _, out, _ = execute(repo, capsys)
    run_id = run_id_in(out)
    finish(repo, run_id, "a", "unverified")
    _, out, _ = execute(repo, capsys, "--run", run_id)
    assert calls_in(out) == []
    assert ("- b: waits for a (unverified): not done until that is fixed (or launch this one anyway "
            "with --task)") in out
    status = cli.main(["-C", str(repo), "status", run_id, "--json"])
    assert status == 0 and json.loads(capsys.readouterr().out)["blocked"] == ["b"]
    _, out, _ = execute(repo, capsys, "--run", run_id, "--task", "b")
    assert [c["description"] for c in calls_in(out)] == ["b"]


def test_dependency_info_reaches_the_next_wave_prompt(repo, capsys):
    write_plan(repo, tasks=[{"id": "a", "title": "A", "description": "d"},
                            {"id": "b", "title": "B", "description": "d", "depends_on": ["a"]}])
    _, out, _ = execute(repo, capsys)
    run = runs.load_run(repo, run_id_in(out))
    assert runs.run_setup(run, "a")["issue"] == 1
    finish(repo, run.id, "a")
    execute(repo, capsys, "--run", run.id)
    assert "- `a` (A): done, issue #1, branch `feature/local-1`" in run.prompt_path("b").read_text()


def test_concurrency_limit(repo, capsys):
    write_plan(repo, n=5)
    _, out, _ = execute(repo, capsys, "--max-concurrency", "2")
    run_id = run_id_in(out)
    assert [c["description"] for c in calls_in(out)] == ["t1", "t2"]
    assert out.count("ready; over the concurrency limit of 2") == 3
    finish(repo, run_id, "t1")
    _, out, _ = execute(repo, capsys, "--run", run_id)
    assert [c["description"] for c in calls_in(out)] == ["t3"]  # t2 still running: one slot


def test_task_option_relaunches_one_task(repo, capsys):
    write_plan(repo, n=2)
    _, out, _ = execute(repo, capsys)
    _, out, _ = execute(repo, capsys, "--run", run_id_in(out), "--task", "t2")
    assert [c["description"] for c in calls_in(out)] == ["t2"]


def test_user_errors(repo, capsys):
    code, _, err = execute(repo, capsys)
    assert code == 1 and "no saved plan in" in err
    write_plan(repo)
    code, _, err = execute(repo, capsys, "--task", "t1")
    assert (code, err) == (1, "parallel-setup: --task and --retry-failed need --run RUN_ID\n")
    code, _, err = execute(repo, capsys, "--run", "20990101-000000-ffff")
    assert code == 1 and "no run '20990101-000000-ffff'" in err
    code, _, err = execute(repo, capsys, "--mode", "github")
    assert code == 1 and "GitHub issues were asked for, but the gh CLI is not installed" in err
    write_plan(repo, base_branch="nope")
    code, _, err = execute(repo, capsys)
    assert (code, err) == (1, "parallel-setup: base branch 'nope' (the plan's base_branch) exists neither on origin "
                              "nor locally (git fetch origin nope failed (fatal: couldn't find remote ref nope)). "
                              "Branches: main, origin/main. Set base_branch in the plan to one of them, or remove it "
                              "to start from main, origin's default branch\n")
    write_plan(repo, defaults={"copy_files": ["../secrets"]})
    code, _, err = execute(repo, capsys)
    assert code == 1 and "'../secrets' must be a path inside the repository" in err


@requires_gh
def test_falls_back_to_local_when_gh_is_unauthenticated(repo, capsys, monkeypatch, tmp_path):
    monkeypatch.delenv("PARALLEL_GH")
    with FakeGitHub(reject_auth=True) as server:
        for k, v in server.gh_variables(str(tmp_path / "gh")).items():
            monkeypatch.setenv(k, v)
        write_plan(repo, issues={"repository": "github.localhost/acme/widgets"})
        code, out, err = execute(repo, capsys)
        assert code == 0, err
        assert ("- Issues: local files in .parallel/issues/ (gh is not authenticated for github.localhost "
                "(gh auth status: ") in out
        run = runs.load_run(repo, run_id_in(out))
        assert run.mode == "local" and "not authenticated" in run.data["mode_reason"]
        code, out, err = execute(repo, capsys, "--mode", "github", "--new-run")
        assert code == 1 and "GitHub issues were asked for, but gh is not authenticated" in err


@requires_gh
def test_github_mode_end_to_end_with_labels(repo, capsys, monkeypatch, tmp_path):
    monkeypatch.delenv("PARALLEL_GH")
    with FakeGitHub() as server:
        for k, v in server.gh_variables(str(tmp_path / "gh")).items():
            monkeypatch.setenv(k, v)
        write_plan(repo, n=2, issues={"repository": "acme/widgets", "labels": ["parallel"]})
        code, out, err = execute(repo, capsys)
        assert code == 0, err
        assert "- Issues: GitHub, github.localhost/acme/widgets (gh is authenticated for github.localhost" in out
        assert "- Labels: parallel\n" in out
        run = runs.load_run(repo, run_id_in(out))
        gh_env = server.env(config_dir=str(tmp_path / "gh"))
        results = [runs.run_setup(run, t, env=gh_env) for t in run.tasks]
        assert [r["issue"] for r in results] == [1, 2]
        assert [i["labels"] for i in server.issues("acme/widgets")] == [["parallel"], ["parallel"]]
        ops = [e["op"] for e in events.read_events(run.dir, event="gh_call")]
        assert ops == ["auth_status", "label_create", "issue_create", "issue_create"]


@pytest.mark.parametrize("url, expected", [
    ("https://github.com/acme/widgets.git", "github.com/acme/widgets"),
    ("https://user:tok@ghe.example.com:8443/acme/widgets", "ghe.example.com/acme/widgets"),
    ("git@github.com:acme/widgets.git", "github.com/acme/widgets"),
    ("ssh://git@ghe.example.com:2222/acme/widgets.git", "ghe.example.com/acme/widgets"),
    ("github.com:acme/widgets", "github.com/acme/widgets"),
    ("/srv/git/widgets.git", None),
    ("file:///srv/git/widgets.git", None),
    ("../widgets.git", None),
])
def test_remote_urls(url, expected):
    repo = parse_remote_url(url)
    assert (repo.full if repo else None) == expected


def test_help_text(capsys):
    with pytest.raises(SystemExit):
        cli.main(["execute", "--help"])
    out = capsys.readouterr().out
    for option in ("--run RUN_ID", "--foreground", "--max-concurrency N", "--mode {auto,github,local}",
                   "--retry-failed", "--task TASK_ID", "--issue-updates {comment,none}"):
        assert option in out


@pytest.mark.parametrize("template, target", [
    ("subagent-prompt.md.j2", "prompt"),
    ("completion-report.md.j2", "prompt"),
    ("spawn-instructions.md.j2", "stdout"),
])
def test_each_prompt_template_can_be_overridden_by_the_project(repo, capsys, template, target):
    """A same-named file in .parallel/templates/ replaces the built-in template where it is used."""
    folder = repo / ".parallel" / "templates"
    folder.mkdir(parents=True)
    if template == "completion-report.md.j2":  # included by the built-in prompt
        (folder / template).write_text("CUSTOM REPORT for {{ task.id }} of {{ run.id }}\n")
    elif template == "subagent-prompt.md.j2":
        (folder / template).write_text("CUSTOM PROMPT: run {{ setup_script }} first; then {{ task.title }}.\n")
    else:
        (folder / template).write_text(
            "CUSTOM SPAWN {{ run.id }}\n{% for t in launch %}{{ t.call_json }}\n{% endfor %}")
    write_plan(repo, n=1)
    code, out, err = execute(repo, capsys)
    assert code == 0, err
    run = runs.load_run(repo, run_id_in(out))
    prompt = run.prompt_path("t1").read_text()
    if template == "completion-report.md.j2":
        assert f"CUSTOM REPORT for t1 of {run.id}\n" in prompt
    elif template == "subagent-prompt.md.j2":
        assert prompt == f"CUSTOM PROMPT: run {run.setup_script('t1')} first; then Task 1.\n"
    else:
        assert out.startswith(f"CUSTOM SPAWN {run.id}\n")
        assert [c["description"] for c in calls_in(out)] == ["t1"]

"""One derivation of task state: execute, status, the hooks' summary and the HTML page agree,
on failed setups, lost agents, rechecks, dependency waves and early SubagentStarts."""

from __future__ import annotations

import json
import time

import pytest

from parallel_setup import cli, events, runs, status, task_state
from parallel_setup.commands.status import render_html
from parallel_setup.hooks import summary
from tests.commands.execute_test import calls_in, execute, run_id_in, write_plan
from tests.support.git import git, git_commit
from tests.support.runs import RUN_ID, T0, add_setup, make_run, synthetic_run


@pytest.fixture(autouse=True)
def _no_gh(monkeypatch, tmp_path):
    monkeypatch.setenv("PARALLEL_GH", str(tmp_path / "no-such-gh"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))


def test_status_and_execute_read_the_same_states(repo):
    run_dir = synthetic_run(repo)
    st = status.load_run(repo, RUN_ID, now=T0 + 50)
    derived = task_state.derive(run_dir, [t.id for t in st.tasks], now=T0 + 50)
    assert {t.id: t.state for t in st.tasks} == {tid: d.state for tid, d in derived.items()} == {
        "user-model": "done", "login-endpoint": "setup_failed", "docs": "unverified",
        "signup-endpoint": "running", "password-reset": "pending"}


def test_a_failed_setup_is_setup_failed_everywhere_with_its_reason(repo, capsys):
    write_plan(repo, n=2)
    _, out, _ = execute(repo, capsys)
    run = runs.load_run(repo, run_id_in(out))
    (repo / "worktrees").write_text("a file where the worktrees folder goes\n")
    result = runs.run_setup(run, "t1")
    assert result["status"] == "failed" and result["step"] == "worktree"
    # execute
    assert runs.task_states(run)["t1"].state == "setup_failed"
    # status: the state, the reason, the error rate
    st = status.load_run(repo, run.id)
    t1 = st.task("t1")
    assert t1.state == "setup_failed" and t1.reason.startswith("setup failed at worktree: ")
    assert st.counts["setup_failed"] == 1 and st.counts["running"] == 1
    assert (st.metrics["failed_tasks"], st.metrics["task_error_rate"]) == (1, 0.5)
    assert cli.main(["-C", str(repo), "status", run.id, "--width", "100"]) == 0
    text = capsys.readouterr().out
    assert "2 tasks: 0 done, 0 failed, 1 setup failed, 0 unverified, 1 running, 0 pending" in text
    assert f"  t1 {t1.reason} (log .parallel/runs/{run.id}/tasks/t1/setup.log)" in text
    assert "tasks 1/2 (50 %)" in text
    # the hooks' summary and the HTML page
    assert "1 setup failed" in summary.run_summary(repo, run.id, [])
    page = render_html(st)
    assert 'data-task="t1" data-state="setup_failed"' in page and "1 setup failed" in page
    # execute --run: not launched again unless asked
    _, out, _ = execute(repo, capsys, "--run", run.id)
    assert calls_in(out) == []
    _, out, _ = execute(repo, capsys, "--run", run.id, "--retry-failed")
    assert [c["description"] for c in calls_in(out)] == ["t1"]


def _report(run: runs.Run, task: str, issue: int, sha: str) -> None:
    report = {"parallel_report": 1, "run": run.id, "task": task, "status": "done", "issue": issue,
              "branch": f"feature/local-{issue}", "commits": [sha], "pushed": True,
              "tests": {"command": "true", "exit_code": 0}, "summary": "s"}
    (run.task_dir(task) / "report.json").write_text(json.dumps(report), encoding="utf-8")


def test_execute_run_rechecks_unverified_tasks_and_retry_failed_covers_what_is_still_not_done(repo, capsys):
    write_plan(repo, tasks=[{"id": "a", "title": "A", "description": "d"},
                            {"id": "b", "title": "B", "description": "d", "depends_on": ["a"]},
                            {"id": "c", "title": "C", "description": "d"}])
    _, out, _ = execute(repo, capsys)
    run = runs.load_run(repo, run_id_in(out))
    for task in ("a", "c"):
        result = runs.run_setup(run, task)
        sha = git_commit(__import__("pathlib").Path(result["worktree"]), f"{task} work", {f"{task}.txt": "x\n"})
        _report(run, task, result["issue"], sha)
        # verified before the push: unverified, the push claim failing
        from parallel_setup import verify
        verdict = verify.verify_task(repo, run.data, task, json.loads((run.task_dir(task) / "report.json").read_text()),
                                     run_dir=run.dir)
        assert verdict.state == "unverified" and any(c.startswith("push:") for c in verdict.failed_claims)
        run.event("task_end", task=task, state=verdict.state, failed_claims=verdict.failed_claims, facts=verdict.facts)
    git(repo, "push", "-q", "origin", "feature/local-1")  # a's cause fixed; c's not
    _, out, _ = execute(repo, capsys, "--run", run.id)
    states = runs.task_states(run)
    assert (states["a"].state, states["c"].state) == ("done", "unverified")
    assert [c["description"] for c in calls_in(out)] == ["b"]  # a's dependent is free now
    _, out, _ = execute(repo, capsys, "--run", run.id, "--retry-failed")
    assert [c["description"] for c in calls_in(out)] == ["c"]


def test_a_lost_task_is_shown_lost_and_relaunched_from_a_new_session(repo, capsys, monkeypatch):
    write_plan(repo, n=2)
    _, out, _ = execute(repo, capsys)
    run = runs.load_run(repo, run_id_in(out))
    first = runs.run_setup(run, "t1")
    worktree = __import__("pathlib").Path(first["worktree"])
    sha = git_commit(worktree, "half of t1", {"t1.txt": "half\n"})
    run.event("agent_start", task="t1", agent_id="agent-old")
    run.event("task_end", task="t2", state="done")
    monkeypatch.setenv("PARALLEL_LOST_AFTER", "1")
    time.sleep(1.5)  # no sign of t1's agent for longer than the bound
    st = status.load_run(repo, run.id)
    assert st.task("t1").state == "lost" and "relaunches it" in st.task("t1").reason
    assert runs.task_states(run)["t1"].state == "lost"
    # a new session: execute --run relaunches it, reusing its issue, worktree and commits
    _, out, _ = execute(repo, capsys, "--run", run.id)
    assert [c["description"] for c in calls_in(out)] == ["t1"]
    assert runs.task_states(run)["t1"].state == "running"
    again = runs.run_setup(run, "t1")
    assert (again["status"], again["issue"], again["worktree"]) == ("ok", first["issue"], first["worktree"])
    assert again["reused"] == {"issue": True, "worktree": True}
    assert git(worktree, "rev-parse", "HEAD").stdout.strip() == sha
    assert "keep the commits and changes that are there" in run.prompt_path("t1").read_text()


def test_an_agent_still_committing_in_its_worktree_is_not_lost(repo, capsys, monkeypatch):
    write_plan(repo, n=1)
    _, out, _ = execute(repo, capsys)
    run = runs.load_run(repo, run_id_in(out))
    worktree = __import__("pathlib").Path(runs.run_setup(run, "t1")["worktree"])
    monkeypatch.setenv("PARALLEL_LOST_AFTER", "1")
    time.sleep(1.5)
    assert runs.task_states(run)["t1"].state == "lost"  # no event and no work for longer than the bound
    (worktree / "sub").mkdir()
    (worktree / "sub" / "f.txt").write_text("x\n")
    git(worktree, "add", "sub/f.txt")  # the agent at work: its worktree's index changes
    assert runs.task_states(run)["t1"].state == "running"


def test_multi_wave_metrics_measure_each_waves_setup(tmp_path):
    project = tmp_path / "p"
    project.mkdir()
    run_dir = make_run(project, [{"id": "a", "title": "A"}, {"id": "b", "title": "B"},
                                 {"id": "c", "title": "C", "depends_on": ["a"]}])
    events.append_event(run_dir, "launch", t=T0 + 0.2, wave=["a", "b"], number=1)
    add_setup(run_dir, "a", 1.0, 1, {"issue": 1.0, "worktree": 0.5, "env": 0.5})
    add_setup(run_dir, "b", 1.2, 2, {"issue": 1.0, "worktree": 0.5, "env": 0.5})
    events.append_event(run_dir, "task_end", task="a", t=T0 + 60.0, state="done")
    events.append_event(run_dir, "task_end", task="b", t=T0 + 61.0, state="done")
    events.append_event(run_dir, "launch", t=T0 + 89.5, wave=["c"], number=2)
    add_setup(run_dir, "c", 90.0, 3, {"issue": 1.0, "worktree": 0.5, "env": 0.5})
    m = status.load_run(project, RUN_ID, now=T0 + 100).metrics
    assert [w["setup_seconds"] for w in m["waves"]] == pytest.approx([3.2, 2.5])
    assert m["run_setup_seconds"] == pytest.approx(5.7)  # not 92.0: the wait between the waves is no setup
    assert m["parallel_efficiency"] == pytest.approx(6.0 / (2 * 3.2 + 1 * 2.5))


def test_an_early_subagent_start_is_attributed_once_its_agent_is_linked(tmp_path):
    project = tmp_path / "p"
    project.mkdir()
    run_dir = make_run(project, [{"id": "a", "title": "A"}])
    events.append_event(run_dir, "spawn", task="a", t=T0 + 1.0, tool_use_id="toolu_a")
    events.append_event(run_dir, "agent_start", task=None, t=T0 + 1.1, agent_id="agent-a")
    events.append_event(run_dir, "agent_launched", task="a", t=T0 + 1.4, agent_id="agent-a")
    [start] = [e for e in task_state.attributed_events(run_dir) if e["event"] == "agent_start"]
    assert (start["task"], start["linked_late"]) == ("a", True)
    st = status.load_run(project, RUN_ID, now=T0 + 5)
    assert st.task("a").agent_id == "agent-a"


def test_a_relaunched_task_has_its_new_end_recorded(repo, capsys, plugin_copy, tmp_path):
    """--retry-failed (and a lost task's relaunch) starts a new attempt: the real SubagentStop
    hook records the second agent's end too, not only the first."""
    from pathlib import Path
    from tests.hooks.conftest import Hooks, fixture
    write_plan(repo, n=1)
    _, out, _ = execute(repo, capsys)
    run = runs.load_run(repo, run_id_in(out))
    setup = runs.run_setup(run, "t1")
    hooks = Hooks(plugin_copy, repo, tmp_path / "plugin-data")

    def stop(agent: str, status_: str, sha=None) -> None:
        report = {"parallel_report": 1, "run": run.id, "task": "t1", "status": status_, "issue": setup["issue"],
                  "branch": setup["branch"], "commits": [sha] if sha else [], "pushed": bool(sha),
                  "tests": {"command": "true", "exit_code": 0}, "summary": "s",
                  "reason": None if sha else "could not finish"}
        payload = fixture("background/SubagentStop.json")
        payload.update(agent_id=agent, agent_type="parallel:parallel-task-executor",
                       last_assistant_message=f"```json\n{json.dumps(report)}\n```\n")
        assert hooks.out("SubagentStop", payload) is None

    stop("agentfirst01", "failed")
    assert runs.task_states(run)["t1"].state == "failed"
    _, out, _ = execute(repo, capsys, "--run", run.id, "--retry-failed")
    assert [c["description"] for c in calls_in(out)] == ["t1"]
    sha = git_commit(Path(setup["worktree"]), "t1 done", {"t1.txt": "x\n"})
    git(repo, "push", "-q", "origin", setup["branch"])
    stop("agentsecond2", "done", sha)
    ends = [e["state"] for e in events.read_events(run.dir, event="task_end")]
    assert ends == ["failed", "done"]
    assert runs.task_states(run)["t1"].state == "done"


def test_every_reader_survives_random_event_records(tmp_path):
    """Fuzz: records of known kinds with fields of random types, appended to a run's log.
    Status (text, JSON, HTML), the hooks' summary and the derivation never raise."""
    import random
    from parallel_setup.commands.status import render_text
    project = tmp_path / "p"
    project.mkdir()
    run_dir = make_run(project, [{"id": "a", "title": "A"}, {"id": "b", "title": "B", "depends_on": ["a"]}])
    rng = random.Random(3)
    kinds = ["launch", "spawn", "agent_launched", "agent_start", "setup_start", "step_start", "step_end",
             "gh_call", "retry", "setup_end", "agent_stop", "task_ending", "task_end", "notified", "main_stop"]
    values = [None, True, 0, -1, 7, 1.5, 1e308, "", "x", "a", "done", "failed", [], ["a"], [1, None], {},
              {"total": 1.0, "issue": "x"}, {"branch": 3, "issue": "1", "commits": [1]}, {"a": {"b": []}}]
    fields = list(events.FIELD_TYPES) + ["exit", "http_status", "background", "facts", "ok"]
    with open(run_dir / "events.jsonl", "a", encoding="utf-8") as f:
        for i in range(1500):
            record = {"t": rng.choice([T0 + rng.random() * 100] * 6 + values), "event": rng.choice(kinds),
                      "run": RUN_ID, "task": rng.choice(["a", "b", None, 5, ["a"]])}
            for key in rng.sample(fields, rng.randint(0, 6)):
                record[key] = rng.choice(values)
            f.write(json.dumps(record) + "\n")
    for now in (T0 + 50, T0 + 10 ** 6):
        st = status.load_run(project, RUN_ID, now=now)
        render_text(st, 100)
        render_html(st)
        json.dumps(st.to_dict())
        task_state.derive(run_dir, ["a", "b"], now=now)
    summary.run_summary(project, RUN_ID, ["a", "b"])

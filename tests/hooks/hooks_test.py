"""Every hook, run as Claude Code runs it, fed the real payloads of Claude Code 2.1.328."""

from __future__ import annotations

import json
import time

import pytest

from tests.hooks.conftest import (TASKS, all_fixtures, fixture, make_task_branch, report_text, setup_end)
from tests.support.runs import RUN_ID, short_ref

RUN = f".parallel/runs/{RUN_ID}"


def spawn_payload(mode: str, task: str, tool_use_id: str) -> dict:
    payload = fixture(f"{mode}/PreToolUse-Agent.json")
    payload["tool_input"].update(prompt=short_ref(RUN_ID, task), description=task,
                                 subagent_type="parallel:parallel-task-executor")
    payload["tool_use_id"] = tool_use_id
    return payload


def completed_payload(tool_use_id: str, report: str, agent_id: str | None = None) -> dict:
    """The real foreground PostToolUse payload of a finished Agent call, carrying ``report``."""
    payload = fixture("foreground/PostToolUse-Agent-completed.json")
    payload["tool_use_id"] = tool_use_id
    if agent_id is not None:
        payload["tool_response"]["agentId"] = agent_id
    payload["tool_response"]["content"][1]["text"] = report
    return payload


# -- real payloads, nothing of ours in them ------------------------------------------------

@pytest.mark.parametrize("name", all_fixtures())
def test_real_payloads_outside_a_parallel_project(hooks, tmp_path, name):
    payload = fixture(name)
    payload["cwd"] = str(tmp_path)
    proc = hooks.run(payload["hook_event_name"], payload, env={"CLAUDE_PROJECT_DIR": str(tmp_path)})
    assert (proc.returncode, proc.stdout, proc.stderr) == (0, b"", b"")


@pytest.mark.parametrize("name", all_fixtures())
def test_real_payloads_in_a_project_with_a_run_are_not_ours(hooks, name):
    payload = fixture(name)
    assert hooks.out(payload["hook_event_name"], payload) is None
    assert [e["event"] for e in hooks.events()] == ["run_created"]


# -- malformed input -------------------------------------------------------------------------

BAD = {
    "empty": b"",
    "whitespace": b"  \n",
    "garbage": b"\x00\xff{not json",
    "list": b"[1, 2, 3]",
    "string": b'"PreToolUse"',
    "huge": b'{"prompt": "' + b"x" * (5 * 1024 * 1024) + b'"}',
}


@pytest.mark.parametrize("event", ["PreToolUse", "PostToolUse", "SubagentStart", "SubagentStop",
                                   "UserPromptSubmit", "Stop"])
@pytest.mark.parametrize("kind", sorted(BAD))
def test_malformed_stdin_exits_0_silently_and_fast(hooks, event, kind):
    start = time.monotonic()
    proc = hooks.run(event, BAD[kind])
    assert (proc.returncode, proc.stdout, proc.stderr) == (0, b"", b"")
    assert time.monotonic() - start < 5


@pytest.mark.parametrize("mutate", [
    lambda p: p.update(tool_input="a string"),
    lambda p: p["tool_input"].update(prompt=12),
    lambda p: p["tool_input"].update(prompt=short_ref("19990101-000000-dead", "alpha")),  # missing run
    lambda p: p["tool_input"].update(prompt=short_ref(RUN_ID, "no-such-task")),
    lambda p: p["tool_input"].update(prompt=short_ref("..", "alpha")),
], ids=["input-string", "prompt-int", "missing-run", "missing-task", "dotdot"])
def test_pre_tool_use_wrong_types_and_missing_runs(hooks, mutate):
    payload = spawn_payload("background", "alpha", "toolu_1")
    mutate(payload)
    assert hooks.out("PreToolUse", payload) is None


def test_odd_optional_fields_still_expand(hooks):
    payload = spawn_payload("background", "alpha", "toolu_1")
    payload["cwd"] = 12  # falls back to CLAUDE_PROJECT_DIR
    payload["tool_use_id"] = ["x"]
    assert "updatedInput" in hooks.out("PreToolUse", payload)["hookSpecificOutput"]
    assert hooks.events("spawn")[0]["tool_use_id"] is None


@pytest.mark.parametrize("payload", [
    {"hook_event_name": "SubagentStop", "agent_id": 5, "last_assistant_message": ["x"]},
    {"hook_event_name": "SubagentStart", "agent_id": None},
    {"hook_event_name": "PostToolUse", "tool_name": "Agent", "tool_response": "error text"},
    {"hook_event_name": "PostToolUse", "tool_name": "Agent", "tool_response": {"status": "completed", "content": 3}},
    {"hook_event_name": "UserPromptSubmit", "prompt": "<task-notification><task-id>../x</task-id>"},
    {"hook_event_name": "Stop", "background_tasks": "nope"},
])
def test_other_hooks_wrong_types(hooks, payload):
    payload["cwd"] = "placeholder"
    assert hooks.out(payload["hook_event_name"], payload) is None


def test_unknown_or_missing_event_argument(hooks):
    payload = spawn_payload("background", "alpha", "toolu_1")
    for args in ([], ["Nonsense"], ["PreToolUse", "extra"]):
        proc = hooks.run("", payload, args=args)
        assert proc.returncode == 0
    assert hooks.events("spawn") == [] or len(hooks.events("spawn")) == 1  # "extra" is ignored


def test_parallel_disable_turns_everything_off(hooks):
    payload = spawn_payload("background", "alpha", "toolu_1")
    assert hooks.out("PreToolUse", payload, env={"PARALLEL_DISABLE": "1"}) is None
    assert hooks.events("spawn") == []


# -- PreToolUse: the short reference becomes the full prompt ---------------------------------

def test_pre_tool_use_expands_the_reference_and_keeps_other_fields(hooks, project):
    payload = spawn_payload("background", "alpha", "toolu_1")
    out = hooks.out("PreToolUse", payload)
    full = (project / RUN / "tasks" / "alpha" / "prompt.md").read_text()
    expected = dict(payload["tool_input"], prompt=full)
    assert out["hookSpecificOutput"]["updatedInput"] == expected
    assert out["hookSpecificOutput"]["permissionDecision"] == "allow"
    assert out["hookSpecificOutput"]["hookEventName"] == "PreToolUse"
    [spawn] = hooks.events("spawn")
    assert spawn["task"] == "alpha" and spawn["tool_use_id"] == "toolu_1" and spawn["background"] is True
    assert spawn["prompt_bytes"] == len(full.encode()) and spawn["ref_bytes"] < 300


def test_a_full_prompt_passes_through(hooks, project):
    payload = spawn_payload("foreground", "alpha", "toolu_1")
    payload["tool_input"]["prompt"] = (project / RUN / "tasks" / "alpha" / "prompt.md").read_text() + \
        f"\nsee {RUN}/tasks/alpha/prompt.md"
    assert hooks.out("PreToolUse", payload) is None


# -- background mode end to end (hook by hook) ------------------------------------------------

def test_background_flow(hooks, project):
    sha = make_task_branch(project, 1)
    setup_end(project, "alpha", 1)
    hooks.out("PreToolUse", spawn_payload("background", "alpha", "toolu_a"))
    hooks.out("PreToolUse", spawn_payload("background", "beta", "toolu_b"))

    launched = fixture("background/PostToolUse-Agent-async_launched.json")
    launched.update(tool_use_id="toolu_a")
    launched["tool_response"]["agentId"] = "agentalpha1"
    assert hooks.out("PostToolUse", launched) is None
    start = fixture("foreground/SubagentStart.json")
    start.update(agent_id="agentalpha1", agent_type="parallel:parallel-task-executor")
    assert hooks.out("SubagentStart", start) is None

    stop = fixture("background/SubagentStop.json")
    stop.update(agent_id="agentalpha1", last_assistant_message=report_text("alpha", 1, sha))
    assert hooks.out("SubagentStop", stop) is None  # never context for the subagent
    [end] = hooks.events("task_end")
    assert (end["task"], end["state"], end["failed_claims"]) == ("alpha", "done", [])
    assert json.loads((project / RUN / "tasks" / "alpha" / "report.json").read_text())["commits"] == [sha]

    note = fixture("background/UserPromptSubmit-task-notification.json")
    note["prompt"] = note["prompt"].replace("a22eae28874b8e5b8", "agentalpha1").replace(
        "<result>DONE A</result>", f"<result>{report_text('alpha', 1, sha)}</result>")
    out = hooks.out("UserPromptSubmit", note)
    text = out["hookSpecificOutput"]["additionalContext"]
    assert out["hookSpecificOutput"]["hookEventName"] == "UserPromptSubmit"
    assert f"run {RUN_ID}: 1 done, 0 failed, 0 unverified, 1 running, 1 pending (of 3)" in text
    assert "alpha: DONE - issue #1, branch feature/task-1, 1 commit, tests passed, setup 1.5 s" in text
    assert "Still running: beta" in text
    assert len(hooks.events("task_end")) == 1  # not ingested twice
    events = [e["event"] for e in hooks.events()]
    for kind in ("spawn", "agent_launched", "agent_start", "agent_stop", "task_end", "notified"):
        assert kind in events
    [started] = hooks.events("agent_start")
    assert started["task"] == "alpha"


def test_notification_ingests_the_result_when_subagent_stop_did_not(hooks, project):
    sha = make_task_branch(project, 2)
    setup_end(project, "beta", 2)
    hooks.out("PreToolUse", spawn_payload("background", "beta", "toolu_b"))
    launched = fixture("background/PostToolUse-Agent-async_launched.json")
    launched.update(tool_use_id="toolu_b")
    launched["tool_response"]["agentId"] = "agentbeta01"
    hooks.out("PostToolUse", launched)
    note = fixture("background/UserPromptSubmit-task-notification.json")
    note["prompt"] = note["prompt"].replace("a22eae28874b8e5b8", "agentbeta01").replace(
        "<result>DONE A</result>", f"<result>{report_text('beta', 2, sha)}</result>")
    out = hooks.out("UserPromptSubmit", note)
    assert "beta: DONE" in out["hookSpecificOutput"]["additionalContext"]
    assert [e["state"] for e in hooks.events("task_end")] == ["done"]


# -- foreground mode ------------------------------------------------------------------------

def test_foreground_flow(hooks, project):
    sha = make_task_branch(project, 3)
    setup_end(project, "gamma", 3)
    hooks.out("PreToolUse", spawn_payload("foreground", "gamma", "toolu_g"))
    start = fixture("foreground/SubagentStart.json")
    start.update(agent_id="agentgamma1", agent_type="parallel:parallel-task-executor")
    assert hooks.out("SubagentStart", start) is None
    [started] = hooks.events("agent_start")
    assert started["task"] is None  # foreground: not linked until its report

    stop = fixture("foreground/SubagentStop.json")
    stop.update(agent_id="agentgamma1", last_assistant_message=report_text("gamma", 3, sha))
    assert hooks.out("SubagentStop", stop) is None

    done = completed_payload("toolu_g", report_text("gamma", 3, sha), agent_id="agentgamma1")
    done["tool_input"] = spawn_payload("foreground", "gamma", "x")["tool_input"]
    out = hooks.out("PostToolUse", done)
    text = out["hookSpecificOutput"]["additionalContext"]
    assert out["hookSpecificOutput"]["hookEventName"] == "PostToolUse"
    assert "gamma: DONE - issue #3, branch feature/task-3, 1 commit, tests passed" in text
    assert [e["task"] for e in hooks.events("task_end")] == ["gamma"]


def test_foreground_completion_without_subagent_stop(hooks, project):
    sha = make_task_branch(project, 1)
    setup_end(project, "alpha", 1)
    hooks.out("PreToolUse", spawn_payload("foreground", "alpha", "toolu_f"))
    done = completed_payload("toolu_f", report_text("alpha", 1, sha))
    out = hooks.out("PostToolUse", done)
    assert "alpha: DONE" in out["hookSpecificOutput"]["additionalContext"]


def test_all_done_names_the_next_step(hooks, project):
    for issue, task in enumerate([t["id"] for t in TASKS], start=1):
        sha = make_task_branch(project, issue)
        setup_end(project, task, issue)
        hooks.out("PreToolUse", spawn_payload("foreground", task, f"toolu_{task}"))
        done = completed_payload(f"toolu_{task}", report_text(task, issue, sha), agent_id=f"agent{task}")
        text = hooks.out("PostToolUse", done)["hookSpecificOutput"]["additionalContext"]
    assert "3 done, 0 failed, 0 unverified, 0 running, 0 pending (of 3)" in text
    assert "All tasks are done and verified. Next: `/parallel:merge` merges their branches in dependency order" in text
    assert "/parallel:status" in text


# -- done means verified ----------------------------------------------------------------------

def _finish(hooks, task, text, agent="agentx00001", **extra):
    hooks.out("PreToolUse", spawn_payload("background", task, f"toolu_{task}"))
    launched = fixture("background/PostToolUse-Agent-async_launched.json")
    launched.update(tool_use_id=f"toolu_{task}")
    launched["tool_response"]["agentId"] = agent
    hooks.out("PostToolUse", launched)
    stop = fixture("background/SubagentStop.json")
    stop.update(agent_id=agent, last_assistant_message=text, **extra)
    return hooks.out("SubagentStop", stop)


def test_claimed_success_without_a_commit_is_unverified(hooks, project):
    make_task_branch(project, 1, commit=False)
    setup_end(project, "alpha", 1)
    _finish(hooks, "alpha", report_text("alpha", 1, "0123456789abcdef"))
    [end] = hooks.events("task_end")
    assert end["state"] == "unverified"
    assert end["failed_claims"] == ["branch: feature/task-1 has no commits beyond origin/main",
                                    "commits: 0123456789ab is not on feature/task-1 beyond origin/main"]


def test_unpushed_branch_missing_issue_and_no_test_code_are_unverified(hooks, project):
    sha = make_task_branch(project, 1, push=False)
    (project / ".parallel" / "issues" / "1.md").unlink()
    _finish(hooks, "alpha", report_text("alpha", 1, sha, exit_code=None))
    [end] = hooks.events("task_end")
    assert end["state"] == "unverified"
    assert end["failed_claims"] == ["push: feature/task-1 is not on origin",
                                    "issue: .parallel/issues/1.md does not exist",
                                    "tests: the report records no test exit code"]


def test_failed_report_is_failed_with_reason_and_log(hooks, project):
    _finish(hooks, "alpha", report_text("alpha", 1, None, status="failed", reason="worktree lock"))
    [end] = hooks.events("task_end")
    assert (end["state"], end["reason"], end["log"]) == ("failed", "worktree lock", f"{RUN}/tasks/alpha/setup.log")


# -- the SubagentStop gate: at most once --------------------------------------------------------

def test_missing_report_blocks_once_then_never(hooks, project):
    out = _finish(hooks, "alpha", "I am done, trust me.")
    assert out["decision"] == "block"
    assert "completion report is missing" in out["reason"] and "parallel_report" in out["reason"]
    assert hooks.events("task_end") == []
    stop = fixture("background/SubagentStop.json")
    stop.update(agent_id="agentx00001", last_assistant_message="still no report")
    assert hooks.out("SubagentStop", stop) is None
    [end] = hooks.events("task_end")
    assert end["state"] == "unverified" and end["failed_claims"][0].startswith("completion report:")
    assert hooks.out("SubagentStop", stop) is None  # a resumed agent stopping again: nothing


def test_stop_hook_active_never_blocks(hooks, project):
    assert _finish(hooks, "alpha", "no report", stop_hook_active=True) is None
    assert hooks.events("task_end")[0]["state"] == "unverified"


def test_unknown_agents_are_never_blocked(hooks, project):
    stop = fixture("background/SubagentStop.json")
    assert hooks.out("SubagentStop", stop) is None
    stop["agent_type"] = "parallel:parallel-task-executor"  # ours by type, but no task to find
    assert hooks.out("SubagentStop", stop) is None


# -- Stop ----------------------------------------------------------------------------------------

def test_stop_records_what_is_still_running(hooks, project):
    hooks.out("PreToolUse", spawn_payload("background", "alpha", "toolu_a"))
    launched = fixture("background/PostToolUse-Agent-async_launched.json")
    launched.update(tool_use_id="toolu_a")
    launched["tool_response"]["agentId"] = "a99f6a8a529e9d3b6"
    hooks.out("PostToolUse", launched)
    assert hooks.out("Stop", fixture("background/Stop-while-running.json")) is None
    [stop] = hooks.events("main_stop")
    assert stop["running"] == ["alpha"] and stop["background_agents"] == ["a99f6a8a529e9d3b6"]


# -- start-up cost: what each hook imports ----------------------------------------------------

#: Modules the hook path must not import: each costs every hook call milliseconds of start-up
#: (dataclasses pulls in inspect, ast, dis and tokenize; pathlib pulls in urllib.parse and ipaddress).
HEAVY = {"pathlib", "dataclasses", "inspect", "typing", "shutil", "html", "importlib.util", "tempfile"}


def imports_of(hooks, event: str, payload) -> set[str]:
    """The modules one hook call imports, run as ``python3 -S -X importtime`` (-S: no site-packages
    .pth file preloads anything, as on a clean machine; the hook is stdlib only)."""
    proc = hooks.run(event, payload, python_flags=["-S", "-X", "importtime"])
    assert proc.returncode == 0
    lines = proc.stderr.decode().splitlines()
    assert all(line.startswith("import time:") for line in lines), proc.stderr.decode()
    return {line.rsplit("|", 1)[1].strip() for line in lines[1:]}


def test_hooks_import_nothing_heavy(hooks, project):
    sha = make_task_branch(project, 1)
    setup_end(project, "alpha", 1)
    hooks.out("PreToolUse", spawn_payload("background", "beta", "toolu_b"))  # still running at the Stop
    launched = fixture("background/PostToolUse-Agent-async_launched.json")
    launched.update(tool_use_id="toolu_a")
    launched["tool_response"]["agentId"] = "agentalpha1"
    start = fixture("foreground/SubagentStart.json")
    start.update(agent_id="agentalpha1", agent_type="parallel:parallel-task-executor")
    stop = fixture("background/SubagentStop.json")
    stop.update(agent_id="agentalpha1", last_assistant_message=report_text("alpha", 1, sha))
    note = fixture("background/UserPromptSubmit-task-notification.json")
    note["prompt"] = note["prompt"].replace("a22eae28874b8e5b8", "agentalpha1")
    calls = [("PreToolUse", spawn_payload("background", "alpha", "toolu_a")), ("PostToolUse", launched),
             ("SubagentStart", start), ("SubagentStop", stop), ("UserPromptSubmit", note),
             ("Stop", fixture("background/Stop-while-running.json"))]
    for event, payload in calls:
        imported = imports_of(hooks, event, payload)
        assert "parallel_setup.hooks.common" in imported, event  # the hook got to its handler...
        assert not imported & HEAVY, (event, sorted(imported & HEAVY))  # ...without the heavy imports
        if event not in ("SubagentStop", "UserPromptSubmit"):  # only verifying a report runs git
            assert "subprocess" not in imported, event
    # every call did its work: the report was verified, the summary given, what runs recorded
    assert [e["state"] for e in hooks.events("task_end")] == ["done"]
    assert [e["event"] for e in hooks.events()][-2:] == ["notified", "main_stop"]
    assert hooks.events("main_stop")[0]["running"] == ["beta"]


# -- failing open, loudly, once ------------------------------------------------------------------

def test_unwritable_state_fails_open_and_tells_the_user_once(hooks, project):
    events_file = project / RUN / "events.jsonl"
    events_file.unlink()
    events_file.mkdir()  # appending an event now fails (works as root too)
    payload = spawn_payload("background", "alpha", "toolu_1")
    out = hooks.out("PreToolUse", payload)
    assert set(out) == {"systemMessage"}
    assert "the PreToolUse hook failed" in out["systemMessage"] and "hook-errors.log" in out["systemMessage"]
    log = project / RUN / "hook-errors.log"
    assert "IsADirectoryError" in log.read_text()
    assert hooks.out("PreToolUse", payload) is None  # told once
    assert log.read_text().count("IsADirectoryError") >= 2


def test_error_without_a_known_run_logs_to_plugin_data(hooks, project):
    (project / ".parallel" / "runs" / "20990101-000000-beef").mkdir()
    (project / ".parallel" / "runs" / "20990101-000000-beef" / "hooks").write_text("not a folder")
    (project / ".parallel" / "runs" / "20990101-000000-beef" / "run.json").write_text("{}")
    # a marker lookup inside a broken run folder must not fail the hook either
    note = fixture("background/UserPromptSubmit-task-notification.json")
    assert hooks.out("UserPromptSubmit", note) is None

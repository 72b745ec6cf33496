"""Hooks attacked: killed with SIGKILL mid-verification, hung remotes, hostile paths and event
lines, writers that keep writing, huge logs. Real hook processes, real git."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from parallel_setup import cli, events, status, task_state, verify
from tests.hooks.conftest import fixture, make_task_branch, report_text, setup_end
from tests.hooks.hooks_test import spawn_payload
from parallel_setup.fake_github import FakeGitHub
from tests.support.git import git
from tests.support.github import REPO, requires_gh
from tests.support.runs import RUN_ID, make_run, short_ref

RUN = f".parallel/runs/{RUN_ID}"


def hang_remote(project: Path, tmp_path: Path) -> None:
    """origin now points at an ssh host that accepts and never answers (a sleeping ssh)."""
    ssh = tmp_path / "hanging-ssh"
    ssh.write_text("#!/bin/sh\nexec sleep 60\n")
    ssh.chmod(0o755)
    git(project, "remote", "set-url", "origin", "ssh://hang.invalid/widgets.git")
    git(project, "config", "core.sshCommand", str(ssh))


def heal_remote(project: Path) -> None:
    git(project, "remote", "set-url", "origin", str(project.parent / "widgets.git"))
    git(project, "config", "--unset", "core.sshCommand")


def stop_payload(project: Path, sha: str, agent: str = "agentalpha1") -> dict:
    payload = fixture("background/SubagentStop.json")
    payload.update(agent_id=agent, last_assistant_message=report_text("alpha", 1, sha), cwd=str(project))
    return payload


def start_hook(hooks, event: str, payload: dict | None, env: dict | None = None) -> subprocess.Popen:
    """The hook running in its own process group; ``payload=None``: its stdin stays open and empty
    (the hook waits for its payload, having done nothing yet)."""
    full_env = dict(os.environ, CLAUDE_PLUGIN_ROOT=str(hooks.plugin), CLAUDE_PLUGIN_DATA=str(hooks.data_dir),
                    CLAUDE_PROJECT_DIR=str(hooks.project), PARALLEL_VERIFY_GH="0", **(env or {}))
    full_env.pop("PARALLEL_DISABLE", None)
    proc = subprocess.Popen([sys.executable, str(hooks.plugin / "scripts" / "hook.py"), event],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            cwd=hooks.project, env=full_env, start_new_session=True)
    if payload is not None:
        proc.stdin.write(json.dumps(payload).encode())
        proc.stdin.close()
    return proc


def wait_for_event(hooks, kind: str, timeout: float = 30.0) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = [e for e in hooks.events() if e["event"] == kind]
        if found:
            return found[-1]
        time.sleep(0.05)
    raise AssertionError(f"no {kind} event within {timeout} s: {[e['event'] for e in hooks.events()]}")


def kill_group(proc: subprocess.Popen) -> None:
    os.killpg(proc.pid, signal.SIGKILL)  # the hook and the git it started, as a timeout kill leaves them
    proc.wait(timeout=10)
    proc.stdout.close()
    proc.stderr.close()


def launched(hooks, task: str = "alpha", agent: str = "agentalpha1") -> None:
    hooks.out("PreToolUse", spawn_payload("background", task, f"toolu_{task}"))
    payload = fixture("background/PostToolUse-Agent-async_launched.json")
    payload.update(tool_use_id=f"toolu_{task}")
    payload["tool_response"]["agentId"] = agent
    hooks.out("PostToolUse", payload)


def states(project: Path, now: float | None = None) -> dict:
    """What ``runs.task_states`` returns (these hand-made runs have no full plan to load)."""
    return task_state.derive(project / RUN, ["alpha", "beta", "gamma"], now=now)


# -- a SubagentStop killed while it verifies -------------------------------------------------

def test_subagent_stop_killed_mid_verification_never_strands_its_task(hooks, project, tmp_path, monkeypatch,
                                                                         capsys):
    sha = make_task_branch(project, 1)
    setup_end(project, "alpha", 1)
    launched(hooks)
    hang_remote(project, tmp_path)
    proc = start_hook(hooks, "SubagentStop", stop_payload(project, sha))
    wait_for_event(hooks, "agent_stop")
    time.sleep(1.0)  # inside `git ls-remote` to the hanging host
    kill_group(proc)
    assert [e for e in hooks.events() if e["event"] == "task_end"] == []

    # While its lease runs the task is still being verified; after it, it is unverified, saying why.
    assert states(project)["alpha"].state == "running"
    later = time.time() + task_state.LEASE_SECONDS + 1
    st = status.load_run(project, RUN_ID, now=later)
    alpha = st.task("alpha")
    assert (alpha.state, alpha.reason) == ("unverified", task_state.INTERRUPTED)
    assert states(project, now=later)["alpha"].state == "unverified"

    # The cause gone, a recheck verifies the saved report again: done.
    heal_remote(project)
    monkeypatch.setattr(status, "_now", lambda: later)
    assert cli.main(["-C", str(project), "status", "--recheck", "--width", "100"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("Rechecked 1 unverified task(s): alpha done\n")
    assert status.load_run(project, RUN_ID, now=later).task("alpha").state == "done"
    [end] = hooks.events("task_end")
    assert (end["state"], end["via"]) == ("done", "recheck")


def test_subagent_stop_killed_before_it_wrote_anything_is_lost_after_the_bound(hooks, project, monkeypatch):
    make_task_branch(project, 1)
    setup_end(project, "alpha", 1)
    launched(hooks)
    before = hooks.events()
    proc = start_hook(hooks, "SubagentStop", None)  # started, still waiting for its payload
    time.sleep(0.5)
    assert proc.poll() is None
    kill_group(proc)  # as Claude Code's timeout kills it: nothing of its work is on disk
    assert hooks.events() == before
    monkeypatch.setenv("PARALLEL_LOST_AFTER", "60")
    now = time.time()
    assert states(project, now=now)["alpha"].state == "running"  # within the bound: maybe still working
    lost = states(project, now=now + 3600)["alpha"]
    assert lost.state == "lost", lost  # past it, with no trace of an end: execute --run relaunches it


@pytest.mark.parametrize("delay", [0.0, 0.05, 0.15, 0.3, 0.6, 1.2])
def test_a_subagent_stop_killed_at_any_point_leaves_a_state_that_resolves(hooks, project, tmp_path, delay):
    sha = make_task_branch(project, 1)
    setup_end(project, "alpha", 1)
    launched(hooks)
    hang_remote(project, tmp_path)
    proc = start_hook(hooks, "SubagentStop", stop_payload(project, sha))
    time.sleep(delay)
    kill_group(proc)
    # Whatever was on disk when it died: never "running" for good. After the lease it is
    # unverified (a recheck verifies it), or with no trace of the end it is lost (relaunched).
    much_later = time.time() + 7200
    assert states(project, now=much_later)["alpha"].state in ("unverified", "lost")
    heal_remote(project)
    from parallel_setup import verify as verify_
    info = json.loads((project / RUN / "run.json").read_text())
    if states(project, now=much_later)["alpha"].state == "unverified":
        assert verify_.recheck(project, project / RUN, info, ["alpha"])["alpha"].state == "done"
        assert states(project, now=much_later)["alpha"].state == "done"


def test_verification_stays_inside_its_budget(hooks, project, tmp_path):
    sha = make_task_branch(project, 1)
    setup_end(project, "alpha", 1)
    launched(hooks)
    hang_remote(project, tmp_path)
    start = time.monotonic()
    proc = hooks.run("SubagentStop", stop_payload(project, sha), env={"PARALLEL_VERIFY_BUDGET": "3"})
    elapsed = time.monotonic() - start
    assert proc.returncode == 0
    [end] = hooks.events("task_end")
    assert end["state"] == "unverified"
    assert any(c.startswith("push: could not check origin") for c in end["failed_claims"]), end
    assert elapsed < verify.REMOTE_TIMEOUT  # the remote's own timeout was cut to the budget


@requires_gh
def test_a_github_that_never_answers_stays_inside_the_budget(hooks, project):
    """The real gh against the fake GitHub, every request held for 30 s."""
    run_json = project / RUN / "run.json"
    info = json.loads(run_json.read_text())
    info.update(issue_mode="github", repository=REPO)
    run_json.write_text(json.dumps(info))
    sha = make_task_branch(project, 1)
    setup_end(project, "alpha", 1)
    launched(hooks)
    with FakeGitHub(request_latency=30.0) as server:
        env = server.env(config_dir=str(hooks.data_dir / "gh-config"))
        env.update(PARALLEL_VERIFY_GH="1", PARALLEL_VERIFY_BUDGET="3")
        start = time.monotonic()
        proc = hooks.run("SubagentStop", stop_payload(project, sha), env=env)
        elapsed = time.monotonic() - start
    assert proc.returncode == 0
    [end] = hooks.events("task_end")
    assert end["state"] == "done"  # an unanswered GitHub is a note, the recorded issue stands
    assert any("GitHub did not answer" in n for n in end["notes"]), end["notes"]
    assert elapsed < verify.GH_TIMEOUT  # gh's own 8 s were cut to the budget


def test_the_default_budget_is_well_inside_the_hooks_timeout():
    config = json.loads((Path(__file__).resolve().parents[2] / "hooks" / "hooks.json").read_text())
    timeouts = {e: h["hooks"][0]["timeout"] for e, hs in config["hooks"].items() for h in hs
                if "scripts/hook.py" in h["hooks"][0]["command"]}
    for event in ("SubagentStop", "PostToolUse", "UserPromptSubmit"):  # each of them may verify a report
        assert verify.HOOK_BUDGET + 10 <= timeouts[event], event
    assert task_state.LEASE_SECONDS > timeouts["SubagentStop"]


# -- event readers ----------------------------------------------------------------------------

BAD_LINES = ['{"t": null, "event": "setup_start", "run": "r", "task": "alpha"}',
             '{"t": 1e999, "event": "setup_start", "run": "r", "task": "alpha"}',
             '{"t": "soon", "event": "spawn", "run": "r", "task": "beta"}',
             '{"t": 1795340001, "event": "step_end", "run": "r", "task": "alpha", "step": "issue", "seconds": "x"}',
             '{"t": 1795340001, "event": "setup_end", "run": "r", "task": "alpha", "seconds": {"total": "1"}}',
             '{"t": 1795340001, "event": "launch", "run": "r", "task": null, "wave": [1, 2]}',
             '{"t": 1795340001, "event": "task_end", "run": "r", "task": ["alpha"], "state": "done"}',
             '{"t": true, "event": "task_end", "run": "r", "task": "alpha", "state": "done"}',
             '{"t": NaN, "event": "task_end", "run": "r", "task": "alpha", "state": "done"}',
             '{"t": 1' + '0' * 400 + ', "event": "task_end", "run": "r", "task": "alpha", "state": "done"}']


def test_wrongly_typed_event_lines_are_dropped_by_every_reader(hooks, project, capsys):
    log = project / RUN / "events.jsonl"
    with open(log, "a", encoding="utf-8") as f:
        f.write("\n".join(BAD_LINES) + "\n")
    assert [e["event"] for e in events.read_events(project / RUN)] == ["run_created"]
    assert cli.main(["-C", str(project), "status", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["counts"]["pending"] == 3
    # and every later run summary still comes
    sha = make_task_branch(project, 1)
    setup_end(project, "alpha", 1)
    launched(hooks)
    note = fixture("background/UserPromptSubmit-task-notification.json")
    note["prompt"] = note["prompt"].replace("a22eae28874b8e5b8", "agentalpha1").replace(
        "<result>DONE A</result>", f"<result>{report_text('alpha', 1, sha)}</result>")
    out = hooks.out("UserPromptSubmit", note)
    assert "1 done" in out["hookSpecificOutput"]["additionalContext"]


# -- PreToolUse expansion: only the run's own prompt files -----------------------------------

def test_a_symlinked_prompt_is_not_expanded(hooks, project, tmp_path):
    secret = tmp_path / "id_ed25519"
    secret.write_text("-----BEGIN OPENSSH PRIVATE KEY-----\n")
    prompt = project / RUN / "tasks" / "alpha" / "prompt.md"
    prompt.unlink()
    prompt.symlink_to(secret)
    assert hooks.out("PreToolUse", spawn_payload("background", "alpha", "toolu_1")) is None
    assert hooks.events("spawn") == []


def test_a_symlinked_task_folder_is_not_expanded(hooks, project, tmp_path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "prompt.md").write_text("PRIVATE NOTES\n")
    folder = project / RUN / "tasks" / "alpha"
    for f in folder.iterdir():
        f.unlink()
    folder.rmdir()
    folder.symlink_to(elsewhere, target_is_directory=True)
    assert hooks.out("PreToolUse", spawn_payload("background", "alpha", "toolu_1")) is None


def test_a_prompt_whose_real_path_leaves_the_run_is_not_expanded(hooks, project, tmp_path):
    runs_dir = project / ".parallel" / "runs"
    moved = tmp_path / "moved-run"
    (runs_dir / RUN_ID).rename(moved)
    (runs_dir / RUN_ID).symlink_to(moved, target_is_directory=True)  # the run folder itself a link
    assert hooks.out("PreToolUse", spawn_payload("background", "alpha", "toolu_2")) is None


@pytest.mark.parametrize("task", ["..", "extra"])
def test_only_tasks_of_the_run_are_expanded(hooks, project, task):
    if task == "..":
        (project / RUN / "prompt.md").write_text("the run folder's own file\n")
    else:
        (project / RUN / "tasks" / "extra").mkdir()
        (project / RUN / "tasks" / "extra" / "prompt.md").write_text("not a task of the run\n")
    payload = spawn_payload("background", "alpha", "toolu_1")
    payload["tool_input"]["prompt"] = short_ref(RUN_ID, task)
    assert hooks.out("PreToolUse", payload) is None


def test_a_report_naming_tasks_dotdot_is_not_a_task(hooks, project):
    stop = fixture("background/SubagentStop.json")
    stop.update(agent_id="agentzzz", agent_type="parallel:parallel-task-executor",
                last_assistant_message=f"I read {RUN}/tasks/../run.json and stopped.")
    hooks.out("SubagentStop", stop)
    assert [e["task"] for e in hooks.events() if e["event"] in ("agent_stop", "task_end")] == []


# -- stdin is always drained ---------------------------------------------------------------------

@pytest.mark.parametrize("case", ["disabled", "oversized", "unknown-event"])
def test_every_hook_reads_its_whole_stdin(hooks, project, case):
    env = dict(os.environ, CLAUDE_PROJECT_DIR=str(project))
    env.pop("PARALLEL_DISABLE", None)
    if case == "disabled":
        env["PARALLEL_DISABLE"] = "1"
    event = "Nonsense" if case == "unknown-event" else "PreToolUse"
    data = b'{"prompt": "' + b"x" * (9 * 1024 * 1024) + b'"}'
    proc = subprocess.Popen([sys.executable, str(hooks.plugin / "scripts" / "hook.py"), event],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            cwd=project, env=env)
    try:
        for i in range(0, len(data), 1 << 16):  # as Claude Code writes it, while the hook runs
            proc.stdin.write(data[i:i + (1 << 16)])
        proc.stdin.close()  # a BrokenPipeError above (EPIPE) is the bug
        out, err = proc.stdout.read(), proc.stderr.read()
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert (proc.returncode, out, err) == (0, b"", b"")


# -- the Stop hook's cost does not grow with the log ---------------------------------------------

def test_the_stop_hook_never_reads_the_event_log(hooks, project):
    sha = make_task_branch(project, 1)
    setup_end(project, "alpha", 1)
    launched(hooks)
    hooks.out("PreToolUse", spawn_payload("background", "beta", "toolu_beta"))
    line = events.format_event(RUN_ID, "gh_call", task=None, op="issue_lookup", attempt=1, exit=0,
                               http_status=200, rate_remaining=4000, retry_after=None, seconds=0.2).encode()
    big = 48 * 1024 * 1024
    with open(project / RUN / "events.jsonl", "ab") as f:
        chunk = line * ((1 << 20) // len(line) + 1)
        written = 0
        while written < big:
            f.write(chunk)
            written += len(chunk)
    hooks.out("SubagentStop", stop_payload(project, sha))  # alpha ends; beta still runs
    probe = ("import runpy, sys\n"
             f"sys.argv = [{str(hooks.plugin / 'scripts' / 'hook.py')!r}, 'Stop']\n"
             "try:\n    runpy.run_path(sys.argv[0], run_name='__main__')\n"
             "except SystemExit:\n    pass\n"
             "sys.stderr.write(open('/proc/self/io').read())\n")
    env = dict(os.environ, CLAUDE_PROJECT_DIR=str(project), CLAUDE_PLUGIN_DATA=str(hooks.data_dir))
    env.pop("PARALLEL_DISABLE", None)
    payload = fixture("background/Stop-while-running.json")
    payload["cwd"] = str(project)
    proc = subprocess.run([sys.executable, "-S", "-c", probe], input=json.dumps(payload).encode(),
                          capture_output=True, cwd=project, env=env, timeout=120)
    io = dict(line.split(": ") for line in proc.stderr.decode().splitlines() if ": " in line)
    assert int(io["rchar"]) < 8 * 1024 * 1024, io  # the interpreter and its modules, not the 48 MB log
    assert hooks.events("main_stop")[-1]["running"] == ["beta"]


# -- the "once" notice stays once ----------------------------------------------------------------

def test_the_failure_notice_stays_once_after_the_run_folder_is_deleted(hooks, project):
    import shutil
    payload = spawn_payload("background", "alpha", "toolu_1")
    told = 0
    for _ in range(3):
        events_file = project / RUN / "events.jsonl"
        events_file.unlink()
        events_file.mkdir()  # appending an event fails
        out = hooks.out("PreToolUse", payload)
        told += bool(out and "systemMessage" in out)
        shutil.rmtree(project / RUN)
        make_run(project, [{"id": "alpha", "title": "Alpha"}], created_at=time.time())
    assert told == 1


# -- an early SubagentStart ----------------------------------------------------------------------

def test_early_subagent_start_through_the_real_hooks(hooks, project):
    hooks.out("PreToolUse", spawn_payload("background", "alpha", "toolu_a"))
    start = fixture("foreground/SubagentStart.json")
    start.update(agent_id="agentalpha1", agent_type="parallel:parallel-task-executor")
    hooks.out("SubagentStart", start)  # before the launch links agentalpha1 to alpha
    launched = fixture("background/PostToolUse-Agent-async_launched.json")
    launched.update(tool_use_id="toolu_a")
    launched["tool_response"]["agentId"] = "agentalpha1"
    hooks.out("PostToolUse", launched)
    [raw] = hooks.events("agent_start")
    assert raw["task"] is None  # as logged
    run_dir = project / ".parallel" / "runs" / RUN_ID
    [start_event] = [e for e in task_state.attributed_events(run_dir) if e["event"] == "agent_start"]
    assert start_event["task"] == "alpha"
    assert [e["output_file"] for e in hooks.events("agent_launched")] == [launched["tool_response"]["outputFile"]]

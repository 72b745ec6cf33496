"""The real Claude Code CLI, offline, against the scripted Messages API (tests/support)."""

from __future__ import annotations

import json
from pathlib import Path

from tests.support.claude_cli import plugin_validate, run_claude
from tests.support.messages_api import (
    MessagesAPIServer,
    agent_call,
    first_user_text,
    is_subagent,
    task_notifications,
    text,
    tool_results,
)

TOY = Path(__file__).parent / "data" / "toy-plugin"


def test_toy_plugin_validates_clean(tmp_path):
    proc = plugin_validate(TOY, home=tmp_path / "home")  # --strict --profile directory
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    assert "✔ Validation passed" in out
    assert "warning" not in out.lower() and "✘" not in out, out


def test_slash_command_round_trip(tmp_path):
    project = tmp_path / "project"
    project.mkdir()
    with MessagesAPIServer(lambda req: [text("TOY-SCRIPTED-REPLY")]) as api:
        proc = run_claude(
            "/toy:hello world",
            cwd=project,
            plugin_dir=TOY,
            api_url=api.url,
            home=tmp_path / "home",
            timeout=120,
        )
        assert proc.returncode == 0, proc.stderr
        assert "TOY-SCRIPTED-REPLY" in proc.stdout
        assert not api.errors, api.errors
        (req,) = api.message_requests()
        sent = first_user_text(req)
        assert "<command-name>/toy:hello</command-name>" in sent
        assert "TOY-COMMAND-BODY greet: world" in sent
        assert "TOY-BANG-OUTPUT" in sent  # the !`echo ...` line ran and replaced itself
        assert "toy:helper" in api.all_request_texts()  # plugin agent offered as toy:helper


def test_plugin_agent_and_hook(tmp_path):
    project = tmp_path / "project"
    project.mkdir()

    def responder(req):
        if is_subagent(req):
            return [text("HELPER-REPORT")]
        if not tool_results(req):
            return [agent_call("look around", description="toy task", subagent_type="toy:helper")]
        if task_notifications(req):
            return [text("MAIN-DONE")]
        return [text("MAIN-WAITING")]

    with MessagesAPIServer(responder) as api:
        proc = run_claude(
            "delegate please",
            cwd=project,
            plugin_dir=TOY,
            api_url=api.url,
            home=tmp_path / "home",
            output_format="json",
        )
        assert proc.returncode == 0, proc.stderr
        assert proc.json and proc.json["result"] == "MAIN-DONE", proc.stdout
        assert not api.errors, api.errors
        subs = api.subagent_requests()
        assert subs, "no subagent request reached the server"
        # the PreToolUse hook rewrote the prompt the subagent received
        assert "TOY-HOOK-PREFIX look around" in first_user_text(subs[0])
        assert "TOY-HELPER-SYSTEM-PROMPT" in api.all_request_texts()
        notes = task_notifications(api.main_requests()[-1])
        assert [n["result"] for n in notes] == ["HELPER-REPORT"]

    env = json.loads((project / "toy-hook-env.json").read_text())
    assert env["CLAUDE_PLUGIN_ROOT"] == str(TOY)
    assert env["CLAUDE_PROJECT_DIR"] == str(project)
    assert env["CLAUDE_PLUGIN_DATA"] == str(tmp_path / "home" / ".claude" / "plugins" / "data" / "toy-inline")

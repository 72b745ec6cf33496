"""``parallel-setup permissions on|off|status`` and ``/parallel:permissions``: the repository's opt-in.

The CLI and the hook read the same file through one function (``hooks.permissions.opted_in``);
the hook's decisions themselves are tested in ``tests/hooks/permissions_test.py``.
"""

from __future__ import annotations

import json
import re

from parallel_setup import cli
from parallel_setup.hooks.permissions import opted_in
from tests.support.claude_cli import run_claude
from tests.support.git import git, make_repo
from tests.support.messages_api import MessagesAPIServer, first_user_text, text, tool_results, tool_use

OFF = ("Subagents' work inside their worktrees: off (setting: .parallel/permissions.json).\n"
       "Permissions: setups approved; the subagents' other calls follow your rules "
       "(/parallel:permissions on lets them work in their worktrees without prompts)\n")
ON = ("Subagents' work inside their worktrees: on (setting: .parallel/permissions.json).\n"
      "Permissions: setups approved; subagents work in their worktrees without prompts (opt-in on)\n")


def test_off_by_default_then_on_then_off(repo, capsys):
    assert cli.main(["-C", str(repo), "permissions", "status"]) == 0
    assert capsys.readouterr().out == OFF
    assert not (repo / ".parallel" / "permissions.json").exists()  # status changes nothing

    assert cli.main(["-C", str(repo), "permissions", "on"]) == 0
    assert capsys.readouterr().out == ON
    assert opted_in(str(repo))
    saved = json.loads((repo / ".parallel" / "permissions.json").read_text())
    assert saved["worktree_work"] is True and isinstance(saved["set_at"], float)
    assert git(repo, "status", "--porcelain").stdout == ""  # per machine: .parallel/ is excluded

    assert cli.main(["-C", str(repo), "permissions", "status", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == {
        "worktree_work": True, "setting": str(repo.resolve() / ".parallel" / "permissions.json")}

    assert cli.main(["-C", str(repo), "permissions", "off"]) == 0
    assert capsys.readouterr().out == OFF
    assert not opted_in(str(repo))


def test_a_setting_permissions_on_did_not_record_counts_as_off(repo, capsys):
    (repo / ".parallel").mkdir()
    (repo / ".parallel" / "permissions.json").write_text('{"worktree_work": true}')  # copied, or written by a model
    assert cli.main(["-C", str(repo), "permissions", "status"]) == 0
    lines = OFF.splitlines(keepends=True)
    assert capsys.readouterr().out == lines[0] + (
        ".parallel/permissions.json says on, but it was not turned on with `parallel-setup permissions on` on "
        "this machine (a file anyone may write is not enough): run that to turn it on.\n") + lines[1]
    assert not opted_in(str(repo))
    assert cli.main(["-C", str(repo), "permissions", "on"]) == 0
    assert capsys.readouterr().out == ON


def test_a_damaged_setting_counts_as_off(repo, capsys):
    assert cli.main(["-C", str(repo), "permissions", "on"]) == 0
    capsys.readouterr()
    for damaged in ("{not json", '["worktree_work"]', '{"worktree_work": "yes"}', '{"worktree_work": 1}'):
        (repo / ".parallel" / "permissions.json").write_text(damaged)
        assert cli.main(["-C", str(repo), "permissions", "status"]) == 0
        assert capsys.readouterr().out == OFF, damaged


def test_a_verb_is_required(repo, capsys):
    try:
        cli.main(["-C", str(repo), "permissions"])
    except SystemExit as e:
        assert e.code == 2
    assert "the following arguments are required: VERB" in capsys.readouterr().err


def test_execute_prints_the_setting(tmp_path, capsys, monkeypatch):
    from tests.commands.execute_test import execute, write_plan
    monkeypatch.setenv("PARALLEL_GH", str(tmp_path / "no-such-gh"))
    for name, opt_in, line in (("off", False, OFF.splitlines()[1]), ("on", True, ON.splitlines()[1])):
        project = make_repo(tmp_path / name)
        write_plan(project)
        if opt_in:
            cli.main(["-C", str(project), "permissions", "on"])
            capsys.readouterr()
        code, out, err = execute(project, capsys)
        assert code == 0, err
        assert f"\n- {line}\n" in out


def test_real_cli_parallel_permissions_on_turns_it_on(plugin_copy, tmp_path):
    """/parallel:permissions on: the model runs the plugin's script with Bash, and the opt-in is on."""
    def model(req):
        results = tool_results(req)
        if results:
            return [text("PERMISSIONS-DONE: " + results[-1]["content"][:500])]
        m = re.search(r'"([^"\n]*/scripts/parallel-setup)" permissions on', first_user_text(req))
        if not m or "Arguments: `on`" not in first_user_text(req):
            return [text("PERMISSIONS-CONFUSED")]
        return [tool_use("Bash", {"command": f'"{m.group(1)}" permissions on', "description": "Opt in"})]

    project = make_repo(tmp_path / "p")
    with MessagesAPIServer(model) as api:
        proc = run_claude("/parallel:permissions on", cwd=project, plugin_dir=plugin_copy, api_url=api.url,
                          home=tmp_path / "home", timeout=180, permission_mode="default")
        assert proc.returncode == 0, proc.stderr
        assert not api.errors, api.errors
    assert "PERMISSIONS-DONE: Subagents' work inside their worktrees: on" in proc.stdout, proc.stdout + proc.stderr
    assert opted_in(str(project))

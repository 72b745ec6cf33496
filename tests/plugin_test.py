"""The plugin as Claude Code sees it: a clean `claude plugin validate`, the real CLI
expanding /parallel:plan from a relocated copy, --help text, and a meta-test that
every command, hook and template has its script, docs and a test."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import pytest

from parallel_setup.cli import COMMANDS, build_parser
from tests.support.claude_cli import plugin_validate, run_claude
from tests.support.git import git, make_repo
from tests.support.messages_api import MessagesAPIServer, first_user_text, text, tool_results, tool_use

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text(encoding="utf-8")


def test_claude_plugin_validate_is_clean(tmp_path):
    """Zero errors, zero warnings, plugin-directory checks included (--strict --profile directory)."""
    proc = plugin_validate(ROOT, home=tmp_path / "home")
    out = proc.stdout + proc.stderr
    print(out)  # shown in CI's log with -rA / on failure
    assert proc.returncode == 0, out
    assert "✔ Validation passed" in out
    assert "✔ These checks found nothing to report" in out, out
    assert not re.search(r"warning|✘|⚠", out, re.IGNORECASE), out


def test_manifest_fields():
    manifest = json.loads((ROOT / ".claude-plugin" / "plugin.json").read_text())
    assert manifest["name"] == "parallel"
    for key in ("version", "description", "author", "license", "keywords", "repository", "homepage"):
        assert manifest[key], key
    from parallel_setup import __version__
    assert manifest["version"] == __version__
    market = json.loads((ROOT / ".claude-plugin" / "marketplace.json").read_text())
    assert [p["name"] for p in market["plugins"]] == ["parallel"]
    assert market["plugins"][0]["source"] == "./"


def _plugin_root_placeholder(s: str, plugin_dir: Path) -> str:
    return s.replace(str(plugin_dir), "<PLUGIN_ROOT>")


def expand_command(prompt: str, project: Path, plugin_dir: Path, tmp_path: Path, reply: str):
    """Run a slash command through the real CLI against a model that answers ``reply`` once;
    returns the CLI's result and the expanded command text the model received."""
    with MessagesAPIServer(lambda req: [text(reply)]) as api:
        proc = run_claude(prompt, cwd=project, plugin_dir=plugin_dir,
                          api_url=api.url, home=tmp_path / "home", timeout=180)
        assert proc.returncode == 0, proc.stderr
        assert reply in proc.stdout, proc.stdout + proc.stderr
        assert not api.errors, api.errors
        (req,) = api.message_requests()
    return proc, first_user_text(req)


def wait_for_full_pool(project: Path, size: int) -> None:
    """Wait for a background fill to leave ``size`` free worktrees and stop."""
    from parallel_setup import pool
    deadline = time.time() + 60
    while len(pool.free_slots(project)) < size or pool.fill_running(project):
        assert time.time() < deadline, pool.log_path(project).read_text()
        time.sleep(0.1)


def test_real_cli_expands_parallel_plan(plugin_copy, tmp_path, snapshot):
    """/parallel:plan loads from a copy in a folder with another name; its ! lines run and
    their output (the schema, the example, the saved plans) reaches the model's request."""
    project = tmp_path / "project"
    project.mkdir()
    _, sent = expand_command("/parallel:plan add a cache layer", project, plugin_copy, tmp_path,
                             "PLAN-SCRIPTED-REPLY")
    print(sent[:3000])
    assert "<command-name>/parallel:plan</command-name>" in sent
    assert "Goal: add a cache layer" in sent
    assert '"title": "parallel plan"' in sent            # !plan schema ran
    assert "name: add-user-accounts" in sent             # !plan example ran
    assert "No saved plans in" in sent                   # !plan list ran, in the project
    assert "Shell command failed" not in sent
    assert "!`" not in sent                              # every ! line was replaced
    assert str(plugin_copy) in sent                      # ${CLAUDE_PLUGIN_ROOT} substituted
    body = sent[sent.index("# Plan parallel work"):]
    body = _plugin_root_placeholder(body, plugin_copy).replace(str(project.resolve()), "<PROJECT>")
    assert body == snapshot


def test_real_cli_parallel_plan_tops_up_the_worktree_pool_in_the_background(plugin_copy, tmp_path):
    """With the pool on, /parallel:plan's ! line starts a background fill and returns at once
    (the command is not held up by the checkouts); the worktrees appear while the model plans."""
    from parallel_setup import pool
    project = make_repo(tmp_path / "p")
    pool.save_settings(project, pool.Settings(2, "main"))
    _, sent = expand_command("/parallel:plan add a cache layer", project, plugin_copy, tmp_path,
                             "PLAN-SCRIPTED-REPLY")
    assert "nothing to do about it: Worktree pool: filling up to 2 worktrees at main in the background (pid " in sent
    assert "Shell command failed" not in sent
    wait_for_full_pool(project, 2)
    base = git(project, "rev-parse", "origin/main").stdout.strip()
    assert {s.commit for s in pool.free_slots(project)} == {base}


def test_real_cli_parallel_pool_on_turns_the_pool_on(plugin_copy, tmp_path):
    """/parallel:pool on --size 2: the expanded command names the plugin's script; the (scripted)
    model runs it with Bash, and the pool is on and filled in the real repository."""
    from parallel_setup import pool

    def model(req):
        results = tool_results(req)
        if results:
            return [text("POOL-DONE: " + results[-1]["content"][:500])]
        m = re.search(r'"([^"\n]*/scripts/parallel-setup)" pool on --size N', first_user_text(req))
        if not m or "Arguments: `on --size 2`" not in first_user_text(req):
            return [text("POOL-CONFUSED")]
        return [tool_use("Bash", {"command": f'"{m.group(1)}" pool on --size 2', "description": "Turn the pool on"})]

    project = make_repo(tmp_path / "p")
    with MessagesAPIServer(model) as api:
        proc = run_claude("/parallel:pool on --size 2", cwd=project, plugin_dir=plugin_copy,
                          api_url=api.url, home=tmp_path / "home", timeout=180)
        assert proc.returncode == 0, proc.stderr
        assert not api.errors, api.errors
    assert "POOL-DONE: Worktree pool on: 2 worktrees at main" in proc.stdout, proc.stdout + proc.stderr
    assert pool.load_settings(project) == pool.Settings(2, "main")
    wait_for_full_pool(project, 2)


def test_real_cli_expands_parallel_status_without_runs(plugin_copy, tmp_path):
    """/parallel:status in a repository with no runs: its ! line succeeds (--no-runs-ok), so the
    command is not aborted with "Shell command failed" and the model gets the next step to tell."""
    project = make_repo(tmp_path / "p", origin=False)
    proc, sent = expand_command("/parallel:status", project, plugin_copy, tmp_path, "STATUS-SCRIPTED-REPLY")
    assert "Shell command failed" not in proc.stdout + proc.stderr
    print(sent[:3000])
    assert "<command-name>/parallel:status</command-name>" in sent
    runs = project.resolve() / ".parallel" / "runs"
    assert (f"No parallel runs in this repository yet (nothing in {runs}).\n"
            "Make a plan with /parallel:plan <goal>, then run it with /parallel:execute.") in sent
    assert "Shell command failed" not in sent
    assert "!`" not in sent


@pytest.mark.parametrize("argv", [[]] + [[c] for c in COMMANDS]
                         + [["plan", v] for v in ("validate", "show", "save", "list")]
                         + [["pool", v] for v in ("on", "fill", "status", "off")]
                         + [["permissions", v] for v in ("on", "off", "status")]
                         + [["templates", v] for v in ("list", "show", "eject", "diff", "check")],
                         ids=lambda argv: "-".join(argv) or "top")
def test_help_text(argv, capsys, snapshot, monkeypatch):
    monkeypatch.setenv("COLUMNS", "100")
    with pytest.raises(SystemExit) as exc:
        build_parser().parse_args(argv + ["--help"])
    assert exc.value.code == 0
    assert capsys.readouterr().out == snapshot


def test_readme_shows_the_cli_help_as_it_is(capsys, monkeypatch):
    """The README's "The CLI" block is exactly `parallel-setup --help` (100 columns)."""
    monkeypatch.setenv("COLUMNS", "100")
    with pytest.raises(SystemExit):
        build_parser().parse_args(["--help"])
    start = README.index("usage: parallel-setup [-h]")
    assert README[start:README.index("```", start)] == capsys.readouterr().out


# -- meta: every command file, hook entry and template has its script, docs and a test

COMMAND_FILES = sorted((ROOT / "commands").glob("*.md"))


def test_there_are_commands():
    assert {p.stem for p in COMMAND_FILES} >= {"plan", "execute", "status"}


@pytest.mark.parametrize("path", COMMAND_FILES, ids=lambda p: p.stem)
def test_command_has_script_docs_and_test(path):
    name = path.stem
    body = path.read_text(encoding="utf-8")
    assert body.startswith("---\n") and "\ndescription: " in body.split("---")[1], "frontmatter with description"
    assert "${CLAUDE_PLUGIN_ROOT}/scripts/parallel-setup" in body, "calls the plugin's script"
    assert f'parallel-setup" {name}' in body, f"runs the '{name}' subcommand"
    assert name in COMMANDS, "the CLI has the subcommand"
    assert f"### `/parallel:{name}" in README, "documented in the README"
    assert (ROOT / "tests" / "commands" / f"{name}_test.py").exists(), "has a test module"
    for line in body.splitlines():  # $ARGUMENTS is pasted unquoted into ! lines: never put it there
        if "!`" in line:
            assert "$ARGUMENTS" not in line and not re.search(r"\$\d", line), line


def _hook_entries():
    path = ROOT / "hooks" / "hooks.json"
    if not path.exists():
        return []
    hooks = json.loads(path.read_text())["hooks"]
    return [(event, h["command"]) for event, groups in hooks.items() for g in groups for h in g["hooks"]]


@pytest.mark.parametrize("event, command", _hook_entries())
def test_hook_entry_has_handler_docs_and_test(event, command):
    assert '"${CLAUDE_PLUGIN_ROOT}/scripts/hook.py"' in command
    assert command.rstrip().endswith(event)
    tests = " ".join(p.read_text(encoding="utf-8") for p in (ROOT / "tests" / "hooks").glob("*.py"))
    assert event in tests, f"no hook test mentions {event}"
    assert f"`{event}`" in README, f"README does not document the {event} hook"


TEMPLATES = sorted((ROOT / "templates").glob("*.j2"))


@pytest.mark.parametrize("path", TEMPLATES, ids=lambda p: p.name)
def test_template_is_documented_and_tested(path):
    assert f"`{path.name}`" in README, "listed in the README's template section"
    tests = " ".join(p.read_text(encoding="utf-8") for p in (ROOT / "tests").rglob("*_test.py"))
    assert path.name in tests or path.stem.split(".")[0] in tests, "mentioned by a test"

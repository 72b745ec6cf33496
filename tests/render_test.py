"""The Jinja environment, the templates' contract, and snapshots of what subagents read."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from parallel_setup import runs
from parallel_setup.issue_mode import ModeDecision, Repository
from parallel_setup.paths import TEMPLATES_DIR
from parallel_setup.render import TEMPLATE_NAMES, TemplateError, fence, make_environment, render
from tests.setup_script_test import make_plan
from tests.support.git import git

RUN_ID = "20261122-101500-3fa2"
T0 = 1795340100.0
PINNED_PROJECT = "/home/dev/widgets"


@pytest.fixture(autouse=True)
def _no_user_templates(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))


def pinned_run(repo: Path, plan=None, mode: str = "github") -> runs.Run:
    decision = (ModeDecision("github", "gh is authenticated for github.com; repository acme/widgets from the origin remote",
                             Repository("github.com", "acme", "widgets"))
                if mode == "github" else ModeDecision("local", "local issues were asked for"))
    plan = plan or make_plan(tasks=[
        {"id": "login-endpoint", "title": "POST /login returns a session token",
         "description": "Check the password hash and return a signed token.\n"
                        "Done when tests/test_login.py passes.\n",
         "files": ["app/routes/login.py", "tests/test_login.py"], "depends_on": ["user-model"],
         "labels": ["api"]},
        {"id": "user-model", "title": "Add the User model", "description": "Create the model."},
    ], defaults={"setup": "auto", "test": "python -m pytest -q", "copy_files": [".env"]},
        issues={"labels": ["parallel"]})
    return runs.create_run(repo, plan, decision=decision, run_id=RUN_ID, now=T0, labels=False, fetch=False)


def pinned(text: str, repo: Path) -> str:
    """The text with the repository's path and its base commit (which differs run to run) pinned."""
    commit = git(repo, "rev-parse", "origin/main").stdout.strip()
    return text.replace(str(repo), PINNED_PROJECT).replace(commit, "<base commit>")


# --------------------------------------------------------------------------
# The environment


def test_every_template_exists_and_parses():
    env = make_environment(None)
    for name in TEMPLATE_NAMES:
        assert (TEMPLATES_DIR / name).is_file(), name
        env.get_template(name)


def test_missing_variable_names_the_template_and_the_variable(tmp_path):
    folder = tmp_path / ".parallel" / "templates"
    folder.mkdir(parents=True)
    (folder / "issue-title.txt.j2").write_text("line one\n{{ task.title }} {{ nope }}\n")
    env = make_environment(tmp_path)
    with pytest.raises(TemplateError) as e:
        render(env, "issue-title.txt.j2", task={"title": "T"})
    message = str(e.value)
    assert message.startswith(f"template issue-title.txt.j2 ({folder / 'issue-title.txt.j2'}) line 2: ")
    assert "'nope' is undefined" in message


def test_syntax_error_names_the_file_and_line(tmp_path):
    folder = tmp_path / ".parallel" / "templates"
    folder.mkdir(parents=True)
    (folder / "issue-title.txt.j2").write_text("ok\n{% if %}\n")
    with pytest.raises(TemplateError, match=r"issue-title\.txt\.j2 \(.*issue-title\.txt\.j2\) line 2: syntax error"):
        render(make_environment(tmp_path), "issue-title.txt.j2")


@pytest.mark.parametrize("name", ["../secret.j2", "/etc/passwd", "a/../../b.j2", "..\\x.j2"])
def test_paths_outside_the_template_folders_are_refused(name):
    with pytest.raises(TemplateError):
        render(make_environment(None), name)


def test_plan_text_is_data_never_template_source():
    env = make_environment(None)
    out = env.from_string("{{ v }}|{{ v | sh }}").render(v="{{ 7*7 }} {% if true %}x{% endif %} $(id)")
    assert out == "{{ 7*7 }} {% if true %}x{% endif %} $(id)|'{{ 7*7 }} {% if true %}x{% endif %} $(id)'"


def test_sh_filter_quotes_for_bash():
    env = make_environment(None)
    value = "it's $(touch /tmp/pwned) `x` \"q\"\nEOF\nü"
    script = env.from_string("printf '%s' {{ v | sh }}").render(v=value)
    out = subprocess.run(["bash", "-c", script], capture_output=True, text=True, check=True).stdout
    assert out == value
    with pytest.raises(TemplateError):
        env.from_string("{{ v | sh }}").render(v=None)


def test_fence_is_longer_than_any_backtick_run():
    assert fence("no backticks") == "```"
    assert fence("a ```` b") == "`````"


def test_keeps_trailing_newline_and_does_not_escape():
    env = make_environment(None)
    assert env.from_string("<{{ v }}>\n").render(v="&") == "<&>\n"


def test_override_order_project_then_user_then_builtin(tmp_path, monkeypatch):
    project, xdg = tmp_path / "p", tmp_path / "xdg2"
    monkeypatch.setenv("XDG_CONFIG_HOME", str(xdg))
    (xdg / "parallel-setup" / "templates").mkdir(parents=True)
    (xdg / "parallel-setup" / "templates" / "issue-title.txt.j2").write_text("user: {{ task.title }}\n")
    ctx = {"task": {"title": "T"}}
    assert render(make_environment(project), "issue-title.txt.j2", **ctx) == "user: T\n"
    (project / ".parallel" / "templates").mkdir(parents=True)
    (project / ".parallel" / "templates" / "issue-title.txt.j2").write_text("project: {{ task.title }}\n")
    assert render(make_environment(project), "issue-title.txt.j2", **ctx) == "project: T\n"
    # Without overrides, the built-in one.
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "empty"))
    assert render(make_environment(None), "issue-title.txt.j2", **ctx) == "T\n"


def test_a_user_override_takes_effect_in_a_run(repo):
    folder = repo / ".parallel" / "templates"
    folder.mkdir(parents=True)
    (folder / "issue-title.txt.j2").write_text("[{{ plan.name }}] {{ task.title }}\n")
    (folder / "issue-body.md.j2").write_text("Custom body for {{ task.id }}.\n")  # no marker
    run = pinned_run(repo, mode="local")
    tdir = run.task_dir("user-model")
    assert (tdir / "issue-title.txt").read_text() == "[demo] Add the User model\n"
    body = (tdir / "issue-body.md").read_text()
    assert body.startswith("Custom body for user-model.\n")
    assert body.rstrip().endswith(runs.marker_for(RUN_ID, "user-model"))  # added: idempotency needs it
    result = runs.run_setup(run, "user-model")
    assert (repo / ".parallel" / "issues" / f"{result['issue']}.md").read_text().startswith(
        "# [demo] Add the User model\n")


# --------------------------------------------------------------------------
# Snapshots (run id, clock and paths pinned)


def test_prompt_snapshot(repo, snapshot):
    run = pinned_run(repo)
    states = runs.task_states(run)
    states["user-model"] = runs.TaskState("user-model", "done", issue=7, branch="feature/task-7")
    runs.render_task(run, "login-endpoint", states=states)
    assert pinned(run.prompt_path("login-endpoint").read_text(), repo) == snapshot


def test_local_prompt_snapshot(repo, snapshot):
    run = pinned_run(repo, mode="local")
    assert pinned(run.prompt_path("user-model").read_text(), repo) == snapshot


def test_setup_script_snapshot(repo, snapshot):
    run = pinned_run(repo)
    assert pinned(run.setup_script("login-endpoint").read_text(), repo) == snapshot


def test_issue_snapshot(repo, snapshot):
    run = pinned_run(repo)
    tdir = run.task_dir("login-endpoint")
    assert (tdir / "issue-title.txt").read_text() + "----\n" + (tdir / "issue-body.md").read_text() == snapshot


def test_setup_script_is_valid_bash(repo):
    run = pinned_run(repo)
    subprocess.run(["bash", "-n", str(run.setup_script("login-endpoint"))], check=True)


def test_run_json_contract(repo):
    run = pinned_run(repo)
    data = json.loads((run.dir / "run.json").read_text())
    for key in ("format", "id", "created_at", "project", "plan_path", "plan", "issue_mode", "mode_reason",
                "repository", "base_ref", "labels", "labels_ok", "max_concurrency", "tasks", "background"):
        assert key in data, key
    assert data["id"] == RUN_ID and data["created_at"] == T0
    assert data["repository"] == "github.com/acme/widgets" and data["base_ref"] == "origin/main"
    assert data["labels"] == ["parallel", "api"]

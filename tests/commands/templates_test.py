"""``parallel-setup templates``: list, show, eject, diff, check; overrides built with extends;
a stale override after an upgrade; execute refusing templates that do not render; the
git exclusion that lets a team commit its templates and plans."""

from __future__ import annotations

import difflib
import json
import re
import shutil
from pathlib import Path

import pytest
import yaml

from parallel_setup import cli, overrides, render, runs
from parallel_setup.fake_github import FakeGitHub
from parallel_setup.gitutil import ensure_excluded
from parallel_setup.paths import TEMPLATES_DIR
from tests.render_test import RUN_ID, pinned, pinned_run
from tests.support.git import git
from tests.support.github import requires_gh

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text(encoding="utf-8")


@pytest.fixture(autouse=True)
def _pinned_home(tmp_path, monkeypatch):
    """User templates under a pinned home (shown as ~/...), the version pinned, no gh."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("XDG_CONFIG_HOME", raising=False)
    monkeypatch.setattr(overrides, "__version__", "0.1.0")
    monkeypatch.setenv("PARALLEL_GH", str(tmp_path / "no-such-gh"))
    return home


def templates(repo: Path, capsys, *args: str):
    code = cli.main(["-C", str(repo), "templates", *args])
    out, err = capsys.readouterr()
    return code, out, err


def readme_example(title: str) -> str:
    """The ```jinja block that follows the README paragraph starting with ``title``."""
    at = README.index(title)
    m = re.compile(r"```jinja\n(.*?)```", re.S).search(README, at)
    return m.group(1)


TEAM_RULE = readme_example("Worked example 1")
PNPM_STEP = readme_example("Worked example 2")


def write_override(repo: Path, name: str, text: str) -> Path:
    path = repo / ".parallel" / "templates" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


@pytest.fixture
def builtins(tmp_path, monkeypatch) -> Path:
    """A copy of the built-in templates standing in for them, so a test can 'upgrade' the plugin."""
    copy = tmp_path / "plugin-templates"
    shutil.copytree(TEMPLATES_DIR, copy)
    monkeypatch.setattr(render, "TEMPLATES_DIR", copy)
    return copy


def upgrade(builtins: Path, monkeypatch, name: str, old: str, new: str) -> None:
    """Simulate a plugin update that changes one line of a built-in template."""
    path = builtins / name
    text = path.read_text(encoding="utf-8")
    assert old in text
    path.write_text(text.replace(old, new), encoding="utf-8")
    monkeypatch.setattr(overrides, "__version__", "0.2.0")


# --------------------------------------------------------------------------
# list and show


def test_list_shows_every_template_its_source_and_the_overrides(repo, capsys, snapshot, _pinned_home):
    assert templates(repo, capsys, "eject", "subagent-prompt.md.j2", "--block", "commit")[0] == 0
    user = _pinned_home / ".config" / "parallel-setup" / "templates"
    user.mkdir(parents=True)
    (user / "issue-title.txt.j2").write_text("[team] {{ task.title }}\n")
    write_override(repo, "issue-title.txt.j2", "{{ plan.name }}: {{ task.title }}\n")
    write_override(repo, "setup_sh.j2", "never used\n")
    code, out, err = templates(repo, capsys, "list")
    assert code == 0, err
    assert out == snapshot
    assert "subagent-prompt.md.j2  [override]\n" in out
    assert ("  in effect: repository: .parallel/templates/subagent-prompt.md.j2, extends the built-in, "
            "overrides block commit\n") in out
    assert "  shadowed:  user: ~/.config/parallel-setup/templates/issue-title.txt.j2\n" in out
    assert ("warning: .parallel/templates/setup_sh.j2 is not a template name, so it is never used; "
            "did you mean setup.sh.j2?\n") in out
    assert "  blocks:    variables helpers issue_step worktree_step env_step main\n" in out


def test_show_prints_the_effective_or_the_builtin_source(repo, capsys, snapshot):
    write_override(repo, "issue-title.txt.j2", "{{ plan.name }}: {{ task.title }}\n")
    code, out, err = templates(repo, capsys, "show", "issue-title.txt.j2")
    assert (code, out, err) == (0, "{{ plan.name }}: {{ task.title }}\n", "# .parallel/templates/issue-title.txt.j2\n")
    code, out, err = templates(repo, capsys, "show", "issue-title.txt.j2", "--builtin")
    assert (code, out, err) == (0, (TEMPLATES_DIR / "issue-title.txt.j2").read_text(), "# builtin/issue-title.txt.j2\n")
    code, out, err = templates(repo, capsys, "show", "issue-body.md.j2")
    assert out == snapshot


def test_unknown_names_are_refused_with_the_closest_one(repo, capsys):
    code, out, err = templates(repo, capsys, "show", "subagent_prompt.md.j2")
    assert (code, out) == (1, "")
    assert err == ("parallel-setup: no template named 'subagent_prompt.md.j2'; did you mean subagent-prompt.md.j2? "
                   "(templates: " + ", ".join(render.TEMPLATE_NAMES) + ")\n")
    code, _, err = templates(repo, capsys, "eject", "../setup.sh.j2")
    assert (code, err) == (1, "parallel-setup: template name '../setup.sh.j2' reaches outside the template folders\n")
    code, _, err = templates(repo, capsys, "eject", "setup.sh.j2", "--block", "env")
    assert (code, err) == (1, "parallel-setup: setup.sh.j2 has no block 'env'; did you mean env_step? (blocks: "
                              "variables, helpers, issue_step, worktree_step, env_step, main)\n")
    assert not (repo / ".parallel" / "templates" / "setup.sh.j2").exists()


# --------------------------------------------------------------------------
# eject


def test_eject_stamps_the_copy_keeps_the_builtin_and_never_overwrites(repo, capsys):
    code, out, err = templates(repo, capsys, "eject", "setup.sh.j2")
    assert code == 0, err
    assert out == ("Ejected builtin/setup.sh.j2 to .parallel/templates/setup.sh.j2; the built-in it came from is kept "
                   "in .parallel/templates/.originals/ for `templates diff`.\n"
                   "Edit it, run `parallel-setup templates check`, and commit .parallel/templates/\n")
    builtin = (TEMPLATES_DIR / "setup.sh.j2").read_text()
    digest = overrides.text_hash(builtin)
    copy = (repo / ".parallel" / "templates" / "setup.sh.j2").read_text()
    assert copy == (f"{{# parallel-setup override of setup.sh.j2: ejected from parallel-setup 0.1.0, built-in "
                    f"sha256:{digest}. `parallel-setup templates diff setup.sh.j2` shows what changed in the "
                    f"built-in since. #}}\n") + builtin
    assert (repo / ".parallel" / "templates" / ".originals" / digest / "setup.sh.j2").read_text() == builtin
    assert templates(repo, capsys, "check")[1].startswith("templates ok: 7 templates (1 overridden)")
    (repo / ".parallel" / "templates" / "setup.sh.j2").write_text(copy + "# mine\n")
    code, out, err = templates(repo, capsys, "eject", "setup.sh.j2")
    assert (code, out) == (1, "")
    assert err == ("parallel-setup: .parallel/templates/setup.sh.j2 already exists: an override is in place, and "
                   "eject never overwrites one (see `parallel-setup templates diff setup.sh.j2`; move it away to "
                   "eject again)\n")
    assert (repo / ".parallel" / "templates" / "setup.sh.j2").read_text() == copy + "# mine\n"


def test_stamped_copies_render_byte_identical(repo):
    before = pinned_run(repo).task_dir("login-endpoint")
    plain = {p.name: p.read_text() for p in before.iterdir() if p.is_file()}
    _fresh(repo)
    for name in render.TEMPLATE_NAMES:
        overrides.eject(repo, name)
    again = pinned_run(repo).task_dir("login-endpoint")
    assert {p.name: p.read_text() for p in again.iterdir() if p.is_file()} == plain


def test_eject_user_goes_to_the_user_folder(repo, capsys, _pinned_home):
    code, out, err = templates(repo, capsys, "eject", "issue-title.txt.j2", "--user")
    assert code == 0, err
    assert out.startswith("Ejected builtin/issue-title.txt.j2 to ~/.config/parallel-setup/templates/issue-title.txt.j2;")
    assert (_pinned_home / ".config/parallel-setup/templates/issue-title.txt.j2").is_file()
    assert "in effect: user: ~/.config/parallel-setup/templates/issue-title.txt.j2" in templates(repo, capsys, "list")[1]


# --------------------------------------------------------------------------
# Overrides built with extends: exactly one part changes


def _fresh(repo: Path) -> None:
    """Remove the pinned run and its port leases, so the same run can be rendered again alike."""
    from parallel_setup import ports
    ports.release_run(repo, RUN_ID)
    if (repo / ".parallel" / "runs").exists():
        shutil.rmtree(repo / ".parallel" / "runs")


def _rendered(repo: Path):
    _fresh(repo)
    run = pinned_run(repo)
    return (pinned(run.prompt_path("login-endpoint").read_text(), repo),
            pinned(run.setup_script("login-endpoint").read_text(), repo))


def _hunks_unnumbered(diff: str) -> str:
    """A diff with its hunk headers' line numbers left out: other changes to the built-in move them."""
    return re.sub(r"^@@ -\d+(,\d+)? \+\d+(,\d+)? @@", "@@ @@", diff, flags=re.M)


def _udiff(a: str, b: str) -> str:
    return _hunks_unnumbered("".join(difflib.unified_diff(a.splitlines(True), b.splitlines(True),
                                                          "builtin", "override", n=1)))


def test_readme_example_team_rule_changes_only_the_commit_section(repo, capsys, snapshot):
    prompt, script = _rendered(repo)
    code, _, err = templates(repo, capsys, "eject", "subagent-prompt.md.j2", "--block", "commit",
                             "--append", "Run `make lint` before every commit and fix what it reports.")
    assert code == 0, err
    ejected = (repo / ".parallel/templates/subagent-prompt.md.j2").read_text()
    # What eject writes is the README's worked example (plus the stamp and a comment).
    assert [l for l in ejected.splitlines()[1:] if not l.startswith("{#")] == TEAM_RULE.splitlines()
    prompt2, script2 = _rendered(repo)
    assert script2 == script
    change = _udiff(prompt, prompt2)
    assert change == snapshot
    assert prompt2.replace("\nRun `make lint` before every commit and fix what it reports.\n", "", 1) == prompt
    section5 = prompt2[prompt2.index("## 5. Commit"):prompt2.index("## 6. Finish")]
    assert section5.endswith("closes it when the branch is merged.\n\nRun `make lint` before every commit and fix what it "
                             "reports.\n\n")


def test_readme_example_pnpm_env_step_changes_only_the_env_step(repo, capsys, snapshot, tmp_path, monkeypatch):
    prompt, script = _rendered(repo)
    write_override(repo, "setup.sh.j2", PNPM_STEP)
    assert templates(repo, capsys, "check")[1].startswith("templates ok:")
    prompt2, script2 = _rendered(repo)
    assert prompt2 == prompt
    assert _udiff(script, script2) == snapshot
    # The script runs: issue and worktree from the built-in, the environment from the override.
    # pnpm is not installed here: a recorder stands in for it (what is tested is that the
    # override's command runs, in the worktree, and its result is reported).
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "pnpm").write_text('#!/bin/sh\nprintf "%s|%s\\n" "$PWD" "$*" >>"$PNPM_CALLS"\n')
    (bin_dir / "pnpm").chmod(0o755)
    calls = tmp_path / "pnpm-calls"
    _fresh(repo)
    run = pinned_run(repo, mode="local")
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin", "PNPM_CALLS": str(calls), "HOME": str(tmp_path / "home")}
    result = runs.run_setup(run, "user-model", env=env)
    assert result["status"] == "ok", result
    assert result["env"] == "pnpm install --frozen-lockfile"
    assert calls.read_text() == f"{result['worktree']}|install --frozen-lockfile\n"


def test_builtin_prefix_always_reaches_the_shipped_template(repo):
    # A folder named builtin/ in the overrides cannot shadow the shipped template.
    write_override(repo, "builtin/issue-title.txt.j2", "SHADOW {{ task.title }}\n")
    write_override(repo, "issue-title.txt.j2", '{% extends "builtin/issue-title.txt.j2" %}')
    assert render.render(render.make_environment(repo), "issue-title.txt.j2", task={"title": "T"}) == "T\n"
    with pytest.raises(render.TemplateError, match="reaches outside the template folders"):
        render.render(render.make_environment(repo), "builtin/../../etc/passwd")


def test_a_symlink_out_of_the_template_folders_is_refused_everywhere(repo, capsys, tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_text("SECRET {{ task.title }}\n")
    folder = repo / ".parallel" / "templates"
    folder.mkdir(parents=True)
    (folder / "issue-title.txt.j2").symlink_to(secret)
    expected = f"template 'issue-title.txt.j2' resolves to {secret.resolve()}, outside the template folders"
    for verb in (["show", "issue-title.txt.j2"], ["list"], ["diff"]):
        code, out, err = templates(repo, capsys, *verb)
        assert (code, err) == (1, f"parallel-setup: {expected}\n"), verb
        assert "SECRET" not in out
    code, out, _ = templates(repo, capsys, "check")
    assert code == 1 and f".parallel/templates/issue-title.txt.j2: error: issue-title.txt.j2: {expected}" in out


def test_an_override_extending_itself_is_a_clear_error(repo, capsys):
    path = write_override(repo, "issue-title.txt.j2", '{% extends "issue-title.txt.j2" %}')
    with pytest.raises(render.TemplateError) as e:
        render.render(render.make_environment(repo), "issue-title.txt.j2", task={"title": "T"})
    assert str(e.value) == (f"template issue-title.txt.j2 ({path}) extends or includes itself; to build on the "
                            f"shipped template, extend \"builtin/issue-title.txt.j2\"")


# --------------------------------------------------------------------------
# diff, and a stale override after an upgrade


def test_diff_of_a_fresh_eject_says_unchanged(repo, capsys, snapshot):
    assert templates(repo, capsys, "diff")[1] == ("No overrides: every template is the built-in one. "
                                                  "`parallel-setup templates eject NAME` makes one.\n")
    templates(repo, capsys, "eject", "issue-body.md.j2")
    code, out, err = templates(repo, capsys, "diff")
    assert code == 0, err
    assert out == snapshot
    assert "(none: the override is the built-in as ejected)" in out


def test_stale_whole_copy_after_an_upgrade_is_reported_by_diff_and_check(repo, capsys, builtins, monkeypatch,
                                                                         snapshot):
    templates(repo, capsys, "eject", "issue-body.md.j2")
    path = repo / ".parallel/templates/issue-body.md.j2"
    path.write_text(path.read_text().replace("---\n", "---\nOur team's footer.\n"))
    upgrade(builtins, monkeypatch, "issue-body.md.j2", "created by [parallel]", "created by the [parallel] plugin")
    code, out, err = templates(repo, capsys, "diff", "issue-body.md.j2")
    assert code == 1, err
    out = re.sub(r"sha256:[0-9a-f]{16}", "sha256:<hash>", out)
    assert _hunks_unnumbered(out) == snapshot
    assert ("WARNING: the built-in issue-body.md.j2 changed since this override was ejected (parallel-setup "
            "0.1.0 -> 0.2.0); this copy does not have these changes:") in out
    assert "+Task `{{ task.id }}` of run `{{ run.id }}`, created by the [parallel] plugin" in out
    assert "+Our team's footer.\n" in out
    code, out, err = templates(repo, capsys, "check")
    assert code == 0, err  # stale is a warning: the override still renders
    (warning,) = [l for l in out.splitlines() if ": warning: " in l]
    assert re.fullmatch(r"\.parallel/templates/issue-body\.md\.j2:1: warning: issue-body\.md\.j2: the built-in "
                        r"changed since this override was ejected from parallel-setup 0\.1\.0 \(sha256:[0-9a-f]{16}\); "
                        r"see `parallel-setup templates diff issue-body\.md\.j2`", warning)


def test_stale_block_override_names_the_block_that_misses_the_change(repo, capsys, builtins, monkeypatch, snapshot):
    templates(repo, capsys, "eject", "subagent-prompt.md.j2", "--block", "commit")
    path = repo / ".parallel/templates/subagent-prompt.md.j2"
    path.write_text(path.read_text().replace("{{ super() }}\n", "## 5. Commit\n\nCommit with `git commit -s`.\n"))
    upgrade(builtins, monkeypatch, "subagent-prompt.md.j2", "Never force-push.", "Never force-push, never rebase.")
    code, out, _ = templates(repo, capsys, "diff")
    assert code == 1
    assert _hunks_unnumbered(re.sub(r"sha256:[0-9a-f]{16}", "sha256:<hash>", out)) == snapshot
    assert "    block commit: it replaces it, so it does NOT get the change\n" in out
    assert "+   why in the report" not in out and "never rebase." in out
    code, out, _ = templates(repo, capsys, "check")
    assert code == 0
    assert ": warning: subagent-prompt.md.j2: block commit of the built-in changed since this override was ejected" in out
    assert "(STALE: the built-in changed since the eject; see `templates diff`)" in templates(repo, capsys, "list")[1]
    # An override that appends keeps getting the built-in's text.
    path.write_text(path.read_text().replace("## 5. Commit\n\nCommit with", "{{ super() }}\nCommit with"))
    assert ("    block commit: it appends to it ({{ super() }}), so it gets the change; check that its addition "
            "still fits\n") in templates(repo, capsys, "diff")[1]
    # Once brought up to date, --accept records today's built-in: no more warnings.
    code, out, err = templates(repo, capsys, "diff", "subagent-prompt.md.j2", "--accept")
    assert (code, out) == (0, ".parallel/templates/subagent-prompt.md.j2 is now based on today's built-in "
                              "subagent-prompt.md.j2 (parallel-setup 0.2.0).\n"), err
    assert path.read_text().startswith("{# parallel-setup override of subagent-prompt.md.j2: ejected from "
                                       "parallel-setup 0.2.0, built-in sha256:"
                                       + overrides.text_hash((builtins / "subagent-prompt.md.j2").read_text()))
    assert templates(repo, capsys, "diff")[0] == 0
    assert templates(repo, capsys, "check")[1].startswith("templates ok:")


def test_an_upgrade_outside_the_overridden_blocks_is_not_stale(repo, capsys, builtins, monkeypatch):
    templates(repo, capsys, "eject", "subagent-prompt.md.j2", "--block", "commit", "--append", "Sign off.")
    upgrade(builtins, monkeypatch, "subagent-prompt.md.j2", "never touch the main checkout.",
            "never touch the main checkout, ever.")
    code, out, _ = templates(repo, capsys, "diff")
    assert code == 0
    assert ("  the built-in changed since the eject (parallel-setup 0.1.0 -> 0.2.0), outside the blocks this "
            "override has: it gets those changes as they are\n") in out
    assert templates(repo, capsys, "check")[1].startswith("templates ok:")
    run = pinned_run(repo)
    prompt = run.prompt_path("user-model").read_text()
    assert "never touch the main checkout, ever." in prompt and "\nSign off.\n" in prompt


def test_diff_without_the_kept_original_still_compares_with_today(repo, capsys, builtins, monkeypatch):
    templates(repo, capsys, "eject", "issue-title.txt.j2")
    shutil.rmtree(repo / ".parallel/templates/.originals")
    upgrade(builtins, monkeypatch, "issue-title.txt.j2", "{{ task.title }}", "{{ task.title.strip() }}")
    code, out, _ = templates(repo, capsys, "diff", "issue-title.txt.j2")
    assert code == 1
    assert "and the version it came from is not kept (.originals/" in out
    assert "-{{ task.title.strip() }}\n+{{ task.title }}\n" in out


# --------------------------------------------------------------------------
# check


def test_check_names_template_line_and_variable(repo, capsys, snapshot):
    write_override(repo, "issue-title.txt.j2", "{# our titles #}\n{{ task.titel }}\n")
    write_override(repo, "subagent-prompt.md.j2",
                   '{% extends "builtin/subagent-prompt.md.j2" %}\n{% block commit %}\n{{ super() }}\n'
                   '{% if run.mode == "github" %}See {{ repositroy }}.{% else %}Local: {{ run.has_orign }}.{% endif %}\n'
                   '{% endblock %}\n')
    write_override(repo, "setup.sh.j2",
                   '{% extends "builtin/setup.sh.j2" %}\n{% block env_step %}\nenv_step() {\n'
                   '  say "installing for {{ task.title }}"\n  echo {{ task.id }} {{ plan.name | sh }}\n'
                   '  step_ok done\n}\n{% endblock %}\n')
    code, out, err = templates(repo, capsys, "check")
    assert code == 1, err
    assert out == snapshot
    assert f"\n```\n{out}```\n" in README  # the README's example is this output
    lines = out.splitlines()
    assert (".parallel/templates/issue-title.txt.j2:2: error: issue-title.txt.j2: 'task.titel' is undefined; "
            "did you mean 'task.title'?") in lines
    # Found in the branch the plan takes and in the one it does not.
    assert (".parallel/templates/subagent-prompt.md.j2:4: error: subagent-prompt.md.j2: 'repositroy' is undefined; "
            "did you mean 'repository'?") in lines
    assert (".parallel/templates/subagent-prompt.md.j2:4: error: subagent-prompt.md.j2: 'run.has_orign' is "
            "undefined; did you mean 'run.has_origin'?") in lines
    assert (".parallel/templates/setup.sh.j2:4: warning: setup.sh.j2: {{ task.title }} goes into bash without the "
            "sh filter: plan text in it would run as code; write {{ task.title | sh }}") in lines
    assert not any("task.id" in l for l in lines)  # an id is safe unquoted
    assert lines[-1] == ("templates: 3 errors, 1 warning; checked 7 templates (3 overridden) against plan "
                         "add-user-accounts (the shipped example) and hostile plan text")


def test_check_uses_the_latest_saved_plan_and_reports_bash_errors(repo, capsys):
    plans = repo / ".parallel" / "plans"
    plans.mkdir(parents=True)
    (plans / "mine.yaml").write_text(yaml.safe_dump({
        "schema_version": 1, "name": "mine", "goal": "g",
        "tasks": [{"id": "a", "title": "A", "description": "d"}]}))
    write_override(repo, "setup.sh.j2", '{% extends "builtin/setup.sh.j2" %}\n{% block env_step %}\n'
                                        'env_step() {\n  if true; then\n}\n{% endblock %}\n')
    code, out, _ = templates(repo, capsys, "check")
    assert code == 1
    assert re.fullmatch(r"\.parallel/templates/setup\.sh\.j2: error: setup\.sh\.j2: the rendered script is not valid "
                        r"bash, line \d+: syntax error near unexpected token `}': }", out.splitlines()[0])
    assert len(out.splitlines()) == 2  # once: not again with the hostile plan text
    assert out.rstrip().endswith("against plan mine (.parallel/plans/mine.yaml) and hostile plan text")


def test_check_reports_syntax_errors_and_missing_parents(repo, capsys):
    write_override(repo, "issue-title.txt.j2", "{{ task.title }}\n{{ task.id ) }}\n")
    write_override(repo, "issue-body.md.j2", '{% extends "builtin/issue-bdy.md.j2" %}\n')
    write_override(repo, "completion-report.md.j2", '{% include "team-rules.md.j2" %}\n')
    write_override(repo, "team-rules.md.j2", "Sign every commit ({{ task.id }}).\n")  # included: not stray
    write_override(repo, "README.md", "our templates\n")  # not a .j2 file: not stray
    code, out, _ = templates(repo, capsys, "check")
    assert code == 1
    assert out.splitlines() == [
        ".parallel/templates/issue-title.txt.j2:2: error: issue-title.txt.j2: syntax error: unexpected ')'",
        ".parallel/templates/issue-body.md.j2: error: issue-body.md.j2: extends or includes "
        "'builtin/issue-bdy.md.j2', which is not found",
        "templates: 2 errors, 0 warnings; checked 7 templates (3 overridden) against plan add-user-accounts "
        "(the shipped example) and hostile plan text"]


def test_a_gap_in_the_preview_variables_is_a_warning_not_a_crash(repo, monkeypatch):
    def broken_context(run, task_id, states=None):
        raise KeyError("ports")
    monkeypatch.setattr(runs, "template_context", broken_context)
    report = overrides.check(repo)
    assert report.errors == []
    assert [f.format() for f in report.warnings] == [
        "templates check: warning: (all): could not build the variables execute gives the templates "
        "(KeyError: 'ports'), so they were not rendered here; execute renders them as before"]


def test_builtins_check_clean(repo, capsys):
    code, out, err = templates(repo, capsys, "check")
    assert (code, out) == (0, "templates ok: 7 templates (0 overridden) against plan add-user-accounts "
                              "(the shipped example) and hostile plan text\n")
    # The static pass over the built-ins' own source (execute skips it: this test covers them).
    report = overrides.check(repo, static_builtins=True)
    assert report.findings == []
    # ...and it is not vacuous: the same pass finds a misspelling in a copy of a built-in.
    overrides.eject(repo, "completion-report.md.j2")
    path = repo / ".parallel/templates/completion-report.md.j2"
    path.write_text(path.read_text().replace('{{ "true" if run.has_origin', '{{ "true" if run.has_origni', 1))
    assert {(f.file, f.message) for f in overrides.check(repo).errors} == {
        (".parallel/templates/completion-report.md.j2",
         "'run.has_origni' is undefined; did you mean 'run.has_origin'?")}


HOSTILE = overrides.HOSTILE_TITLE
HOSTILE_BODY = overrides.HOSTILE_TEXT


@pytest.mark.parametrize("kind", ["ejected", "blocks"])
def test_hostile_plan_text_arrives_verbatim_through_every_override(repo, kind, tmp_path):
    """Every template overridden (whole copies, or the README's block overrides), a plan
    whose text attacks bash, Jinja and Markdown: the issue, the prompt and the setup get it
    exactly as written, and nothing runs."""
    for name in render.TEMPLATE_NAMES:
        overrides.eject(repo, name)
    if kind == "blocks":
        (repo / ".parallel/templates/subagent-prompt.md.j2").unlink()
        write_override(repo, "subagent-prompt.md.j2", TEAM_RULE)
        (repo / ".parallel/templates/setup.sh.j2").unlink()
        write_override(repo, "setup.sh.j2", '{% extends "builtin/setup.sh.j2" %}\n{% block issue_step %}\n'
                                            '{{ super() }}\n# our issue step comes first\n{% endblock %}\n')
    pwned = tmp_path / "pwned"
    title = HOSTILE.replace("/tmp/pwned", str(pwned))
    body = HOSTILE_BODY.replace("/tmp/pwned", str(pwned))
    plan = overrides.hostile_plan()
    data = json.loads(json.dumps(plan.data))
    for t in data["tasks"]:
        t["title"], t["description"] = title, body
    data["defaults"]["setup"] = "none"
    data["defaults"]["copy_files"] = []
    from parallel_setup.plans import parse_plan
    plan = parse_plan(json.dumps(data), "hostile", max_tasks=10)
    report = overrides.check(repo, plan, "hostile")
    assert not report.errors, report.format()
    run = runs.create_run(repo, plan, mode="local", fetch=False, labels=False)
    result = runs.run_setup(run, "hostile-base")
    assert result["status"] == "ok", result
    issue = (repo / ".parallel" / "issues" / f"{result['issue']}.md").read_text()
    assert issue.startswith(f"# {title}\n\n{body.rstrip()}\n")
    prompt = run.prompt_path("hostile-base").read_text()
    assert f"# Parallel task `hostile-base`: {title}\n" in prompt
    assert body.rstrip() in prompt
    if kind == "blocks":
        assert "Run `make lint` before every commit" in prompt
        assert "# our issue step comes first\n" in run.setup_script("hostile-base").read_text()
    assert not pwned.exists()


# --------------------------------------------------------------------------
# execute checks first


def _plan(repo: Path) -> None:
    data = {"schema_version": 1, "name": "demo", "goal": "Try execute.", "defaults": {"setup": "none"},
            "issues": {"labels": ["parallel"], "repository": "acme/widgets"},
            "tasks": [{"id": "t1", "title": "Task 1", "description": "d"}]}
    path = repo / ".parallel" / "plans" / "demo.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")


def _assert_refused(repo: Path, code: int, out: str, err: str) -> None:
    assert (code, out) == (1, "")
    assert err == (
        "parallel-setup: the templates do not render, so no run was started and nothing was created "
        "(no run folder, issue or label):\n"
        ".parallel/templates/subagent-prompt.md.j2:3: error: subagent-prompt.md.j2: 'task.titel' is undefined; "
        "did you mean 'task.title'?\n"
        "templates: 1 error, 0 warnings; checked 7 templates (1 overridden) against plan demo "
        "(.parallel/plans/demo.yaml) and hostile plan text\n"
        "Fix them (`parallel-setup templates check` shows this again), then run execute again.\n")
    assert not (repo / ".parallel" / "runs").exists()
    assert not (repo / ".parallel" / "issues").exists()


BROKEN = '{% extends "builtin/subagent-prompt.md.j2" %}\n{% block commit %}\nCommit {{ task.titel }}.\n{% endblock %}\n'


def test_execute_refuses_a_run_whose_override_does_not_render(repo, capsys):
    _plan(repo)
    write_override(repo, "subagent-prompt.md.j2", BROKEN)
    exclude_before = (repo / ".git/info/exclude").read_text()
    code = cli.main(["-C", str(repo), "execute", "--mode", "local"])
    out, err = capsys.readouterr()
    _assert_refused(repo, code, out, err)
    assert (repo / ".git/info/exclude").read_text() == exclude_before


@requires_gh
def test_execute_refuses_before_any_github_call(repo, capsys, monkeypatch, tmp_path):
    monkeypatch.delenv("PARALLEL_GH")
    _plan(repo)
    write_override(repo, "subagent-prompt.md.j2", BROKEN)
    with FakeGitHub() as server:
        for k, v in server.gh_variables(str(tmp_path / "gh")).items():
            monkeypatch.setenv(k, v)
        code = cli.main(["-C", str(repo), "execute", "--mode", "github"])
        out, err = capsys.readouterr()
        _assert_refused(repo, code, out, err)
        assert server.issues("acme/widgets") == [] and server.labels("acme/widgets") == []
        assert server.requests == []  # not even gh auth status: the check comes first
        # Fixed, the same command starts the run.
        (repo / ".parallel/templates/subagent-prompt.md.j2").write_text(BROKEN.replace("titel", "title"))
        code = cli.main(["-C", str(repo), "execute", "--mode", "github"])
        out, err = capsys.readouterr()
        assert code == 0, err
        assert [l["name"] for l in server.labels("acme/widgets")] == ["parallel"]


def test_execute_resume_refuses_too(repo, capsys):
    _plan(repo)
    assert cli.main(["-C", str(repo), "execute", "--mode", "local"]) == 0
    run_id = re.search(r"\d{8}-\d{6}-[0-9a-f]{4}", capsys.readouterr().out).group(0)
    write_override(repo, "subagent-prompt.md.j2", BROKEN)
    events_before = (repo / ".parallel" / "runs" / run_id / "events.jsonl").read_text()
    code = cli.main(["-C", str(repo), "execute", "--run", run_id, "--task", "t1"])
    _, err = capsys.readouterr()
    assert code == 1
    assert err.startswith("parallel-setup: the templates do not render, so no task was launched and nothing was "
                          "changed:\n.parallel/templates/subagent-prompt.md.j2:3: error: ")
    assert (repo / ".parallel" / "runs" / run_id / "events.jsonl").read_text() == events_before  # no launch


# --------------------------------------------------------------------------
# Sharing: the git exclusion covers only per-machine state


def test_templates_and_plans_can_be_committed_the_run_state_cannot(repo):
    ensure_excluded(repo)
    for rel in (".parallel/runs/r/run.json", ".parallel/issues/1.md", ".parallel/pool.json",
                ".parallel/pool/fill.log", "worktrees/task-1/x", ".parallel/templates/setup.sh.j2",
                ".parallel/templates/.originals/0123456789abcdef/setup.sh.j2", ".parallel/plans/p.yaml"):
        (repo / rel).parent.mkdir(parents=True, exist_ok=True)
        (repo / rel).write_text("x\n")
    assert git(repo, "status", "--porcelain", "-uall").stdout.splitlines() == [
        "?? .parallel/plans/p.yaml",
        "?? .parallel/templates/.originals/0123456789abcdef/setup.sh.j2",
        "?? .parallel/templates/setup.sh.j2",
    ]


def test_the_old_exclude_line_is_migrated_once(repo):
    exclude = repo / ".git" / "info" / "exclude"
    exclude.write_text("# git ls-files --others --exclude-from=.git/info/exclude\n*.swp\n"
                       "# added by parallel-setup (run state and task worktrees)\n/.parallel/\n/worktrees/\n")
    ensure_excluded(repo)
    ensure_excluded(repo)
    assert exclude.read_text() == (
        "# git ls-files --others --exclude-from=.git/info/exclude\n*.swp\n/worktrees/\n\n"
        "# added by parallel-setup (per-machine run state and task worktrees; .parallel/templates/ and "
        ".parallel/plans/ can be committed)\n"
        "/.parallel/*\n!/.parallel/templates/\n!/.parallel/plans/\n")


def test_real_cli_expands_parallel_templates(plugin_copy, tmp_path, repo):
    """/parallel:templates through the real Claude Code CLI: its ! line lists the templates in
    effect in the project (the override marked) for the model."""
    from tests.plugin_test import expand_command
    write_override(repo, "issue-title.txt.j2", "{{ plan.name }}: {{ task.title }}\n")
    proc, sent = expand_command("/parallel:templates", repo, plugin_copy, tmp_path, "TEMPLATES-SCRIPTED-REPLY")
    assert "Shell command failed" not in proc.stdout + proc.stderr + sent
    assert "<command-name>/parallel:templates</command-name>" in sent
    assert "issue-title.txt.j2  [override]\n  renders:   each task's issue title\n" in sent
    assert "  in effect: repository: .parallel/templates/issue-title.txt.j2\n" in sent
    assert "!`" not in sent


@pytest.mark.parametrize("name", ["subagent-prompt.md.j2", "setup.sh.j2"])
def test_readme_documents_exactly_the_blocks_each_template_has(name):
    at = README.index(f"`{name}` (")
    table = README[at:README.index("\n\n", README.index("| block |", at))]
    documented = re.findall(r"^\| `(\w+)` \|", table, re.M)
    assert documented == list(overrides.blocks((TEMPLATES_DIR / name).read_text()))


def test_real_cli_parallel_templates_ejects_and_checks_a_team_rule(plugin_copy, tmp_path, repo):
    """Through the real Claude Code CLI: /parallel:templates with a change in words; the (scripted)
    model runs the two commands the slash command names, with the Bash the command allows, and
    the repository gets a checked override that the next prompt carries."""
    from tests.support.claude_cli import run_claude
    from tests.support.messages_api import MessagesAPIServer, first_user_text, text, tool_results, tool_use

    rule = "Run make lint before every commit and fix what it reports."

    def model(req):
        results = tool_results(req)
        script = re.search(r'"([^"\n]*/scripts/parallel-setup)" templates eject', first_user_text(req))
        if not script:
            return [text("TEMPLATES-CONFUSED")]
        if not results:
            return [tool_use("Bash", {"command": f'"{script.group(1)}" templates eject subagent-prompt.md.j2 '
                                                 f"--block commit --append '{rule}'",
                                      "description": "Eject the commit block with the rule"})]
        if len(results) == 1:
            return [tool_use("Bash", {"command": f'"{script.group(1)}" templates check',
                                      "description": "Check the templates"})]
        return [text("TEMPLATES-DONE: " + " | ".join(str(r["content"])[:400] for r in results))]

    with MessagesAPIServer(model) as api:
        proc = run_claude("/parallel:templates every subagent must run make lint before committing", cwd=repo,
                          plugin_dir=plugin_copy, api_url=api.url, home=tmp_path / "home", timeout=180)
        assert proc.returncode == 0, proc.stderr
        assert not api.errors, api.errors
    assert "TEMPLATES-DONE: Ejected block commit of builtin/subagent-prompt.md.j2" in proc.stdout, proc.stdout
    assert "templates ok: 7 templates (1 overridden)" in proc.stdout
    run = pinned_run(repo)
    assert f"\n{rule}\n" in run.prompt_path("user-model").read_text()


def test_readme_names_the_variables_each_prompt_block_uses():
    env = render.make_environment(None)
    used = overrides.block_variables(env, (TEMPLATES_DIR / "subagent-prompt.md.j2").read_text())
    for block, names in used.items():
        row = re.search(r"^\| `" + block + r"` \| [^|]* \| ([^|]*) \|$", README, re.M)
        assert row, block
        assert re.findall(r"`([\w.-]+)`", row.group(1)) == (names or ["completion-report.md.j2"]), block

"""``parallel-setup plan``: every validation error with its exact message, save, show, list."""

from __future__ import annotations

import subprocess
import textwrap
from pathlib import Path

import pytest

from parallel_setup.cli import main
from parallel_setup.plans import check_plan, format_problems
from tests.support.git import git

GOOD = """\
schema_version: 1
name: demo-plan
goal: Do two things at once.
tasks:
  - id: one
    title: First thing
    description: Do the first thing.
    files: [a.py]
  - id: two
    title: Second thing
    description: Do the second thing.
    files: [b.py]
    depends_on: [one]
"""


def problems(text: str, **kw) -> list[str]:
    found, _ = check_plan(textwrap.dedent(text), **kw)
    return [p.format("plan.yaml") for p in found]


def with_tasks(tasks_yaml: str) -> str:
    return "schema_version: 1\nname: p\ngoal: g\ntasks:\n" + textwrap.indent(textwrap.dedent(tasks_yaml), "  ")


def test_good_plan_has_no_problems():
    assert problems(GOOD) == []


@pytest.mark.parametrize("text, expected", [
    ("", ["plan.yaml: error: the plan is empty"]),
    ("name: [unclosed\n", ["plan.yaml:2: error: YAML syntax: expected ',' or ']', but got '<stream end>' (column 1)"]),
    ("- a\n- b\n", ["plan.yaml:1: error: the plan must be a mapping of fields, got a list"]),
    ("key: !!python/object:os.system x\n",
     ["plan.yaml:1: error: YAML: could not determine a constructor for the tag "
      "'tag:yaml.org,2002:python/object:os.system'"]),
])
def test_unreadable_plans(text, expected):
    assert problems(text) == expected


def test_missing_required_fields_and_empty_task_list():
    assert problems("tasks: []\n") == [
        "plan.yaml:1: error: missing required field 'schema_version'",
        "plan.yaml:1: error: missing required field 'name'",
        "plan.yaml:1: error: missing required field 'goal'",
        "plan.yaml:1: error: the plan has no tasks",
    ]


def test_top_level_field_errors():
    text = """\
        schema_version: 2
        name: Bad Name
        goal: ""
        base_branch: 7
        colour: blue
        issues:
          mode: sometimes
          repository: not a repo
          labels: [ok, 3]
        defaults:
          setup: 42
          copy_files: .env
        tasks:
          - id: a
            title: t
            description: d
        """
    assert problems(text) == [
        "plan.yaml:1: error: schema_version: an integer (2) is not one of: 1",
        "plan.yaml:2: error: name: 'Bad Name' is not a usable plan name: use lowercase letters, digits "
        "and '-', starting with a letter or digit, at most 63 characters",
        "plan.yaml:3: error: goal: must not be empty",
        "plan.yaml:4: error: base_branch: expected a string, got an integer (7)",
        "plan.yaml:5: warning: unknown field 'colour' (ignored; known fields: schema_version, name, goal, "
        "base_branch, issues, defaults, tasks)",
        "plan.yaml:7: error: issues > mode: a string ('sometimes') is not one of: auto, github, local",
        "plan.yaml:8: error: issues > repository: 'not a repo' is not a repository: use OWNER/REPO or HOST/OWNER/REPO",
        "plan.yaml:9: error: issues > labels[1]: expected a string, got an integer (3)",
        "plan.yaml:11: error: defaults > setup: expected a string, got an integer (42)",
        "plan.yaml:12: error: defaults > copy_files: expected a list, got a string ('.env')",
    ]


def test_task_field_errors_name_the_task():
    text = with_tasks("""\
        - id: a
          title: [not, text]
          description:
          owner: me
          depends_on: b
        - title: no id here
          description: d
        """)
    assert problems(text) == [
        "plan.yaml:6: error: task 'a': title: expected a string, got a list",
        "plan.yaml:7: error: task 'a': description is empty; expected a string",
        "plan.yaml:8: warning: task 'a': unknown field 'owner' (ignored; known fields: id, title, description, "
        "files, depends_on, setup, test, labels)",
        "plan.yaml:9: error: task 'a': depends_on: expected a list, got a string ('b')",
        "plan.yaml:10: error: task #2: missing required field 'id'",
    ]


@pytest.mark.parametrize("tid, reason", [
    ("a b", "contains whitespace"),
    ("a/b", "contains a slash"),
    ("a..b", "contains '..'"),
    ("-a", "starts with '-'"),
    (".a", "starts with '.'"),
    ("a.lock", "ends with '.lock' or '.'"),
    ("x" * 41, "is 41 characters long (at most 40)"),
    ("a~b:c", "contains ':', '~' (use letters, digits, '.', '_' and '-')"),
    ("café", "contains 'é' (use letters, digits, '.', '_' and '-')"),
    ("../up", "contains a slash; contains '..'; starts with '.'"),
])
def test_ids_unusable_as_branch_or_path(tid, reason):
    text = with_tasks(f"- id: '{tid}'\n  title: t\n  description: d\n")
    assert problems(text) == [
        f"plan.yaml:5: error: task '{tid}': id '{tid}' is not usable as a branch name or path: {reason}"]


def test_duplicate_ids_unknown_and_self_dependencies():
    text = with_tasks("""\
        - id: a
          title: t
          description: d
          depends_on: [ghost, a]
        - id: a
          title: t2
          description: d
        """)
    assert problems(text) == [
        "plan.yaml:8: error: task 'a': depends_on: unknown task 'ghost'",
        "plan.yaml:8: error: task 'a': depends on itself",
        "plan.yaml:9: error: task 'a': duplicate id 'a' (first at line 5)",
    ]


def test_dependency_cycle_is_named():
    text = with_tasks("""\
        - {id: a, title: t, description: d, depends_on: [c]}
        - {id: b, title: t, description: d, depends_on: [a]}
        - {id: c, title: t, description: d, depends_on: [b]}
        - {id: d, title: t, description: d}
        """)
    assert problems(text) == ["plan.yaml:5: error: dependency cycle: a -> c -> b -> a"]


def test_more_tasks_than_the_maximum():
    tasks = "".join(f"- {{id: t{i}, title: t, description: d}}\n" for i in range(4))
    assert problems(with_tasks(tasks), max_tasks=3) == [
        "plan.yaml:5: error: the plan has 4 tasks; the maximum is 3 (raise it with --max-tasks or PARALLEL_MAX_TASKS)"]


def test_overlapping_files_warn():
    text = with_tasks("""\
        - {id: a, title: t, description: d, files: [src/x.py, docs/]}
        - {id: b, title: t, description: d, files: ["src/*.py"]}
        - {id: c, title: t, description: d, files: [docs/api.md]}
        """)
    assert problems(text) == [
        "plan.yaml:6: warning: tasks 'a' and 'b' both own 'src/x.py' (matches 'src/*.py') (line 5 and here); "
        "they may conflict when merged",
        "plan.yaml:7: warning: tasks 'a' and 'c' both own 'docs' and 'docs/api.md' (line 5 and here); "
        "they may conflict when merged",
    ]


def test_overlapping_globs_checked_against_repository_files(repo):
    text = with_tasks("""\
        - {id: a, title: t, description: d, files: ["src/*.py"]}
        - {id: b, title: t, description: d, files: ["src/app.*"]}
        """)
    assert problems(text, project=repo) == [
        "plan.yaml:6: warning: tasks 'a' and 'b' both own 'src/app.py' (matches 'src/*.py' and 'src/app.*') "
        "(line 5 and here); they may conflict when merged"]


def test_duplicate_keys_are_errors():
    text = with_tasks("- id: a\n  title: t\n  description: d\n  id: b\n")
    assert problems(text) == ["plan.yaml:8: error: duplicate key 'id' (first at line 5)"]


def test_every_kind_of_mistake_reported_in_one_run(tmp_path, capsys):
    bad = Path(__file__).parent.parent / "data" / "plans" / "every-mistake.yaml"
    assert main(["plan", "validate", str(bad)]) == 1
    err = capsys.readouterr().err
    lines = err.splitlines()
    assert lines[-1] == f"{bad}: 15 errors, 3 warnings"
    for needle in ["schema_version: an integer (2) is not one of: 1", "missing required field 'description'",
                   "unknown field 'colour'", "is not usable as a branch name", "duplicate id 'c'",
                   "unknown task 'zz'", "dependency cycle: c -> d -> c", "both own 'src/x.py'",
                   "title: expected a string, got a list"]:
        assert any(needle in line for line in lines), needle
    assert all(line.startswith(f"{bad}:") for line in lines)
    assert all(":" in line.split(str(bad), 1)[1][1:] for line in lines[:-1])  # every line has a line number


def test_validate_ok_prints_summary_line(tmp_path, capsys):
    f = tmp_path / "p.yaml"
    f.write_text(GOOD)
    assert main(["plan", "validate", str(f)]) == 0
    assert capsys.readouterr().out == f"{f}: valid plan 'demo-plan' with 2 task(s)\n"


def test_validate_missing_file(capsys):
    assert main(["plan", "validate", "/nonexistent/plan.yaml"]) == 1
    assert capsys.readouterr().err == "parallel-setup: /nonexistent/plan.yaml: no such plan file\n"


def test_save_valid_plan_writes_it_and_excludes_state(repo, capsys):
    draft = repo / "draft.yaml"
    draft.write_text(GOOD)
    assert main(["-C", str(repo), "plan", "save", str(draft)]) == 0
    out = capsys.readouterr().out
    saved = repo / ".parallel" / "plans" / "demo-plan.yaml"
    assert saved.read_text() == GOOD
    assert out.startswith("Saved .parallel/plans/demo-plan.yaml\n")
    assert out.rstrip().endswith("Next: /parallel:execute demo-plan")
    exclude = (repo / ".git" / "info" / "exclude").read_text()
    assert "/.parallel/*\n!/.parallel/templates/\n!/.parallel/plans/\n/worktrees/\n" in exclude
    draft.unlink()
    # Only the saved plan shows: a team can commit it; the run state stays excluded.
    assert git(repo, "status", "--porcelain", "-uall").stdout == "?? .parallel/plans/demo-plan.yaml\n"


def test_save_invalid_plan_saves_nothing_and_keeps_stdin_text(repo, capsys, monkeypatch):
    import io
    bad = GOOD.replace("depends_on: [one]", "depends_on: [nine]")
    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(bad.encode())))
    assert main(["-C", str(repo), "plan", "save", "-"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("<stdin>:13: error: task 'two': depends_on: unknown task 'nine'\n"
                          "<stdin>: 1 error, 0 warnings\nThe plan was NOT saved; your text is kept, byte for byte, in ")
    assert not (repo / ".parallel" / "plans" / "demo-plan.yaml").exists()
    kept = list((repo / ".parallel" / "plans" / "drafts").glob("rejected-*.yaml"))
    assert [k.read_text() for k in kept] == [bad]


def test_save_replacing_a_plan_keeps_the_old_one(repo, capsys):
    draft = repo / "d.yaml"
    draft.write_text(GOOD)
    assert main(["-C", str(repo), "plan", "save", str(draft)]) == 0
    draft.write_text(GOOD.replace("Do two things at once.", "Changed goal."))
    assert main(["-C", str(repo), "plan", "save", str(draft)]) == 0
    history = list((repo / ".parallel" / "plans" / "history").glob("demo-plan-*.yaml"))
    assert [h.read_text() for h in history] == [GOOD]


def test_show_defaults_to_latest_plan(repo, capsys, snapshot):
    draft = repo / "d.yaml"
    draft.write_text(GOOD)
    main(["-C", str(repo), "plan", "save", str(draft)])
    capsys.readouterr()
    assert main(["-C", str(repo), "plan", "show"]) == 0
    assert capsys.readouterr().out == snapshot


def test_show_example_plan(capsys, snapshot, tmp_path):
    from parallel_setup.paths import EXAMPLE_PLAN
    # From outside any repository: in a clean clone of the plugin the example would be shown relative to it.
    assert main(["-C", str(tmp_path), "plan", "show", str(EXAMPLE_PLAN)]) == 0
    assert capsys.readouterr().out.replace(str(EXAMPLE_PLAN), "EXAMPLE") == snapshot


def test_show_without_plans(repo, capsys):
    assert main(["-C", str(repo), "plan", "show"]) == 1
    assert capsys.readouterr().err == (
        f"parallel-setup: no saved plan in {repo}/.parallel/plans; create one with /parallel:plan <goal>\n")


def test_list(repo, capsys):
    assert main(["-C", str(repo), "plan", "list"]) == 0
    assert capsys.readouterr().out == f"No saved plans in {repo}/.parallel/plans.\n"


def test_schema_and_example_are_printed(capsys):
    import json
    assert main(["plan", "schema"]) == 0
    assert json.loads(capsys.readouterr().out)["title"] == "parallel plan"
    assert main(["plan", "example"]) == 0
    assert "name: add-user-accounts" in capsys.readouterr().out


def test_launcher_runs_from_a_renamed_plugin_copy(plugin_copy, tmp_path):
    """The script finds its package from __file__, wherever the plugin folder is and whatever its name."""
    f = tmp_path / "p.yaml"
    f.write_text(GOOD)
    proc = subprocess.run([str(plugin_copy / "scripts" / "parallel-setup"), "plan", "validate", str(f)],
                          cwd=tmp_path, capture_output=True, text=True)
    assert (proc.returncode, proc.stdout, proc.stderr) == (0, f"{f}: valid plan 'demo-plan' with 2 task(s)\n", "")

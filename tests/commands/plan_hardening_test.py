"""Plans and the CLI against hostile input: alias bombs, control characters, GitHub's size
limits, bytes that are not UTF-8, read-only state, damaged runs, deep chains. Every problem is
a message that says what to fix (exit 1), never a traceback (exit 3)."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from parallel_setup import runs
from parallel_setup.cli import main
from tests.commands.execute_test import execute, run_id_in, write_plan

HEAD = "schema_version: 1\nname: demo\ngoal: g\n"
ALIAS_BOMB = (HEAD + 'a: &a ["x","x","x","x","x","x","x","x","x"]\n'
              + "".join(f"{c}: &{c} [*{p},*{p},*{p},*{p},*{p},*{p},*{p},*{p},*{p}]\n"
                        for p, c in zip("abcdefgh", "bcdefghi"))
              + "tasks:\n  - {id: t, title: T, description: *i}\n")


def cli(repo: Path, capsys, *args: str, stdin: bytes | None = None, monkeypatch=None):
    if stdin is not None:
        monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(stdin)))
    code = main(["-C", str(repo), *args])
    out, err = capsys.readouterr()
    return code, out, err


def plan_text(title: str = "T", description: str = "d", extra: str = "") -> str:
    return HEAD + "tasks:\n" + f"  - id: t\n    title: {title}\n    description: {description}\n" + extra


def first_error(repo: Path, capsys, text: str) -> str:
    """``plan validate`` of ``text`` must fail: its first line, the file shown as PLAN."""
    path = repo / "p.yaml"
    path.write_text(text)
    code, _, err = cli(repo, capsys, "plan", "validate", str(path))
    assert code == 1, err
    return err.splitlines()[0].replace(str(path), "PLAN")


@pytest.fixture(autouse=True)
def _no_gh(monkeypatch, tmp_path):
    monkeypatch.setenv("PARALLEL_GH", str(tmp_path / "no-such-gh"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))


# -- YAML aliases ----------------------------------------------------------------------------------

def test_the_alias_bomb_is_small():
    assert len(ALIAS_BOMB.encode()) < 500


@pytest.mark.parametrize("verb", ["validate", "save", "execute"])
def test_an_alias_bomb_is_refused_at_once(repo, verb, tmp_path):
    path = repo / "bomb.yaml"
    path.write_text(ALIAS_BOMB)
    args = {"validate": ["plan", "validate", str(path)], "save": ["plan", "save", "-"],
            "execute": ["execute", str(path)]}[verb]
    env = dict(os.environ, PARALLEL_GH=str(tmp_path / "no-such-gh"), XDG_CONFIG_HOME=str(tmp_path / "xdg"),
               PYTHONPATH=str(Path(__file__).resolve().parents[2]))
    # A separate process with a time limit: the bomb hangs whatever expands it (minutes, gigabytes).
    proc = subprocess.run([sys.executable, "-m", "parallel_setup", "-C", str(repo), *args], env=env,
                          input=ALIAS_BOMB.encode() if verb == "save" else b"", capture_output=True, timeout=60)
    code, err = proc.returncode, proc.stderr.decode()
    assert code == 1
    source = "<stdin>" if verb == "save" else str(path)
    assert err.startswith(f"{source}:5: error: YAML alias *a is not allowed in a plan; write the value out in full\n")
    assert not (repo / ".parallel" / "plans" / "demo.yaml").exists()


def test_deep_nesting_is_refused(repo, capsys):
    path = repo / "deep.yaml"
    path.write_text(HEAD + "x: " + "[" * 5000 + "]" * 5000 + "\ntasks: []\n")
    code, _, err = cli(repo, capsys, "plan", "validate", str(path))
    assert code == 1
    assert f"{path}:4: error: lists and mappings are nested more than 32 deep; a plan needs 4" in err


# -- control characters ----------------------------------------------------------------------------

@pytest.mark.parametrize("title, why", [
    ('"before\\0after"', "contains U+0000 (NUL) at character 7"),
    ('"\\e[2J\\e[31mred"', "contains U+001B (ESC, a terminal escape) at character 1"),
    ('"a\\x9bb"', "contains U+009B (CSI, a terminal escape) at character 2"),
    ('"two\\nlines"', "must be one line at character 4"),
    ('"tab\\there"', "contains U+0009 (tab) at character 4"),
])
def test_control_characters_in_a_title_are_refused_naming_the_field_and_line(repo, capsys, title, why):
    line = first_error(repo, capsys, plan_text(title=title))
    assert line == f"PLAN:6: error: task 't': title: {why}; remove it (plans hold plain text)"


def test_a_control_character_in_a_description_names_its_line(repo, capsys):
    line = first_error(repo, capsys, plan_text(description='"line one\\nline \\atwo"'))
    assert line == ("PLAN:7: error: task 't': description: contains U+0007 (BEL) at line 2 "
                    "of the text, character 6; remove it (plans hold plain text)")


def test_descriptions_keep_their_lines_and_tabs(repo, capsys):
    path = repo / "p.yaml"
    path.write_text(plan_text(description='"one\\n\\ttwo"'))
    assert cli(repo, capsys, "plan", "validate", str(path))[0] == 0


def test_problems_never_reach_the_terminal_raw(repo, capsys):
    path = repo / "p.yaml"
    path.write_text(plan_text(extra='    depends_on: ["\\e]0;owned\\a\\e[31m"]\n'))
    code, out, err = cli(repo, capsys, "plan", "show", str(path))
    assert code == 1
    assert "\x1b" not in err + out and "\x07" not in err + out
    assert "depends_on: unknown task '\\x1b]0;owned\\x07\\x1b[31m'" in err


def test_plan_show_escapes_what_it_prints():
    from parallel_setup.commands.plan import summarize
    from parallel_setup.plans import parse_plan
    plan = parse_plan(plan_text(), "p.yaml")
    plan.tasks[0].title = "evil\x1b[2Jtitle"  # a plan object built by hand, past validation
    shown = summarize(plan, "p.yaml")
    assert "\x1b" not in shown and "evil\\x1b[2Jtitle" in shown


# -- GitHub's size limits --------------------------------------------------------------------------

def test_a_10_mb_description_is_refused(repo, capsys):
    line = first_error(repo, capsys, plan_text(description="x" * 10_000_000))
    assert line == "PLAN:7: error: task 't': description: is 10000000 characters long; at most 60000"


def test_a_title_over_the_limit_is_refused(repo, capsys):
    line = first_error(repo, capsys, plan_text(title="x" * 257))
    assert line == "PLAN:6: error: task 't': title: is 257 characters long; at most 200"


def test_a_rendered_issue_over_githubs_limits_is_refused_before_anything_is_created(repo, capsys):
    write_plan(repo, tasks=[{"id": "t1", "title": "T", "description": "x" * 60000}])
    templates = repo / ".parallel" / "templates"
    templates.mkdir(parents=True)
    (templates / "issue-body.md.j2").write_text("{{ task.description }}\n{{ task.description }}\n")
    code, out, err = execute(repo, capsys)
    assert code == 1
    assert err == ("parallel-setup: task 't1': the issue body is 120,060 characters; GitHub allows 65,536 "
                   "(shorten the task's description, or the issue-body template)\n")


# -- plan save keeps the user's bytes --------------------------------------------------------------

def test_plan_save_keeps_the_bytes_it_was_given(repo, capsys, monkeypatch):
    raw = plan_text().replace("\n", "\r\n").encode() + b"# trailing comment   \r\n"
    code, out, err = cli(repo, capsys, "plan", "save", "-", stdin=raw, monkeypatch=monkeypatch)
    assert code == 0, err
    assert (repo / ".parallel" / "plans" / "demo.yaml").read_bytes() == raw


def test_plan_save_of_bytes_that_are_not_utf8_loses_nothing(repo, capsys, monkeypatch):
    raw = plan_text(title="caf\xe9").encode("latin-1")
    code, out, err = cli(repo, capsys, "plan", "save", "-", stdin=raw, monkeypatch=monkeypatch)
    assert code == 1
    lines = err.splitlines()
    assert lines[0] == ("<stdin>:6: error: not UTF-8 text: byte 0xe9 at column 15 (invalid continuation byte); "
                        "save the plan as UTF-8")
    assert lines[1].startswith("The plan was NOT saved; your text is kept, byte for byte, in ")
    draft = Path(lines[1].rsplit(" in ", 1)[1])
    assert draft.read_bytes() == raw
    assert not (repo / ".parallel" / "plans" / "demo.yaml").exists()


# -- state that cannot be written, runs that are damaged, chains that are long ----------------------

def _freeze(path: Path) -> None:
    """Make a folder unwritable, as root too (root ignores permission bits)."""
    if os.geteuid() == 0:
        subprocess.run(["chattr", "+i", str(path)], check=True)
    else:
        path.chmod(0o555)


def _thaw(path: Path) -> None:
    if os.geteuid() == 0:
        subprocess.run(["chattr", "-i", str(path)], check=False)
    else:
        path.chmod(0o755)


@pytest.mark.parametrize("verb", ["save", "execute"])
def test_an_unwritable_parallel_folder_is_a_message(repo, capsys, monkeypatch, verb):
    write_plan(repo, n=1)
    frozen = repo / ".parallel" / ("plans" if verb == "save" else "runs")
    frozen.mkdir(parents=True, exist_ok=True)
    (repo / ".git" / "info").mkdir(exist_ok=True)
    _freeze(frozen)
    try:
        if verb == "save":
            code, _, err = cli(repo, capsys, "plan", "save", "-", stdin=plan_text(title="New").encode(),
                               monkeypatch=monkeypatch)
        else:
            code, _, err = cli(repo, capsys, "execute", "demo")
    finally:
        _thaw(frozen)
    assert code == 1
    assert err.startswith(f"parallel-setup: cannot write or read {frozen}/")
    assert err.rstrip().endswith(("make it (and .parallel/ in the repository) writable by you, then run the "
                                  "command again"))


@pytest.mark.parametrize("content, why", [
    ("{", "is damaged (not a JSON object)"),
    ("[]", "is damaged (not a JSON object)"),
    ('{"tasks": "x"}', "is damaged (missing or wrong: plan, issue_mode, base_ref, created_at)"),
])
def test_a_damaged_run_json_is_a_message(repo, capsys, content, why):
    write_plan(repo, n=1)
    _, out, _ = execute(repo, capsys)
    run_id = run_id_in(out)
    path = repo / ".parallel" / "runs" / run_id / "run.json"
    path.write_text(content)
    code, _, err = execute(repo, capsys, "--run", run_id)
    assert code == 1
    assert err == (f"parallel-setup: {path} {why}; restore it from a backup, or start a new run with "
                   "/parallel:execute\n")
    code, _, err = cli(repo, capsys, "status", run_id)
    assert code == 1 and err.startswith(f"parallel-setup: {path} is ")
    assert "restore it" in err


def test_a_1200_deep_dependency_chain_works(repo, capsys):
    tasks = [{"id": f"t{i}", "title": f"T{i}", "description": "d", **({"depends_on": [f"t{i - 1}"]} if i else {})}
             for i in range(1200)]
    path = repo / "chain.yaml"
    path.write_text(yaml.safe_dump({"schema_version": 1, "name": "chain", "goal": "g", "tasks": tasks}))
    code, out, err = cli(repo, capsys, "plan", "show", str(path), "--max-tasks", "2000")
    assert code == 0, err
    assert "1200 task(s) in 1200 wave(s)" in out
    tasks[0]["depends_on"] = ["t1199"]  # and a cycle through all of them is found, not a crash
    path.write_text(yaml.safe_dump({"schema_version": 1, "name": "chain", "goal": "g", "tasks": tasks}))
    code, out, err = cli(repo, capsys, "plan", "validate", str(path), "--max-tasks", "2000")
    assert code == 1 and "dependency cycle: t0 -> t1199 -> t1198" in err


# -- a little fuzzing of the CLI's inputs: never exit 3 ----------------------------------------------

FUZZ = [
    ["status", ".."], ["status", "../../etc"], ["status", "x\x00y"], ["status", "--width", "0"],
    ["execute", "--run", ".."], ["execute", "--run", "nope"], ["execute", "--run", "x/y"],
    ["plan", "show", "."], ["plan", "validate", "/dev/null"], ["plan", "validate", "."],
    ["plan", "show", "no-such"], ["execute", "--max-concurrency", "0"], ["status", "--html", "/"],
]


@pytest.mark.parametrize("args", FUZZ, ids=[" ".join(a).replace("\x00", "NUL") for a in FUZZ])
def test_fuzzed_arguments_are_messages_not_tracebacks(repo, capsys, args):
    write_plan(repo, n=1)
    execute(repo, capsys)
    code, out, err = cli(repo, capsys, *args)
    assert code in (0, 1, 2), err
    assert "unexpected error" not in err and "Traceback" not in err


def test_fuzzed_plans_are_messages_not_tracebacks(repo, capsys):
    import random
    rng = random.Random(10)
    base = (Path(__file__).resolve().parents[2] / "schemas" / "example-plan.yaml").read_bytes()
    pieces = [b"\x00", b"\xff", b"&a", b"*a", b"!!python/object:os.system", b"{", b"]", b"- ", b": ", b"\t",
              b"\x1b[31m", b"'", b'"\\', b"\n  ", b"<<: *a", b"!!binary", b"? ", b"%YAML 1.1\n", b"---\n"]
    for _ in range(60):
        data = bytearray(base)
        for _ in range(rng.randint(1, 4)):
            at = rng.randrange(len(data))
            data[at:at + rng.randint(0, 8)] = rng.choice(pieces)
        path = repo / "fuzz.yaml"
        path.write_bytes(bytes(data))
        code, out, err = cli(repo, capsys, "plan", "validate", str(path))
        assert code in (0, 1), (bytes(data), err)
        assert "unexpected error" not in err, (bytes(data), err)

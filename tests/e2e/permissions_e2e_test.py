"""Permission modes, end to end: the plugin installed from its marketplace, the real CLI.

As a user has it: ``claude plugin marketplace add <plugin>`` and ``claude plugin install
parallel@parallel-setup`` into the test's HOME (no ``--plugin-dir``), then
``claude -p "/parallel:execute e2e" --permission-mode MODE``. A scripted model plays the main
agent and each subagent, which does its work as the prompt tells it: the setup command
exactly as written, Write of its file, the test, ``git add``/``commit``/``push``, ``gh issue
comment``. The real ``gh`` against the fake GitHub, real ``git`` with a bare origin.

Observed before this change (issue 9): in ``default`` and ``acceptEdits`` every setup was
refused ("Permission to use Bash has been denied."), and status blamed the missing report.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import pytest

from parallel_setup.fake_github import FakeGitHub
from tests.support.claude_cli import as_a_user, run_claude
from tests.support.git import git, make_repo
from tests.support.github import requires_gh
from tests.support.messages_api import MessagesAPIServer, first_user_text, is_subagent, printed_agent_calls, \
    text, tool_results, tool_use

REPO = "github.localhost/acme/widgets"
TASKS = ("alpha", "beta")
SETUP_CMD = re.compile(r"```bash\n(bash \S*/tasks/([A-Za-z0-9._-]+)/setup\.sh'?)\n```")
DENIED = "Permission to use Bash has been denied."


def plan_yaml() -> str:
    tasks = "".join(f"  - id: {t}\n    title: Add {t}.txt\n    description: Write {t}.txt.\n    files: [{t}.txt]\n"
                    for t in TASKS)
    return ("schema_version: 1\nname: e2e\ngoal: Two files at once.\nbase_branch: main\n"
            f"issues:\n  mode: github\n  repository: {REPO}\n  labels: [parallel]\n"
            "defaults:\n  setup: none\n  test: \"true\"\n" f"tasks:\n{tasks}")


def _setup_line(content: str) -> dict | None:
    for line in reversed(content.splitlines()):
        if line.startswith("{") and '"parallel_setup"' in line:
            try:
                return json.loads(line)
            except ValueError:
                return None
    return None


class Model:
    """The main agent follows /parallel:execute; each subagent does its task step by step.

    ``outside``: after its work, a subagent also tries a commit in the main checkout.
    """

    def __init__(self, outside: bool, setup_command=None, foreground: bool = False):
        self.outside = outside
        self.foreground = foreground
        #: (task, the prompt's setup command) -> the command the subagent runs instead
        self.setup_command = setup_command or (lambda task, command: command)

    def __call__(self, req: dict):
        return self.subagent(req) if is_subagent(req) else self.main(req)

    def main(self, req: dict):
        results = tool_results(req)
        if not results:
            m = re.search(r'"([^"\n]*/scripts/parallel-setup)" execute', first_user_text(req))
            if not m:
                return [text("MAIN-CONFUSED")]
            args = " --foreground" if self.foreground else ""
            return [tool_use("Bash", {"command": f'"{m.group(1)}" execute e2e{args}', "description": "Create the run"})]
        if not any(r["name"] == "Agent" for r in results):
            calls = printed_agent_calls(results[-1]["content"])
            return calls or [text("MAIN-NO-CALLS: " + results[-1]["content"][:3000])]
        return [text("MAIN-ACK")]

    def subagent(self, req: dict):
        prompt = first_user_text(req)
        m = SETUP_CMD.search(prompt)
        if not m:
            return [text("SUBAGENT-GOT-NO-SETUP-COMMAND")]
        task = m.group(2)
        results = tool_results(req)
        if not results:
            return [tool_use("Bash", {"command": self.setup_command(task, m.group(1)), "description": "Run my setup"})]
        setup = _setup_line(results[0]["content"])
        if not setup or setup.get("status") != "ok":
            return [text(self.report(task, None, "failed", f"setup: {results[0]['content'][-300:]}"))]
        wt, branch, issue = setup["worktree"], setup["branch"], setup["issue"]
        cd = f"cd {wt} && "
        steps = [("Write", {"file_path": f"{wt}/{task}.txt", "content": f"{task}\n"}),
                 ("Bash", {"command": cd + "true", "description": "Test"}),
                 ("Bash", {"command": cd + f"git add {task}.txt && git commit -q -m 'Add {task}.txt' "
                                           f"-m 'Closes #{issue}'", "description": "Commit"}),
                 ("Bash", {"command": cd + f"git push -q -u origin {branch}", "description": "Push"}),
                 ("Bash", {"command": cd + "git rev-parse HEAD", "description": "The commit"}),
                 ("Bash", {"command": cd + f"gh issue comment {issue} -R {REPO} --body-file - <<'EOF'\n"
                                           f"Added {task}.txt; tests pass.\nEOF", "description": "Comment"})]
        if self.outside:
            project = str(Path(wt).parent.parent)
            steps.append(("Bash", {"command": f"cd {project} && git commit --allow-empty -q -m outside-{task}",
                                   "description": "Outside my worktree"}))
        done = len(results) - 1
        if done < len(steps):
            return [tool_use(*steps[done])]
        work = results[1:]
        refused = [r["content"].split(". ")[0] for r in work[:5] if r["is_error"]]
        sha = re.search(r"\b[0-9a-f]{40}\b", work[4]["content"]) if not work[4]["is_error"] else None
        report = dict(setup=setup, commits=[sha.group(0)] if sha else [])
        if refused or not sha:
            return [text(self.report(task, report, "failed", "; ".join(refused) or "no commit"))]
        return [text(self.report(task, report, "done", None))]

    @staticmethod
    def report(task, got, status, reason) -> str:
        setup = (got or {}).get("setup") or {}
        body = {"parallel_report": 1, "run": setup.get("run"), "task": task, "status": status,
                "issue": setup.get("issue"), "branch": setup.get("branch"), "worktree": setup.get("worktree"),
                "commits": (got or {}).get("commits") or [], "pushed": status == "done",
                "tests": {"command": "true", "exit_code": 0}, "summary": f"{task}: {status}", "reason": reason}
        return f"Finished {task}.\n```json\n{json.dumps(body)}\n```"


def e2e_project(tmp_path: Path) -> Path:
    """A repository with a bare origin and the saved plan ``e2e`` (two tasks, GitHub issues)."""
    project = make_repo(tmp_path / "widgets")
    plans = project / ".parallel" / "plans"
    plans.mkdir(parents=True)
    (plans / "e2e.yaml").write_text(plan_yaml())
    return project


def run_mode(tmp_path: Path, plugin_copy: Path, permission_mode: str, *, opt_in: bool, outside: bool = False,
             setup_command=None, foreground: bool = False):
    project = e2e_project(tmp_path)
    home = tmp_path / "home"
    cli = as_a_user(plugin_copy, project, home, opt_in=opt_in)
    with FakeGitHub() as gh, MessagesAPIServer(Model(outside, setup_command, foreground)) as api:
        env = gh.gh_variables(config_dir=str(tmp_path / "gh-config"))
        env.update(NO_PROXY="127.0.0.1", no_proxy="127.0.0.1")
        proc = run_claude("/parallel:execute e2e", cwd=project, plugin_dir=None, api_url=api.url, home=home,
                          extra_env=env, timeout=300, permission_mode=permission_mode)
        print(proc.stdout[-3000:], proc.stderr[-2000:])
        assert proc.returncode == 0, proc.stderr
        assert not api.errors, api.errors
        issues = gh.issues("acme/widgets")
        main_sent = " ".join(json.dumps(r["messages"]) for r in api.main_requests())
        sub_results = {}
        for r in api.subagent_requests():
            m = SETUP_CMD.search(first_user_text(r))
            if m and len(tool_results(r)) >= len(sub_results.get(m.group(2), [])):
                sub_results[m.group(2)] = tool_results(r)
    assert "MAIN-CONFUSED" not in proc.stdout and "MAIN-NO-CALLS" not in proc.stdout, proc.stdout
    (run_dir,) = (project / ".parallel" / "runs").iterdir()
    git_env = {k: v for k, v in os.environ.items() if k.startswith("GIT_")}
    st = subprocess.run(cli + ["status", run_dir.name, "--json"], capture_output=True, text=True,
                        env={**os.environ, **env, **git_env})
    assert st.returncode == 0, st.stderr
    shown = subprocess.run(cli + ["status", run_dir.name, "--width", "100"], capture_output=True, text=True,
                           env={**os.environ, **env, **git_env})
    print(shown.stdout)
    return project, run_dir, issues, json.loads(st.stdout), shown.stdout, main_sent, sub_results


def _tasks(status: dict) -> dict:
    return {t["id"]: t for t in status["tasks"]}


@requires_gh
@pytest.mark.parametrize("permission_mode", ["default", "acceptEdits", "bypassPermissions"])
def test_setups_run_in_every_permission_mode_and_refusals_are_named(tmp_path, plugin_copy, permission_mode):
    """Opt-in off: every setup runs (issue, worktree); what the user's rules refuse is named in status."""
    project, run_dir, issues, status, shown, main_sent, results = run_mode(
        tmp_path, plugin_copy, permission_mode, opt_in=False)
    assert sorted(i["title"] for i in issues) == ["Add alpha.txt", "Add beta.txt"]
    tasks = _tasks(status)
    for tid in TASKS:
        assert tasks[tid]["setup_status"] == "ok", tasks[tid]
        assert Path(project, "worktrees", f"task-{tasks[tid]['issue']}").is_dir()
        assert not results[tid][0]["is_error"], results[tid][0]  # the setup command itself ran
    if permission_mode == "bypassPermissions":
        assert {t: tasks[t]["state"] for t in TASKS} == {"alpha": "done", "beta": "done"}
        assert all(not tasks[t]["permission_denials"] for t in TASKS)
        return
    for tid in TASKS:
        task = tasks[tid]
        assert task["state"] in ("failed", "unverified"), task
        commits = [d for d in task["permission_denials"] if d["tool"] == "Bash" and "git commit" in d["command"]]
        assert commits, task["permission_denials"]
        wt = Path(project, "worktrees", f"task-{task['issue']}")
        assert commits[0]["command"].startswith(f"cd {wt} && git add {tid}.txt && git commit")
        write = [d for d in task["permission_denials"] if d["tool"] == "Write"]
        # default asks for every edit; acceptEdits accepts edits inside the project
        assert bool(write) == (permission_mode == "default"), task["permission_denials"]
        assert f"  {tid} {task['state']}: permission denied: " in shown
        named = f"Bash `cd {wt} && git add {tid}.txt && git commit"[:120]
        assert named in shown
        assert "Claude Code permission denied: " in main_sent and named in main_sent  # the run summary
    assert git(project, "ls-remote", "--heads", "origin").stdout.count("feature/task-") == 0


@requires_gh
@pytest.mark.parametrize("permission_mode, foreground", [("default", False), ("acceptEdits", False),
                                                         ("default", True)],
                         ids=["default", "acceptEdits", "default-foreground"])
def test_with_the_opt_in_the_run_ends_done_and_verified_and_nothing_outside_is_approved(
        tmp_path, plugin_copy, permission_mode, foreground):
    """Foreground agents are linked to their task only when they run its setup (their PostToolUse
    comes after they end): the opt-in works for them too."""
    project, run_dir, issues, status, shown, main_sent, results = run_mode(
        tmp_path, plugin_copy, permission_mode, opt_in=True, outside=True, foreground=foreground)
    tasks = _tasks(status)
    assert {t: tasks[t]["state"] for t in TASKS} == {"alpha": "done", "beta": "done"}, shown
    for tid in TASKS:
        assert [r["is_error"] for r in results[tid][:7]] == [False] * 7, results[tid]
        # the commit in the main checkout was not approved, and is named
        # (a foreground subagent is told "This command requires approval")
        refusal = "This command requires approval" if foreground else DENIED
        assert results[tid][7]["is_error"] and results[tid][7]["content"].startswith(refusal), results[tid][7]
        (denied,) = tasks[tid]["permission_denials"]
        # (Claude Code drops a leading `cd <its cwd> &&` from the call it keeps in the transcript)
        assert denied["tool"] == "Bash" and denied["command"] in (
            f"cd {project} && git commit --allow-empty -q -m outside-{tid}",
            f"git commit --allow-empty -q -m outside-{tid}"), denied
    assert "outside-" not in git(project, "log", "--format=%s", "-5").stdout
    remote = git(project, "ls-remote", "--heads", "origin").stdout
    assert sorted(re.findall(r"refs/heads/(feature/task-\d+)", remote)) == ["feature/task-1", "feature/task-2"]
    comments = sorted(c for i in issues for c in i["comments"])
    assert comments == ["Added alpha.txt; tests pass.\n", "Added beta.txt; tests pass.\n"]
    assert "Permissions: setups approved; subagents work in their worktrees without prompts (opt-in on)" in main_sent


@requires_gh
def test_a_symlinked_or_foreign_setup_script_is_not_approved(tmp_path, plugin_copy):
    """Two subagents run something else than their rendered script: alpha's setup.sh replaced by a
    symlink (to an identical copy), beta a copy of its script in another project. Neither runs."""
    foreign = tmp_path / "foreign"

    def sabotage(task, command):
        path = Path(command.split(" ", 1)[1].strip("'"))
        if task == "alpha":
            copy = tmp_path / "elsewhere-setup.sh"
            copy.write_bytes(path.read_bytes())
            path.unlink()
            path.symlink_to(copy)
            return command
        other = foreign / path.relative_to(path.parents[5])
        other.parent.mkdir(parents=True, exist_ok=True)
        other.write_bytes(path.read_bytes())
        return f"bash {other}"

    project, run_dir, issues, status, shown, main_sent, results = run_mode(
        tmp_path, plugin_copy, "default", opt_in=True, setup_command=sabotage)
    assert issues == []  # no setup ran
    assert not list(project.glob("worktrees/task-*"))
    tasks = _tasks(status)
    for tid in TASKS:
        assert results[tid][0]["is_error"] and results[tid][0]["content"].startswith(DENIED), results[tid][0]
        assert tasks[tid]["state"] == "failed", tasks[tid]
        (denied,) = tasks[tid]["permission_denials"]
        assert denied["tool"] == "Bash" and denied["command"].startswith("bash ") \
            and denied["command"].endswith(f"/tasks/{tid}/setup.sh"), denied
    assert str(foreign) in tasks["beta"]["permission_denials"][0]["command"]

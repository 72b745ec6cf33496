"""End to end with the real Claude Code CLI (pinned 2.1.328), offline.

The CLI loads the plugin from a relocated copy with ``--plugin-dir``; a scripted
Messages API on 127.0.0.1 plays the main agent and every subagent. The main agent
runs ``/parallel:execute`` on a three-task plan and makes the Agent calls the command
told it to; each subagent runs its rendered setup script (the real ``gh`` against the
fake GitHub, real ``git`` with a bare origin), commits, pushes and ends with its
report. Everything asserted below is what actually happened: the requests the CLI
sent, the event log, the fake GitHub's issues, the repository, and ``status``.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from parallel_setup.fake_github import FakeGitHub
from tests.support.claude_cli import run_claude
from tests.support.git import git, make_repo
from tests.support.github import requires_gh
from tests.support.messages_api import (
    MessagesAPIServer,
    printed_agent_calls,
    first_user_text,
    is_subagent,
    text,
    tool_results,
    tool_use,
)

REPO = "github.localhost/acme/widgets"
TASKS = {
    "alpha": "Write alpha.txt containing the word alpha. MARKER-ALPHA-7f3",
    "beta": "Write beta.txt containing the word beta. MARKER-BETA-19c",
    "gamma": "Write gamma.txt containing the word gamma. MARKER-GAMMA-a02",
}
SETUP_SH = re.compile(r"\.parallel/runs/[A-Za-z0-9._-]+/tasks/([A-Za-z0-9._-]+)/setup\.sh")


def plan_yaml() -> str:
    tasks = "".join(
        f"  - id: {tid}\n    title: Add {tid}.txt\n    description: {desc}\n    files: [{tid}.txt]\n"
        for tid, desc in TASKS.items())
    return ("schema_version: 1\nname: e2e\ngoal: Three files at once.\nbase_branch: main\n"
            f"issues:\n  mode: github\n  repository: {REPO}\n  labels: [parallel]\n"
            "defaults:\n  setup: none\n  test: \"true\"\n" f"tasks:\n{tasks}")


def _json_lines(s: str, key: str) -> list[dict]:
    out = []
    for line in s.splitlines():
        line = line.strip()
        if line.startswith("{") and key in line:
            try:
                out.append(json.loads(line))
            except ValueError:
                pass
    return out


class Script:
    """The scripted model: the main agent follows the command, subagents do their task."""

    def __init__(self, *, foreground: bool, liar: str | None):
        self.foreground = foreground
        self.liar = liar

    def __call__(self, req: dict):
        return self.subagent(req) if is_subagent(req) else self.main(req)

    def main(self, req: dict):
        results = tool_results(req)
        first = first_user_text(req)
        if not results:
            m = re.search(r'"([^"\n]*/scripts/parallel-setup)" execute', first)
            if "<command-name>/parallel:execute</command-name>" not in first or not m:
                return [text("MAIN-CONFUSED")]
            args = " --foreground" if self.foreground else ""
            return [tool_use("Bash", {"command": f'"{m.group(1)}" execute e2e{args}',
                                      "description": "Create the parallel run"})]
        if not any(r["name"] in ("Agent", "Task") for r in results):
            calls = printed_agent_calls(results[-1]["content"])
            return calls or [text("MAIN-NO-CALLS: " + results[-1]["content"][:2000])]
        return [text("MAIN-ACK")]

    def subagent(self, req: dict):
        prompt = first_user_text(req)
        m = SETUP_SH.search(prompt)
        if not m:
            return [text("SUBAGENT-GOT-NO-SETUP-PATH")]
        task = m.group(1)
        results = tool_results(req)
        if not results:
            return [tool_use("Bash", {"command": f"bash {m.group(0)}", "description": "Run my setup"})]
        setups = _json_lines(results[0]["content"], '"parallel_setup"')
        if not setups or setups[-1].get("status") != "ok":
            return [text(f"setup failed: {results[0]['content'][-500:]}")]
        setup = setups[-1]
        report = {"parallel_report": 1, "run": setup["run"], "task": task, "status": "done",
                  "issue": setup["issue"], "branch": setup["branch"], "worktree": setup["worktree"],
                  "pushed": True, "tests": {"command": "true", "exit_code": 0},
                  "summary": f"Added {task}.txt", "reason": None}
        if task == self.liar:  # claims success without having committed anything
            report["commits"] = ["0123456789abcdef0123456789abcdef01234567"]
            return [text("All done.\n```json\n" + json.dumps(report) + "\n```")]
        if len(results) == 1:
            wt, branch, issue = setup["worktree"], setup["branch"], setup["issue"]
            cmd = (f"cd '{wt}' && printf '%s\\n' {task} > {task}.txt && git add {task}.txt && "
                   f"git commit -q -m 'Add {task}.txt' -m 'Closes #{issue}' && "
                   f"git push -q origin {branch} && echo SHA=$(git rev-parse HEAD) && true; echo TESTS_EXIT=$?")
            return [tool_use("Bash", {"command": cmd, "description": "Implement, test, commit, push"})]
        sha = re.search(r"SHA=([0-9a-f]{40})", results[1]["content"])
        report["commits"] = [sha.group(1)] if sha else []
        return [text(f"Implemented {task}.\n```json\n" + json.dumps(report) + "\n```")]


def _run_e2e(tmp_path: Path, plugin_copy: Path, *, foreground: bool, liar: str | None):
    project = make_repo(tmp_path)
    plans = project / ".parallel" / "plans"
    plans.mkdir(parents=True)
    (plans / "e2e.yaml").write_text(plan_yaml())
    with FakeGitHub() as gh, MessagesAPIServer(Script(foreground=foreground, liar=liar)) as api:
        env = gh.gh_variables(config_dir=str(tmp_path / "gh-config"))
        env.update(NO_PROXY="127.0.0.1", no_proxy="127.0.0.1")  # the CLI reaches the model directly
        proc = run_claude("/parallel:execute e2e", cwd=project, plugin_dir=plugin_copy, api_url=api.url,
                          home=tmp_path / "home", extra_env=env, timeout=300)
        print(proc.stdout[-3000:], proc.stderr[-3000:])
        assert proc.returncode == 0, proc.stderr
        assert not api.errors, api.errors
        issues = gh.issues("acme/widgets")
        requests = {"main": api.main_requests(), "sub": api.subagent_requests()}
    (run_dir,) = (project / ".parallel" / "runs").iterdir()
    events = [json.loads(line) for line in (run_dir / "events.jsonl").read_text().splitlines()]
    status = subprocess.run([sys.executable, str(plugin_copy / "scripts" / "parallel-setup"), "-C", str(project),
                             "status", run_dir.name, "--json"], capture_output=True, text=True, env=env | {
                                 k: v for k, v in __import__("os").environ.items() if k.startswith("GIT_")})
    assert status.returncode == 0, status.stderr
    html = tmp_path / "timeline.html"
    shown = subprocess.run([sys.executable, str(plugin_copy / "scripts" / "parallel-setup"), "-C", str(project),
                            "status", run_dir.name, "--width", "110", "--html", str(html)],
                           capture_output=True, text=True)
    print(shown.stdout)  # CI shows the timeline and metrics of a real end-to-end run
    assert shown.returncode == 0, shown.stderr
    assert "Metrics" in shown.stdout and "Timeline" in shown.stdout
    page = html.read_text()
    assert "<svg" in page and all(tid in page for tid in TASKS)
    return project, run_dir, events, issues, requests, json.loads(status.stdout)


def _by(events, name):
    return [e for e in events if e["event"] == name]


@requires_gh
@pytest.mark.parametrize("foreground, liar", [(False, None), (True, None), (False, "gamma")],
                         ids=["background", "foreground", "background-unverified-report"])
def test_execute_end_to_end(tmp_path, plugin_copy, foreground, liar):
    project, run_dir, events, issues, requests, status = _run_e2e(
        tmp_path, plugin_copy, foreground=foreground, liar=liar)

    # The main agent wrote short references; each subagent received its full rendered prompt.
    agent_inputs = [b["input"] for r in requests["main"] for m in r["messages"] if m["role"] == "assistant"
                    for b in (m["content"] if isinstance(m["content"], list) else [])
                    if b.get("type") == "tool_use" and b.get("name") == "Agent"]
    assert len({i["description"] for i in agent_inputs}) == 3
    assert all(len(json.dumps(i).encode()) <= 300 for i in agent_inputs), agent_inputs
    firsts = {first_user_text(r) for r in requests["sub"]}
    for tid, desc in TASKS.items():
        marker = desc.split()[-1]
        got = [f for f in firsts if marker in f]
        assert got, f"no subagent received the full prompt of {tid}"
        assert f"tasks/{tid}/setup.sh" in got[0]

    # Real setup happened: three issues through the real gh, worktrees, branches pushed.
    assert sorted(i["number"] for i in issues) == [1, 2, 3]
    assert sorted(i["title"] for i in issues) == ["Add alpha.txt", "Add beta.txt", "Add gamma.txt"]
    remote = git(project, "ls-remote", "--heads", "origin").stdout
    pushed = sorted(re.findall(r"refs/heads/(feature/task-\d+)", remote))
    assert len(pushed) == (2 if liar else 3)

    # The event log holds the whole timeline, for every task.
    assert {e["task"] for e in _by(events, "spawn")} == set(TASKS)
    assert len(_by(events, "agent_start")) == 3
    for tid in TASKS:
        mine = [e["event"] for e in events if e.get("task") == tid]
        for name in ("spawn", "setup_start", "step_start", "step_end", "setup_end", "task_end"):
            assert name in mine, (tid, name, mine)
        steps = {e["step"] for e in events if e.get("task") == tid and e["event"] == "step_end"}
        assert steps == {"issue", "worktree", "env"}
    assert len(_by(events, "gh_call")) >= 3
    times = [e["t"] for e in events]
    assert times == sorted(times) or max(times) - min(times) < 300

    # The run summary reached the main agent in a later request (the main agent saw it).
    later = " ".join(json.dumps(r["messages"]) for r in requests["main"])
    assert f"[parallel] run {run_dir.name}:" in later
    assert "Just ended:" in later

    # status reports the right states and plausible times.
    states = {t["id"]: t["state"] for t in status["tasks"]}
    expected = {tid: "done" for tid in TASKS}
    if liar:
        expected[liar] = "unverified"
    assert states == expected
    if liar:
        (t,) = [t for t in status["tasks"] if t["id"] == liar]
        assert any("commit" in c for c in t["failed_claims"]), t
    for t in status["tasks"]:
        assert 0 < t["setup_seconds"] < 120, t
    metrics = status["metrics"]
    assert 0 < metrics["run_setup_seconds"] < 300
    assert 0 < metrics["parallel_efficiency"] <= 1.0 + 1e-9
    assert metrics["gh_calls"] >= 3 and metrics["rate_limit_remaining"] < 5000

"""``/parallel:merge`` end to end with the real Claude Code CLI, offline.

A finished run made by the real setup scripts (tests/support/merge_run.py) has a textual
conflict between two tasks. The scripted main agent follows the command: it runs the train,
which stops at the conflict and prints the resolver's Agent call; it sends that call; the
PreToolUse hook expands the short reference into the rendered ``merge-conflict.md.j2``; the
scripted resolver subagent resolves the file in the integration worktree and reports; the main
agent runs the train again, which verifies the resolution, tests, and lands. Everything
asserted is what happened: the requests the CLI sent, the event log, the repository.
"""

from __future__ import annotations

import json
import re

from parallel_setup import events, merge
from tests.support import merge_run
from tests.support.claude_cli import run_claude
from tests.support.git import git
from tests.support.messages_api import MessagesAPIServer, agent_call, first_user_text, is_subagent, text, \
    tool_results, tool_use

TASKS = [t for t in merge_run.PLAN_TASKS if t[0] in ("alpha", "conf-red", "conf-green", "docs")]
RESOLVED = "color=red-green\nsize=10\n"


class Script:
    def __call__(self, req: dict):
        return self.resolver(req) if is_subagent(req) else self.main(req)

    def main(self, req: dict):
        first = first_user_text(req)
        results = tool_results(req)
        m = re.search(r'"([^"\n]*/scripts/parallel-setup)" merge', first)
        if "<command-name>/parallel:merge</command-name>" not in first or not m:
            return [text("MAIN-CONFUSED")]
        merge_cmd = {"command": f'"{m.group(1)}" merge --land --no-fetch', "description": "Run the merge train"}
        if not results:
            return [tool_use("Bash", merge_cmd)]
        last = results[-1]
        if last["name"] == "Bash" and sum(r["name"] == "Bash" for r in results) == 1:
            calls = [json.loads(l) for l in last["content"].splitlines()
                     if l.startswith("{") and '"parallel:parallel-merge-resolver"' in l]
            if not calls:
                return [text("MAIN-NO-RESOLVER: " + last["content"][-2000:])]
            c = calls[-1]
            return [agent_call(c["prompt"], description=c["description"], subagent_type=c["subagent_type"],
                               run_in_background=c["run_in_background"])]
        if last["name"] in ("Agent", "Task"):
            return [tool_use("Bash", merge_cmd)]
        return [text("MAIN-DONE")]

    def resolver(self, req: dict):
        prompt = first_user_text(req)
        wt = re.search(r"^    (/\S+/worktrees/merge-\S+)$", prompt, re.M)
        if not wt:
            return [text("RESOLVER-GOT-NO-PROMPT")]
        if "# Resolve the merge train's stop at task `conf-green`" in prompt:
            task, cmd = "conf-green", "printf 'color=red-green\\nsize=10\\n' > config.txt && git add config.txt"
        elif "# Resolve the merge train's stop at task `use-greet`" in prompt and "it is red with these" in prompt:
            task, cmd = "use-greet", "sed -i 's/greet/hello/g' banner.py && git commit -qam 'banner: use hello'"
        else:
            return [text("RESOLVER-GOT-NO-PROMPT")]
        if not tool_results(req):
            return [tool_use("Bash", {"command": f"cd '{wt.group(1)}' && {cmd}", "description": "Resolve it"})]
        report = {"parallel_merge_report": 1, "task": task, "status": "resolved", "files": [], "summary": "Done."}
        return [text("Resolved.\n```json\n" + json.dumps(report) + "\n```")]


def test_merge_hands_the_conflict_to_a_resolver_then_lands(tmp_path, plugin_copy):
    run = merge_run.build(tmp_path, tasks=TASKS)
    with MessagesAPIServer(Script()) as api:
        proc = run_claude("/parallel:merge", cwd=run.project, plugin_dir=plugin_copy, api_url=api.url,
                          home=tmp_path / "home", extra_env={"NO_PROXY": "127.0.0.1", "no_proxy": "127.0.0.1"},
                          timeout=300)
        print(proc.stdout[-3000:], proc.stderr[-3000:])
        assert proc.returncode == 0, proc.stderr
        assert not api.errors, api.errors
        main_reqs, sub_reqs = api.main_requests(), api.subagent_requests()

    # The first train stopped at the conflict and printed the resolver's call; the main agent
    # wrote the short reference, the resolver received the rendered template.
    outputs = [r for r in tool_results(main_reqs[-1]) if r["name"] == "Bash"]
    assert len(outputs) == 2
    assert "Stopped: task conf-green conflicts in config.txt, colliding with conf-red (merged before it)." \
        in outputs[0]["content"]
    sent = [b["input"] for r in main_reqs for m in r["messages"] if m["role"] == "assistant"
            for b in (m["content"] if isinstance(m["content"], list) else [])
            if b.get("type") == "tool_use" and b.get("name") == "Agent"]
    assert sent and all(len(json.dumps(i).encode()) < 300 for i in sent)
    assert sent[0]["prompt"] == (f"Parallel merge: read .parallel/runs/{run.id}/merge/resolve-conf-green.md "
                                 "and follow it exactly.")
    firsts = [first_user_text(r) for r in sub_reqs]
    assert any("- `conf-red` (Make the color red)" in f for f in firsts)
    assert not any("RESOLVER-GOT-NO-PROMPT" in json.dumps(r) for r in main_reqs)
    [spawned] = events.read_events(run.dir, event="merge_resolver")
    assert spawned["resolves"] == "conf-green"

    # The second train verified the resolution and landed: main is the tested integration branch.
    assert "Landed: main fast-forwarded" in outputs[1]["content"]
    tip = git(run.project, "rev-parse", merge.integration_branch(run)).stdout.strip()
    assert git(run.project, "rev-parse", "main").stdout.strip() == tip
    assert git(run.project, "show", f"{tip}:config.txt").stdout == RESOLVED
    assert sorted(merge.merged_tasks(run, tip)) == ["alpha", "conf-green", "conf-red"]
    results = [e["result"] for e in events.read_events(run.dir, event="merge_task") if e["task"] == "conf-green"]
    assert results == ["conflict", "merged"]
    assert [e["exit"] for e in events.read_events(run.dir, event="merge_tests")] == [0, 0, 0]
    # the task stays done for status: the resolver is not a task's agent
    assert [e["task"] for e in events.read_events(run.dir, event="spawn")] == []


def test_merge_hands_a_semantic_conflict_to_the_resolver_which_commits_a_fix(tmp_path, plugin_copy):
    run = merge_run.build(tmp_path, tasks=[t for t in merge_run.PLAN_TASKS if t[0] in ("rename", "use-greet")])
    with MessagesAPIServer(Script()) as api:
        proc = run_claude("/parallel:merge", cwd=run.project, plugin_dir=plugin_copy, api_url=api.url,
                          home=tmp_path / "home", extra_env={"NO_PROXY": "127.0.0.1", "no_proxy": "127.0.0.1"},
                          timeout=300)
        assert proc.returncode == 0, proc.stderr
        assert not api.errors, api.errors
        main_reqs = api.main_requests()
    outputs = [r for r in tool_results(main_reqs[-1]) if r["name"] == "Bash"]
    assert "a semantic conflict with rename (each merged alone with it: red)" in outputs[0]["content"]
    assert "Landed: main fast-forwarded" in outputs[1]["content"]
    tip = git(run.project, "rev-parse", "main").stdout.strip()
    assert sorted(merge.merged_tasks(run, tip)) == ["rename", "use-greet"]
    assert "hello" in git(run.project, "show", f"{tip}:banner.py").stdout
    assert [e["exit"] for e in events.read_events(run.dir, event="merge_tests")] == [0, 1, 0]

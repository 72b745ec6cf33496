"""``/parallel:merge`` with a conflict, end to end, in ``default`` permission mode.

The plugin installed from its marketplace, the real CLI, a finished local-mode run whose
tasks conf-red and conf-green both changed config.txt (tests/support/merge_run.py). A
scripted model plays the main agent, which follows /parallel:merge (runs the train, sends
the resolver's Agent call it prints, runs the train again), and the resolver, which reads
the conflicted file, writes both tasks' intent, stages it and looks at the diff, as its
prompt tells it, every Bash call as ``cd <integration worktree> && ...``.

With the opt-in on, none of the resolver's calls asks, and the second train lands green.
Without it, default mode refuses the resolver's Write (``-p`` cannot ask), and the train
stays stopped.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from parallel_setup import merge
from tests.support import merge_run
from tests.support.claude_cli import as_a_user, run_claude
from tests.support.git import git
from tests.support.messages_api import MessagesAPIServer, first_user_text, is_subagent, printed_agent_calls, \
    text, tool_results, tool_use

CONFLICT = [t for t in merge_run.PLAN_TASKS if t[0] in ("alpha", "conf-red", "conf-green")]
RESOLVED = "color=red-green\nsize=10\n"
WORKTREE_LINE = re.compile(r"^    (/\S+/worktrees/merge-\S+)$", re.M)


class Model:
    def __call__(self, req: dict):
        return self.resolver(req) if is_subagent(req) else self.main(req)

    def main(self, req: dict):
        results = tool_results(req)
        m = re.search(r'"([^"\n]*/scripts/parallel-setup)" merge', first_user_text(req))
        if not m:
            return [text("MAIN-CONFUSED")]
        train = [tool_use("Bash", {"command": f'"{m.group(1)}" merge --no-fetch', "description": "Merge train",
                                   "timeout": 600000})]
        if not results:
            return train
        last = results[-1]
        if last["name"] == "Bash" and '"subagent_type"' in last["content"]:  # stopped: the resolver's call
            calls = printed_agent_calls(last["content"])
            if calls and not any(r["name"] == "Agent" for r in results):
                return calls[-1:]
        if last["name"] == "Agent":
            return train  # the resolver finished: the train verifies its work and continues
        return [text("MAIN-DONE")]

    def resolver(self, req: dict):
        prompt = first_user_text(req)
        m = WORKTREE_LINE.search(prompt)
        if not m:
            return [text("RESOLVER-GOT-NO-WORKTREE: " + prompt[:500])]
        wt = m.group(1)
        steps = [("Read", {"file_path": f"{wt}/config.txt"}),
                 ("Write", {"file_path": f"{wt}/config.txt", "content": RESOLVED}),
                 ("Bash", {"command": f"cd {wt} && git add config.txt", "description": "Stage the resolution"}),
                 ("Bash", {"command": f"cd {wt} && git diff --cached --stat", "description": "What is staged"})]
        done = len(tool_results(req))
        if done < len(steps):
            return [tool_use(*steps[done])]
        run = re.search(r"\(run `([^`]+)`\)", prompt)
        report = {"parallel_merge_report": 1, "run": run.group(1) if run else None, "task": "conf-green",
                  "status": "resolved", "files": ["config.txt"], "summary": "kept red and green"}
        return [text(f"Resolved.\n```json\n{json.dumps(report)}\n```")]


def run_merge(tmp_path: Path, plugin_copy: Path, *, opt_in: bool):
    run = merge_run.build(tmp_path, tasks=CONFLICT)
    home = tmp_path / "home"
    as_a_user(plugin_copy, run.project, home, opt_in=opt_in)
    with MessagesAPIServer(Model()) as api:
        proc = run_claude("/parallel:merge --no-fetch", cwd=run.project, plugin_dir=None, api_url=api.url,
                          home=home, timeout=300, permission_mode="default")
        print(proc.stdout[-3000:], proc.stderr[-2000:])
        assert proc.returncode == 0, proc.stderr
        assert not api.errors, api.errors
        resolver = max((tool_results(r) for r in api.subagent_requests()), key=len, default=[])
        main = max((tool_results(r) for r in api.main_requests()), key=len, default=[])
    assert "MAIN-CONFUSED" not in proc.stdout and "RESOLVER-GOT-NO-WORKTREE" not in proc.stdout, proc.stdout
    return run, resolver, main


def test_with_the_opt_in_the_resolver_works_without_a_prompt_and_the_train_goes_green(tmp_path, plugin_copy):
    run, resolver, main = run_merge(tmp_path, plugin_copy, opt_in=True)
    assert [r["name"] for r in resolver] == ["Read", "Write", "Bash", "Bash"], resolver
    assert [r["is_error"] for r in resolver] == [False] * 4, resolver
    assert "config.txt" in resolver[3]["content"]  # the staged resolution
    assert [r["name"] for r in main] == ["Bash", "Agent", "Bash"], main
    assert '"subagent_type"' in main[0]["content"] and not main[2]["is_error"], main[2]["content"][-2000:]
    tip = git(run.project, "rev-parse", merge.integration_branch(run)).stdout.strip()
    assert git(run.project, "show", f"{tip}:config.txt").stdout == RESOLVED
    trailers = git(run.project, "log", "--format=%(trailers:key=Parallel-Task,valueonly)", tip).stdout.split()
    assert sorted(t.split("/", 1)[1] for t in trailers) == ["alpha", "conf-green", "conf-red"]


def test_without_the_opt_in_default_mode_refuses_the_resolvers_edit(tmp_path, plugin_copy):
    run, resolver, main = run_merge(tmp_path, plugin_copy, opt_in=False)
    assert resolver and resolver[0]["name"] == "Read" and not resolver[0]["is_error"]  # reading needs no approval
    write = resolver[1]
    assert write["name"] == "Write" and write["is_error"], write
    wt = merge.integration_worktree(run)
    assert "<<<<<<<" in (wt / "config.txt").read_text()  # untouched: the stop stays

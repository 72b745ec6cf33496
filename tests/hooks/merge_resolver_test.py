"""PreToolUse expands the merge resolver's short reference, as it does a task's."""

from __future__ import annotations

import pytest

from tests.hooks.conftest import fixture
from tests.support.runs import RUN_ID

RESOLVE = f".parallel/runs/{RUN_ID}/merge/resolve-beta.md"


def resolver_payload(prompt: str) -> dict:
    payload = fixture("background/PreToolUse-Agent.json")
    payload["tool_input"].update(prompt=prompt, description="resolve merge beta",
                                 subagent_type="parallel:parallel-merge-resolver")
    payload["tool_use_id"] = "toolu_r1"
    return payload


def test_pre_tool_use_expands_the_resolver_reference(hooks, project):
    path = project / RESOLVE
    path.parent.mkdir(parents=True)
    path.write_text("# Resolve the merge train's stop at task `beta`\n" + "y" * 3000 + "\n")
    payload = resolver_payload(f"Parallel merge: read {RESOLVE} and follow it exactly.")
    out = hooks.out("PreToolUse", payload)
    assert out["hookSpecificOutput"]["updatedInput"] == dict(payload["tool_input"], prompt=path.read_text())
    assert out["hookSpecificOutput"]["permissionDecision"] == "allow"
    [event] = hooks.events("merge_resolver")
    assert (event["task"], event["resolves"], event["tool_use_id"]) == (None, "beta", "toolu_r1")
    assert hooks.events("spawn") == []  # the task it resolves stays done


def test_a_missing_resolver_prompt_passes_through(hooks, project):
    payload = resolver_payload(f"Parallel merge: read {RESOLVE} and follow it exactly.")
    assert hooks.out("PreToolUse", payload) is None
    assert hooks.events("merge_resolver") == []


def test_a_symlinked_resolver_prompt_is_not_followed(hooks, project, tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_text("not for the model\n")
    path = project / RESOLVE
    path.parent.mkdir(parents=True)
    path.symlink_to(secret)
    payload = resolver_payload(f"Parallel merge: read {RESOLVE} and follow it exactly.")
    assert hooks.out("PreToolUse", payload) is None
    assert hooks.events("merge_resolver") == []


# -- with the opt-in, the resolver works in the integration worktree of its stop -----------------

RESOLVER = "parallel:parallel-merge-resolver"
RESOLVER_AGENT = "ab12cd34ef56ab78c"


def resolver_call(tool: str, tool_input: dict, agent_id: str = RESOLVER_AGENT) -> dict:
    payload = fixture("foreground/PreToolUse-Bash-in-subagent.json")
    payload.update(agent_id=agent_id, agent_type=RESOLVER, tool_name=tool, tool_input=tool_input,
                   permission_mode="default")
    return payload


def lifecycle(event: str, agent_id: str = RESOLVER_AGENT) -> dict:
    payload = fixture("foreground/SubagentStart.json" if event == "SubagentStart" else "foreground/SubagentStop.json")
    payload.update(agent_id=agent_id, agent_type=RESOLVER, hook_event_name=event)
    return payload


@pytest.fixture
def resolver(hooks, project):
    """merge stopped at beta: its prompt and scope written as `parallel-setup merge` writes them, the
    integration worktree made, the resolver spawned and started; the opt-in on."""
    import json
    from parallel_setup import cli
    from tests.support.git import git
    wt = project / "worktrees" / f"merge-{RUN_ID}"
    git(project, "worktree", "add", "-q", "--detach", str(wt), "HEAD")
    merge = project / ".parallel" / "runs" / RUN_ID / "merge"
    merge.mkdir(parents=True)
    (merge / "resolve-beta.md").write_text("# Resolve the merge train's stop at task `beta`\n")
    (merge / "resolve-beta.json").write_text(json.dumps(
        {"run": RUN_ID, "task": "beta", "worktree": str(wt), "branch": f"parallel/{RUN_ID}",
         "tests": ["python3 run_checks.py", "python3 -m pytest -q"]}))
    assert cli.main(["-C", str(project), "permissions", "on"]) == 0
    assert hooks.out("PreToolUse", resolver_payload(f"Parallel merge: read {RESOLVE} and follow it exactly."))
    assert hooks.out("SubagentStart", lifecycle("SubagentStart")) is None
    return wt


def bash_in(wt, rest: str) -> dict:
    import shlex
    return {"command": f"cd {shlex.quote(str(wt))} && {rest}", "description": "resolve"}


def verdict(out):
    return out["hookSpecificOutput"]["permissionDecision"] if out else None


@pytest.mark.parametrize("rest", [
    "git add config.txt", "git add -- config.txt src/a.py", "python3 run_checks.py",
    "python3 -m pytest -q", "git add config.txt && python3 run_checks.py",
    "git commit -am 'Fix: keep both settings'", "git commit -q -m 'Fix: both'",
    "git status --short", "git diff", "git diff --cached --stat",
    "git log -p main -- config.txt", f"git log -p main..feature/local-2 --stat", "git show HEAD:config.txt",
])
def test_the_resolvers_own_work_is_approved_in_the_integration_worktree(hooks, resolver, rest):
    out = hooks.out("PreToolUse", resolver_call("Bash", bash_in(resolver, rest)))
    assert out["hookSpecificOutput"] == {
        "hookEventName": "PreToolUse", "permissionDecision": "allow",
        "permissionDecisionReason": f"parallel: the merge resolver's work in the merge train's worktree of run {RUN_ID} (opt-in)"}


@pytest.mark.parametrize("rest", [
    f"git push origin parallel/{RUN_ID}", "git checkout main", "git reset --hard HEAD~1", "git merge --abort",
    "git log --output=/tmp/x", "git diff --ext-diff", "gh issue comment 2 --body done", "rm -rf .",
    "python3 run_checks.py; rm -rf ~", "git add ../../outside.txt", "make",
])
def test_anything_else_the_resolver_runs_gets_no_decision(hooks, resolver, rest):
    assert hooks.out("PreToolUse", resolver_call("Bash", bash_in(resolver, rest))) is None


def test_the_resolver_may_edit_inside_its_worktree_only(hooks, resolver, project, tmp_path):
    inside = resolver_call("Edit", {"file_path": str(resolver / "config.txt"), "old_string": "a", "new_string": "b"})
    assert verdict(hooks.out("PreToolUse", inside)) == "allow"
    for path in (project / "config.txt", resolver / ".git", project / "worktrees" / "task-1" / "a.txt",
                 tmp_path / "elsewhere.txt"):
        assert hooks.out("PreToolUse", resolver_call("Write", {"file_path": str(path), "content": "x"})) is None


def test_the_resolver_gets_nothing_after_it_stopped_or_without_the_opt_in(hooks, resolver, project):
    edit = resolver_call("Edit", {"file_path": str(resolver / "config.txt"), "old_string": "a", "new_string": "b"})
    other = resolver_call("Bash", bash_in(resolver, "git add config.txt"), agent_id="ffff0000ffff0000f")
    assert hooks.out("PreToolUse", other) is None  # a resolver that was never linked to this stop
    from parallel_setup import cli
    assert cli.main(["-C", str(project), "permissions", "off"]) == 0
    assert hooks.out("PreToolUse", edit) is None
    assert cli.main(["-C", str(project), "permissions", "on"]) == 0
    assert verdict(hooks.out("PreToolUse", edit)) == "allow"
    assert hooks.out("SubagentStop", lifecycle("SubagentStop")) is None
    assert hooks.out("PreToolUse", edit) is None
    assert hooks.events("agent_stop") == []  # a resolver is not a task's agent


def test_a_scope_that_names_another_worktree_is_not_trusted(hooks, resolver, project):
    import json
    scope = project / ".parallel" / "runs" / RUN_ID / "merge" / "resolve-beta.json"
    data = json.loads(scope.read_text())
    data["worktree"] = str(project / "worktrees" / "task-1")  # not the train's worktree
    (project / "worktrees" / "task-1").mkdir(parents=True)
    scope.write_text(json.dumps(data))
    edit = resolver_call("Edit", {"file_path": str(project / "worktrees" / "task-1" / "a.txt"),
                                  "old_string": "a", "new_string": "b"})
    assert hooks.out("PreToolUse", edit) is None
    data["worktree"] = str(project)  # the main checkout
    scope.write_text(json.dumps(data))
    assert hooks.out("PreToolUse", resolver_call("Edit", {"file_path": str(project / "x.txt"), "old_string": "a",
                                                          "new_string": "b"})) is None

"""PreToolUse expands the merge resolver's short reference, as it does a task's."""

from __future__ import annotations

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

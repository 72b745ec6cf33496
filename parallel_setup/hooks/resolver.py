"""The merge train's resolver subagent: expand its short reference, and know it while it works.

``parallel-setup merge`` writes ``.parallel/runs/<run>/merge/resolve-<task>.md`` (and, beside
it, ``resolve-<task>.json``: its worktree, branch and tests) when the train stops, and prints
an Agent call whose prompt names that file. PreToolUse swaps the file's content in, as
``spawn.py`` does for a task's ``prompt.md``, and leaves a ``resolver-pending`` marker; the
resolver's SubagentStart takes it (``resolver-<agent id>`` names the stop it resolves, which
is how the permission hook's opt-in knows its worktree), and its SubagentStop drops it.
"""

from __future__ import annotations

import os
import re

from .common import Ctx, safe_id

RESOLVER_REF = re.compile(r"\.parallel/runs/([A-Za-z0-9._-]+)/merge/(resolve-[A-Za-z0-9._-]+)\.md")


def expand_resolver(ctx: Ctx, tool_input: dict, prompt: str):
    """The merge resolver's reference: expanded like a task's, recorded as ``merge_resolver``
    (not ``spawn``: the task it resolves stays done)."""
    match = RESOLVER_REF.search(prompt)
    if not match:
        return None
    run, name = match.group(1), match.group(2)
    if not ctx.run_exists(run):
        return None
    run_dir = ctx.run_dir(run)
    path = os.path.join(run_dir, "merge", name + ".md")
    # Only the file merge wrote: no symlink on the way, its real path inside the run's folder.
    if any(os.path.islink(p) for p in (run_dir, os.path.dirname(path), path)) or \
            os.path.realpath(path) != os.path.join(os.path.realpath(run_dir), "merge", name + ".md"):
        return None
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
        with open(fd, encoding="utf-8") as f:
            full = f.read()
    except (OSError, UnicodeDecodeError):
        return None
    ctx.use_run(run)
    ctx.write_marker(run, "resolver-pending", "next", name)  # the next resolver to start resolves this stop
    ctx.record(run, "merge_resolver", None, tool_use_id=safe_id(ctx.get("tool_use_id")),
               resolves=name[len("resolve-"):], prompt_bytes=len(full.encode("utf-8")))
    updated = dict(tool_input)
    updated["prompt"] = full
    return {"hookSpecificOutput": {"hookEventName": "PreToolUse", "permissionDecision": "allow",
                                   "permissionDecisionReason": f"parallel: merge resolver of run {run}",
                                   "updatedInput": updated}}


def resolver_started(ctx: Ctx, agent_id: str) -> None:
    """SubagentStart of a resolver: it resolves the stop whose prompt was expanded last."""
    for run in ctx.run_ids():
        path = ctx.marker(run, "resolver-pending", "next")
        try:
            with open(path, encoding="utf-8") as f:
                name = f.read().strip()
            os.unlink(path)  # one resolver per expansion
        except OSError:
            continue
        if safe_id(name) and name.startswith("resolve-"):
            ctx.write_marker(run, "resolver", agent_id, name)
            ctx.use_run(run)
        return


def resolver_stopped(ctx: Ctx, agent_id: str) -> None:
    """SubagentStop of a resolver: nothing is approved for it any more."""
    found = ctx.find_marker("resolver", agent_id)
    if found is not None:
        ctx.drop_marker(found[0], "resolver", agent_id)

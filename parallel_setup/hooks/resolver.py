"""PreToolUse on Agent|Task, for the merge train's resolver: expand its short reference.

``parallel-setup merge`` writes ``.parallel/runs/<run>/merge/resolve-<task>.md`` when the train
stops and prints an Agent call whose prompt names that file; this swaps the file's content in,
as ``spawn.py`` does for a task's ``prompt.md``.
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
    ctx.record(run, "merge_resolver", None, tool_use_id=safe_id(ctx.get("tool_use_id")),
               resolves=name[len("resolve-"):], prompt_bytes=len(full.encode("utf-8")))
    updated = dict(tool_input)
    updated["prompt"] = full
    return {"hookSpecificOutput": {"hookEventName": "PreToolUse", "permissionDecision": "allow",
                                   "permissionDecisionReason": f"parallel: merge resolver of run {run}",
                                   "updatedInput": updated}}

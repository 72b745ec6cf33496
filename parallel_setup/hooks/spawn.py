"""PreToolUse on Agent|Task: expand the short spawn reference into the full prompt, record the spawn."""

from __future__ import annotations

import json
import re

from .common import AGENT_TOOLS, Ctx, read_text, safe_id
from .resolver import RESOLVER_REF, expand_resolver

PROMPT_REF = re.compile(r"\.parallel/runs/([A-Za-z0-9._-]+)/tasks/([A-Za-z0-9._-]+)/prompt\.md")
#: A short reference is about 130 bytes; anything much longer is a prompt written out in full.
MAX_REF = 1000


def pre_tool_use(ctx: Ctx):
    if ctx.get("tool_name") not in AGENT_TOOLS:
        return None
    tool_input = ctx.tool_input()
    prompt = tool_input.get("prompt")
    if not isinstance(prompt, str) or ".parallel/runs/" not in prompt:
        return None
    if RESOLVER_REF.search(prompt) and not PROMPT_REF.search(prompt) and len(prompt) <= MAX_REF:
        return expand_resolver(ctx, tool_input, prompt)  # the merge train's resolver (hooks/resolver.py)
    match = PROMPT_REF.search(prompt)
    if not match or len(prompt) > MAX_REF:
        return None  # not a short reference (a full prompt passes through untouched)
    run, task = match.group(1), match.group(2)
    # Only a task of the run, only its own prompt.md: no symlink on the way, its real path
    # inside the run's folder (a link could put any readable file into an allowed prompt).
    prompt_path = ctx.own_file(run, task, "prompt.md")
    if prompt_path is None:
        return None
    try:
        full = read_text(prompt_path, follow=False)  # a link swapped in after the check fails here
    except (OSError, UnicodeDecodeError):
        return None  # without the hook the subagent reads the file itself
    ctx.use_run(run)
    tool_use_id = safe_id(ctx.get("tool_use_id"))
    background = tool_input.get("run_in_background")
    if tool_use_id:
        ctx.write_marker(run, "spawn", tool_use_id, task)
    ctx.record(run, "spawn", task, tool_use_id=tool_use_id,
               background=True if background is None else bool(background),
               ref_bytes=len(json.dumps(tool_input, ensure_ascii=False).encode("utf-8")),
               prompt_bytes=len(full.encode("utf-8")))
    updated = dict(tool_input)
    updated["prompt"] = full
    return {"hookSpecificOutput": {"hookEventName": "PreToolUse", "permissionDecision": "allow",
                                   "permissionDecisionReason": f"parallel: task {task} of run {run}",
                                   "updatedInput": updated}}

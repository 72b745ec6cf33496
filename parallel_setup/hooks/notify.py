"""UserPromptSubmit: background completions arrive as ``<task-notification>`` turns.

For each notification about one of our agents: ingest its ``<result>`` if SubagentStop
did not, then hand the main agent the run summary as additionalContext.
"""

from __future__ import annotations

import re

from . import summary
from .common import Ctx, context, safe_id
from .report import ingest, locate, parse_report

NOTIFICATION_RE = re.compile(r"<task-notification>(.*?)</task-notification>", re.S)


def tag(block: str, name: str) -> str | None:
    m = re.search(rf"<{name}>(.*?)</{name}>", block, re.S)
    return m.group(1).strip() if m else None


def user_prompt_submit(ctx: Ctx):
    prompt = ctx.get("prompt")
    if not prompt or "<task-notification>" not in prompt:
        return None
    ended: dict[str, list[str]] = {}
    for block in NOTIFICATION_RE.findall(prompt):
        agent_id = safe_id(tag(block, "task-id"))
        result = tag(block, "result") or ""
        found = ctx.find_agent(agent_id) if agent_id else None
        if found is None or found[1] is None:
            spawn = ctx.find_marker("spawn", safe_id(tag(block, "tool-use-id")))
            found = spawn or locate(ctx, agent_id, parse_report(result)[0], result)
        if found is None or found[1] is None:
            continue
        run, task = found
        ctx.use_run(run)
        ingest(ctx, run, task, agent_id, result, via="UserPromptSubmit")
        ctx.record(run, "notified", task, via="UserPromptSubmit", agent_id=agent_id, status=tag(block, "status"))
        ended.setdefault(run, []).append(task)
    if not ended:
        return None
    text = "\n\n".join(summary.run_summary(ctx.project, run, tasks) for run, tasks in ended.items())
    return context("UserPromptSubmit", text)

"""SubagentStart records the start; SubagentStop ingests the completion report.

SubagentStop's output goes to the SUBAGENT, never to the main agent, and makes it
continue: so it adds no context and does not block, except one deliberate gate.
When the report is missing it blocks ONCE, asking for the report; a marker on disk
(and ``stop_hook_active``) makes sure it never blocks that agent again.
"""

from __future__ import annotations

import os

from .common import AGENT_TYPE, RESOLVER_TYPE, Ctx, safe_id


def subagent_start(ctx: Ctx):
    agent_id = safe_id(ctx.get("agent_id"))
    if agent_id is None:
        return None
    agent_type = ctx.get("agent_type") or ""
    if RESOLVER_TYPE in agent_type:
        from .resolver import resolver_started
        return resolver_started(ctx, agent_id)
    known = ctx.find_agent(agent_id)
    if known is not None:
        run, task = known
    else:
        if AGENT_TYPE not in agent_type:
            return None
        run, task = ctx.active_run(), None
        if run is None:
            return None
        ctx.claim_marker(run, "agent", agent_id, "")  # never overwrites a task the launch linked
    ctx.use_run(run)
    ctx.record(run, "agent_start", task, agent_id=agent_id, agent_type=agent_type)
    return None


def subagent_stop(ctx: Ctx):
    from .report import ingest, locate, parse_report, transcript_head
    agent_id = safe_id(ctx.get("agent_id"))
    if agent_id and RESOLVER_TYPE in (ctx.get("agent_type") or ""):
        from .resolver import resolver_stopped
        return resolver_stopped(ctx, agent_id)
    text = ctx.get("last_assistant_message") or ""
    known = ctx.find_agent(agent_id) if agent_id else None
    report, problem = parse_report(text)
    if known is None and report is None and AGENT_TYPE not in (ctx.get("agent_type") or ""):
        return None
    found = locate(ctx, agent_id, report, text)
    if found is None:
        found = ctx.ref_in(transcript_head(ctx.get("agent_transcript_path")))
    if found is None:
        return None
    run, task = found
    ctx.use_run(run)
    if agent_id and not (known and known[1]):
        ctx.write_marker(run, "agent", agent_id, task)
    if os.path.exists(ctx.marker(run, "ended", task)):
        return None  # a resumed agent stopping again: its end is already recorded
    if report is None and ctx.payload.get("stop_hook_active") is not True \
            and ctx.claim_marker(run, "blocked", agent_id or task, "SubagentStop"):
        ctx.record(run, "agent_stop", task, agent_id=agent_id, report_ok=False, report_error=problem,
                   gate="asked for the report")
        prompt = f".parallel/runs/{run}/tasks/{task}/prompt.md"
        return {"decision": "block",
                "reason": (f"parallel: your completion report is missing ({problem}). End your final "
                           "message with the fenced ```json block holding \"parallel_report\": 1 and the "
                           f"fields your instructions list (see the completion report section of {prompt}). "
                           "If you could not finish, report \"status\": \"failed\" with the reason. "
                           "Reply with the report only; do not redo any work.")}
    ctx.record(run, "agent_stop", task, agent_id=agent_id, report_ok=report is not None, report_error=problem)
    from .permissions import record_denials
    record_denials(ctx, run, task, agent_id, ctx.get("agent_transcript_path"), text)  # before the verdict
    ingest(ctx, run, task, agent_id, text, via="SubagentStop")
    return None

"""PostToolUse on Agent|Task: a background launch links the agent to its task; a foreground
completion ingests the report and returns the run summary to the main agent."""

from __future__ import annotations

from .common import AGENT_TOOLS, Ctx, context, safe_id


def post_tool_use(ctx: Ctx):
    if ctx.get("tool_name") not in AGENT_TOOLS:
        return None
    response = ctx.payload.get("tool_response")
    if not isinstance(response, dict):
        return None
    status = response.get("status")
    agent_id = safe_id(response.get("agentId"))
    tool_use_id = safe_id(ctx.get("tool_use_id"))
    found = ctx.find_marker("spawn", tool_use_id) if tool_use_id else None
    if found is None:
        found = ctx.ref_in(ctx.tool_input().get("prompt")) or ctx.ref_in(response.get("prompt"))
    if status == "async_launched":
        if found is None or agent_id is None:
            return None
        run, task = found
        ctx.use_run(run)
        ctx.write_marker(run, "agent", agent_id, task)
        output = response.get("outputFile")  # grows while the agent works: its sign of life
        ctx.record(run, "agent_launched", task, tool_use_id=tool_use_id, agent_id=agent_id,
                   output_file=output if isinstance(output, str) and output else None)
        return None
    if status != "completed":
        return None
    from . import summary  # only a completion needs these (keeps the launch path fast)
    from .report import ingest, locate, parse_report
    text = final_text(response.get("content"))
    if found is None:
        found = locate(ctx, agent_id, parse_report(text)[0], text)
        if found is None:
            return None
    run, task = found
    ctx.use_run(run)
    if agent_id:
        ctx.write_marker(run, "agent", agent_id, task)
    ingest(ctx, run, task, agent_id, text, via="PostToolUse")
    ctx.record(run, "notified", task, via="PostToolUse", agent_id=agent_id)
    return context("PostToolUse", summary.run_summary(ctx.project, run, [task]))


def final_text(content) -> str:
    """The subagent's final text from ``tool_response.content`` (a list of text blocks, or a string)."""
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        return ""
    parts = [block.get("text") for block in content
             if isinstance(block, dict) and block.get("type") == "text" and isinstance(block.get("text"), str)]
    return "\n".join(parts)

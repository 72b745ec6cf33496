"""Stop (the main agent ends a turn): record which of the run's tasks are still running. Never blocks."""

from __future__ import annotations

from .. import status
from .common import Ctx, safe_id


def stop(ctx: Ctx):
    run = ctx.active_run()
    if run is None:
        return None
    state = status.load_run(ctx.project, run)
    running = [t.id for t in state.tasks if t.state == "running"]
    if not running:
        return None
    ctx.use_run(run)
    background = ctx.payload.get("background_tasks")
    ours = []
    for item in background if isinstance(background, list) else []:
        agent_id = safe_id(item.get("id")) if isinstance(item, dict) else None
        if agent_id and ctx.find_agent(agent_id):
            ours.append(agent_id)
    ctx.record(run, "main_stop", None, running=running, background_agents=ours)
    return None

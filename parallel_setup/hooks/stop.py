"""Stop (the main agent ends a turn): record which of the run's tasks are still running. Never blocks.

Its cost does not grow with the event log (the Stop hook runs on every turn, and a long
run's log can reach gigabytes): the tasks still running are those whose spawn marker has
no ``ended-<task>`` marker, read from the run's ``hooks/`` folder, never from the log.
"""

from __future__ import annotations

import os

from .common import Ctx, safe_id


def open_tasks(ctx: Ctx, run: str) -> list:
    """Tasks spawned in this run whose end the hooks have not recorded, in spawn-marker order."""
    folder = os.path.join(ctx.run_dir(run), "hooks")
    try:
        names = sorted(os.listdir(folder))
    except OSError:
        return []
    ended = {name[len("ended-"):] for name in names if name.startswith("ended-")}
    tasks = ctx.run_tasks(run)
    spawned = []
    for name in names:
        if not name.startswith("spawn-"):
            continue
        try:
            with open(os.path.join(folder, name), encoding="utf-8") as f:
                task = f.read(256).strip()
        except (OSError, UnicodeDecodeError):
            continue
        if task in tasks and task not in ended and task not in spawned:
            spawned.append(task)
    return [t for t in tasks if t in spawned]


def stop(ctx: Ctx):
    run = ctx.active_run()
    if run is None:
        return None
    running = open_tasks(ctx, run)
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

"""Hook handlers, one module per concern (standard library only).

``scripts/hook.py`` calls :func:`handle` once it knows the payload belongs to a
project with parallel runs. Each handler returns the JSON object to print
(``None`` prints nothing).
"""

from __future__ import annotations

#: event -> (module, function)
HANDLERS = {
    "PreToolUse": ("spawn", "pre_tool_use"),
    "PostToolUse": ("launch", "post_tool_use"),
    "SubagentStart": ("subagent", "subagent_start"),
    "SubagentStop": ("subagent", "subagent_stop"),
    "UserPromptSubmit": ("notify", "user_prompt_submit"),
    "Stop": ("stop", "stop"),
}


#: PreToolUse of every other tool (Bash, Read, Edit, Write...): parallel's permission decisions.
PERMISSIONS = ("permissions", "pre_tool_use")


def handle(event: str, payload: dict, project: str):
    target = HANDLERS.get(event)
    if event == "PreToolUse" and payload.get("tool_name") not in ("Agent", "Task"):
        target = PERMISSIONS
    if target is None:
        return None
    from .common import Ctx
    # ``from .<module> import <function>``, without importing importlib (each import costs every hook call)
    module = __import__(target[0], globals(), None, [target[1]], 1)
    return getattr(module, target[1])(Ctx(event, payload, project))

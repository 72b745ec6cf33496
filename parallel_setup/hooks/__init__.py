"""Hook handlers, one module per concern (standard library only).

``scripts/hook.py`` calls :func:`handle` once it knows the payload belongs to a
project with parallel runs. Each handler returns the JSON object to print
(``None`` prints nothing).
"""

from __future__ import annotations

import importlib

#: event -> (module, function)
HANDLERS = {
    "PreToolUse": ("spawn", "pre_tool_use"),
    "PostToolUse": ("launch", "post_tool_use"),
    "SubagentStart": ("subagent", "subagent_start"),
    "SubagentStop": ("subagent", "subagent_stop"),
    "UserPromptSubmit": ("notify", "user_prompt_submit"),
    "Stop": ("stop", "stop"),
}


def handle(event: str, payload: dict, project: str):
    target = HANDLERS.get(event)
    if target is None:
        return None
    from .common import Ctx
    module = importlib.import_module(f".{target[0]}", __name__)
    return getattr(module, target[1])(Ctx(event, payload, project))

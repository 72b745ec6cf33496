"""PreToolUse(Agent) test hook: prefix the subagent prompt, record env in the project dir."""
import json
import os
import sys

payload = json.load(sys.stdin)
project = os.environ.get("CLAUDE_PROJECT_DIR") or payload.get("cwd") or "."
record = {k: v for k, v in os.environ.items() if k.startswith("CLAUDE")}
record["_cwd"] = os.getcwd()
with open(os.path.join(project, "toy-hook-env.json"), "w") as f:
    json.dump(record, f)
tool_input = dict(payload.get("tool_input") or {})
tool_input["prompt"] = "TOY-HOOK-PREFIX " + tool_input.get("prompt", "")
print(json.dumps({"hookSpecificOutput": {"hookEventName": "PreToolUse",
                                         "permissionDecision": "allow",
                                         "updatedInput": tool_input}}))

#!/usr/bin/env python3
"""The one entry point of every parallel hook: ``hook.py EVENT`` with the payload on stdin.

Standard library only. It must never break the user's session:

* ``PARALLEL_DISABLE=1`` turns every hook off;
* empty, invalid, oversized or unexpected input exits 0, printing nothing, once it has
  read stdin to its end (so the writer never gets EPIPE, whatever the input or setting);
* a project without ``.parallel/runs`` is not ours: exit 0 before importing anything;
* any error exits 0; the traceback goes to a log (the run's folder, else
  ``$CLAUDE_PLUGIN_DATA``, else the temp folder) and the user (never the model)
  is told once, through ``systemMessage``.

The package is found from this file's own location, never from a folder name
(Claude Code installs plugins into version-named cache folders).
"""

import json
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.realpath(__file__)))
EVENTS = ("PreToolUse", "PostToolUse", "SubagentStart", "SubagentStop", "UserPromptSubmit", "Stop")
MAX_INPUT = 4 * 1024 * 1024
RUNS = os.path.join(".parallel", "runs")


def find_project(payload):
    """The folder holding ``.parallel/runs``: from the payload's cwd upwards, or CLAUDE_PROJECT_DIR."""
    starts = []
    cwd = payload.get("cwd")
    if isinstance(cwd, str) and cwd:
        starts.append(cwd)
    env_dir = os.environ.get("CLAUDE_PROJECT_DIR")
    if env_dir:
        starts.append(env_dir)
    for start in starts:
        path = os.path.abspath(start)
        for _ in range(64):
            if os.path.isdir(os.path.join(path, RUNS)):
                return path
            parent = os.path.dirname(path)
            if parent == path:
                break
            path = parent
    return None


def read_stdin(keep):
    """The first ``keep`` bytes of stdin, reading (and dropping) the rest to its end.

    Every path drains stdin, so Claude Code, writing the payload, never gets EPIPE."""
    kept, size = [], 0
    try:
        stream = sys.stdin.buffer
        while True:
            chunk = stream.read(1 << 16)
            if not chunk:
                break
            if size < keep:
                kept.append(chunk[:keep - size])
            size += len(chunk)
    except (OSError, ValueError, AttributeError):
        pass
    return b"".join(kept), size


def main(argv):
    disabled = os.environ.get("PARALLEL_DISABLE", "").strip() not in ("", "0")
    event = argv[1] if len(argv) > 1 else ""
    raw, size = read_stdin(0 if disabled or event not in EVENTS else MAX_INPUT)
    if disabled or event not in EVENTS or not raw or size > MAX_INPUT:
        return 0
    try:
        payload = json.loads(raw)
    except ValueError:
        return 0
    if not isinstance(payload, dict):
        return 0
    project = None
    try:
        project = find_project(payload)
        if project is None:
            return 0
        sys.path.insert(0, ROOT)
        from parallel_setup.hooks import handle
        out = handle(event, payload, project)
    except BaseException as exc:  # noqa: BLE001 - fail open, whatever happened
        if isinstance(exc, SystemExit):
            return 0
        out = failed(event, exc, project, payload)
    if out:
        try:
            sys.stdout.write(json.dumps(out))
            sys.stdout.flush()
        except (OSError, ValueError):
            pass
    return 0


def failed(event, exc, project, payload):
    """Log the error; the first time (per log folder and session) return a systemMessage."""
    try:
        sys.path.insert(0, ROOT)
        from parallel_setup.hooks.errors import report_failure
        return report_failure(event, exc, project, payload)
    except BaseException:  # noqa: BLE001 - even the error path fails open
        return None


if __name__ == "__main__":
    try:
        code = main(sys.argv)
    except BaseException:  # noqa: BLE001
        code = 0
    sys.exit(code)

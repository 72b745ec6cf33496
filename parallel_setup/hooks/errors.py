"""Failing open, but loudly: log the traceback and tell the user once per session."""

from __future__ import annotations

import os
import re
import tempfile
import time
import traceback
from pathlib import Path

from .common import CURRENT

LOG_NAME = "hook-errors.log"


def _log_dirs(project) -> list[Path]:
    dirs = []
    if CURRENT.get("run_dir"):
        dirs.append(Path(CURRENT["run_dir"]))
    if os.environ.get("CLAUDE_PLUGIN_DATA"):
        dirs.append(Path(os.environ["CLAUDE_PLUGIN_DATA"]))
    dirs.append(Path(tempfile.gettempdir()) / "parallel-setup")
    return dirs


def report_failure(event: str, exc: BaseException, project, payload) -> dict | None:
    """Append the error to the first writable log; a systemMessage the first time only."""
    text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    session = payload.get("session_id") if isinstance(payload, dict) else None
    session = re.sub(r"[^A-Za-z0-9_-]", "", session)[:64] if isinstance(session, str) else ""
    for folder in _log_dirs(project):
        log = folder / LOG_NAME
        try:
            folder.mkdir(parents=True, exist_ok=True)
            with open(log, "a", encoding="utf-8") as f:
                f.write(f"--- {time.strftime('%Y-%m-%dT%H:%M:%S')} {event} project={project}\n{text}")
        except OSError:
            continue
        _record_event(event, exc)
        try:
            fd = os.open(folder / f".notified-{session or 'nosession'}", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            os.close(fd)
        except OSError:
            return None  # told already (or cannot remember telling: stay quiet)
        return {"systemMessage": f"parallel: the {event} hook failed ({type(exc).__name__}: {exc}); "
                                 f"your session is unaffected. Details in {log}. "
                                 "Set PARALLEL_DISABLE=1 to turn the parallel hooks off."}
    return None


def _record_event(event: str, exc: BaseException) -> None:
    run_dir = CURRENT.get("run_dir")
    if not run_dir:
        return
    try:
        from .. import events
        events.append_event(Path(run_dir), "hook_error", task=None,
                            hook=event, error=f"{type(exc).__name__}: {exc}"[:500])
    except Exception:  # noqa: BLE001
        pass

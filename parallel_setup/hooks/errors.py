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


def _stable_dirs() -> list[Path]:
    """Folders that outlive any run: the plugin's data folder, else the temp folder."""
    dirs = []
    if os.environ.get("CLAUDE_PLUGIN_DATA"):
        dirs.append(Path(os.environ["CLAUDE_PLUGIN_DATA"]))
    dirs.append(Path(tempfile.gettempdir()) / "parallel-setup")
    return dirs


def _log_dirs(project) -> list[Path]:
    run_dir = CURRENT.get("run_dir")
    # The run's folder only while it exists: never recreate a folder the user deleted.
    return ([Path(run_dir)] if run_dir and os.path.isdir(run_dir) else []) + _stable_dirs()


def _first_notice(session: str) -> bool | None:
    """True the first time per session (the marker lives outside every run, so deleting a
    run folder does not make the message come again); None when nothing can remember it."""
    for folder in _stable_dirs():
        try:
            folder.mkdir(parents=True, exist_ok=True)
            fd = os.open(folder / f".notified-{session or 'nosession'}", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            return False
        except OSError:
            continue
        os.close(fd)
        return True
    return None


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
        if not _first_notice(session):
            return None  # told already (or cannot remember telling: stay quiet)
        return {"systemMessage": f"parallel: the {event} hook failed ({type(exc).__name__}: {exc}); "
                                 f"your session is unaffected. Details in {log}. "
                                 "Set PARALLEL_DISABLE=1 to turn the parallel hooks off."}
    return None


def _record_event(event: str, exc: BaseException) -> None:
    run_dir = CURRENT.get("run_dir")
    if not run_dir or not os.path.isdir(run_dir):
        return
    try:
        from .. import events
        events.append_event(Path(run_dir), "hook_error", task=None,
                            hook=event, error=f"{type(exc).__name__}: {exc}"[:500])
    except Exception:  # noqa: BLE001
        pass

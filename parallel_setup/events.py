"""The run's event log: ``.parallel/runs/<run>/events.jsonl``, one JSON object a line.

Writers append each line with a single ``write()`` on an ``O_APPEND`` descriptor, so
lines from concurrent writers (setup scripts, hooks, the CLI) never interleave. Readers
skip lines that do not parse (a writer killed mid-line, a hand edit).

Every event has ``t`` (Unix time, float seconds), ``event``, ``run`` and ``task`` (or
None); the other fields depend on the event (see docs/architecture.md).

Standard library only: the hooks import this module. It imports no ``pathlib`` and no
``typing`` (plain ``os.path`` on ``str`` or ``os.PathLike`` folders): every hook pays for
each module it imports, and a hook runs on every tool call of a session.
"""

from __future__ import annotations

import json
import os
import time

EVENTS_FILENAME = "events.jsonl"


def _file(run_dir) -> str:
    return os.path.join(os.fspath(run_dir), EVENTS_FILENAME)


def run_id_of(run_dir) -> str:
    """The folder's name, as ``Path(run_dir).name`` gives it (trailing ``/`` and ``.`` parts ignored)."""
    parts = [p for p in os.fspath(run_dir).split(os.sep) if p not in ("", ".")]
    return parts[-1] if parts else ""


def events_path(run_dir: str | os.PathLike[str]):
    """``run_dir/events.jsonl`` as a ``pathlib.Path``."""
    from pathlib import Path
    return Path(_file(run_dir))


def format_event(run_id: str, event: str, task: str | None = None, t: float | None = None,
                 **fields) -> str:
    """One event as its JSON line (with the trailing newline)."""
    record = {"t": round(time.time() if t is None else t, 6), "event": event, "run": run_id, "task": task}
    for key, value in fields.items():
        if key not in record:
            record[key] = value
    return json.dumps(record, ensure_ascii=False, default=str, separators=(",", ":")) + "\n"


def append_event(run_dir: str | os.PathLike[str], event: str, *, task: str | None = None,
                 t: float | None = None, **fields) -> dict:
    """Append one event to ``run_dir/events.jsonl`` and return it as a dict.

    The run id is the folder's name. The line is written with one ``os.write`` on an
    ``O_APPEND`` descriptor: concurrent writers never interleave within a line.
    """
    line = format_event(run_id_of(run_dir), event, task=task, t=t, **fields)
    data = line.encode("utf-8")
    fd = os.open(_file(run_dir), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        written = os.write(fd, data)
        if written != len(data):  # practically never for a short line on a local disk
            os.write(fd, data[written:])
    finally:
        os.close(fd)
    return json.loads(line)


def iter_events(run_dir: str | os.PathLike[str]):
    """Events (dicts) in file order; lines that are not a JSON object are skipped."""
    try:
        f = open(_file(run_dir), "rb")
    except OSError:
        return
    with f:
        for raw in f:
            try:
                record = json.loads(raw.decode("utf-8"))
            except (UnicodeDecodeError, ValueError):
                continue
            if isinstance(record, dict) and "event" in record:
                yield record


def read_events(run_dir: str | os.PathLike[str], event: str | None = None, task: str | None = None) -> list[dict]:
    """All events (optionally only one kind and/or one task), skipping bad lines."""
    out = []
    for record in iter_events(run_dir):
        if event is not None and record.get("event") != event:
            continue
        if task is not None and record.get("task") != task:
            continue
        out.append(record)
    return out

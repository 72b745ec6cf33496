"""The run's event log: ``.parallel/runs/<run>/events.jsonl``, one JSON object a line.

Writers append each line with a single ``write()`` on an ``O_APPEND`` descriptor, so
lines from concurrent writers (setup scripts, hooks, the CLI) never interleave. Readers
skip lines that do not parse (a writer killed mid-line, a hand edit).

Every event has ``t`` (Unix time, float seconds), ``event``, ``run`` and ``task`` (or
None); the other fields depend on the event (see docs/architecture.md).

Standard library only: the hooks import this module.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any, Iterator, List, Optional, Union

EVENTS_FILENAME = "events.jsonl"

PathLike = Union[str, "os.PathLike[str]"]


def events_path(run_dir: PathLike) -> Path:
    return Path(run_dir) / EVENTS_FILENAME


def format_event(run_id: str, event: str, task: Optional[str] = None, t: Optional[float] = None,
                 **fields: Any) -> str:
    """One event as its JSON line (with the trailing newline)."""
    record = {"t": round(time.time() if t is None else t, 6), "event": event, "run": run_id, "task": task}
    for key, value in fields.items():
        if key not in record:
            record[key] = value
    return json.dumps(record, ensure_ascii=False, default=str, separators=(",", ":")) + "\n"


def append_event(run_dir: PathLike, event: str, *, task: Optional[str] = None,
                 t: Optional[float] = None, **fields: Any) -> dict:
    """Append one event to ``run_dir/events.jsonl`` and return it as a dict.

    The run id is the folder's name. The line is written with one ``os.write`` on an
    ``O_APPEND`` descriptor: concurrent writers never interleave within a line.
    """
    run_dir = Path(run_dir)
    line = format_event(run_dir.name, event, task=task, t=t, **fields)
    data = line.encode("utf-8")
    fd = os.open(events_path(run_dir), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        written = os.write(fd, data)
        if written != len(data):  # practically never for a short line on a local disk
            os.write(fd, data[written:])
    finally:
        os.close(fd)
    return json.loads(line)


def iter_events(run_dir: PathLike) -> Iterator[dict]:
    """Events in file order; lines that are not a JSON object are skipped."""
    try:
        f = open(events_path(run_dir), "rb")
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


def read_events(run_dir: PathLike, event: Optional[str] = None, task: Optional[str] = None) -> List[dict]:
    """All events (optionally only one kind and/or one task), skipping bad lines."""
    out = []
    for record in iter_events(run_dir):
        if event is not None and record.get("event") != event:
            continue
        if task is not None and record.get("task") != task:
            continue
        out.append(record)
    return out

"""The run's event log: ``.parallel/runs/<run>/events.jsonl``, one JSON object a line.

Writers append each line with a single ``write()`` on an ``O_APPEND`` descriptor, so
lines from concurrent writers (setup scripts, hooks, the CLI) never interleave. Readers
skip lines that do not parse (a writer killed mid-line, a hand edit) and records whose
fields have the wrong type (``"t": null``, ``"t": 1e999``, a string where a number
belongs: see :func:`well_typed`), so no reader ever trips over one bad line.

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

_NUMBER = "number"  # a finite int or float, never a bool
_NONE = type(None)
#: The type every reader relies on, for the fields that have one; a record whose field has
#: another type is dropped whole. ``None`` is allowed wherever the tuple lists ``_NONE``.
FIELD_TYPES = {
    "event": (str,), "run": (str, _NONE), "task": (str, _NONE),
    "wave": (list,), "number": (int, _NONE), "agent_id": (str, _NONE), "tool_use_id": (str, _NONE),
    "output_file": (str, _NONE), "step": (str, _NONE), "ok": (bool, _NONE), "status": (str, _NONE),
    "state": (str, _NONE), "reason": (str, _NONE), "log": (str, _NONE), "via": (str, _NONE),
    "issue": (int, str, _NONE), "issue_url": (str, _NONE), "branch": (str, _NONE),
    "worktree": (str, _NONE), "failed_claims": (list, _NONE), "notes": (list, _NONE),
    "facts": (dict, _NONE), "seconds": (_NUMBER, dict, _NONE), "attempt": (int, _NONE),
    "rate_remaining": (int, _NONE), "lease": (_NUMBER, _NONE),
}


#: Larger numbers are no time or duration (and a 400-digit int would overflow ``float()``).
_MAX_NUMBER = 1e15


def _finite(value) -> bool:
    """An int or float of plausible size: not a bool, not infinite, not NaN (NaN compares false)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and abs(value) <= _MAX_NUMBER


def _typed(value, kinds) -> bool:
    for kind in kinds:
        if kind is _NUMBER:
            if _finite(value):
                return True
        elif kind is int:
            if isinstance(value, int) and not isinstance(value, bool):
                return True
        elif isinstance(value, kind):
            return True
    return False


def well_typed(record) -> bool:
    """True when ``record`` is an event every reader can use: ``t`` a finite number, ``event``
    a string, and each field of :data:`FIELD_TYPES` of its type (a ``seconds`` mapping holds
    finite numbers, a ``wave`` holds task ids)."""
    if not isinstance(record, dict) or not _finite(record.get("t")) or not isinstance(record.get("event"), str):
        return False
    for key, kinds in FIELD_TYPES.items():
        if key in record and not _typed(record[key], kinds):
            return False
    seconds = record.get("seconds")
    if isinstance(seconds, dict) and not all(v is None or _finite(v) for v in seconds.values()):
        return False
    wave = record.get("wave")
    return not isinstance(wave, list) or all(isinstance(x, str) for x in wave)


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
    """Events (dicts) in file order; lines that are not a well-typed JSON object are skipped."""
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
            if well_typed(record):
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

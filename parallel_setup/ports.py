"""Per-task runtime isolation: a leased block of ports and a database name, unique on the machine.

Parallel tasks that each start a dev server or a test database would collide on the
same port and the same database name. Every task of a run gets, while the run lives:

* a block of ``BLOCK_SIZE`` consecutive TCP ports (``PARALLEL_PORT`` is its first,
  also exported as ``PORT``; ``PARALLEL_PORTS`` lists them all, space-separated;
  ``PARALLEL_PORT_FIRST``/``PARALLEL_PORT_LAST`` bound it);
* a database (or schema) name, ``PARALLEL_DB_NAME``: ``par_<task>_<block>``,
  lowercase letters, digits and ``_`` only, at most 63 characters (PostgreSQL's limit),
  unique because the block is.

The lease is a file per block in a per-user folder (``$XDG_RUNTIME_DIR/parallel-ports``,
else ``~/.cache/parallel/ports``): ``block-<i>.lease``, created with O_EXCL, so two
tasks never get the same block even when they start in the same millisecond, in the
same project or in different ones. It holds the project, run and task it belongs to.
A lease whose run folder is gone (the run was cleaned up, or its project deleted) is
stale: the next lease takes it over. A block whose first port something else already
listens on is skipped. ``release_run(project, run_id)`` (cleanup calls it) removes a
run's leases.

``lease_task`` runs when ``execute`` renders a task (its prompt names the ports); the
values go into the task's ``ports.env`` (``KEY=VALUE`` lines: ``set -a; . ports.env``),
its setup script exports them to the environment step, and its prompt names them.
Standard library only.
"""

from __future__ import annotations

import json
import os
import re
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional

FIRST_PORT = 20000
BLOCK_SIZE = 10
BLOCKS = 4000  # 20000-59999: below the usual ephemeral range (Linux starts it at 32768, but
#                a block that is in use is skipped, so the overlap costs nothing)
ENV_FILENAME = "ports.env"


@dataclass(frozen=True)
class Lease:
    block: int
    project: str
    run_id: str
    task_id: str

    @property
    def first(self) -> int:
        return FIRST_PORT + self.block * BLOCK_SIZE

    @property
    def last(self) -> int:
        return self.first + BLOCK_SIZE - 1

    @property
    def ports(self) -> List[int]:
        return list(range(self.first, self.last + 1))

    @property
    def db_name(self) -> str:
        task = re.sub(r"[^a-z0-9_]+", "_", self.task_id.lower()).strip("_")[:40] or "task"
        return f"par_{task}_{self.block}"

    def env(self) -> Dict[str, str]:
        """The variables a task's commands get (documented in the README)."""
        return {"PARALLEL_PORT": str(self.first), "PORT": str(self.first),
                "PARALLEL_PORT_FIRST": str(self.first), "PARALLEL_PORT_LAST": str(self.last),
                "PARALLEL_PORTS": " ".join(str(p) for p in self.ports),
                "PARALLEL_DB_NAME": self.db_name}


def lease_dir() -> Path:
    """The per-user folder of leases (shared by every project of this user on this machine)."""
    override = os.environ.get("PARALLEL_PORTS_DIR")
    if override:
        return Path(override)
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if runtime and os.path.isdir(runtime) and os.access(runtime, os.W_OK):
        return Path(runtime) / "parallel-ports"
    return Path.home() / ".cache" / "parallel" / "ports"


def _lease_path(block: int) -> Path:
    return lease_dir() / f"block-{block}.lease"


def _read(path: Path) -> Optional[Lease]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return Lease(int(path.stem.split("-")[1]), data["project"], data["run"], data["task"])
    except (OSError, ValueError, KeyError, IndexError, TypeError):
        return None


def _run_dir(project: str, run_id: str) -> Path:
    from .paths import STATE_DIRNAME
    return Path(project) / STATE_DIRNAME / "runs" / run_id


def _stale(path: Path) -> bool:
    """A lease nobody holds: its run folder is gone, or it is unreadable and older than a minute."""
    lease = _read(path)
    if lease is None:
        try:
            return time.time() - path.stat().st_mtime > 60  # a lease being written is never empty for long
        except FileNotFoundError:
            return False
    return not _run_dir(lease.project, lease.run_id).is_dir()


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def leases() -> List[Lease]:
    """Every lease held now (readable ones), by block."""
    folder = lease_dir()
    if not folder.is_dir():
        return []
    found = [_read(p) for p in sorted(folder.glob("block-*.lease"))]
    return sorted((l for l in found if l is not None), key=lambda l: l.block)


def find(project: Path, run_id: str, task_id: str) -> Optional[Lease]:
    project_s = str(Path(project).resolve())
    return next((l for l in leases() if (l.project, l.run_id, l.task_id) == (project_s, run_id, task_id)), None)


def from_env_file(path: Path, project: Path, run_id: str, task_id: str) -> Optional[Lease]:
    """The lease a task's ``ports.env`` records (its one record: no scan of the lease folder)."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError:
        return None
    m = re.search(r"^PARALLEL_PORT='(\d+)'$", text, re.M)
    if not m or (int(m.group(1)) - FIRST_PORT) % BLOCK_SIZE:
        return None
    return Lease((int(m.group(1)) - FIRST_PORT) // BLOCK_SIZE, str(Path(project).resolve()), run_id, task_id)


def lease_task(project: Path, run_id: str, task_id: str, env_file: Optional[Path] = None) -> Lease:
    """The task's lease: the one it holds already, else a new block (atomic, O_EXCL).

    ``env_file``: the task's ``ports.env``; the block it names is checked in the lease
    folder, instead of reading every lease there to find the task's (execute renders
    every task: this keeps that constant per task).
    """
    from .errors import FatalError
    project_s = str(Path(project).resolve())
    if env_file is not None:
        recorded = from_env_file(env_file, project, run_id, task_id)
        held = recorded if recorded is not None and _read(_lease_path(recorded.block)) == recorded else None
    else:
        held = find(project, run_id, task_id)
    if held is not None:
        return held
    folder = lease_dir()
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    body = json.dumps({"project": project_s, "run": run_id, "task": task_id, "pid": os.getpid(),
                       "created_at": round(time.time(), 3)}) + "\n"
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL
    for block in range(BLOCKS):  # the lowest free block; racing tasks lose an O_EXCL and try the next
        path = _lease_path(block)
        try:
            fd = os.open(path, flags, 0o600)
        except FileExistsError:
            if not _stale(path) or not _take_over(path):
                continue
            try:
                fd = os.open(path, flags, 0o600)
            except FileExistsError:
                continue  # another task took the freed block first
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(body)
        lease = Lease(block, project_s, run_id, task_id)
        if _port_free(lease.first):
            return lease
        path.unlink()  # something else listens there: give the block back, try the next
    raise FatalError(f"no free port block left in {folder} ({BLOCKS} blocks of {BLOCK_SIZE}); "
                     "remove old runs with parallel-setup cleanup")


def _take_over(path: Path) -> bool:
    """Remove a stale lease, under a per-block lock so that two takers never remove a fresh one.

    True when the block is free now (the O_EXCL create still decides who gets it).
    """
    lock = path.with_suffix(".takeover")
    try:
        os.close(os.open(lock, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    except FileExistsError:
        try:  # a taker that died half-way
            if time.time() - lock.stat().st_mtime > 10:
                lock.unlink()
        except FileNotFoundError:
            pass
        return False
    try:
        if not path.exists():
            return True
        if not _stale(path):  # looked again under the lock: someone holds it now
            return False
        path.unlink()
        return True
    finally:
        lock.unlink()


def run_leases(project: Path, run_id: str) -> List[Lease]:
    """The leases a run holds now."""
    project_s = str(Path(project).resolve())
    return [l for l in leases() if l.project == project_s and l.run_id == run_id]


def release_run(project: Path, run_id: str) -> int:
    """Remove every lease of a run (cleanup calls it); the number removed."""
    removed = 0
    for lease in run_leases(project, run_id):
        try:
            _lease_path(lease.block).unlink()
            removed += 1
        except FileNotFoundError:
            pass
    return removed


def env_file_text(lease: Lease) -> str:
    lines = [f"# ports and database name of task {lease.task_id}, run {lease.run_id} (leased until cleanup)"]
    lines += [f"{k}='{v}'" for k, v in lease.env().items()]
    return "\n".join(lines) + "\n"

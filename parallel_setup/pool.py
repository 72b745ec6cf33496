"""The worktree pool: task worktrees checked out ahead of time, handed out at setup.

Opt-in, per repository. ``parallel-setup pool on`` turns it on (``.parallel/pool.json``)
and fills it; from then on ``/parallel:plan`` tops it up in the background while the
model plans (the CPU is idle then), and every run ``execute`` creates hands its
free worktrees out: a task's setup script claims one instead of running
``git worktree add``, so the checkout of every file is no longer part of the setup
time. A task that finds no free worktree falls back to ``git worktree add``.

Layout, under the project's ``worktrees/.pool/``:

* ``slot-<id>/``: a free worktree, detached at the pool's base commit;
* ``slot-<id>.claim``: a claim (created with O_EXCL: one claimer per slot), left behind
  when the slot has been moved away and removed by the next fill;
* ``.fill-<id>/``: a worktree still being checked out, never handed out.

A claim (in ``templates/setup.sh.j2``) moves the slot to ``worktrees/task-N`` with
``git worktree move`` and creates the task branch with ``git switch -c`` at the run's
base commit; when the base moved on since the fill, that switch updates only the
files that changed. Standard library only.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Optional

from .errors import FatalError
from .gitutil import default_branch, ensure_excluded, git
from .paths import STATE_DIRNAME, WORKTREES_DIRNAME, state_dir

POOL_DIRNAME = ".pool"
DEFAULT_SIZE = 8
MAX_SIZE = 100
CLAIM_SUFFIX = ".claim"
STALE_CLAIM_SECONDS = 600  # a claim this old on a slot still here: its setup died half-way


def pool_dir(project: Path) -> Path:
    """Where the free worktrees live: ``worktrees/.pool/`` (excluded from git like ``worktrees/``)."""
    return Path(project) / WORKTREES_DIRNAME / POOL_DIRNAME


def settings_path(project: Path) -> Path:
    return state_dir(Path(project)) / "pool.json"


def _work_dir(project: Path) -> Path:
    """The fill's lock and log: ``.parallel/pool/``."""
    return state_dir(Path(project)) / "pool"


def lock_path(project: Path) -> Path:
    return _work_dir(project) / "fill.lock"


def log_path(project: Path) -> Path:
    return _work_dir(project) / "fill.log"


# --------------------------------------------------------------------------
# The setting


@dataclass
class Settings:
    size: int
    base_branch: str


def load_settings(project: Path) -> Optional[Settings]:
    """The pool's setting, or None when the pool is off. A damaged file is an error."""
    path = settings_path(project)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as e:
        raise FatalError(f"{path} is not valid JSON ({e}); turn the pool on again with: "
                         "parallel-setup pool on --size N") from None
    size, base = (data.get("size"), data.get("base_branch")) if isinstance(data, dict) else (None, None)
    if not isinstance(size, int) or isinstance(size, bool) or not 1 <= size <= MAX_SIZE or \
            not isinstance(base, str) or not base:
        raise FatalError(f"{path} needs a size from 1 to {MAX_SIZE} and a base_branch; turn the pool on "
                         "again with: parallel-setup pool on --size N")
    return Settings(size, base)


def save_settings(project: Path, settings: Settings) -> None:
    path = settings_path(project)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(json.dumps({"size": settings.size, "base_branch": settings.base_branch}, indent=2) + "\n",
                   encoding="utf-8")
    os.replace(tmp, path)


def check_size(size: int) -> int:
    if not 1 <= size <= MAX_SIZE:
        raise FatalError(f"the pool size must be from 1 to {MAX_SIZE}, not {size}")
    return size


def default_base_branch(project: Path) -> str:
    """The branch plans usually start from: origin's default branch, else the checked-out one, else main."""
    found = default_branch(project, ask_remote=True)  # the same choice execute makes (runs.choose_base)
    return found[0] if found else "main"


# --------------------------------------------------------------------------
# What is in the pool


@dataclass
class Slot:
    path: Path
    commit: Optional[str]  # None when its HEAD cannot be read


def _slot_head(slot: Path) -> Optional[str]:
    """A worktree's detached HEAD, read from its admin folder (no git process)."""
    try:
        gitfile = (slot / ".git").read_text(encoding="utf-8").strip()
        if not gitfile.startswith("gitdir: "):
            return None
        admin = Path(gitfile[len("gitdir: "):])
        if not admin.is_absolute():
            admin = (slot / admin).resolve()
        head = (admin / "HEAD").read_text(encoding="utf-8").strip()
    except OSError:
        return None
    return head if len(head) in (40, 64) and all(c in "0123456789abcdef" for c in head) else None


def free_slots(project: Path) -> List[Slot]:
    """The worktrees waiting to be handed out, oldest first."""
    folder = pool_dir(project)
    if not folder.is_dir():
        return []
    slots = [p for p in folder.iterdir()
             if p.name.startswith("slot-") and not p.name.endswith(CLAIM_SUFFIX) and p.is_dir()
             and not _claim(p).exists()]
    return [Slot(p, _slot_head(p)) for p in sorted(slots, key=lambda p: p.name)]


def _claim(slot: Path) -> Path:
    return slot.with_name(slot.name + CLAIM_SUFFIX)


def _try_claim(slot: Path) -> bool:
    """Claim a slot the way setup.sh does (O_EXCL); False when somebody else has it."""
    try:
        os.close(os.open(_claim(slot), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644))
    except FileExistsError:
        return False
    return True


def _release(slot: Path) -> None:
    try:
        _claim(slot).unlink()
    except FileNotFoundError:
        pass


def _tidy(project: Path) -> None:
    """Under the fill lock: remove half-made slots, spent claims and claims whose setup died."""
    folder = pool_dir(project)
    for leftover in folder.glob(".fill-*"):
        remove_slot(project, leftover)
    for claim in folder.glob("slot-*" + CLAIM_SUFFIX):
        slot = claim.with_name(claim.name[:-len(CLAIM_SUFFIX)])
        try:
            stale = time.time() - claim.stat().st_mtime > STALE_CLAIM_SECONDS
        except FileNotFoundError:
            continue
        if not slot.exists() or stale:
            try:
                claim.unlink()
            except FileNotFoundError:
                pass


def base_commit(project: Path, base_branch: str) -> tuple[str, str]:
    """(ref, commit) a run would start from today: ``origin/<base>`` else the local branch (no fetch)."""
    from .runs import resolve_base  # late: the runs module needs Jinja2
    ref, _ = resolve_base(project, base_branch, fetch=False)
    commit = git(project, "rev-parse", "--verify", "--quiet", ref + "^{commit}").stdout.strip()
    return ref, commit


# --------------------------------------------------------------------------
# Filling and emptying


class FillBusy(FatalError):
    """Another fill holds the lock."""


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # an exited child nobody has waited for yet (a zombie) is not alive
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True  # no /proc (macOS): the signal answered


def fill_running(project: Path) -> Optional[int]:
    """The pid of a fill that is running now, or None."""
    try:
        pid = int(lock_path(project).read_text(encoding="utf-8").split()[0])
    except (OSError, ValueError, IndexError):
        return None
    return pid if _pid_alive(pid) else None


class _FillLock:
    """``fill.lock`` created with O_EXCL and holding our pid; a dead holder's lock is taken over."""

    def __init__(self, project: Path):
        self.project = project
        self.path = lock_path(project)

    def __enter__(self) -> "_FillLock":
        self.path.parent.mkdir(parents=True, exist_ok=True)
        for _ in range(2):
            try:
                fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            except FileExistsError:
                holder = fill_running(self.project)
                if holder:
                    raise FillBusy(f"the worktree pool is being filled already (pid {holder})") from None
                try:  # its holder died: take the lock over
                    self.path.unlink()
                except FileNotFoundError:
                    pass
                continue
            with os.fdopen(fd, "w") as f:
                f.write(f"{os.getpid()}\n")
            return self
        raise FillBusy("the worktree pool is being filled already")

    def __exit__(self, *exc) -> None:
        try:
            self.path.unlink()
        except FileNotFoundError:
            pass


@dataclass
class FillResult:
    base_ref: str
    commit: str
    created: int = 0
    refreshed: int = 0
    failed: List[str] = field(default_factory=list)
    free: int = 0
    seconds: float = 0.0


def _say(log, text: str) -> None:
    if log is not None:
        print(f"{time.strftime('%H:%M:%S')} {text}", file=log, flush=True)


def fill(project: Path, size: int, base_branch: str, log=None) -> FillResult:
    """Top the pool up to ``size`` free worktrees at the base commit, one after another.

    Free worktrees at an older commit are moved to the new one first (``git checkout``
    updates only the files that changed). Raises FillBusy when another fill runs.
    """
    project = Path(project)
    check_size(size)
    start = time.time()
    ensure_excluded(project)
    with _FillLock(project):
        ref, commit = base_commit(project, base_branch)
        result = FillResult(ref, commit)
        folder = pool_dir(project)
        folder.mkdir(parents=True, exist_ok=True)
        _tidy(project)
        touched: List[Path] = []
        for slot in free_slots(project):
            if slot.commit == commit or not _try_claim(slot.path):
                continue
            try:
                proc = git(project, "-C", str(slot.path), "checkout", "-q", "--detach", commit, check=False,
                           timeout=600)
                if proc.returncode == 0:
                    result.refreshed += 1
                    touched.append(slot.path)
                    _say(log, f"moved {slot.path.name} to {ref} ({commit[:12]})")
                else:
                    result.failed.append(f"{slot.path.name}: {proc.stderr.strip()}")
                    remove_slot(project, slot.path)
            finally:
                _release(slot.path)
        for k in range(max(0, size - len(free_slots(project)))):
            name = f"{time.strftime('%Y%m%d%H%M%S')}-{os.getpid()}-{k}"
            staging = folder / f".fill-{name}"
            proc = git(project, "worktree", "add", "-q", "--detach", str(staging), commit, check=False, timeout=600)
            if proc.returncode == 0:
                proc = git(project, "worktree", "move", str(staging), str(folder / f"slot-{name}"), check=False)
            if proc.returncode != 0:
                result.failed.append(f"slot-{name}: {proc.stderr.strip()}")
                _say(log, f"could not create slot-{name}: {proc.stderr.strip()}")
                remove_slot(project, staging)
                break  # the next one would most likely fail the same way
            result.created += 1
            touched.append(folder / f"slot-{name}")
            _say(log, f"created slot-{name} at {ref} ({commit[:12]})")
        _refresh_indexes(project, touched)
        result.free = len(free_slots(project))
        result.seconds = time.time() - start
        _say(log, f"done: {result.free} free, {result.created} created, {result.refreshed} moved, "
                  f"{len(result.failed)} failed, {result.seconds:.1f} s")
        return result


def _refresh_indexes(project: Path, slots: List[Path]) -> None:
    """Rewrite each new index a second after its checkout, so its entries are no longer "racy".

    Git cannot trust the file times of entries written in the same second as the index,
    and re-reads those files on every ``git status`` until the index is written again:
    without this, a task's first ``git status`` in its worktree reads all its files.
    """
    if not slots:
        return
    time.sleep(max(0.0, 1.05 - (time.time() - max(_mtime(s / ".git") for s in slots))))
    for slot in slots:
        if slot.is_dir() and _try_claim(slot):
            try:
                git(project, "-C", str(slot), "update-index", "-q", "--refresh", check=False, timeout=600)
            finally:
                _release(slot)


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return 0.0


def remove_slot(project: Path, path: Path) -> bool:
    """Remove one pool worktree (registered or not). True when it is gone."""
    proc = git(project, "worktree", "remove", "--force", "--force", str(path), check=False, timeout=600)
    if proc.returncode != 0 and path.exists():
        import shutil
        shutil.rmtree(path, ignore_errors=True)
        git(project, "worktree", "prune", check=False)
    return not path.exists()


def clear(project: Path) -> int:
    """Remove every free worktree (claiming each first, so a setup running now never loses one)."""
    folder = pool_dir(project)
    if not folder.is_dir():
        return 0
    removed = 0
    for slot in free_slots(project):
        if not _try_claim(slot.path):
            continue  # a setup is claiming it right now
        try:
            if remove_slot(project, slot.path):
                removed += 1
        finally:
            _release(slot.path)
    if fill_running(project) is None:
        _tidy(project)
        try:
            folder.rmdir()
        except OSError:
            pass
    return removed


def fill_in_background(project: Path, size: int, base_branch: str) -> int:
    """Start ``pool fill`` as a detached process (it outlives the caller); returns its pid.

    Its output goes to ``.parallel/pool/fill.log``.
    """
    log = log_path(project)
    log.parent.mkdir(parents=True, exist_ok=True)
    try:
        if log.stat().st_size > 256 * 1024:  # every /parallel:plan appends to it: keep one old copy
            os.replace(log, log.with_name(log.name + ".1"))
    except FileNotFoundError:
        pass
    package_parent = str(Path(__file__).resolve().parent.parent)
    env = dict(os.environ)
    env["PYTHONPATH"] = package_parent + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    with open(log, "a", encoding="utf-8") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "parallel_setup", "-C", str(project), "pool", "fill",
             "--size", str(size), "--base", base_branch, "--quiet-if-busy"],
            cwd=str(project), env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True)
    return proc.pid


def stop_fill(project: Path, wait: float = 10.0) -> bool:
    """Stop a running fill (SIGTERM) and wait for it; True when none runs afterwards."""
    pid = fill_running(project)
    if pid is None:
        return True
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return True
    deadline = time.time() + wait
    while time.time() < deadline:
        if not _pid_alive(pid):
            return True
        time.sleep(0.05)
    return False

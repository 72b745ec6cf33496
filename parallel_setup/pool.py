"""The worktree pool: task worktrees checked out, with their environment installed, ahead of time.

``/parallel:plan`` tops it up in the background while the model plans (the CPU is
idle then), and every run ``execute`` creates hands its free worktrees out: a task's
setup script claims one instead of running ``git worktree add`` and its environment
step, so neither the checkout of every file nor the install of every dependency is
part of the setup time. A task that finds no free worktree falls back to both.

Whether it is on (``decide``): ``pool on`` (``.parallel/pool.json`` with a size),
``pool off`` (``{"off": true}``), else the default: sized from the recent runs, on
when that many worktrees fit a disk budget.

Layout, under the project's ``worktrees/.pool/``:

* ``slot-<id>/``: a free worktree, detached at the pool's base commit;
* ``slot-<id>.env``: the environment its fill installed there and what it depends on
  (``environments.key_parts``): the claim compares it with the task's own key;
* ``slot-<id>.claim``: a claim (created with O_EXCL: one claimer per slot), left behind
  when the slot has been moved away and removed by the next fill; the fill itself holds
  a slot claimed while it installs the slot's environment;
* ``.fill-<id>/``: a worktree still being checked out, never handed out.

A claim (in ``templates/setup.sh.j2``) moves the slot to ``worktrees/task-N`` with
``git worktree move``, creates the task branch with ``git switch -c`` at the run's
base commit (when the base moved on since the fill, that switch updates only the
files that changed), and rewrites the slot's path in the moved venvs. Standard library only.
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

from .disk import disk_usage, human_size
from .errors import FatalError
from .gitutil import default_branch, ensure_excluded, git
from .paths import STATE_DIRNAME, WORKTREES_DIRNAME, state_dir

POOL_DIRNAME = ".pool"
DEFAULT_SIZE = 8
MAX_SIZE = 100
CLAIM_SUFFIX = ".claim"
ENV_SUFFIX = ".env"  # slot-<id>.env: the environment its fill installed
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
    setup: str = "auto"  # the environment step a fill runs in each worktree ("none": checkouts only)


OFF = "off"  # ``{"off": true}`` in pool.json: turned off by the user


def _read_setting(project: Path):
    """pool.json's content: None (absent: the default), a dict. A damaged file is an error."""
    path = settings_path(project)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as e:
        raise FatalError(f"{path} is not valid JSON ({e}); turn the pool on again with: "
                         "parallel-setup pool on --size N") from None
    if not isinstance(data, dict):
        raise FatalError(f"{path} must hold a JSON object; turn the pool on again with: parallel-setup pool on --size N")
    return data


def load_settings(project: Path) -> Optional[Settings]:
    """The pool's explicit setting (``pool on``), or None (off, or left to the default)."""
    path = settings_path(project)
    data = _read_setting(project)
    if data is None or data.get("off") is True or "size" not in data and "base_branch" not in data:
        return None
    size, base, setup = data.get("size"), data.get("base_branch"), data.get("setup", "auto")
    if not isinstance(size, int) or isinstance(size, bool) or not 1 <= size <= MAX_SIZE or \
            not isinstance(base, str) or not base or not isinstance(setup, str) or not setup.strip():
        raise FatalError(f"{path} needs a size from 1 to {MAX_SIZE} and a base_branch; turn the pool on "
                         "again with: parallel-setup pool on --size N")
    return Settings(size, base, setup)


def save_settings(project: Path, settings: Settings) -> None:
    data = {"size": settings.size, "base_branch": settings.base_branch}
    if settings.setup != "auto":
        data["setup"] = settings.setup
    _write_setting(project, data)


def _write_setting(project: Path, data: dict) -> None:
    path = settings_path(project)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def save_off(project: Path) -> None:
    """``pool off``: off until ``pool on`` or ``pool auto``, whatever the default would say."""
    _write_setting(project, {"off": True})


def save_auto(project: Path, budget: Optional[int]) -> None:
    """``pool auto``: back to the default (on when it fits the disk budget)."""
    if budget is None:
        settings_path(project).unlink(missing_ok=True)
    else:
        _write_setting(project, {"budget": budget})


def check_size(size: int) -> int:
    if not 1 <= size <= MAX_SIZE:
        raise FatalError(f"the pool size must be from 1 to {MAX_SIZE}, not {size}")
    return size


def default_base_branch(project: Path) -> str:
    """The branch plans usually start from: origin's default branch, else the checked-out one, else main."""
    found = default_branch(project, ask_remote=True)  # the same choice execute makes (runs.choose_base)
    return found[0] if found else "main"


# --------------------------------------------------------------------------
# The default: on where it is cheap

DEFAULT_BUDGET = 4 * 1024 ** 3  # bytes of disk the default-on pool may take
RECENT_RUNS = 5  # the runs the default size is learnt from
BUDGET_ENV = "PARALLEL_POOL_BUDGET"


def parse_bytes(text: str) -> int:
    """``4G``, ``500M``, ``1.5GB``, ``0``, ``123456`` -> bytes (binary units). FatalError when not a size."""
    t = str(text).strip().upper().rstrip("B").rstrip("I")
    mult = 1
    if t and t[-1] in "KMGT":
        mult = 1024 ** ("KMGT".index(t[-1]) + 1)
        t = t[:-1]
    try:
        value = float(t)
    except ValueError:
        raise FatalError(f"not a disk size: {text!r} (like 4G, 500M or 0)") from None
    if value < 0:
        raise FatalError(f"not a disk size: {text!r} (like 4G, 500M or 0)")
    return int(value * mult)


@dataclass
class Decision:
    """Whether the pool is used, how big, and why (``pool status``, ``/parallel:plan``, ``execute``)."""
    on: bool
    source: str  # "setting" (pool on), "off" (pool off), "default"
    reason: str
    settings: Optional[Settings] = None
    budget: Optional[int] = None
    estimate: Optional[int] = None  # bytes the pool would take at its size


def _recent_runs(project: Path) -> List[dict]:
    from .paths import runs_dir
    folder = runs_dir(Path(project))
    found = []
    if folder.is_dir():
        for d in sorted(folder.iterdir(), key=lambda p: p.name, reverse=True)[:RECENT_RUNS]:
            try:
                found.append(json.loads((d / "run.json").read_text(encoding="utf-8")))
            except (OSError, ValueError):
                continue
    return found


def _setup_of(run_data: dict) -> str:
    """The environment step most of a run's tasks had (what a fill should install)."""
    plan = run_data.get("plan") if isinstance(run_data.get("plan"), dict) else {}
    default = (plan.get("defaults") or {}).get("setup") if isinstance(plan.get("defaults"), dict) else None
    setups = [t.get("setup") or default or "auto" for t in plan.get("tasks") or [] if isinstance(t, dict)]
    return max(setups, key=setups.count) if setups else "auto"


def checkout_bytes(project: Path, commit: str) -> int:
    """What one checkout of a commit takes: its files' sizes, rounded up to 4 KiB blocks."""
    proc = git(project, "ls-tree", "-r", "-l", "-z", commit, check=False, timeout=120)
    total = 0
    for entry in proc.stdout.split("\0"):
        fields = entry.split("\t", 1)[0].split()
        if len(fields) == 4 and fields[3].isdigit():
            total += (int(fields[3]) + 4095) // 4096 * 4096
    return total


def _env_bytes(project: Path) -> int:
    """What one worktree's environment takes, judged by the main checkout's (.venv, node_modules)."""
    return sum(disk_usage(Path(project) / d) for d in (".venv", "venv", "node_modules")
               if (Path(project) / d).is_dir())


def slot_bytes(project: Path, commit: str) -> int:
    """One pool worktree's cost: as measured by the fill, else the checkout plus the main checkout's env."""
    for slot in free_slots(project):
        measured = (read_env_record(slot.path) or {}).get("bytes")
        if measured:
            return measured
    return checkout_bytes(project, commit) + _env_bytes(project)


def decide(project: Path, env: Optional[dict] = None) -> Decision:
    """Whether the pool is on here: ``pool on``/``pool off`` when given, else on when cheap.

    The default: sized from the repository's recent runs (the most tasks one of the last
    five had), with the environment step their tasks had, on when that many worktrees
    cost less than the disk budget (``pool auto --budget``, ``$PARALLEL_POOL_BUDGET``,
    default 4 GiB), off otherwise or before the first run.
    """
    project = Path(project)
    env = os.environ if env is None else env
    explicit = load_settings(project)
    if explicit is not None:
        return Decision(True, "setting", "turned on with pool on", explicit)
    data = _read_setting(project) or {}
    if data.get("off") is True:
        return Decision(False, "off", "turned off with pool off; pool auto goes back to the default")
    budget = data.get("budget") if isinstance(data.get("budget"), int) else DEFAULT_BUDGET
    if env.get(BUDGET_ENV):
        budget = parse_bytes(env[BUDGET_ENV])
    recent = _recent_runs(project)
    if not recent:
        return Decision(False, "default", "no run yet to size it from; on by default after the first run "
                        "if it fits the disk budget", budget=budget)
    size = min(MAX_SIZE, max(len(r.get("tasks") or []) for r in recent))
    if size < 1:
        return Decision(False, "default", "the recent runs had no tasks", budget=budget)
    base = default_base_branch(project)
    try:
        _, commit = base_commit(project, base)
    except FatalError as e:
        return Decision(False, "default", str(e), budget=budget)
    settings = Settings(size, base, _setup_of(recent[0]))
    estimate = size * slot_bytes(project, commit)
    if estimate > budget:
        return Decision(False, "default", f"{size} worktrees would take about {human_size(estimate)}, over the disk "
                        f"budget of {human_size(budget)} (pool on --size N to use it anyway; pool auto --budget "
                        "SIZE to raise the budget)", settings, budget, estimate)
    return Decision(True, "default", f"on by default: {size} worktrees (the most tasks of the recent runs) "
                    f"take about {human_size(estimate)} of the {human_size(budget)} disk budget", settings, budget, estimate)


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
    for record in folder.glob("slot-*" + ENV_SUFFIX):
        if not record.with_name(record.name[:-len(ENV_SUFFIX)]).exists():
            record.unlink(missing_ok=True)
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
    env_installed: int = 0
    env_failed: str = ""


def _say(log, text: str) -> None:
    if log is not None:
        print(f"{time.strftime('%H:%M:%S')} {text}", file=log, flush=True)


def env_record_path(slot: Path) -> Path:
    """``slot-<id>.env``: the environment a fill installed in a slot (read by the claim in setup.sh)."""
    return slot.with_name(slot.name + ENV_SUFFIX)


def read_env_record(slot: Path) -> Optional[dict]:
    """{"path", "did", "key": [...]} or None when the slot has no environment recorded."""
    try:
        lines = env_record_path(slot).read_text(encoding="utf-8").splitlines()
    except OSError:
        return None
    record = {"path": "", "did": "", "bytes": None, "key": []}
    for line in lines:
        kind, _, rest = line.partition(" ")
        if kind == "key":
            record["key"].append(rest)
        elif kind in ("path", "did"):
            record[kind] = rest
        elif kind == "bytes" and rest.isdigit():
            record["bytes"] = int(rest)
    return record


def _install_env(project: Path, slot: Path, setup: str, key: List[str], log) -> tuple:
    """Run the environment step in a slot the fill holds claimed; (ok, detail). Writes its record."""
    from . import environments
    env_record_path(slot).unlink(missing_ok=True)
    ok, detail = environments.run_installers(slot, setup, None, log)
    if ok:
        record = env_record_path(slot)
        tmp = record.with_name(f".{record.name}.tmp{os.getpid()}")
        tmp.write_text(f"path {slot}\ndid {detail}\nbytes {disk_usage(slot)}\n" + "".join(f"key {k}\n" for k in key),
                       encoding="utf-8")
        os.replace(tmp, record)
    return ok, detail


def fill(project: Path, size: int, base_branch: str, log=None, setup: str = "auto") -> FillResult:
    """Top the pool up to ``size`` free worktrees at the base commit, environment installed.

    Each new worktree is checked out, moved to its slot and, while the fill holds it
    claimed, gets its environment (``setup``: ``auto``, ``none`` or a command) and a
    record of what it depends on (``slot-<id>.env``). Free worktrees at an older commit
    are moved to the new one first (``git checkout`` updates only the files that
    changed), and their environment is installed again when its key changed. A failed
    environment step leaves a plain checkout (its task's setup installs the environment)
    and is not tried again in this fill. Raises FillBusy when another fill runs.
    """
    from . import environments
    project = Path(project)
    check_size(size)
    start = time.time()
    ensure_excluded(project)
    with _FillLock(project):
        ref, commit = base_commit(project, base_branch)
        key = environments.key_parts(project, commit, setup)
        result = FillResult(ref, commit)
        folder = pool_dir(project)
        folder.mkdir(parents=True, exist_ok=True)
        _tidy(project)
        touched: List[Path] = []

        def env_for(slot: Path) -> None:
            if setup.strip() == "none" or result.env_failed:
                return
            record = read_env_record(slot)
            if record is not None and record["key"] == key:
                return
            ok, detail = _install_env(project, slot, setup, key, log)
            if ok:
                result.env_installed += 1
                _say(log, f"{slot.name}: environment ready ({detail})")
            else:
                result.env_failed = detail
                _say(log, f"{slot.name}: environment step failed, left as a plain checkout: {detail}")

        for slot in free_slots(project):
            if not _try_claim(slot.path):
                continue
            try:
                if slot.commit != commit:
                    proc = git(project, "-C", str(slot.path), "checkout", "-q", "--detach", commit, check=False,
                               timeout=600)
                    if proc.returncode != 0:
                        result.failed.append(f"{slot.path.name}: {proc.stderr.strip()}")
                        remove_slot(project, slot.path)
                        continue
                    result.refreshed += 1
                    touched.append(slot.path)
                    _say(log, f"moved {slot.path.name} to {ref} ({commit[:12]})")
                env_for(slot.path)
            finally:
                _release(slot.path)
        for k in range(max(0, size - len(free_slots(project)))):
            name = f"{time.strftime('%Y%m%d%H%M%S')}-{os.getpid()}-{k}"
            staging, final = folder / f".fill-{name}", folder / f"slot-{name}"
            _try_claim(final)  # held until its environment is installed: no setup takes it half-made
            try:
                proc = git(project, "worktree", "add", "-q", "--detach", str(staging), commit, check=False,
                           timeout=600)
                if proc.returncode == 0:
                    proc = git(project, "worktree", "move", str(staging), str(final), check=False)
                if proc.returncode != 0:
                    result.failed.append(f"slot-{name}: {proc.stderr.strip()}")
                    _say(log, f"could not create slot-{name}: {proc.stderr.strip()}")
                    remove_slot(project, staging)
                    break  # the next one would most likely fail the same way
                env_for(final)
            finally:
                _release(final)
            result.created += 1
            touched.append(final)
            _say(log, f"created slot-{name} at {ref} ({commit[:12]})")
        _refresh_indexes(project, touched)
        result.free = len(free_slots(project))
        result.seconds = time.time() - start
        _say(log, f"done: {result.free} free, {result.created} created, {result.refreshed} moved, "
                  f"{len(result.failed)} failed, {result.env_installed} environment step(s) run, "
                  f"{result.seconds:.1f} s")
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
    if not path.exists():
        env_record_path(path).unlink(missing_ok=True)
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


def remove_stale(project: Path) -> int:
    """Remove the free worktrees no run will use (cleanup calls it); the number removed.

    Stale: every free worktree when the pool is off (``pool off``, or the default says
    off, e.g. over the disk budget); else the ones beyond the pool's size and the ones
    whose environment no longer fits (a key file changed since the fill). Slots being
    claimed are left alone; so is everything while a fill runs.
    """
    from . import environments
    project = Path(project)
    if not pool_dir(project).is_dir():
        return 0
    try:
        with _FillLock(project):
            return _remove_stale(project)
    except FillBusy:
        return 0


def _remove_stale(project: Path) -> int:
    from . import environments
    try:
        decision = decide(project)
    except FatalError:
        return 0  # a damaged setting: remove nothing (pool status names it)
    slots = free_slots(project)
    if not decision.on:
        stale = slots
    else:
        settings = decision.settings
        _, commit = base_commit(project, settings.base_branch)
        key = environments.key_parts(project, commit, settings.setup)
        unfit = [s for s in slots if key and (read_env_record(s.path) or {}).get("key") != key]
        fit = [s for s in slots if s not in unfit]
        stale = unfit + fit[settings.size:]
    removed = 0
    for slot in stale:
        if not _try_claim(slot.path):
            continue
        try:
            if remove_slot(project, slot.path):
                removed += 1
        finally:
            _release(slot.path)
    _tidy(project)
    return removed


def fill_in_background(project: Path, size: int, base_branch: str, setup: str = "auto") -> int:
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
             "--size", str(size), "--base", base_branch, "--setup", setup, "--quiet-if-busy"],
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

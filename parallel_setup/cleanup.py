"""Cleanup after a run: remove what the run made, and only that, without ever losing work.

The Python API behind ``parallel-setup cleanup``::

    from parallel_setup import cleanup, runs
    run = runs.load_run(project, run_id)
    plan = cleanup.plan_cleanup(run, remote=False)   # read-only: what would go, what is kept and why
    print(cleanup.render_plan(plan, dry_run=True))
    with cleanup.lock(project):
        result = cleanup.apply(run, plan)            # does it, step by step

What a run made is what its records say (``ownership.task_ownership``), checked against
git again now: a worktree whose ``parallel-owner`` names this run and task, a branch git's
reflog says was created after the run started at the run's base commit and that still
descends from it, the pool claim its setup log names, the integration worktree and branch
``parallel/<run-id>`` of ``parallel-setup merge``, and (``--remote``) origin's copy of a
branch the run created and whose task reported pushing it, when it holds nothing the local
branch does not. A branch or a
worktree of the same name that the run did not make, and the user's checkout, are never
touched: they are listed as kept, with the reason.

Work is never lost: before a worktree with uncommitted changes (untracked files that are
not ignored included) or a branch that is neither merged into the base nor on origin is
removed, its state is saved as a commit at ``refs/parallel/archive/<run-id>/<task-id>``
(made through a temporary index, ``GIT_INDEX_FILE``, so neither the worktree nor its
index changes; parented on the worktree's HEAD and the branch head). ``--discard`` skips
that, when asked by name. What the environment step installed in a worktree (``.venv``,
``node_modules``, the plan's ``copy_files`` as copied) is not work: it is removed first,
so ``git worktree remove`` runs without ``--force`` on a clean worktree.

Each step looks at git again before it acts and the archive comes first, so a cleanup
killed at any point and run again finishes the job and loses nothing; a lock keeps two
cleanups in one repository from acting at once.
"""

from __future__ import annotations

import errno
import fcntl
import filecmp
import os
import shutil
import signal
import subprocess
import tempfile
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Sequence

from . import events, trusted
from .disk import disk_usage, human_size
from .errors import FatalError
from .ownership import task_ownership
from .provenance import branch_created_by_run, worktree_admin_dir, worktree_owner
from .paths import state_dir

ARCHIVE_PREFIX = "refs/parallel/archive"
INTEGRATION_PREFIX = "parallel/"
#: The archive name of the integration branch (task ids are lower-case letters, digits and dashes).
INTEGRATION_ARCHIVE = "_integration"
#: What the setup script's environment step installs in a worktree (never the user's work):
#: the virtual environment, the Node packages, and the metadata ``pip install -e .`` writes.
ENV_ARTIFACTS = (".venv", "node_modules", "*.egg-info", "src/*.egg-info")
#: Written into a worktree's admin folder once its archive is safe: a re-run finishes the removal.
REMOVING_MARKER = "parallel-cleanup"
ZERO = "0" * 40


class CleanupBusy(FatalError):
    """Another cleanup holds the repository's cleanup lock."""


# --------------------------------------------------------------------------
# git


def _git(cwd: Path, *args: str, env: Optional[Dict[str, str]] = None, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, timeout=timeout,
                          env=env, stdin=subprocess.DEVNULL)


def _no_prompt() -> Dict[str, str]:
    """For git's network calls: fail instead of asking for credentials (no one may be there to answer)."""
    return dict(os.environ, GIT_TERMINAL_PROMPT="0", GIT_ASKPASS="", SSH_ASKPASS="")


def _rev(cwd: Path, ref: str) -> Optional[str]:
    proc = _git(cwd, "rev-parse", "--verify", "--quiet", ref + "^{commit}")
    return proc.stdout.strip() or None if proc.returncode == 0 else None


def _is_ancestor(cwd: Path, older: str, newer: str) -> bool:
    return _git(cwd, "merge-base", "--is-ancestor", older, newer).returncode == 0


def _worktrees(project: Path) -> Dict[str, Dict[str, str]]:
    """Registered worktrees by resolved path: ``{"head", "branch", "locked"?}``."""
    proc = _git(project, "worktree", "list", "--porcelain")
    found: Dict[str, Dict[str, str]] = {}
    current: Dict[str, str] = {}
    for line in proc.stdout.splitlines() + [""]:
        if not line:
            if "worktree" in current:
                found[os.path.realpath(current["worktree"])] = current
            current = {}
            continue
        key, _, value = line.partition(" ")
        current[key] = value
    return found


def _remote_heads(project: Path) -> Optional[Dict[str, str]]:
    """origin's branches (name -> commit), None without an origin or when it cannot be reached."""
    if _git(project, "remote", "get-url", "origin").returncode != 0:
        return None
    try:  # never a credential prompt: with no answer in time, nothing counts as pushed
        proc = _git(project, "ls-remote", "--heads", "origin", env=_no_prompt(), timeout=60)
    except subprocess.TimeoutExpired:
        return None
    if proc.returncode != 0:
        return None
    heads = {}
    for line in proc.stdout.splitlines():
        sha, _, ref = line.partition("\t")
        if ref.startswith("refs/heads/"):
            heads[ref[len("refs/heads/"):]] = sha
    return heads


# --------------------------------------------------------------------------
# The plan: what would be removed and archived, and what is kept


@dataclass
class Step:
    """One thing cleanup does. ``kind``: archive, env, worktree, branch, remote, claim, logs."""

    kind: str
    task: Optional[str]
    target: str
    detail: str = ""
    bytes: int = 0
    data: Dict[str, Any] = field(default_factory=dict)


@dataclass
class Kept:
    task: Optional[str]
    target: str
    reason: str


@dataclass
class CleanupPlan:
    run_id: str
    steps: List[Step] = field(default_factory=list)
    kept: List[Kept] = field(default_factory=list)
    notes: List[str] = field(default_factory=list)
    port_leases: int = 0  # the run's port leases held when the plan was made (released at the end)

    @property
    def bytes(self) -> int:
        return sum(s.bytes for s in self.steps)

    def to_dict(self) -> Dict[str, Any]:
        return {"run": self.run_id, "bytes": self.bytes, "port_leases": self.port_leases,
                "steps": [{k: v for k, v in asdict(s).items() if k != "data"} for s in self.steps],
                "kept": [asdict(k) for k in self.kept], "notes": list(self.notes)}


def archive_ref(run_id: str, name: str) -> str:
    return f"{ARCHIVE_PREFIX}/{run_id}/{name}"


def _base_tips(run) -> List[str]:
    """The commits 'merged into the base' is checked against: the run's base ref and the local branch, now."""
    tips = []
    for ref in (run.data.get("base_ref"), run.plan.base_branch):
        sha = _rev(run.project, ref) if ref else None
        if sha and sha not in tips:
            tips.append(sha)
    return tips


def _env_paths(run, worktree: Path) -> List[str]:
    """Paths (relative to the worktree) the environment step put there and cleanup may delete."""
    found = list(dict.fromkeys(str(p.relative_to(worktree)) for pattern in ENV_ARTIFACTS
                               for p in sorted(worktree.glob(pattern))))
    for f in run.plan.copy_files:
        ours, theirs = worktree / f, run.project / f
        if not os.path.lexists(ours):
            continue
        same = (ours.is_dir() and theirs.is_dir()) or (
            ours.is_file() and theirs.is_file() and filecmp.cmp(ours, theirs, shallow=False))
        if same:
            found.append(f)
    return found


def _tracked(worktree: Path, paths: Sequence[str]) -> List[str]:
    """Which of ``paths`` git tracks in this worktree (those are the project's, not the environment's)."""
    if not paths:
        return []
    proc = _git(worktree, "ls-files", "-z", "--", *paths)
    files = [f for f in proc.stdout.split("\0") if f]
    return [p for p in paths if any(f == p or f.startswith(p + "/") for f in files)]


def _exclusions(paths: Sequence[str]) -> List[str]:
    return [f":(exclude,top){p}" for p in paths]


def _changes(worktree: Path, env_paths: Sequence[str]) -> Optional[List[str]]:
    """Uncommitted changes (untracked, not ignored, included) outside the environment's paths; None when git cannot tell."""
    proc = _git(worktree, "status", "--porcelain=v1", "-z", "--untracked-files=normal",
                "--ignore-submodules=none", "--", ".", *_exclusions(env_paths))
    if proc.returncode != 0:
        return None
    entries, parts, i = [], proc.stdout.split("\0"), 0
    while i < len(parts):
        item = parts[i]
        i += 1
        if not item:
            continue
        if item[0] in "RC":  # a rename or copy: the next field is its source
            i += 1
        entries.append(item[3:])
    return entries


def _plan_worktree(run, plan: CleanupPlan, task: str, path: Path, base_tips: List[str],
                   worktrees: Dict[str, Dict[str, str]], discard: bool) -> Optional[Dict[str, Any]]:
    """Steps for one of the run's worktrees; returns what the archive needs from it (or None)."""
    real = os.path.realpath(path)
    info = worktrees.get(real)
    admin = worktree_admin_dir(path, run.project)
    rel = _relative(run.project, path)
    if info is None or admin is None:
        plan.kept.append(Kept(task, rel, "not a git worktree of this repository"))
        return None
    if "locked" in info or (admin / "locked").exists():
        plan.kept.append(Kept(task, rel, "locked (git worktree unlock it first)"))
        return None
    if (admin / REMOVING_MARKER).exists():  # a cleanup was interrupted after its archive was made
        plan.steps.append(Step("worktree", task, rel, "finish the removal an interrupted cleanup started",
                               disk_usage(path), {"path": str(path), "force": True,
                                                  "owner": worktree_owner(path, run.project)}))
        return None
    candidates = _env_paths(run, path)
    tracked = _tracked(path, candidates)
    env_paths = [p for p in candidates if p not in tracked]
    changes = _changes(path, env_paths)
    if changes is None:
        plan.kept.append(Kept(task, rel, "git status fails in it"))
        return None
    head = _rev(path, "HEAD")
    size = disk_usage(path)
    env_size = sum(disk_usage(path / p) if (path / p).is_dir() else 0 for p in env_paths)
    if env_paths:
        plan.steps.append(Step("env", task, rel, "what the environment step installed: " + ", ".join(env_paths),
                               env_size, {"path": str(path), "paths": env_paths}))
    detail = f"{len(changes)} uncommitted change(s)" if changes else "clean"
    plan.steps.append(Step("worktree", task, rel, detail, size - env_size,
                           {"path": str(path), "force": bool(changes), "discard": discard,
                            "owner": worktree_owner(path, run.project)}))
    return {"path": str(path), "head": head, "changes": changes, "env_paths": env_paths}


def _relative(project: Path, path: Path) -> str:
    try:
        return str(Path(path).relative_to(project))
    except ValueError:
        return str(path)


def _checked_out(worktrees: Dict[str, Dict[str, str]], branch: str, removed: Sequence[str]) -> Optional[str]:
    for path, info in worktrees.items():
        if info.get("branch") == f"refs/heads/{branch}" and path not in removed:
            return path
    return None


def _plan_branch(run, plan: CleanupPlan, task: Optional[str], name: str, branch: str, *,
                 created: bool, base: Optional[str], wt: Optional[Dict[str, Any]],
                 base_tips: List[str], worktrees: Dict[str, Dict[str, str]], removed: List[str],
                 remote_heads: Optional[Dict[str, str]], remote: bool, discard: bool,
                 pushed: Optional[bool]) -> None:
    """Steps for one branch of the run (a task's, or the integration branch) and its archive."""
    tip = _rev(run.project, f"refs/heads/{branch}")
    remote_sha = (remote_heads or {}).get(branch)
    if tip is None:
        wt_archive(run, plan, task, name, wt, None, discard)
        if remote and remote_sha:
            plan.kept.append(Kept(task, f"origin/{branch}", "the local branch is gone: cannot check origin's copy is the run's"))
        return
    if not created:
        wt_archive(run, plan, task, name, wt, None, discard)
        plan.kept.append(Kept(task, branch, "not created by this run (its setup log and git's reflog do not show the run making it)"))
        return
    if base and not _is_ancestor(run.project, base, tip):
        wt_archive(run, plan, task, name, wt, None, discard)
        plan.kept.append(Kept(task, branch, "no longer descends from the run's base commit"))
        return
    where = _checked_out(worktrees, branch, removed)
    if where is not None:
        wt_archive(run, plan, task, name, wt, None, discard)
        main = os.path.realpath(run.project)
        shown = "the main checkout" if where == main else _relative(Path(main), Path(where))
        plan.kept.append(Kept(task, branch, f"checked out in {shown}"))
        return
    merged = any(_is_ancestor(run.project, tip, t) for t in base_tips)
    on_remote = bool(remote_sha) and _rev(run.project, remote_sha) is not None and _is_ancestor(run.project, tip, remote_sha)
    delete_remote = False
    if remote and remote_sha:
        if pushed is not True:
            plan.kept.append(Kept(task, f"origin/{branch}", "the task's report does not say it pushed it"))
        elif _rev(run.project, remote_sha) is None or not _is_ancestor(run.project, remote_sha, tip):
            plan.kept.append(Kept(task, f"origin/{branch}", "origin's branch has commits the run's branch does not"))
        elif base and not _is_ancestor(run.project, base, remote_sha):
            plan.kept.append(Kept(task, f"origin/{branch}", "origin's branch does not descend from the run's base commit"))
        else:
            delete_remote = True
    unsafe = not merged and (not on_remote or delete_remote)
    wt_archive(run, plan, task, name, wt, tip if unsafe else None, discard)
    state = "merged into the base" if merged else ("on origin" if on_remote and not delete_remote
                                                   else "not merged, not pushed" if not on_remote
                                                   else "not merged; only on origin, which is removed too")
    plan.steps.append(Step("branch", task, branch, state, 0, {"branch": branch, "tip": tip}))
    if delete_remote:
        plan.steps.append(Step("remote", task, f"origin/{branch}", "pushed by this run", 0,
                               {"branch": branch, "sha": remote_sha}))


def wt_archive(run, plan: CleanupPlan, task: Optional[str], name: str, wt: Optional[Dict[str, Any]],
               tip: Optional[str], discard: bool) -> None:
    """Add the archive step (before every removal of this task) when there is work to keep."""
    dirty = bool(wt and wt["changes"])
    head = wt["head"] if wt else None
    lost_head = bool(head and tip is None and not dirty and not _reachable_elsewhere(run.project, head))
    if not (dirty or tip or lost_head):
        return
    what = []
    if dirty:
        what.append(f"{len(wt['changes'])} uncommitted change(s) in {_relative(run.project, Path(wt['path']))}")
    if tip:
        what.append("the unmerged commits of its branch")
    if lost_head and not tip:
        what.append("the worktree's commits")
    if discard:
        plan.notes.append(f"{task or 'merge'}: --discard: not archived, so lost: " + "; ".join(what))
        return
    parents = [p for p in dict.fromkeys([head if (dirty or lost_head) else None, tip]) if p]
    step = Step("archive", task, archive_ref(run.id, name), "; ".join(what), 0,
                {"ref": archive_ref(run.id, name), "parents": parents,
                 "worktree": wt["path"] if dirty else None, "env_paths": wt["env_paths"] if wt else []})
    # The archive goes before the first removal step of this task (the env step or the worktree).
    first = next((i for i, s in enumerate(plan.steps) if s.task == task and s.kind in ("env", "worktree")
                  and s.data.get("path") == (wt or {}).get("path")), len(plan.steps))
    plan.steps.insert(first, step)


def _reachable_elsewhere(project: Path, commit: str) -> bool:
    proc = _git(project, "for-each-ref", "--contains", commit, "--count=1", "--format=%(refname)")
    return bool(proc.stdout.strip())


def _pool_claims(run, task: str) -> List[Path]:
    """The pool claims the task's setup log names whose slot has moved away (spent claims)."""
    from .pool import CLAIM_SUFFIX, pool_dir
    try:
        log = (run.task_dir(task) / "setup.log").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return []
    claims = []
    for line in log.splitlines():
        if line.startswith("--- pool: claimed slot-"):
            slot = pool_dir(run.project) / line.split()[3]
            claim = slot.with_name(slot.name + CLAIM_SUFFIX)
            if claim.exists() and not slot.exists():
                claims.append(claim)
    return claims


def _integration_worktree(run, worktrees: Dict[str, Dict[str, str]]) -> Optional[Path]:
    for path, info in worktrees.items():
        if info.get("branch") == f"refs/heads/{INTEGRATION_PREFIX}{run.id}":
            return Path(path)
    return None


def plan_cleanup(run, *, remote: bool = False, discard: bool = False, purge_logs: bool = False,
                 include_running: bool = False) -> CleanupPlan:
    """What cleaning up ``run`` would do, without changing anything."""
    from .runs import task_states
    project = Path(run.project)
    from . import ports
    plan = CleanupPlan(run.id, port_leases=len(ports.run_leases(Path(run.project), run.id)))
    base = run.data.get("base_commit") or None
    base_tips = _base_tips(run)
    worktrees = _worktrees(project)
    main = os.path.realpath(project)
    remote_heads = _remote_heads(project) if remote or run.data.get("has_origin") else None
    if remote and remote_heads is None:
        plan.notes.append("origin cannot be reached: no remote branch is removed, and none counts as pushed")
    states = task_states(run)
    for task in run.tasks:
        own = task_ownership(run, task)
        state = states[task].state
        if state in ("running",) and not include_running:
            things = [t for t in (own["worktree"], own["branch"]) if t]
            if things:
                plan.kept.append(Kept(task, ", ".join(things),
                                      "the task is still running (an agent may be working in it; --include-running to clean it anyway)"))
            continue
        wt = None
        removed: List[str] = []
        path = Path(own["worktree"]) if own["worktree"] else None
        if path is not None and os.path.lexists(path):
            if os.path.realpath(path) == main:
                plan.kept.append(Kept(task, str(path), "the main checkout"))
            elif not own["worktree_created"]:
                owner = worktree_owner(path, project)
                plan.kept.append(Kept(task, _relative(project, path),
                                      f"not made by this run (owner: {owner or 'none recorded'})"))
            else:
                wt = _plan_worktree(run, plan, task, path, base_tips, worktrees, discard)
                if any(s.task == task and s.kind == "worktree" for s in plan.steps):
                    removed.append(os.path.realpath(path))
        if own["branch"]:
            _plan_branch(run, plan, task, task, own["branch"], created=own["branch_created"], base=base,
                         wt=wt, base_tips=base_tips, worktrees=worktrees, removed=removed,
                         remote_heads=remote_heads, remote=remote, discard=discard, pushed=own["pushed"])
        else:
            wt_archive(run, plan, task, task, wt, None, discard)
        for claim in _pool_claims(run, task):
            plan.steps.append(Step("claim", task, _relative(project, claim), "a spent pool claim", 0,
                                   {"path": str(claim)}))
    _plan_integration(run, plan, worktrees, base_tips, remote_heads, remote, discard)
    if purge_logs and plan.kept:
        plan.notes.append("--purge-logs: the run's records and logs stay, since some of what it names is kept")
    elif purge_logs:
        plan.steps.append(Step("logs", None, _relative(project, run.dir), "the run's records and logs",
                               disk_usage(run.dir), {"path": str(run.dir)}))
    return plan


def _plan_integration(run, plan: CleanupPlan, worktrees, base_tips, remote_heads, remote, discard) -> None:
    """The merge train's worktree and branch, ``parallel/<run-id>``, as ``parallel-setup merge``
    records them (``merge/integration.json``); without a record, the worktree on that branch."""
    from .runs import _read_json
    record = _read_json(run.dir / "merge" / "integration.json") or {}
    branch = record.get("branch") or f"{INTEGRATION_PREFIX}{run.id}"
    path = Path(record["worktree"]) if record.get("worktree") else _integration_worktree(run, worktrees)
    wt, removed = None, []
    if path is not None and os.path.lexists(path):
        owner = worktree_owner(path, run.project) or ""
        if owner.split(" ")[0] != run.id or record.get("worktree_created") is False:
            plan.kept.append(Kept(None, _relative(run.project, path),
                                  f"the integration worktree was not made by this run (owner: {owner or 'none recorded'})"))
        else:
            wt = _plan_worktree(run, plan, None, path, base_tips, worktrees, discard)
            if any(s.kind == "worktree" and s.data.get("path") == str(path) for s in plan.steps):
                removed.append(os.path.realpath(path))
    if _rev(run.project, f"refs/heads/{branch}") is None and wt is None:
        return
    created = record.get("branch_created") is not False and branch_created_by_run(
        run.project, branch, run.created_at, record.get("base_commit"))
    _plan_branch(run, plan, None, INTEGRATION_ARCHIVE, branch, created=created, base=run.data.get("base_commit"),
                 wt=wt, base_tips=base_tips, worktrees=worktrees, removed=removed,
                 remote_heads=remote_heads, remote=remote, discard=discard,
                 pushed=True)  # its name holds the run id; origin's copy is checked like a task's


# --------------------------------------------------------------------------
# Doing it


@contextmanager
def lock(project: Path) -> Iterator[None]:
    """The repository's cleanup lock (``.parallel/cleanup.lock``, flock): one cleanup at a time.

    Released by the kernel when the process dies, however it dies.
    """
    path = state_dir(Path(project)) / "cleanup.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            if e.errno not in (errno.EAGAIN, errno.EACCES):
                raise
            holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "?"
            raise CleanupBusy(f"another parallel-setup cleanup is running in this repository (pid {holder}); "
                              "wait for it to finish, then run cleanup again") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        os.close(fd)


@dataclass
class StepResult:
    step: Step
    ok: bool
    message: str = ""


def _snapshot(worktree: Path, parents: Sequence[str], env_paths: Sequence[str], message: str) -> str:
    """A commit of the worktree as it is now, through a temporary index (the worktree's own is untouched)."""
    admin = worktree_admin_dir(worktree)
    fd, index = tempfile.mkstemp(prefix="parallel-archive-index.", dir=str(admin) if admin else None)
    os.close(fd)
    os.unlink(index)  # git wants to create it
    env = dict(os.environ, GIT_INDEX_FILE=index)
    try:
        head = parents[0] if parents else None
        steps = [["read-tree", head] if head else ["read-tree", "--empty"],
                 ["add", "-A", "--", ".", *_exclusions(env_paths)]]
        for args in steps:
            proc = _git(worktree, *args, env=env)
            if proc.returncode != 0:
                raise FatalError(f"cannot archive {worktree}: git {args[0]} failed: {proc.stderr.strip()}")
        tree = _git(worktree, "write-tree", env=env).stdout.strip()
    finally:
        for p in (index, index + ".lock"):
            try:
                os.unlink(p)
            except FileNotFoundError:
                pass
    args = ["commit-tree", tree, "-m", message]
    for p in parents:
        args += ["-p", p]
    proc = _git(worktree, *args)
    if proc.returncode != 0 or not proc.stdout.strip():
        raise FatalError(f"cannot archive {worktree}: git commit-tree failed: {proc.stderr.strip()}")
    return proc.stdout.strip()


def _archive(run, step: Step) -> str:
    """Make (or keep) the archive ref; returns the archived commit. Idempotent."""
    project = Path(run.project)
    ref, parents = step.data["ref"], list(step.data["parents"])
    existing = _rev(project, ref)
    worktree = Path(step.data["worktree"]) if step.data.get("worktree") else None
    if worktree is not None:
        message = (f"parallel cleanup: archive of task {step.task or 'integration'} of run {run.id}\n\n"
                   f"The uncommitted changes in {_relative(project, worktree)}, "
                   f"saved before the worktree was removed.\n")
        commit = _snapshot(worktree, parents, step.data.get("env_paths") or [], message)
        if existing and _rev(project, existing + "^{tree}") == _rev(project, commit + "^{tree}") \
                and all(_is_ancestor(project, p, existing) for p in parents):
            return existing
        if existing and not _is_ancestor(project, existing, commit):
            # An earlier archive (an interrupted cleanup) stays reachable: it becomes a parent.
            commit = _snapshot(worktree, parents + [existing], step.data.get("env_paths") or [], message)
    else:
        commit = parents[-1] if len(parents) == 1 else None
        if existing and all(_is_ancestor(project, p, existing) for p in parents):
            return existing
        if commit is None or existing:
            tree = _rev(project, parents[-1] + "^{tree}")
            args = ["commit-tree", tree, "-m", f"parallel cleanup: archive of run {run.id}"]
            for p in parents + ([existing] if existing else []):
                args += ["-p", p]
            commit = _git(project, *args).stdout.strip()
    _test_kill_point()  # the commit is made, the ref not yet
    proc = _git(project, "update-ref", "-m", f"parallel cleanup of run {run.id}", ref, commit, existing or ZERO)
    if proc.returncode != 0:
        raise FatalError(f"cannot write {ref}: {proc.stderr.strip()}")
    return commit


def _remove_worktree(run, step: Step, archived: bool) -> str:
    path = Path(step.data["path"])
    project = Path(run.project)
    if not os.path.lexists(path):
        _git(project, "worktree", "prune")
        return "already gone"
    admin = worktree_admin_dir(path, run.project)
    owner = worktree_owner(path, run.project)
    if owner != step.data.get("owner"):  # looked at again: somebody else's worktree is there now
        raise FatalError(f"{path} is no longer the worktree the plan saw (owner now: {owner or 'none recorded'}): kept")
    if admin is not None and os.path.realpath(path) != os.path.realpath(project):
        if step.data.get("force") and not archived and not (admin / REMOVING_MARKER).exists() and not step.data.get("discard"):
            raise FatalError(f"{path} has uncommitted changes and no archive: not removed")
        (admin / REMOVING_MARKER).write_text(f"{run.id}\n", encoding="utf-8")
        _test_kill_point()  # marked, not yet removed
    proc = _git(project, "worktree", "remove", "--", str(path))
    if proc.returncode != 0 and (step.data.get("force") or archived or "submodule" in proc.stderr):
        # Ours, and its changes are archived (or discarded by name): now --force is safe.
        proc = _git(project, "worktree", "remove", "--force", "--", str(path))
    if proc.returncode != 0 and admin is not None and (admin / REMOVING_MARKER).exists() \
            and not (path / ".git").exists():
        # An interrupted removal left half a folder: git no longer knows it as a worktree.
        shutil.rmtree(path, ignore_errors=True)
        _git(project, "worktree", "prune")
        return "removed (an interrupted removal finished)"
    if proc.returncode != 0:
        raise FatalError(f"git worktree remove {path} failed: {proc.stderr.strip()}")
    return "removed"


def apply(run, plan: CleanupPlan, *, log=None) -> List[StepResult]:
    """Carry out ``plan`` in order; a step that fails stops that task's later steps, not the others."""
    project = Path(run.project)
    results: List[StepResult] = []
    failed: set = set()
    archived: set = set()
    for step in plan.steps:
        key = step.task or "_integration"
        if key in failed and step.kind != "logs":
            results.append(StepResult(step, False, "skipped: an earlier step of this task failed"))
            continue
        if step.kind == "logs" and failed:
            results.append(StepResult(step, False, "kept: an earlier step failed"))
            continue
        if step.kind == "logs":
            _record(run, results)
            _release_shared(project, run.id, plan)
        try:
            message = _do(run, step, key in archived)
            if step.kind == "archive":
                archived.add(key)
            results.append(StepResult(step, True, message))
        except FatalError as e:
            failed.add(key)
            results.append(StepResult(step, False, str(e)))
        if log is not None:
            log(results[-1])
        if not results[-1].message.startswith("already saved"):  # a step that changed something
            _test_kill_point()
    if not any(r.ok and r.step.kind == "logs" for r in results):
        _record(run, results)
        _release_shared(project, run.id, plan)
    forgotten = trusted.prune_setups()  # after the logs step: a purged run's scripts are gone now
    if forgotten:
        plan.notes.append(f"forgot the permission hook's records of {forgotten} setup script(s) that are gone")
    return results


def _record(run, results: List[StepResult]) -> None:
    """One ``cleanup`` event in the run's log: what went, what was archived, what failed."""
    events.append_event(run.dir, "cleanup",
                        removed=[r.step.target for r in results if r.ok and r.step.kind != "archive"],
                        archived=[r.step.target for r in results if r.ok and r.step.kind == "archive"],
                        failed=[r.step.target for r in results if not r.ok],
                        bytes=sum(r.step.bytes for r in results if r.ok))


_steps_done = 0


def _test_kill_point() -> None:
    """Tests kill cleanup for real: ``PARALLEL_CLEANUP_KILL_AFTER=N`` SIGKILLs it at the Nth point
    (after each step, and inside the archive and worktree steps)."""
    global _steps_done
    _steps_done += 1
    limit = os.environ.get("PARALLEL_CLEANUP_KILL_AFTER")
    if limit and limit.isdigit() and _steps_done >= int(limit):
        os.kill(os.getpid(), signal.SIGKILL)


def _do(run, step: Step, archived: bool) -> str:
    project = Path(run.project)
    if step.kind == "archive":
        before = _rev(project, step.data["ref"])
        commit = _archive(run, step)
        return f"saved ({commit[:12]})" if commit != before else f"already saved ({commit[:12]})"
    if step.kind == "env":
        path = Path(step.data["path"])
        for p in step.data["paths"]:
            target = path / p
            if target.is_dir() and not target.is_symlink():
                shutil.rmtree(target)
            elif os.path.lexists(target):
                target.unlink()
        return "removed"
    if step.kind == "worktree":
        return _remove_worktree(run, step, archived)
    if step.kind == "branch":
        branch, tip = step.data["branch"], step.data["tip"]
        now = _rev(project, f"refs/heads/{branch}")
        if now is None:
            return "already gone"
        if now != tip:
            raise FatalError(f"{branch} moved since the plan was made ({tip[:12]} -> {now[:12]}): kept")
        proc = _git(project, "update-ref", "-m", f"parallel cleanup of run {run.id}", "-d", f"refs/heads/{branch}", tip)
        if proc.returncode != 0:
            raise FatalError(f"cannot delete {branch}: {proc.stderr.strip()}")
        _git(project, "config", "--remove-section", f"branch.{branch}")
        return "deleted"
    if step.kind == "remote":
        branch, sha = step.data["branch"], step.data["sha"]
        try:
            proc = _git(project, "push", "--quiet", f"--force-with-lease=refs/heads/{branch}:{sha}", "origin",
                        f":refs/heads/{branch}", env=_no_prompt(), timeout=120)
        except subprocess.TimeoutExpired:
            raise FatalError(f"cannot delete origin/{branch}: git push timed out") from None
        if proc.returncode != 0:
            if "remote ref does not exist" in proc.stderr:
                return "already gone"
            raise FatalError(f"cannot delete origin/{branch}: {proc.stderr.strip().splitlines()[-1:] or ['?']}")
        return "deleted"
    if step.kind == "claim":
        try:
            Path(step.data["path"]).unlink()
        except FileNotFoundError:
            return "already gone"
        return "removed"
    if step.kind == "logs":
        shutil.rmtree(step.data["path"])
        return "removed"
    raise FatalError(f"unknown cleanup step {step.kind!r}")


def _release_shared(project: Path, run_id: str, plan: CleanupPlan) -> None:
    """The run's port leases and the pool's stale slots, when those modules offer it."""
    from . import pool, ports
    try:
        released = ports.release_run(project, run_id)
        if released:
            plan.notes.append(f"released the run's port leases ({released})")
    except Exception as e:  # noqa: BLE001 - the run's removal is done; say what was left
        plan.notes.append(f"could not release the run's ports: {e}")
    try:
        stale = pool.remove_stale(project)
        if stale:
            plan.notes.append(f"removed {stale} stale worktree(s) from the pool")
    except Exception as e:  # noqa: BLE001
        plan.notes.append(f"could not remove the pool's stale slots: {e}")


# --------------------------------------------------------------------------
# Which runs --all-merged cleans


def all_merged(run) -> Optional[str]:
    """None when every task of the run is done and merged into the base; else why not.

    Merged: the task's branch is in the base's history (or gone), or the merge train
    (``parallel-setup merge``) recorded merging it as a commit that is (a squash merge).
    """
    from .runs import task_states
    tips = _base_tips(run)
    states = task_states(run)
    merge_commits: Dict[str, List[str]] = {}
    for e in events.iter_events(run.dir):
        if e.get("event") == "merge_task" and e.get("result") == "merged" and isinstance(e.get("commit"), str):
            merge_commits.setdefault(e.get("task"), []).append(e["commit"])
    for task in run.tasks:
        if states[task].state != "done":
            return f"task {task} is {states[task].state}"
        branch = task_ownership(run, task)["branch"]
        tip = _rev(run.project, f"refs/heads/{branch}") if branch else None
        landed = tip is None or any(_is_ancestor(run.project, c, t) for c in [tip, *merge_commits.get(task, [])]
                                    if _rev(run.project, c) for t in tips)
        if not landed:
            return f"task {task}'s branch {branch} is not merged into the base"
    return None


# --------------------------------------------------------------------------
# What people read


KIND_LABELS = {"archive": "archive", "env": "env", "worktree": "worktree", "branch": "branch",
               "remote": "remote", "claim": "claim", "logs": "logs"}


def _line(step: Step) -> str:
    size = f" ({human_size(step.bytes)})" if step.bytes else ""
    who = step.task or "merge"
    return f"  {KIND_LABELS[step.kind]:<9} {who:<20} {step.target}{size}: {step.detail}"


def render_plan(plan: CleanupPlan, *, dry_run: bool) -> str:
    lines = [f"Cleanup of run {plan.run_id}" + (" (dry run: nothing is changed)" if dry_run else "")]
    if plan.steps:
        lines.append("Would do, in this order:" if dry_run else "To do, in this order:")
        lines += [_line(s) for s in plan.steps]
    else:
        lines.append("Nothing to remove: everything this run made is gone already.")
    lines += _kept_lines(plan)
    if dry_run and plan.port_leases:
        lines.append(f"Would release the run's port leases ({plan.port_leases}).")
    if dry_run and plan.steps:
        lines.append(f"Would free {human_size(plan.bytes)}.")
    return "\n".join(lines) + "\n"


def _kept_lines(plan: CleanupPlan) -> List[str]:
    lines = []
    if plan.kept:
        lines.append("Kept (not this run's to remove, or not safe):")
        lines += [f"  {(k.task or 'merge'):<20} {k.target}: {k.reason}" for k in plan.kept]
    lines += [f"Note: {n}" for n in plan.notes]
    return lines


def render_results(plan: CleanupPlan, results: List[StepResult]) -> str:
    lines = [f"Cleanup of run {plan.run_id}"]
    for r in results:
        size = f" ({human_size(r.step.bytes)})" if r.step.bytes and r.ok else ""
        mark = "" if r.ok else "FAILED "
        lines.append(f"  {mark}{KIND_LABELS[r.step.kind]:<9} {(r.step.task or 'merge'):<20} {r.step.target}{size}: {r.message}")
    if not results:
        lines.append("Nothing to remove: everything this run made is gone already.")
    lines += _kept_lines(plan)
    archives = [r.step.data["ref"] for r in results if r.ok and r.step.kind == "archive"]
    if archives:
        lines.append("Archived work (recover with: git switch -c <new-branch> <ref>):")
        lines += [f"  {ref}" for ref in archives]
    freed = sum(r.step.bytes for r in results if r.ok)
    if results:
        lines.append(f"Freed {human_size(freed)}.")
    return "\n".join(lines) + "\n"

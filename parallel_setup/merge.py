"""After the run: forecast conflicts, merge the verified branches in order, test after each, land.

The Python API behind ``parallel-setup merge`` (and ``/parallel:merge``)::

    from parallel_setup import merge, runs
    run = runs.load_run(project, run_id)
    fc = merge.forecast(run)                  # pairwise conflicts, no working tree touched
    result = merge.run_train(run, merge.TrainOptions(strategy="merge"))
    if result.green:
        merge.land(run, push=False)

The rule (bors-ng's "not rocket science rule"): the integration branch ``parallel/<run-id>``
only ever points at a commit whose tests passed. The train works in its own worktree
(``worktrees/merge-<run-id>``, detached HEAD): it merges a task there, runs the tests, and
moves the branch to that commit only when they pass. A stop (a conflict, red tests) leaves
the worktree as it was so a person or the resolver subagent can fix it; the next run
verifies the fix (no conflict left, no conflict markers, tests green) before it continues.

State comes from git and the run's records, never from memory: a task is merged when a
commit on the integration branch carries its ``Parallel-Task: <run-id>/<task-id>`` trailer;
an open stop is the last ``merge_stop`` event of a task not merged yet. So the train is
safe to kill at any point and run again, and ``merge.lock`` keeps two copies apart.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Dict, Iterable, List, Optional, Sequence, Tuple

from . import runs
from .errors import FatalError
from .gitutil import git
from .paths import WORKTREES_DIRNAME

STRATEGIES = ("merge", "squash", "rebase")
INTEGRATION_PREFIX = "parallel/"
TRAILER = "Parallel-Task"
#: ``git merge-tree --write-tree`` (a merge without a working tree) appeared in git 2.38.
MERGE_TREE_GIT = (2, 38)
#: Exit status of ``parallel-setup merge`` when the train stopped (conflict or red tests).
EXIT_STOPPED = 2
PROBE_LIMIT = 8  # earlier tasks tried one by one with a red task to name its semantic conflict
OUTPUT_TAIL = 4000  # characters of a failed test's output kept in the event log and the prompt

CONFLICT_MARKER = re.compile(r"^\+(<{7}|>{7})( |$)|^\+={7}$", re.M)


# --------------------------------------------------------------------------
# Names and records


def integration_branch(run: runs.Run) -> str:
    return f"{INTEGRATION_PREFIX}{run.id}"


def integration_worktree(run: runs.Run) -> Path:
    return run.project / WORKTREES_DIRNAME / f"merge-{run.id}"


def merge_dir(run: runs.Run) -> Path:
    return run.dir / "merge"


def integration_record(run: runs.Run) -> Optional[dict]:
    """``merge/integration.json``: what the train created (cleanup reads it), or None."""
    try:
        data = json.loads((merge_dir(run) / "integration.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def trailer_value(run: runs.Run, task_id: str) -> str:
    return f"{run.id}/{task_id}"


def _git_ok(cwd: Path, *args: str, timeout: float = 120) -> Optional[str]:
    proc = git(cwd, *args, check=False, timeout=timeout)
    return proc.stdout if proc.returncode == 0 else None


def _rev(cwd: Path, ref: str) -> Optional[str]:
    out = _git_ok(cwd, "rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}")
    return out.strip() if out else None


def _is_ancestor(cwd: Path, a: str, b: str) -> bool:
    return git(cwd, "merge-base", "--is-ancestor", a, b, check=False).returncode == 0


def git_version(cwd: Optional[Path] = None) -> Tuple[int, ...]:
    out = _git_ok(cwd or Path.cwd(), "version") or ""
    m = re.search(r"(\d+)\.(\d+)(?:\.(\d+))?", out)
    return tuple(int(x) for x in m.groups() if x is not None) if m else (0,)


# --------------------------------------------------------------------------
# What to merge, in which order


@dataclass
class Candidate:
    """A verified-done task the train may merge."""

    id: str
    title: str
    branch: str
    head: str
    issue: Optional[int] = None
    issue_url: Optional[str] = None
    depends_on: List[str] = field(default_factory=list)


@dataclass
class Skipped:
    """A task the train does not merge, and why."""

    id: str
    state: str
    reason: str


def merge_order(run: runs.Run) -> List[str]:
    """Dependency order, then plan order: each task after its dependencies, else as planned."""
    placed: List[str] = []
    remaining = list(run.tasks)
    while remaining:
        for tid in remaining:
            if all(d in placed for d in run.plan.task(tid).depends_on):
                placed.append(tid)
                remaining.remove(tid)
                break
        else:  # a cycle (plans are validated, so never): keep plan order
            placed += remaining
            break
    return placed


def select(run: runs.Run, states: Optional[Dict[str, runs.TaskState]] = None
           ) -> Tuple[List[Candidate], List[Skipped]]:
    """The done tasks with a branch, in merge order, and every other task with its reason."""
    states = states if states is not None else runs.task_states(run)
    cands: List[Candidate] = []
    skipped: List[Skipped] = []
    ok: set = set()
    for tid in merge_order(run):
        st = states[tid]
        task = run.plan.task(tid)
        if st.state != "done":
            why = {"pending": "not started", "running": "still running",
                   "unverified": "not verified", "failed": "failed", "setup_failed": "setup failed"}
            reason = why.get(st.state, st.state) + (f": {st.reason}" if st.reason else "")
            skipped.append(Skipped(tid, st.state, reason))
            continue
        missing = [d for d in task.depends_on if d not in ok]
        if missing:
            skipped.append(Skipped(tid, "waiting", "depends on " + ", ".join(
                f"{d} ({states[d].state})" for d in missing) + ", which is not mergeable"))
            continue
        head = _rev(run.project, f"refs/heads/{st.branch}") if st.branch else None
        if head is None:
            skipped.append(Skipped(tid, "done", f"branch {st.branch or '(none recorded)'} does not exist"))
            continue
        cands.append(Candidate(tid, task.title, st.branch or "", head, st.issue, st.issue_url,
                               list(task.depends_on)))
        ok.add(tid)
    return cands, skipped


def current_base(run: runs.Run, fetch: bool = False) -> Tuple[str, str]:
    """(ref, commit) of the base now: ``origin/<base>`` (fetched when asked) or the local branch."""
    ref, _note = runs.resolve_base(run.project, run.plan.base_branch, fetch=fetch)
    commit = _rev(run.project, ref)
    if commit is None:
        raise FatalError(f"the base {ref} is not a commit")
    return ref, commit


# --------------------------------------------------------------------------
# The forecast


@dataclass
class Conflict:
    a: str
    b: str  # a task id, or "base"
    files: List[str]


@dataclass
class Forecast:
    available: bool
    note: str
    base_ref: str
    base_commit: str
    order: List[str]
    pairs_checked: int = 0
    conflicts: List[Conflict] = field(default_factory=list)  # task x task
    base_conflicts: List[Conflict] = field(default_factory=list)  # task x the current base
    errors: List[str] = field(default_factory=list)
    seconds: float = 0.0

    def to_dict(self) -> dict:
        return asdict(self)

    def conflicting(self, task_id: str) -> List[Conflict]:
        return [c for c in self.conflicts + self.base_conflicts if task_id in (c.a, c.b)]


def merge_tree(cwd: Path, a: str, b: str) -> Tuple[Optional[List[str]], Optional[str]]:
    """([conflicted files] or [] when clean, None) or (None, error). Touches no working tree."""
    proc = git(cwd, "merge-tree", "--write-tree", "--name-only", "--no-messages", a, b,
               check=False, timeout=120)
    if proc.returncode == 0:
        return [], None
    if proc.returncode == 1:
        lines = [l for l in proc.stdout.splitlines()[1:] if l.strip()]
        return sorted(set(lines)), None
    return None, (proc.stderr.strip().splitlines() or [f"exit {proc.returncode}"])[-1]


def forecast_unavailable_note(version: Tuple[int, ...]) -> str:
    shown = ".".join(map(str, version))
    return (f"no conflict forecast: git {shown} is older than 2.38, which added "
            "`git merge-tree --write-tree` (a merge without a working tree). The train still finds "
            "every conflict when it merges, one task at a time in its own worktree.")


def forecast(run: runs.Run, cands: Optional[Sequence[Candidate]] = None, *,
             base: Optional[Tuple[str, str]] = None, workers: int = 4) -> Forecast:
    """Every pair of candidate branches, and each against the current base, merged in memory."""
    start = time.time()
    if cands is None:
        cands, _ = select(run)
    base_ref, base_commit = base or current_base(run)
    fc = Forecast(True, "", base_ref, base_commit, [c.id for c in cands])
    version = git_version(run.project)
    if version < MERGE_TREE_GIT:
        fc.available, fc.note = False, forecast_unavailable_note(version)
        return fc
    jobs: List[Tuple[str, str, str, str]] = []
    for i, a in enumerate(cands):
        jobs.append((a.id, "base", a.head, base_commit))
        for b in cands[i + 1:]:
            jobs.append((a.id, b.id, a.head, b.head))
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        results = list(pool.map(lambda j: merge_tree(run.project, j[2], j[3]), jobs))
    for (a, b, _, _), (files, err) in zip(jobs, results):
        if err is not None:
            fc.errors.append(f"{a} x {b}: {err}")
        elif files:
            (fc.base_conflicts if b == "base" else fc.conflicts).append(Conflict(a, b, files))
    fc.pairs_checked = len(jobs)
    fc.seconds = round(time.time() - start, 3)
    return fc


def render_forecast(fc: Forecast, merged: Iterable[str] = ()) -> List[str]:
    merged = set(merged)
    out = [f"Merge order ({len(fc.order)} verified task{'s' if len(fc.order) != 1 else ''}, "
           "dependency order then plan order):"]
    for i, tid in enumerate(fc.order, 1):
        out.append(f"  {i}. {tid}" + ("  (merged)" if tid in merged else ""))
    if not fc.available:
        return out + ["", fc.note]
    out.append("")
    out.append(f"Conflict forecast against {fc.base_ref} ({fc.base_commit[:8]}), "
               f"{fc.pairs_checked} merges in memory, {fc.seconds:.2f} s:")
    if not fc.conflicts and not fc.base_conflicts:
        out.append("  no conflicts: every pair merges cleanly")
    for c in fc.base_conflicts:
        out.append(f"  {c.a} x the base {fc.base_ref}: {', '.join(c.files)}")
    for c in fc.conflicts:
        out.append(f"  {c.a} x {c.b}: {', '.join(c.files)}")
    if fc.conflicts or fc.base_conflicts:
        out.append("  (textual conflicts only: tests after each merge find the semantic ones)")
    out += [f"  error: {e}" for e in fc.errors]
    ids = fc.order
    if 1 < len(ids) <= 12:
        out += ["", "Matrix (x = conflict, . = clean, B = the base):"] + _matrix(fc)
    return out


def _matrix(fc: Forecast) -> List[str]:
    ids = fc.order
    bad = {frozenset((c.a, c.b)) for c in fc.conflicts}
    base_bad = {c.a for c in fc.base_conflicts}
    w = max(len(t) for t in ids)
    nums = "".join(f"{i + 1:>3}" for i in range(len(ids)))
    lines = [f"  {'':<{w + 4}}  B{nums}"]
    for i, a in enumerate(ids):
        cells = "".join("  -" if a == b else ("  x" if frozenset((a, b)) in bad else "  .") for b in ids)
        lines.append(f"  {i + 1:>2}. {a:<{w}}  {'x' if a in base_bad else '.'}{cells}")
    return lines


# --------------------------------------------------------------------------
# The train's state, from git and the event log


def merged_tasks(run: runs.Run, tip: Optional[str], since: Optional[str] = None) -> Dict[str, str]:
    """task id -> the integration commit carrying its trailer (newest first wins)."""
    if not tip:
        return {}
    rng = f"{since}..{tip}" if since else tip
    out = _git_ok(run.project, "log", "--format=%H%x00%(trailers:key=" + TRAILER + ",valueonly,separator=%x01)%x00",
                  rng, "--") or ""
    found: Dict[str, str] = {}
    prefix = run.id + "/"
    for chunk in out.split("\x00\n"):
        parts = chunk.strip("\n").split("\x00")
        if len(parts) < 2:
            continue
        sha, values = parts[0].strip(), parts[1]
        for v in values.split("\x01"):
            v = v.strip()
            if v.startswith(prefix) and v[len(prefix):] not in found:
                found[v[len(prefix):]] = sha
    return found


def open_stop(run: runs.Run, merged: Iterable[str]) -> Optional[dict]:
    """The last ``merge_stop`` whose task is not merged yet (what a re-run must resolve)."""
    merged = set(merged)
    last = None
    for e in runs.events.iter_events(run.dir):
        if e.get("event") == "merge_stop":
            last = e
        elif e.get("event") == "landed":
            last = None
    if last is None or last.get("task") in merged:
        return None
    return last


# --------------------------------------------------------------------------
# The lock


class TrainLock:
    """``merge/lock``: one train per run at a time (flock: a killed holder releases it)."""

    def __init__(self, run: runs.Run):
        self.path = merge_dir(run) / "lock"
        self.run = run
        self.fd: Optional[int] = None

    def __enter__(self) -> "TrainLock":
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 200).decode("utf-8", "replace").strip() or "unknown"
            os.close(fd)
            raise FatalError(f"another `parallel-setup merge` of run {self.run.id} is running ({holder}); "
                             "wait for it to finish, then run merge again") from None
        os.ftruncate(fd, 0)
        os.write(fd, f"pid {os.getpid()} since {time.strftime('%H:%M:%S')}\n".encode())
        self.fd = fd
        return self

    def __exit__(self, *exc) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


# --------------------------------------------------------------------------
# The integration branch and its worktree


def ensure_integration(run: runs.Run, base_commit: str) -> Tuple[Path, str]:
    """The integration worktree and the branch tip, created on first use (recorded first)."""
    branch = integration_branch(run)
    wt = integration_worktree(run)
    rec = integration_record(run)
    tip = _rev(run.project, f"refs/heads/{branch}")
    if rec is None:
        if tip is not None:
            raise FatalError(f"branch {branch} exists but this run did not create it "
                             f"(no {merge_dir(run) / 'integration.json'}); rename or delete it, then run merge again")
        if wt.exists():
            raise FatalError(f"{wt} exists but this run did not create it; move it away, then run merge again")
        rec = {"branch": branch, "worktree": str(wt), "base_commit": base_commit,
               "branch_created": True, "worktree_created": True, "created_at": round(time.time(), 3)}
        merge_dir(run).mkdir(parents=True, exist_ok=True)
        runs._write_atomic(merge_dir(run) / "integration.json", json.dumps(rec, indent=2) + "\n")
    if tip is None:
        git(run.project, "branch", "--no-track", branch, rec.get("base_commit") or base_commit)
        tip = _rev(run.project, f"refs/heads/{branch}")
    if not (wt / ".git").exists():
        git(run.project, "worktree", "prune", check=False)
        if wt.exists() and any(wt.iterdir()):
            raise FatalError(f"{wt} exists but is not a git worktree; move it away, then run merge again")
        git(run.project, "worktree", "add", "--detach", "--", str(wt), branch, timeout=600)
        _record_owner(wt, f"{run.id} merge")
    probe = wt.with_name(wt.name + "-probe")
    if probe.exists() and _owner(probe) == f"{run.id} merge-probe":  # left by a train killed while probing
        _remove_worktree(run.project, probe)
    return wt, tip or ""


def _owner(wt: Path) -> Optional[str]:
    admin = _git_ok(wt, "rev-parse", "--absolute-git-dir")
    try:
        return Path(admin.strip(), "parallel-owner").read_text(encoding="utf-8").strip() if admin else None
    except OSError:
        return None


def _record_owner(wt: Path, owner: str) -> None:
    """``.git/worktrees/<name>/parallel-owner``, as the setup scripts write it for a task's worktree."""
    admin = _git_ok(wt, "rev-parse", "--absolute-git-dir")
    if admin:
        Path(admin.strip(), "parallel-owner").write_text(owner + "\n", encoding="utf-8")


# --------------------------------------------------------------------------
# The train


@dataclass
class TrainOptions:
    strategy: str = "merge"
    tests: Optional[List[str]] = None  # None: the plan's
    test_each: bool = True
    only: List[str] = field(default_factory=list)
    fetch: bool = False
    test_timeout: Optional[float] = None


@dataclass
class Stop:
    kind: str  # conflict | tests | markers | dirty | diverged
    task: Optional[str]
    files: List[str] = field(default_factory=list)
    collides_with: List[str] = field(default_factory=list)
    merged_before: List[str] = field(default_factory=list)
    semantic: bool = False
    test_command: Optional[str] = None
    test_exit: Optional[int] = None
    output_tail: str = ""
    task_head: Optional[str] = None  # the task branch's commit the train merged
    tasks: List[str] = field(default_factory=list)  # for a red test: the tasks merged since the last green
    culprits: List[str] = field(default_factory=list)  # earlier tasks red together with it, alone
    culprits_note: str = ""
    message: str = ""


@dataclass
class TrainResult:
    run_id: str
    branch: str
    worktree: str
    tip: str
    base_ref: str
    strategy: str
    order: List[str]
    merged: List[str]  # in order, including earlier runs of the train
    merged_now: List[str]
    remaining: List[str]
    skipped: List[Skipped]
    stop: Optional[Stop] = None
    tests: List[str] = field(default_factory=list)

    @property
    def green(self) -> bool:
        return self.stop is None and not self.remaining

    def to_dict(self) -> dict:
        d = asdict(self)
        d["green"] = self.green
        return d


def test_commands(run: runs.Run, override: Optional[Sequence[str]] = None) -> List[str]:
    """``--test`` when given, else every distinct test command of the plan's tasks, in plan order."""
    if override:
        return [c for c in override if c.strip()]
    seen: List[str] = []
    for t in run.plan.tasks:
        if t.test and t.test.strip() and t.test not in seen:
            seen.append(t.test)
    return seen


def run_tests(run: runs.Run, wt: Path, commands: Sequence[str], label: str,
              timeout: Optional[float] = None) -> Tuple[int, Optional[str], str, float]:
    """(exit, the failing command or None, output tail, seconds). Output goes to merge/tests.log."""
    start = time.time()
    log = merge_dir(run) / "tests.log"
    for cmd in commands:
        try:
            proc = subprocess.run(["bash", "-c", cmd], cwd=wt, capture_output=True, text=True,
                                  timeout=timeout, stdin=subprocess.DEVNULL)
            code, output = proc.returncode, proc.stdout + proc.stderr
        except subprocess.TimeoutExpired as e:
            code = 124
            output = f"{(e.stdout or b'')!s}\n(timed out after {timeout:g} s)"
        with open(log, "a", encoding="utf-8") as f:
            f.write(f"=== {time.strftime('%Y-%m-%dT%H:%M:%S')} {label}: $ {cmd}\n{output}\n=== exit {code}\n")
        if code != 0:
            return code, cmd, output[-OUTPUT_TAIL:], round(time.time() - start, 3)
    return 0, None, "", round(time.time() - start, 3)


def commit_message(run: runs.Run, c: Candidate, strategy: str) -> str:
    verb = {"merge": "Merge", "squash": "Squash", "rebase": "Rebase"}[strategy]
    issue = f" (#{c.issue})" if c.issue is not None else ""
    lines = [f"{verb} task {c.id}: {c.title}{issue}", "",
             f"Task {c.id} of run {run.id}, branch {c.branch}."]
    if c.issue is not None:
        lines += ["", f"Closes #{c.issue}"]
    lines += ["", f"{TRAILER}: {trailer_value(run, c.id)}"]
    return "\n".join(lines) + "\n"


def _changed_files(cwd: Path, a: str, b: str) -> List[str]:
    out = _git_ok(cwd, "diff", "--name-only", f"{a}...{b}", "--") or ""
    return [l for l in out.splitlines() if l]


def _unmerged(wt: Path) -> List[str]:
    out = _git_ok(wt, "diff", "--name-only", "--diff-filter=U") or ""
    return sorted(set(l for l in out.splitlines() if l))


def _dirty(wt: Path) -> bool:
    out = _git_ok(wt, "status", "--porcelain", "--untracked-files=no")
    return bool(out and out.strip())


def _untracked(wt: Path) -> List[str]:
    out = _git_ok(wt, "ls-files", "--others", "--exclude-standard") or ""
    return [l for l in out.splitlines() if l]


def _in_progress(wt: Path) -> Optional[str]:
    for name, what in (("MERGE_HEAD", "merge"), ("CHERRY_PICK_HEAD", "cherry-pick")):
        out = _git_ok(wt, "rev-parse", "--git-path", name)
        if out and Path(wt, out.strip()).exists():
            return what
    return None


def _markers(wt: Path, a: str, b: Optional[str] = None) -> List[str]:
    """Files whose added lines (a..b, or a..the working tree) hold conflict markers."""
    args = ["diff", "--no-color", "-U0", a] + ([b] if b else []) + ["--"]
    out = _git_ok(wt, *args) or ""
    files, current = [], None
    for line in out.splitlines():
        if line.startswith("+++ "):
            current = line[6:] if line.startswith("+++ b/") else None
        elif current and CONFLICT_MARKER.match(line) and current not in files:
            files.append(current)
    return files


def _merged_tree(cwd: Path, a: str, b: str) -> Tuple[Optional[str], Optional[str]]:
    """The tree of a and b merged in memory, or (None, why) when they conflict."""
    proc = git(cwd, "merge-tree", "--write-tree", "--no-messages", a, b, check=False, timeout=120)
    if proc.returncode == 0 and proc.stdout.strip():
        return proc.stdout.split()[0], None
    return None, "conflict" if proc.returncode == 1 else proc.stderr.strip()


def _remove_worktree(project: Path, path: Path) -> None:
    """Remove one of the train's own scratch worktrees (it holds nothing of anyone's)."""
    if path.exists():
        git(project, "worktree", "remove", "--force", "--force", "--", str(path), check=False, timeout=600)
        if path.exists():
            import shutil
            shutil.rmtree(path, ignore_errors=True)
    git(project, "worktree", "prune", check=False)


def _reset(wt: Path, commit: str) -> None:
    for what in ("merge", "cherry-pick"):
        git(wt, what, "--abort", check=False)
    git(wt, "reset", "-q", "--hard", commit)
    git(wt, "clean", "-q", "-fd")


class Train:
    """One run of the train (use :func:`run_train`)."""

    def __init__(self, run: runs.Run, opts: TrainOptions, say: Callable[[str], None]):
        if opts.strategy not in STRATEGIES:
            raise FatalError(f"--strategy must be one of {', '.join(STRATEGIES)}, not {opts.strategy!r}")
        self.run, self.opts, self.say = run, opts, say
        self.branch = integration_branch(run)
        self.tests = test_commands(run, opts.tests)
        self.merged_now: List[str] = []

    # -- events ---------------------------------------------------------------------------
    def event(self, kind: str, **fields) -> None:
        self.run.event(kind, **fields)

    def stop(self, stop: Stop) -> Stop:
        fields = {k: v for k, v in asdict(stop).items() if k not in ("task", "message", "kind")}
        self.event("merge_stop", task=stop.task, reason=stop.kind, message=stop.message,
                   strategy=self.opts.strategy, head=_rev(self.wt, "HEAD"), **fields)
        return stop

    # -- the run --------------------------------------------------------------------------
    def go(self) -> TrainResult:
        run = self.run
        base_ref, base_commit = current_base(run, fetch=self.opts.fetch)
        cands, skipped = select(run)
        self.order = [c.id for c in cands]
        if not cands and integration_record(run) is None:  # nothing to merge: make nothing
            return TrainResult(run.id, self.branch, str(integration_worktree(run)), "", base_ref,
                               self.opts.strategy, [], [], [], [], skipped, None, self.tests)
        self.wt, tip = ensure_integration(run, base_commit)
        since = run.data.get("base_commit") or None
        merged = self._merged(tip, since, cands)
        by_id = {c.id: c for c in cands}
        wanted = self._wanted(cands, merged, skipped)
        self.event("merge_start", strategy=self.opts.strategy, branch=self.branch, worktree=str(self.wt),
                   tip=tip, base_ref=base_ref, order=[c.id for c in cands], tasks=[c.id for c in wanted],
                   already_merged=sorted(merged), tests=self.tests, test_each=self.opts.test_each,
                   skipped=[asdict(s) for s in skipped])
        stop = self._resume(tip, merged, by_id)
        tip = _rev(run.project, f"refs/heads/{self.branch}") or tip
        merged = self._merged(tip, since, cands)
        if stop is None:
            stop = self._merge_all([c for c in wanted if c.id not in merged], tip, merged)
        tip = _rev(run.project, f"refs/heads/{self.branch}") or tip
        merged = self._merged(tip, since, cands)
        order = [c.id for c in cands]
        return TrainResult(run.id, self.branch, str(self.wt), tip, base_ref, self.opts.strategy, order,
                           [t for t in order if t in merged], self.merged_now,
                           [c.id for c in wanted if c.id not in merged], skipped, stop, self.tests)

    def _merged(self, tip: str, since: Optional[str], cands: List[Candidate]) -> Dict[str, str]:
        """Merged tasks: by their trailer, or (a resolution committed by hand with another message)
        because their branch's commit is already on the integration branch."""
        merged = merged_tasks(self.run, tip, since)
        for c in cands:
            if c.id not in merged and tip and _is_ancestor(self.run.project, c.head, tip):
                merged[c.id] = tip
        return merged

    def _wanted(self, cands: List[Candidate], merged: Dict[str, str], skipped: List[Skipped]) -> List[Candidate]:
        if not self.opts.only:
            return cands
        by_id = {c.id: c for c in cands}
        for tid in self.opts.only:
            self.run._check(tid)
            if tid not in by_id:
                why = next((s.reason for s in skipped if s.id == tid), "not mergeable")
                raise FatalError(f"task {tid} cannot be merged: {why}")
            deps = [d for d in by_id[tid].depends_on if d not in merged and d not in self.opts.only]
            if deps:
                raise FatalError(f"task {tid} depends on {', '.join(deps)}, which "
                                 f"{'is' if len(deps) == 1 else 'are'} not merged yet: merge "
                                 f"{'it' if len(deps) == 1 else 'them'} first (or name "
                                 f"{'it' if len(deps) == 1 else 'them'} with --task too)")
        return [c for c in cands if c.id in self.opts.only]

    def _resume(self, tip: str, merged: Dict[str, str], by_id: Dict[str, Candidate]) -> Optional[Stop]:
        """Pick up what an earlier run (or a resolver) left in the worktree."""
        wt = self.wt
        stopped = open_stop(self.run, merged)
        stopped_task = stopped.get("task") if stopped else None
        progress = _in_progress(wt)
        if progress or _dirty(wt):
            unmerged = _unmerged(wt)
            if unmerged:
                return self.stop(self._conflict_stop(by_id.get(stopped_task) if stopped_task else None,
                                                     unmerged, tip, merged, still=True))
            if stopped and stopped.get("reason") in ("conflict", "markers") and stopped_task in by_id:
                markers = _markers(wt, "HEAD")
                if markers:
                    return self.stop(Stop("markers", stopped_task, markers, message=(
                        f"conflict markers are still in {', '.join(markers)} (integration worktree {wt}): "
                        "finish resolving them, then run merge again")))
                c = by_id[stopped_task]
                strategy = stopped.get("strategy") or self.opts.strategy
                git(wt, "add", "-A", "--", ".")
                if progress == "cherry-pick":
                    proc = git(wt, "-c", "core.editor=true", "cherry-pick", "--continue", check=False)
                    if proc.returncode != 0 and _unmerged(wt):
                        return self.stop(self._conflict_stop(c, _unmerged(wt), tip, merged, still=True))
                if strategy == "rebase":
                    self._add_trailer_if_missing(c, tip)
                else:
                    git(wt, "commit", "-q", "--allow-empty", "--no-verify", "-m",
                        commit_message(self.run, c, strategy))
                self.say(f"{stopped_task}: the conflict is resolved (committed in the integration worktree)")
            elif stopped:
                return self.stop(Stop("dirty", stopped_task, message=(
                    f"the integration worktree {wt} has uncommitted changes: commit your fix there "
                    f"(git -C {wt} commit -am 'Fix ...'), or discard it (git -C {wt} reset --hard), "
                    "then run merge again")))
            else:  # the train was killed mid-merge: that half-made merge is its own, redo it
                self.say("an interrupted merge was left in the integration worktree: starting that task again")
                _reset(wt, _rev(wt, "HEAD") or tip)
        untracked = _untracked(wt)  # the train cleans up after its own tests: these are someone's work
        if untracked:
            shown = ", ".join(untracked[:5]) + (" ..." if len(untracked) > 5 else "")
            return self.stop(Stop("dirty", stopped_task, untracked, message=(
                f"the integration worktree {wt} has files git does not track ({shown}): if they are part of "
                f"the fix, add and commit them (git -C {wt} add ... && git -C {wt} commit); else remove them; "
                "then run merge again")))
        head = _rev(wt, "HEAD") or tip
        if head == tip:
            return None
        if not _is_ancestor(wt, tip, head):
            return self.stop(Stop("diverged", stopped_task, message=(
                f"the integration worktree {wt} is at {head[:8]}, which is not on top of {self.branch} "
                f"({tip[:8]}): check it out again (git -C {wt} checkout --detach {self.branch}) and run merge again")))
        if stopped and stopped.get("reason") == "tests" and stopped.get("head") == head and stopped_task in by_id:
            if stopped.get("task_head") and stopped["task_head"] != by_id[stopped_task].head:
                self.say(f"{stopped_task}: its branch moved since the red merge: merging it again")
                _reset(wt, tip)
                return None
            if self.opts.test_each and len(stopped.get("tasks") or []) > 1:
                self.say(f"the red merges of {', '.join(stopped['tasks'])} are merged again one at a time (--test-each)")
                _reset(wt, tip)
                return None
        pending = [t for t in merged_tasks(self.run, head, tip)]
        if stopped_task in by_id and stopped_task not in pending and _is_ancestor(wt, by_id[stopped_task].head, head):
            pending.append(stopped_task)  # resolved and committed by hand, with another message
        markers = _markers(wt, tip, head)
        if markers:
            return self.stop(Stop("markers", stopped_task, markers, message=(
                f"conflict markers were committed in {', '.join(markers)} (integration worktree {wt}): "
                "remove them, commit, then run merge again")))
        label = ", ".join(pending) or "the commits on top of the branch"
        return self._test_and_advance(tip, head, pending, stopped_task or (pending[-1] if pending else None),
                                      merged, resumed=True, label=label)

    def _culprits(self, task: str, before: List[str]) -> Tuple[List[str], str]:
        """Which earlier tasks turn ``task`` red on their own: each pair merged in memory and tested
        in a scratch worktree (``worktrees/merge-<run-id>-probe``, removed after)."""
        if git_version(self.run.project) < MERGE_TREE_GIT:
            return [], ""
        heads = {c.id: c.head for c in select(self.run)[0]}
        tried = [t for t in reversed(before) if t in heads][:PROBE_LIMIT]
        if task not in heads or not tried:
            return [], ""
        probe = self.wt.with_name(self.wt.name + "-probe")
        found: List[str] = []
        try:
            _remove_worktree(self.run.project, probe)
            git(self.run.project, "worktree", "add", "-q", "--detach", "--", str(probe), heads[task], timeout=600)
            _record_owner(probe, f"{self.run.id} merge-probe")
            for other in tried:
                tree, err = _merged_tree(self.run.project, heads[other], heads[task])
                if tree is None:
                    continue
                commit = git(self.run.project, "commit-tree", tree, "-p", heads[other], "-p", heads[task],
                             "-m", f"probe: {other} + {task}").stdout.strip()
                git(probe, "checkout", "-q", "--detach", commit)
                git(probe, "clean", "-q", "-fd")
                code, _, _, _ = run_tests(self.run, probe, self.tests, f"probe {other} + {task}", self.opts.test_timeout)
                if code != 0:
                    found.append(other)
        finally:
            _remove_worktree(self.run.project, probe)
        found = [t for t in before if t in found]
        if found:
            return found, ""
        skipped = len(before) - len(tried)
        return [], ("No single earlier task makes it red on its own: it takes their combination"
                    + (f" (tried the last {len(tried)} of {len(before)})" if skipped else "") + ".")

    def _add_trailer_if_missing(self, c: Candidate, tip: str) -> None:
        head = _rev(self.wt, "HEAD")
        if head and head != tip and c.id not in merged_tasks(self.run, head, tip):
            msg = (_git_ok(self.wt, "log", "-1", "--format=%B", "HEAD") or "").rstrip("\n")
            git(self.wt, "commit", "-q", "--amend", "--no-verify", "-m",
                msg + f"\n\n{TRAILER}: {trailer_value(self.run, c.id)}\n")

    def _merge_all(self, todo: List[Candidate], tip: str, merged: Dict[str, str]) -> Optional[Stop]:
        merged_ids = [t for t in merged]
        if not todo:
            return None
        git(self.wt, "clean", "-q", "-fd")
        pending: List[str] = []
        for c in todo:
            start = time.time()
            self.say(f"merging {c.id} ({c.branch})")
            result = self._apply(c)
            if result is not None:  # conflicted
                self.event("merge_task", task=c.id, result="conflict", files=result,
                           seconds=round(time.time() - start, 3))
                return self.stop(self._conflict_stop(c, result, tip, {t: "" for t in merged_ids}))
            head = _rev(self.wt, "HEAD") or ""
            pending.append(c.id)
            self.event("merge_task", task=c.id, result="merged_untested" if not self.opts.test_each else "clean",
                       commit=head, task_head=c.head, seconds=round(time.time() - start, 3))
            if self.opts.test_each:
                stop = self._test_and_advance(tip, head, [c.id], c.id, {t: "" for t in merged_ids})
                if stop is not None:
                    return stop
                tip = head
                merged_ids.append(c.id)
                pending = []
        if pending:  # --test-at-end
            head = _rev(self.wt, "HEAD") or ""
            return self._test_and_advance(tip, head, pending, pending[-1], {t: "" for t in merged_ids},
                                          label=", ".join(pending))
        return None

    def _apply(self, c: Candidate) -> Optional[List[str]]:
        """Merge one task into the worktree's HEAD; None when committed, else the conflicted files."""
        wt, msg = self.wt, commit_message(self.run, c, self.opts.strategy)
        if self.opts.strategy == "merge":
            proc = git(wt, "merge", "--no-ff", "--no-verify", "-q", "-m", msg, c.head, check=False, timeout=600)
        elif self.opts.strategy == "squash":
            if c.depends_on:  # its branch holds its dependencies' commits, which the train squashed already
                commits = self._own_commits(c)
                proc = git(wt, "cherry-pick", "--no-commit", *commits, check=False, timeout=600) if commits else None
            else:
                proc = git(wt, "merge", "--squash", "-q", c.head, check=False, timeout=600)
            if proc is None or proc.returncode == 0:
                proc = git(wt, "commit", "-q", "--allow-empty", "--no-verify", "-m", msg, check=False)
        else:
            head = _rev(wt, "HEAD") or ""
            commits = self._own_commits(c)
            if commits:
                proc = git(wt, "cherry-pick", "--allow-empty", *commits, check=False, timeout=600)
                if proc.returncode == 0:
                    self._add_trailer_if_missing(c, head)
            else:
                proc = git(wt, "commit", "-q", "--allow-empty", "--no-verify", "-m", msg, check=False)
        if proc.returncode == 0:
            return None
        files = _unmerged(wt)
        if files:
            return files
        raise FatalError(f"git could not merge {c.branch} into the integration worktree {wt}: "
                         + (proc.stderr.strip() or proc.stdout.strip())[-800:])

    def _own_commits(self, c: Candidate) -> List[str]:
        """The task's commits not on HEAD yet, by content (a dependency's copies do not count), oldest first."""
        return (_git_ok(self.wt, "rev-list", "--reverse", "--no-merges", "--right-only", "--cherry-pick",
                        f"HEAD...{c.head}") or "").split()

    def _conflict_stop(self, c: Optional[Candidate], files: List[str], tip: str, merged: Dict[str, str],
                       still: bool = False) -> Stop:
        tid = c.id if c else None
        collides: List[str] = []
        since = self.run.data.get("base_commit") or tip
        cands, _ = select(self.run)
        for other in cands:
            if other.id == tid or other.id not in merged:
                continue
            if set(_changed_files(self.run.project, since, other.head)) & set(files):
                collides.append(other.id)
        what = f"task {tid}" if tid else "a merge"
        with_ = (f", colliding with {', '.join(collides)} (merged before it)" if collides
                 else ", colliding with the base branch's changes")
        msg = (f"{what} {'is still conflicted' if still else 'conflicts'} in {', '.join(files)}{with_}. "
               f"The integration branch {self.branch} stays at {tip[:8]} (last green merge). "
               f"Resolve it in {self.wt} (edit the files, git add them), then run merge again: "
               "it verifies the resolution and the tests before it continues.")
        return Stop("conflict", tid, files, collides, message=msg)

    def _test_and_advance(self, tip: str, head: str, tasks: List[str], blamed: Optional[str],
                          merged: Dict[str, str], resumed: bool = False, label: str = "") -> Optional[Stop]:
        start = time.time()
        label = label or ", ".join(tasks)
        if self.tests:
            self.say(f"testing after {label}: " + " && ".join(self.tests))
            code, failed, tail, secs = run_tests(self.run, self.wt, self.tests, label, self.opts.test_timeout)
            git(self.wt, "clean", "-q", "-fd")  # what the tests left: so an untracked file later is someone's
        else:
            code, failed, tail, secs = 0, None, "", 0.0
        self.event("merge_tests", task=blamed, tasks=tasks, exit=code, command=failed or " && ".join(self.tests),
                   seconds=secs, commit=head, resumed=resumed)
        if code != 0:
            before = [t for t in self.order if t in merged and t not in tasks]
            states = runs.task_states(self.run)
            alone = len(tasks) == 1 and states.get(tasks[0]) is not None and states[tasks[0]].state == "done"
            culprits, note = (self._culprits(tasks[0], before) if alone and before else ([], ""))
            if alone:
                msg = (f"tests failed after merging {tasks[0]} (the merge itself was clean): `{failed}` exit {code}. "
                       f"{tasks[0]} was green alone (its tests passed on its branch): a semantic conflict with "
                       + (f"{', '.join(culprits)} (each merged alone with it: red)" if culprits else
                          f"{', '.join(before) or 'the base'}, merged before it") + "." + (f" {note}" if note else ""))
            else:
                msg = (f"tests failed after merging {label}: `{failed}` exit {code}. "
                       "Run merge again with --test-each to find the task.")
            msg += (f" The integration branch {self.branch} stays at {tip[:8]} (last green merge); the red "
                    f"merge is checked out in {self.wt}: fix it there and commit, or fix the task's branch, "
                    "then run merge again.")
            task_heads = {c.id: c.head for c in select(self.run)[0]}
            stop = Stop("tests", blamed, merged_before=before, semantic=alone, test_command=failed,
                        test_exit=code, output_tail=tail, task_head=task_heads.get(blamed or ""),
                        tasks=list(tasks), culprits=culprits, culprits_note=note, message=msg)
            self.stop(stop)
            self.run.event("merge_task", task=blamed, result="tests_failed", commit=head,
                           seconds=round(time.time() - start, 3))
            return stop
        proc = git(self.run.project, "update-ref", f"refs/heads/{self.branch}", head, tip, check=False)
        if proc.returncode != 0:
            raise FatalError(f"could not move {self.branch} to {head[:8]}: {proc.stderr.strip()}")
        for t in tasks:
            self.merged_now.append(t)
            self.event("merge_task", task=t, result="merged", commit=head, seconds=round(time.time() - start, 3),
                       resumed=resumed)
        self.say(f"{label}: merged, tests green, {self.branch} at {head[:8]}")
        return None


def run_train(run: runs.Run, opts: Optional[TrainOptions] = None,
              say: Callable[[str], None] = lambda s: None, *, locked: bool = False) -> TrainResult:
    """Run (or continue) the merge train under the run's lock (``locked``: the caller holds it)."""
    opts = opts or TrainOptions()
    if locked:
        return Train(run, opts, say).go()
    with TrainLock(run):
        return Train(run, opts, say).go()


def train_status(run: runs.Run) -> Dict[str, object]:
    """What the status page shows: each task's merge state and the train's events (read only)."""
    rec = integration_record(run)
    branch = integration_branch(run)
    tip = _rev(run.project, f"refs/heads/{branch}") if rec else None
    merged = merged_tasks(run, tip, run.data.get("base_commit") or None) if tip else {}
    evs = [e for e in runs.events.iter_events(run.dir)
           if str(e.get("event", "")).startswith("merge_") or e.get("event") == "landed"]
    stop = open_stop(run, merged)
    per_task: Dict[str, str] = {}
    for tid in run.tasks:
        if tid in merged:
            per_task[tid] = "merged"
        elif stop is not None and stop.get("task") == tid:
            per_task[tid] = f"stopped ({stop.get('reason')})"
        else:
            per_task[tid] = ""
    return {"branch": branch if rec else None, "tip": tip, "merged": merged, "tasks": per_task,
            "events": evs, "stop": stop}


# --------------------------------------------------------------------------
# Landing


def _checkout_of(project: Path, branch: str) -> Optional[Path]:
    out = _git_ok(project, "worktree", "list", "--porcelain") or ""
    path = None
    for line in out.splitlines():
        if line.startswith("worktree "):
            path = Path(line[9:])
        elif line == f"branch refs/heads/{branch}" and path is not None:
            return path
    return None


def land(run: runs.Run, result: TrainResult, push: bool = False) -> dict:
    """Fast-forward the base branch to the green integration branch (and push it when asked)."""
    base = run.plan.base_branch
    project = run.project
    if not result.green:
        raise FatalError(f"not landing: the train is not green ({_not_green(result)})")
    tip = result.tip
    old = _rev(project, f"refs/heads/{base}")
    if old is None:
        raise FatalError(f"not landing: there is no local branch {base} to fast-forward")
    if old == tip:
        landed = {"base": base, "from": old, "to": tip, "pushed": False, "already": True}
    else:
        if not _is_ancestor(project, old, tip):
            n = len((_git_ok(project, "rev-list", f"{tip}..{old}") or "").split())
            raise FatalError(
                f"not landing: {base} moved since the train started ({n} commit{'s' if n != 1 else ''} "
                f"not in {result.branch}), so this is not a fast-forward. Bring them in and test again: "
                f"git -C {result.worktree} merge {base}, then run merge again")
        checkout = _checkout_of(project, base)
        if checkout is not None:
            dirty = (_git_ok(checkout, "status", "--porcelain", "--untracked-files=no") or "").splitlines()
            if dirty:
                shown = ", ".join(l[3:] for l in dirty[:5]) + (" ..." if len(dirty) > 5 else "")
                raise FatalError(f"not landing: the checkout of {base} at {checkout} has uncommitted "
                                 f"changes ({shown}); commit or stash them, then run merge --land again")
            proc = git(checkout, "merge", "--ff-only", "-q", tip, check=False, timeout=600)
        else:
            proc = git(project, "update-ref", f"refs/heads/{base}", tip, old, check=False)
        if proc.returncode != 0:
            raise FatalError(f"not landing: git could not fast-forward {base}: {proc.stderr.strip()}")
        landed = {"base": base, "from": old, "to": tip, "pushed": False, "already": False}
    if push:
        proc = git(project, "push", "-q", "origin", f"{tip}:refs/heads/{base}", check=False, timeout=600)
        if proc.returncode != 0:
            run.event("landed", **landed)
            raise FatalError(f"{base} is at {tip[:8]} locally, but git push origin {base} failed: "
                             f"{(proc.stderr.strip().splitlines() or ['?'])[-1]}")
        landed["pushed"] = True
    landed["closed_issues"] = close_local_issues(run, result) if run.mode == "local" else []
    run.event("landed", **landed)
    return landed


def _not_green(result: TrainResult) -> str:
    if result.stop is not None:
        return f"stopped at {result.stop.task or 'a merge'}: {result.stop.kind}"
    return "not merged yet: " + ", ".join(result.remaining)


def close_local_issues(run: runs.Run, result: TrainResult) -> List[int]:
    """Mark each merged task's ``.parallel/issues/N.md`` closed, naming its merge commit (once)."""
    states = runs.task_states(run)
    merged = merged_tasks(run, result.tip, run.data.get("base_commit") or None)
    closed = []
    for tid, commit in merged.items():
        issue = states[tid].issue if tid in states else None
        if issue is None:
            continue
        path = run.project / ".parallel" / "issues" / f"{issue}.md"
        marker = f"<!-- parallel-setup closed run={run.id} task={tid} -->"
        try:
            text = path.read_text(encoding="utf-8")
        except OSError:
            continue
        if marker in text:
            continue
        text = text.rstrip("\n") + (f"\n\n{marker}\n**Closed**: merged into `{run.plan.base_branch}` as "
                                    f"{commit} (task {tid}, run {run.id}, "
                                    f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}).\n"
                                    "status: closed\n")
        runs._write_atomic(path, text)
        closed.append(issue)
    return sorted(closed)


def push_branch(run: runs.Run, branch: str) -> None:
    """Push one of the run's branches to origin (no force), for a pull request."""
    if not branch:
        raise FatalError("no branch to push")
    proc = git(run.project, "push", "-q", "origin", f"refs/heads/{branch}:refs/heads/{branch}",
               check=False, timeout=600)
    if proc.returncode != 0:
        raise FatalError(f"git push origin {branch} failed: {(proc.stderr.strip().splitlines() or ['?'])[-1]}")

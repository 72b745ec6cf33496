"""Done means verified: check a completion report against git, the remote and the issue.

A task is ``done`` only when every claim checks out:

* its branch exists and has commits beyond the run's base ref (and the commits the
  report lists are among them);
* the remote has the branch at the same commit, when the repository has a remote;
* its issue exists (local mode: the file; GitHub: recorded by its setup's ``setup_end``,
  and confirmed with ``gh issue view`` when that is quick to ask);
* the report records the tests' exit code, and it is 0.

Otherwise it is ``unverified`` with the failed claims listed. A report with
``status: failed`` makes it ``failed`` with the reason and the setup log's path.
Standard library only (the hooks call this); every external command has a timeout, and a
hook gives the whole verification a budget (:data:`HOOK_BUDGET`) well inside its own. It
imports no ``pathlib``, ``dataclasses`` or ``shutil``: the SubagentStop hook imports this
module, and each of those costs that hook milliseconds.
"""

from __future__ import annotations

import os
import re
import subprocess
import time

from . import events

GIT_TIMEOUT = 10
REMOTE_TIMEOUT = 15
GH_TIMEOUT = 8
#: The most a SubagentStop hook (killed after 30 s) spends verifying, every command included.
HOOK_BUDGET = 18.0
#: Below this much budget left, a check is not started (and says so).
_MIN_CHECK = 0.5


class Budget:
    """Seconds left for verification; each command's timeout is cut to what is left."""

    __slots__ = ("deadline",)

    def __init__(self, seconds: float | None):
        self.deadline = None if seconds is None else time.monotonic() + max(0.0, seconds)

    def cap(self, timeout: float) -> float:
        if self.deadline is None:
            return timeout
        return min(timeout, self.deadline - time.monotonic())

    def spent(self) -> bool:
        return self.cap(_MIN_CHECK + 1) < _MIN_CHECK


_UNLIMITED = Budget(None)


def hook_budget() -> float:
    """``HOOK_BUDGET``, or ``PARALLEL_VERIFY_BUDGET`` seconds (never more than HOOK_BUDGET)."""
    from .task_state import env_seconds
    return min(env_seconds("PARALLEL_VERIFY_BUDGET", HOOK_BUDGET), HOOK_BUDGET)


class Verdict:
    """A task's verified state: ``done``, ``failed`` or ``unverified``, with the why."""

    __slots__ = ("state", "failed_claims", "notes", "reason", "log", "facts")

    def __init__(self, state: str, failed_claims: list | None = None, notes: list | None = None,
                 reason: str | None = None, log: str | None = None, facts: dict | None = None):
        self.state = state
        self.failed_claims = [] if failed_claims is None else failed_claims
        self.notes = [] if notes is None else notes
        self.reason = reason
        self.log = log
        self.facts = {} if facts is None else facts

    def _fields(self) -> tuple:
        return tuple(getattr(self, name) for name in self.__slots__)

    def __eq__(self, other):
        return self._fields() == other._fields() if type(other) is Verdict else NotImplemented

    def __repr__(self) -> str:
        return "Verdict(" + ", ".join(f"{n}={v!r}" for n, v in zip(self.__slots__, self._fields())) + ")"


def _git(project, *args: str, timeout: float = GIT_TIMEOUT, budget: Budget = _UNLIMITED) -> subprocess.CompletedProcess | None:
    timeout = budget.cap(timeout)
    if timeout < _MIN_CHECK:
        return None
    try:
        return subprocess.run(["git", *args], cwd=project, capture_output=True, text=True,
                              timeout=timeout, stdin=subprocess.DEVNULL)
    except (OSError, subprocess.SubprocessError):
        return None


def issue_number(value) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value if value > 0 else None
    if isinstance(value, str):
        m = re.search(r"(\d+)\s*$", value.strip())
        return int(m.group(1)) if m else None
    return None


def setup_end_of(run_dir, task: str) -> dict | None:
    found = events.read_events(run_dir, event="setup_end", task=task)
    return found[-1] if found else None


def verify_task(project, run_info: dict, task: str, report: dict | None, *,
                missing_report: str | None = None, run_dir=None, budget: float | None = None) -> Verdict:
    """``project`` and ``run_dir`` (default: the run's folder in ``project``): str or path-like.

    ``budget``: the most seconds every command together may take (a claim not checked in
    time fails, so the task is ``unverified`` and ``status --recheck`` can check it again)."""
    limit = Budget(budget)
    project = os.fspath(project)
    run_id = run_info.get("id") or (events.run_id_of(run_dir) if run_dir else "")
    run_dir = os.fspath(run_dir) if run_dir else os.path.join(project, ".parallel", "runs", run_id)
    log_path = os.path.join(run_dir, "tasks", task, "setup.log")
    try:
        log = os.path.relpath(log_path, project)
    except ValueError:
        log = str(log_path)
    setup = setup_end_of(run_dir, task) or {}
    report = report or None
    facts = {"branch": (report or {}).get("branch") or setup.get("branch"),
             "issue": issue_number((report or {}).get("issue")) or issue_number(setup.get("issue"))}

    if report is None:
        return Verdict("unverified", [f"completion report: {missing_report or 'missing'}"], log=log, facts=facts)
    if report.get("status") == "failed":
        reason = report.get("reason") or setup.get("reason") or "the subagent reported failure without a reason"
        return Verdict("failed", [], reason=str(reason), log=log, facts=facts)

    claims: list[str] = []
    notes: list[str] = []
    base = run_info.get("base_ref") or "HEAD"
    head = _check_branch(project, facts["branch"], base, report, claims, facts, limit)
    if head:
        _check_remote(project, facts["branch"], base, head, claims, notes, limit)
    _check_issue(project, run_info, setup, report, facts["issue"], claims, notes, limit)
    if limit.spent() and claims:
        notes.append(f"verification stopped at its {budget:g} s budget")
    _check_tests(report, claims, facts)
    return Verdict("done" if not claims else "unverified", claims, notes, log=log, facts=facts)


def _check_branch(project, branch, base, report, claims, facts, budget=_UNLIMITED) -> str | None:
    if not branch:
        claims.append("branch: the report names no branch")
        return None
    proc = _git(project, "rev-parse", "--verify", "-q", f"refs/heads/{branch}^{{commit}}", budget=budget)
    if proc is None:
        claims.append(f"branch: could not check {branch} (git did not answer in time)")
        return None
    if proc.returncode != 0:
        claims.append(f"branch: {branch} does not exist")
        return None
    head = proc.stdout.strip()
    facts["head"] = head
    listed = _git(project, "rev-list", f"{base}..{head}", "--", budget=budget)
    if listed is None or listed.returncode != 0:
        claims.append(f"branch: cannot compare {branch} with the base {base}")
        return head
    shas = listed.stdout.split()
    facts["commits"] = len(shas)
    if not shas:
        claims.append(f"branch: {branch} has no commits beyond {base}")
    for sha in report.get("commits") or []:
        if not isinstance(sha, str) or len(sha) < 4 or not any(s.startswith(sha.lower()) for s in shas):
            claims.append(f"commits: {str(sha)[:12]} is not on {branch} beyond {base}")
    return head


def _remote_for(project, base, budget=_UNLIMITED) -> str | None:
    """The remote the branch goes to; None when there is none; "" when git could not say."""
    proc = _git(project, "remote", budget=budget)
    if proc is None:
        return ""
    remotes = proc.stdout.split() if proc.returncode == 0 else []
    if not remotes:
        return None
    first = base.split("/", 1)[0]
    if first in remotes:
        return first
    return "origin" if "origin" in remotes else remotes[0]


def _check_remote(project, branch, base, head, claims, notes, budget=_UNLIMITED) -> None:
    remote = _remote_for(project, base, budget)
    if remote == "":
        claims.append(f"push: could not check where {branch} is pushed (git did not answer in time)")
        return
    if remote is None:
        notes.append("no remote: nothing to push to")
        return
    proc = _git(project, "ls-remote", "--heads", remote, f"refs/heads/{branch}", timeout=REMOTE_TIMEOUT,
                budget=budget)
    if proc is None or proc.returncode != 0:
        why = "timed out" if proc is None else (proc.stderr.strip().splitlines() or ["failed"])[-1]
        claims.append(f"push: could not check {remote} for {branch} ({why})")
        return
    remote_sha = proc.stdout.split()[0] if proc.stdout.split() else None
    if remote_sha is None:
        claims.append(f"push: {branch} is not on {remote}")
    elif remote_sha != head:
        claims.append(f"push: {remote} has {branch} at {remote_sha[:8]}, the local branch is at {head[:8]}")


def _check_issue(project, run_info, setup, report, number, claims, notes, budget=_UNLIMITED) -> None:
    reported = issue_number(report.get("issue"))
    recorded = issue_number(setup.get("issue"))
    if number is None:
        claims.append("issue: the report names no issue")
        return
    if reported and recorded and reported != recorded:
        claims.append(f"issue: the report says #{reported}, setup created #{recorded}")
        return
    mode = run_info.get("issue_mode") or setup.get("mode")
    if mode == "local":
        if not os.path.isfile(os.path.join(project, ".parallel", "issues", f"{number}.md")):
            claims.append(f"issue: .parallel/issues/{number}.md does not exist")
        return
    if recorded != number or setup.get("status") not in (None, "ok"):
        claims.append(f"issue: #{number} was not recorded by this task's setup")
        return
    repo = run_info.get("repository")
    if os.environ.get("PARALLEL_VERIFY_GH", "1") == "0":
        gh = None
    else:
        import shutil  # only a github-mode check needs it
        gh = shutil.which("gh")
    if not gh:
        notes.append(f"issue #{number} recorded by setup; not checked on GitHub (gh not used)")
        return
    cmd = [gh, "issue", "view", str(number), "--json", "number"] + (["-R", repo] if repo else [])
    timeout = budget.cap(GH_TIMEOUT)
    if timeout < _MIN_CHECK:
        notes.append(f"issue #{number} recorded by setup; not checked on GitHub (verification budget spent)")
        return
    try:
        proc = subprocess.run(cmd, cwd=project, capture_output=True, text=True, timeout=timeout,
                              stdin=subprocess.DEVNULL, env=dict(os.environ, GH_PROMPT_DISABLED="1"))
    except (OSError, subprocess.SubprocessError):
        notes.append(f"issue #{number} recorded by setup; GitHub did not answer in {timeout:.0f} s")
        return
    if proc.returncode == 0 and re.search(rf'"number"\s*:\s*{number}\b', proc.stdout):
        notes.append(f"issue #{number} confirmed on GitHub")
    else:
        why = (proc.stderr.strip().splitlines() or ["no answer"])[-1][:200]
        notes.append(f"issue #{number} recorded by setup; not confirmed on GitHub ({why})")


def _check_tests(report, claims, facts) -> None:
    tests = report.get("tests") if isinstance(report.get("tests"), dict) else {}
    code = tests.get("exit_code")
    facts["tests_command"] = tests.get("command")
    if isinstance(code, bool) or not isinstance(code, int):
        claims.append("tests: the report records no test exit code")
        return
    facts["tests_exit"] = code
    if code != 0:
        claims.append(f"tests: exit code {code}")


def saved_report(run_dir, task: str) -> dict | None:
    """The completion report the hooks saved for ``task`` (``tasks/<task>/report.json``)."""
    import json
    try:
        with open(os.path.join(os.fspath(run_dir), "tasks", task, "report.json"), encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def recheck(project, run_dir, run_info: dict, task_ids) -> dict:
    """Verify the saved reports of ``task_ids`` again (an ``unverified`` task whose cause may be
    fixed by now: the branch pushed, the hook that verified it killed). Records a
    ``task_ending`` lease and a ``task_end`` (``via: recheck``) for each; returns
    ``{task: Verdict}`` for the tasks that had a report to check."""
    verdicts = {}
    for task in task_ids:
        report = saved_report(run_dir, task)
        if report is None:
            continue
        events.append_event(run_dir, "task_ending", task=task, via="recheck", agent_id=None, lease=None)
        verdict = verify_task(project, run_info, task, report, run_dir=run_dir)
        events.append_event(run_dir, "task_end", task=task, state=verdict.state,
                            failed_claims=verdict.failed_claims, notes=verdict.notes, reason=verdict.reason,
                            log=verdict.log, facts=verdict.facts, via="recheck", agent_id=report.get("agent_id"))
        verdicts[task] = verdict
    return verdicts

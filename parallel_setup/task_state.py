"""The one derivation of what each task of a run is doing, from its event log.

``runs.task_states`` (execute), ``status.load_run`` (``status``, its HTML page and the
hooks' run summary) all call :func:`derive`; nothing else decides a task's state.

States:

* ``pending``       not launched yet;
* ``running``       launched, its agent at work (or its report being verified);
* ``setup_failed``  its setup script failed (``reason`` says at which step and why);
* ``done``          its report verified against git, the remote and the issue;
* ``failed``        its agent reported failure;
* ``unverified``    it reported done but a claim did not check out, or the hook verifying
  it was killed before it wrote its verdict (``status --recheck`` verifies again);
* ``lost``          launched, but no sign of its agent for :func:`lost_after` seconds (no
  event, its output file and its worktree unchanged) and no end recorded (its session
  ended without SubagentStop): ``execute --run`` relaunches it.

Standard library only, no ``pathlib``/``dataclasses``/``typing``: the hooks import it.
"""

from __future__ import annotations

import os
import time

from . import events

STATES = ("pending", "running", "setup_failed", "done", "failed", "unverified", "lost")
#: States a task ends in (its agent is gone).
ENDED = ("done", "failed", "unverified", "setup_failed", "lost")
#: States ``--retry-failed`` launches again (``lost`` is relaunched without it).
RETRYABLE = ("failed", "setup_failed", "unverified")
#: A SubagentStop hook is killed after 30 s; a ``task_ending`` lease older than this without
#: its ``task_end`` was interrupted.
LEASE_SECONDS = 45.0
#: No sign of a running task's agent for this long (and no end): it is lost.
DEFAULT_LOST_AFTER = 1800.0
INTERRUPTED = ("verification did not finish (the hook checking the report was stopped); "
               "`parallel-setup status --recheck` verifies it again")


def env_seconds(name: str, default: float) -> float:
    """A positive number of seconds from the environment variable ``name``, else ``default``."""
    try:
        value = float(os.environ.get(name, ""))
    except ValueError:
        return default
    return value if value > 0 and value != float("inf") else default


def lost_after() -> float:
    return env_seconds("PARALLEL_LOST_AFTER", DEFAULT_LOST_AFTER)


class TaskState:
    """One task's state and the facts recorded about it (issue, branch, worktree, agent)."""

    __slots__ = ("id", "state", "launched", "issue", "issue_url", "branch", "worktree", "reason",
                 "failed_claims", "agent_id", "output_file", "last_seen", "ending", "setup_ok",
                 "permission_denials")

    def __init__(self, id, state="pending", launched=0, issue=None, issue_url=None, branch=None,
                 worktree=None, reason=None):
        self.id, self.state, self.launched = id, state, launched
        self.issue, self.issue_url, self.branch, self.worktree, self.reason = issue, issue_url, branch, worktree, reason
        self.failed_claims = []
        self.agent_id = None
        self.output_file = None  # the agent's output file (its transcript), a sign of life
        self.last_seen = None    # time of the task's latest event
        self.ending = None       # time of a task_ending lease not yet followed by task_end
        self.setup_ok = None     # the latest setup's outcome (None: none ended yet)
        #: tool calls Claude Code refused this attempt's agent, [{"tool", "command"}] (``permission_denied``)
        self.permission_denials = []

    def __eq__(self, other):
        if type(other) is not TaskState:
            return NotImplemented
        return all(getattr(self, n) == getattr(other, n) for n in self.__slots__)

    __hash__ = None

    def __repr__(self) -> str:
        return "TaskState(" + ", ".join(f"{n}={getattr(self, n)!r}" for n in self.__slots__) + ")"


def attributed_events(run_dir) -> list:
    """The run's events in file order, each early ``agent_start`` (logged before its agent
    was linked to a task) given the task its agent was linked to later (``linked_late``)."""
    found = list(events.iter_events(run_dir))
    links = {}
    for e in found:
        agent, task = e.get("agent_id"), e.get("task")
        if agent and task and e.get("event") in ("agent_launched", "agent_stop", "task_ending", "task_end"):
            links.setdefault(agent, task)
    out = []
    for e in found:
        if e.get("event") == "agent_start" and e.get("task") is None and e.get("agent_id") in links:
            e = dict(e, task=links[e["agent_id"]], linked_late=True)
        out.append(e)
    return out


#: Events that show a task's agent was started (again): the task is running (unless the
#: agent that ended it is only resumed).
_STARTS = ("spawn", "agent_launched", "agent_start", "setup_start")


def derive(run_dir, task_ids, now=None, records=None) -> dict:
    """``{task id: TaskState}`` for a run folder, as of ``now`` (default: the clock).

    ``records``: the run's :func:`attributed_events`, when the caller has read them already.
    """
    states = {tid: TaskState(tid) for tid in task_ids}
    for e in (attributed_events(run_dir) if records is None else records):
        kind, t = e["event"], e["t"]
        if kind == "launch":
            for tid in e.get("wave") or []:
                st = states.get(tid)
                if st is not None:
                    st.launched += 1
                    _restart(st, t)
            continue
        st = states.get(e.get("task"))
        if st is None:
            continue
        st.last_seen = t if st.last_seen is None else max(st.last_seen, t)
        if kind in _STARTS:
            agent = e.get("agent_id")
            resumed = kind in ("agent_launched", "agent_start") and agent is not None and agent == st.agent_id
            if st.state != "running" and not resumed:  # a resumed agent that ended already: no new run
                _restart(st, t)
            st.agent_id = agent or st.agent_id
            st.output_file = e.get("output_file") or st.output_file
        elif kind == "setup_end":
            _setup_end(st, e)
        elif kind == "task_ending":
            st.ending = t
        elif kind == "permission_denied":
            st.permission_denials.append({"tool": e.get("tool"), "command": e.get("command")})
        elif kind == "task_end":
            _task_end(st, e)
    now = time.time() if now is None else now
    bound = lost_after()
    for st in states.values():
        if st.state != "running":
            continue
        if st.ending is not None and now - st.ending > LEASE_SECONDS:
            st.state, st.reason, st.failed_claims = "unverified", INTERRUPTED, [INTERRUPTED]
        elif st.ending is None and st.last_seen is not None and now - _sign_of_life(st) > bound:
            st.state = "lost"
            st.reason = (f"no sign of its agent for {(now - _sign_of_life(st)) / 60:.0f} min and no end recorded "
                         "(its session ended?); `parallel-setup execute --run RUN` relaunches it")
    return states


def _restart(st: TaskState, t: float) -> None:
    st.state, st.reason, st.failed_claims, st.ending, st.setup_ok = "running", None, [], None, None
    st.permission_denials = []  # a new attempt: the earlier one's refusals are in the log
    st.last_seen = t if st.last_seen is None else max(st.last_seen, t)


def _setup_end(st: TaskState, e: dict) -> None:
    if isinstance(e.get("issue"), int):
        st.issue = e["issue"]
    st.issue_url = e.get("issue_url") or st.issue_url
    st.branch = e.get("branch") or st.branch
    st.worktree = e.get("worktree") or st.worktree
    st.setup_ok = e.get("status") == "ok"
    if not st.setup_ok:
        st.state = "setup_failed"
        st.reason = f"setup failed at {e.get('step') or '?'}: {e.get('reason') or 'no reason given'}"
    elif st.state == "setup_failed":  # the agent ran setup again and it worked
        st.state, st.reason = "running", None


def _task_end(st: TaskState, e: dict) -> None:
    state = e.get("state") if e.get("state") in ("done", "failed", "unverified") else "unverified"
    claims = [str(c) for c in e.get("failed_claims") or []]
    st.ending = None
    facts = e.get("facts") if isinstance(e.get("facts"), dict) else {}
    st.branch = facts.get("branch") if isinstance(facts.get("branch"), str) else st.branch
    if isinstance(facts.get("issue"), int) and not isinstance(facts.get("issue"), bool):
        st.issue = facts["issue"]
    if state == "failed" and st.setup_ok is False:
        return  # the agent reports the failed setup: it stays setup_failed, with the setup's reason
    st.state, st.failed_claims = state, claims
    st.reason = e.get("reason") or ("; ".join(claims) or None)


def _sign_of_life(st: TaskState) -> float:
    """The latest time the task's agent was seen: its events, its output file changing, or
    work in its worktree (a file added there, ``git add``/``git commit`` touching its index
    and HEAD log)."""
    seen = st.last_seen or 0.0
    for path in [st.output_file] + _worktree_files(st.worktree):
        if not path:
            continue
        try:
            seen = max(seen, os.stat(path).st_mtime)
        except (OSError, ValueError):
            pass
    return seen


def _worktree_files(worktree) -> list:
    """The worktree folder and the files git updates as work is staged and committed there."""
    if not isinstance(worktree, str) or not os.path.isabs(worktree):
        return []
    paths = [worktree]
    try:
        with open(os.path.join(worktree, ".git"), encoding="utf-8") as f:
            line = f.read(4096).strip()
    except (OSError, UnicodeDecodeError):
        return paths
    if line.startswith("gitdir:"):
        gitdir = line[len("gitdir:"):].strip()
        if not os.path.isabs(gitdir):
            gitdir = os.path.join(worktree, gitdir)
        paths += [os.path.join(gitdir, "index"), os.path.join(gitdir, "logs", "HEAD")]
    return paths


def counts(states) -> dict:
    """How many tasks are in each state (every state listed, in :data:`STATES` order)."""
    values = list(states.values()) if isinstance(states, dict) else list(states)
    return {s: sum(1 for st in values if st.state == s) for s in STATES}

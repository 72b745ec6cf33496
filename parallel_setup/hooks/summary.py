"""The run summary the main agent receives after every completion (kept short: it costs tokens)."""

from __future__ import annotations

import os
import shlex

from .. import status

#: The plugin folder, as ``paths.PLUGIN_ROOT`` has it (paths.py imports pathlib and subprocess,
#: which this hook path does not need).
PLUGIN_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.realpath(__file__))))


def _secs(value) -> str:
    return "?" if value is None else f"{value:.1f} s"


def describe(task: status.TaskStatus) -> str:
    """One line about a task that just ended."""
    head = f"{task.id}: {task.state.upper()}"
    facts = []
    if task.issue is not None:
        facts.append(f"issue #{task.issue}")
    if task.branch:
        facts.append(f"branch {task.branch}")
    if task.commits is not None:
        facts.append(f"{task.commits} commit{'s' if task.commits != 1 else ''}")
    if task.tests_exit is not None:
        facts.append("tests passed" if task.tests_exit == 0 else f"tests FAILED (exit {task.tests_exit})")
    if task.setup_seconds is not None:
        steps = ", ".join(f"{name} {task.steps[name]['seconds']:.1f}" for name in status.STEPS
                          if task.steps.get(name, {}).get("seconds") is not None)
        facts.append(f"setup {_secs(task.setup_seconds)}" + (f" ({steps})" if steps else ""))
    line = head + (" - " + ", ".join(facts) if facts else "")
    if task.permission_denials:
        line += ". Claude Code " + status.denials_text(task) + " (see /parallel:permissions)"
    if task.state in ("failed", "setup_failed", "lost"):
        line += f". Reason: {task.reason or 'not given'}. Log: {task.log}"
    elif task.state == "unverified":
        line += ". Not verified: " + "; ".join(task.failed_claims or ["no reason recorded"])
    return line + "."


def run_summary(project, run_id: str, just_ended: list[str]) -> str:
    st = status.load_run(project, run_id)
    c = st.counts
    lines = [f"[parallel] run {run_id}: {status.counts_text(c)} (of {len(st.tasks)})."]
    for task_id in just_ended:
        task = st.task(task_id)
        if task is not None:
            lines.append("Just ended: " + describe(task))
    running = [t.id for t in st.tasks if t.state == "running"]
    if running:
        lines.append(f"Still running: {', '.join(running)}. Their results arrive on their own; do not poll.")
        return "\n".join(lines)
    cli = shlex.quote(os.path.join(PLUGIN_ROOT, "scripts", "parallel-setup"))
    if st.next_wave:
        lines.append(f"Next wave ready ({', '.join(st.next_wave)}): run `{cli} execute --run {run_id}` "
                     "and spawn the Agent calls it prints, all in one message.")
    elif st.blocked:
        lines.append(f"Waiting on failed or unverified dependencies: {', '.join(st.blocked)}.")
    if c["pending"] == 0 or not st.next_wave:
        problems = [t.id for t in st.tasks if t.state in status.STUCK]
        step = (f"All launched tasks have ended. Next: look into {', '.join(problems)} (reason and log "
                "above, or `/parallel:status`); `/parallel:merge` merges the done branches (never those) "
                "in dependency order, testing after each merge, and `/parallel:cleanup` then removes what "
                "the run made; "
                if problems else
                "All tasks are done and verified. Next: `/parallel:merge` merges their branches in "
                "dependency order, testing after each merge (each commit closes its issue), and "
                "`/parallel:cleanup` then removes what the run made; ")
        lines.append(step + f"`/parallel:status` (or `{cli} status {run_id}`) shows the timeline and metrics.")
    return "\n".join(lines)

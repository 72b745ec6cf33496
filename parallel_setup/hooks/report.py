"""The completion report: find it in a subagent's final text, verify it, record the task's end.

Three hooks may see the same final text (SubagentStop, the foreground PostToolUse,
the background ``<task-notification>``); whichever comes first ingests it, and the
``ended-<task>`` marker makes sure ``task_end`` is written once per attempt.
"""

from __future__ import annotations

import json
import os
import re
import time

from .. import verify
from .common import Ctx, load_json, safe_id

FENCE_RE = re.compile(r"```[ \t]*(?:json|JSON)?[ \t]*\r?\n(.*?)```", re.S)
STATUSES = ("done", "failed")


def parse_report(text) -> tuple[dict | None, str | None]:
    """(report, None) or (None, why not). The last fenced JSON block with ``parallel_report`` wins."""
    report, problem = _parse(text)
    if report is None and isinstance(text, str) and "&quot;" in text:
        import html  # only an HTML-escaped <result> needs it
        report, problem = _parse(html.unescape(text))  # an HTML-escaped <result>
    return report, problem


def _parse(text) -> tuple[dict | None, str | None]:
    if not isinstance(text, str) or not text.strip():
        return None, "the final message is empty"
    blocks = FENCE_RE.findall(text)
    candidates = list(reversed(blocks))
    if not candidates:
        start = text.rfind('{"parallel_report"')
        if start >= 0:
            candidates = [text[start:]]
    problem = "no fenced ```json block with \"parallel_report\" in the final message"
    for block in candidates:
        try:
            data, _ = json.JSONDecoder().raw_decode(block.strip())
        except ValueError as e:
            if "parallel_report" in block:
                problem = f"the report block is not valid JSON ({e})"
            continue
        if not isinstance(data, dict) or "parallel_report" not in data:
            continue
        errors = check_report(data)
        if errors:
            return None, "the report " + "; ".join(errors)
        return data, None
    return None, problem


def check_report(data: dict) -> list[str]:
    errors = []
    if data.get("status") not in STATUSES:
        errors.append(f"needs \"status\": \"done\" or \"failed\" (got {data.get('status')!r})")
    if not isinstance(data.get("task"), str):
        errors.append("needs \"task\" (the task id)")
    for key, kind, name in (("commits", list, "a list"), ("tests", dict, "an object"),
                            ("branch", str, "a string"), ("pushed", bool, "true or false")):
        if data.get(key) is not None and not isinstance(data.get(key), kind):
            errors.append(f"field \"{key}\" must be {name}")
    issue = data.get("issue")
    if issue is not None and (isinstance(issue, bool) or not isinstance(issue, (int, str))):
        errors.append("field \"issue\" must be the issue number")
    return errors


def locate(ctx: Ctx, agent_id, report: dict | None, *texts) -> tuple[str, str] | None:
    """The (run, task) an ended subagent worked on: its marker, its report, or a path in its text."""
    known = ctx.find_agent(agent_id) if agent_id else None
    if known and known[1]:
        return known
    if report is not None:
        run, task = safe_id(report.get("run")), safe_id(report.get("task"))
        if known and not run:
            run = known[0]
        if run and task and ctx.run_exists(run) and os.path.isdir(ctx.task_dir(run, task)):
            return run, task
    for text in texts:
        ref = ctx.ref_in(text)
        if ref:
            return ref
    return None


def transcript_head(path, limit: int = 262144) -> str:
    """The start of a subagent transcript (its first user message holds the prompt)."""
    if not isinstance(path, str) or not path:
        return ""
    try:
        with open(path, "rb") as f:
            return f.read(limit).decode("utf-8", "replace")
    except OSError:
        return ""


def ingest(ctx: Ctx, run: str, task: str, agent_id, text, via: str) -> dict | None:
    """Parse, verify and record the end of ``task``. None when it had already ended.

    Safe to kill at any point: the report is saved and a ``task_ending`` lease recorded
    before verification starts, so a hook killed while it verifies (Claude Code kills it at
    its timeout) leaves a lease that expires into ``unverified`` (``task_state``), which
    ``status --recheck`` verifies again from the saved report. Verification has a budget
    (``verify.hook_budget``) well inside the hook's timeout.
    """
    run_dir = ctx.use_run(run)
    report, problem = parse_report(text)
    if os.path.exists(ctx.marker(run, "ended", task)):
        return None  # this attempt's end is recorded (or being recorded) already
    # The lease comes before the claim: a hook killed before it leaves no claim, so the next
    # hook seeing the same report (the notification) still records the end; one killed after
    # it leaves a lease that resolves. A second lease after the end is ignored (task_state).
    if report is not None:
        save_report(ctx.task_dir(run, task), report, via, agent_id)
    budget = verify.hook_budget()
    ctx.record(run, "task_ending", task, via=via, agent_id=agent_id, lease=budget)
    if not ctx.claim_marker(run, "ended", task, via):
        return None
    try:
        return _record_end(ctx, run, run_dir, task, agent_id, report, problem, via, budget)
    except BaseException:
        ctx.drop_marker(run, "ended", task)  # let a later hook try again
        raise


def save_report(task_dir: str, report: dict, via: str, agent_id) -> None:
    """``report.json``: the report as received, which ``status --recheck`` verifies again."""
    saved = dict(report, received_at=time.time(), via=via, agent_id=agent_id)
    tmp = os.path.join(task_dir, f".report.json.{os.getpid()}")
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(json.dumps(saved, indent=2) + "\n")
    os.replace(tmp, os.path.join(task_dir, "report.json"))


def _record_end(ctx, run, run_dir, task, agent_id, report, problem, via, budget) -> dict:
    run_info = load_json(os.path.join(run_dir, "run.json")) or {}
    verdict = verify.verify_task(ctx.project, run_info, task, report,
                                 missing_report=problem, run_dir=run_dir, budget=budget)
    ctx.record(run, "task_end", task, state=verdict.state, failed_claims=verdict.failed_claims,
               notes=verdict.notes, reason=verdict.reason, log=verdict.log, facts=verdict.facts,
               via=via, agent_id=agent_id)
    return {"state": verdict.state, "failed_claims": verdict.failed_claims}

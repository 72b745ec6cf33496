"""``parallel-setup status [RUN]``: per-task table, run metrics, a timeline; ``--json``; ``--html FILE``."""

from __future__ import annotations

import html
import json
import shutil
import sys
from pathlib import Path

from .. import merge_view, status, verify
from ..errors import FatalError
from ..gitutil import git_common_dir
from ..paths import find_project_root, plans_dir

HELP = "show a run's tasks, metrics and timeline (the latest run by default)"
STEP_CHARS = {"issue": "i", "worktree": "w", "env": "e"}
END_CHARS = {"done": "D", "failed": "F", "setup_failed": "S", "unverified": "U", "lost": "L", "running": ">"}
COLORS = {"wait": "#c7d2fe", "issue": "#3b82f6", "worktree": "#f59e0b", "env": "#10b981",
          "work": "#d1d5db", "done": "#15803d", "failed": "#dc2626", "setup_failed": "#b91c1c",
          "unverified": "#9333ea", "lost": "#a16207", "running": "#6b7280"}


def add_parser(sub):
    p = sub.add_parser("status", help=HELP, description=HELP[0].upper() + HELP[1:] + ".")
    p.add_argument("run", nargs="?", metavar="RUN", help="run id (default: the latest run)")
    p.add_argument("--json", action="store_true", help="print the status as JSON")
    p.add_argument("--html", metavar="FILE", help="also write a self-contained HTML page with an SVG timeline")
    p.add_argument("--width", type=int, metavar="N", help="output width in columns (default: the terminal's)")
    p.add_argument("--recheck", action="store_true",
                   help="verify the unverified tasks' saved reports again first (after you pushed the branch, "
                        "or when the hook verifying them was stopped)")
    p.add_argument("--no-runs-ok", action="store_true",
                   help="when no RUN is given and the project has no runs yet, print what to do next "
                        "and exit 0 instead of failing (used by the /parallel:status slash command)")
    p.set_defaults(func=run)


def run(args) -> int:
    project = Path(args.project).resolve() if getattr(args, "project", None) else find_project_root()
    run_id = args.run or status.latest_run(project)
    if run_id is None and getattr(args, "no_runs_ok", False):
        print(no_runs_message(project))
        return 0
    if run_id is None:
        raise FatalError(f"no runs in {project / '.parallel' / 'runs'}; start one with /parallel:execute")
    try:
        st = status.load_run(project, run_id)
        if args.recheck:
            rechecked = recheck_run(project, st)
            if rechecked:
                st = status.load_run(project, run_id)
            print(f"Rechecked {len(rechecked)} unverified task(s)"
                  + (": " + ", ".join(f"{t} {v.state}" for t, v in rechecked.items()) if rechecked else "")
                  + ("" if args.json else "\n"), file=sys.stderr if args.json else sys.stdout)
    except FileNotFoundError:
        known = sorted(p.parent.name for p in status.runs_root(project).glob("*/run.json"))
        raise FatalError(f"no run {run_id!r} in {status.runs_root(project)}"
                         + (f" (runs: {', '.join(known)})" if known else "")) from None
    except status.RunDamaged as e:
        raise FatalError(str(e)) from None
    if args.html:
        out = Path(args.html)
        try:
            out.write_text(render_html(st), encoding="utf-8")
        except OSError as e:
            raise FatalError(f"cannot write the HTML page to {out}: {e.strerror}; give --html a file path "
                             "in a folder you can write") from None
    if args.json:
        doc = st.to_dict()
        train = merge_view.merge_data(project, run_id)
        if train is not None:
            doc["merge"] = train
        print(json.dumps(doc, indent=2, sort_keys=True))
    else:
        width = args.width or shutil.get_terminal_size((100, 24)).columns
        print(render_text(st, max(60, width)), end="")
        if args.html:
            print(f"HTML timeline: {args.html}")
    return 0


def recheck_run(project: Path, st: status.RunStatus) -> dict:
    """Verify every unverified task of ``st`` again; {task: Verdict} of those with a report."""
    run_dir = status.runs_root(project) / st.id
    info = status.read_run_info(str(run_dir))
    return verify.recheck(project, run_dir, info, [t.id for t in st.tasks if t.state == "unverified"])


def _names(items: list[str], most: int) -> str:
    return ", ".join(items[:most]) + (", ..." if len(items) > most else "")


def no_runs_message(project: Path) -> str:
    """What to do when ``project`` has no runs, specific to what is there: git or not, saved plans,
    run folders an interrupted ``execute`` left without a ``run.json``."""
    runs = status.runs_root(project)
    try:
        plans = sorted(p.stem for p in plans_dir(project).glob("*.yaml"))
        stray = sorted(e.name for e in runs.iterdir() if e.is_dir()) if runs.is_dir() else []
    except OSError:
        plans, stray = [], []
    try:
        in_git = git_common_dir(project) is not None
    except OSError:  # the folder does not exist
        in_git = False
    if not in_git:
        lines = [f"No parallel runs here: {project} is not a git repository, and a parallel run needs one."]
        if plans:
            lines.append(f"It has saved plans ({_names(plans, 10)}), but /parallel:execute runs only in a git "
                         "repository.")
        lines.append("Open Claude Code in your project's repository (or run `git init` and make a first commit "
                     "here), then make a plan with /parallel:plan <goal> and run it with /parallel:execute.")
        return "\n".join(lines)
    lines = [f"No parallel runs in this repository yet (nothing in {runs})."]
    if stray:
        lines.append(f"{len(stray)} folder(s) there have no run.json (an interrupted execute?): {_names(stray, 5)}.")
    if plans:
        lines.append(f"Saved plans: {_names(plans, 10)}. Run one with /parallel:execute [plan] "
                     "(the most recent one if you name none).")
    else:
        lines.append("Make a plan with /parallel:plan <goal>, then run it with /parallel:execute.")
    return "\n".join(lines)


# -- text --------------------------------------------------------------------------------

def _s(value, digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _pct(value) -> str:
    return "n/a" if value is None else f"{value * 100:.0f} %"


def _cut(text: str, n: int) -> str:
    return text if len(text) <= n else text[: max(1, n - 1)] + "~"


def render_text(st: status.RunStatus, width: int = 100) -> str:
    c, m = st.counts, st.metrics
    mode = st.issue_mode or "?"
    if st.repository:
        mode += f" {st.repository}"
    out = [f"Run {st.id}" + (f"  plan {st.plan_name}" if st.plan_name else "") + f"  issues: {mode}",
           f"{len(st.tasks)} tasks: {status.counts_text(c)}", ""]
    # table
    with_steps = width >= 80  # narrow terminals get setup, work and total only
    nums = (["ISSUE", "WTREE", "ENV"] if with_steps else []) + ["SETUP", "WORK", "TOTAL"]
    fixed = 7 + 13 + 7 * len(nums) + 2
    name_w = max(8, min(24, (width - fixed) // 2, max(len(t.id) for t in st.tasks)))
    branch_w = max(8, min(width - fixed - name_w, max([6] + [len(t.branch or "-") for t in st.tasks])))
    out.append(f"{'':<{name_w + branch_w + 22}}"
               + ("seconds: setup steps, setup, work, total" if with_steps else "  seconds").rjust(7 * len(nums)))
    header = f"{'TASK':<{name_w}} {'ISSUE':<6} {'BRANCH':<{branch_w}} {'STATE':<12}" + "".join(f"{h:>7}" for h in nums)
    out.append(header.rstrip())
    for t in st.tasks:
        steps = [t.steps.get(n, {}).get("seconds") for n in status.STEPS] if with_steps else []
        state = t.state if t.state in status.ENDED or not t.phase else t.phase
        row = (f"{_cut(t.id, name_w):<{name_w}} {('#' + str(t.issue)) if t.issue is not None else '-':<6} "
               f"{_cut(t.branch or '-', branch_w):<{branch_w}} {_cut(state, 12):<12}"
               + "".join(f"{_s(v):>7}" for v in steps + [t.setup_seconds, t.work_seconds, t.total_seconds]))
        out.append(row.rstrip())
    out += ["", "Metrics"]
    run_setup = m["run_setup_seconds"]
    pending = m["setup_pending"]
    waves = m.get("waves") or []
    how = ("planning ended -> last task set up" if len(waves) < 2 else
           f"{len(waves)} waves: " + " + ".join(f"{_s(w['setup_seconds'])}" for w in waves)
           + " s, each from its launch to its last task set up")
    out.append((f"  run setup time       {_s(run_setup)} s ({how})"
                if run_setup is not None else "  run setup time       n/a (no task has finished setup)")
               + (f"; still setting up: {', '.join(pending)}" if pending else ""))
    if m["parallel_efficiency"] is not None:
        capacity = (f"{m['tasks_set_up']} x {_s(run_setup)} s" if len(waves) < 2 else
                    " + ".join(f"{w['tasks_set_up']} x {_s(w['setup_seconds'])} s" for w in waves))
        out.append(f"  parallel efficiency  {_pct(m['parallel_efficiency'])} (task setup {_s(m['sum_task_setup_seconds'])} s"
                   f" / ({capacity}); target > 80 %)")
    else:
        out.append("  parallel efficiency  n/a (no task has finished setup)")
    out.append(f"  error rate           tasks {m['failed_tasks']}/{m['tasks']} ({_pct(m['task_error_rate'])}), "
               f"attempts {m['failed_attempts']}/{m['attempts']} ({_pct(m['attempt_error_rate'])})")
    rate = m["rate_limit_remaining"]
    out.append(f"  API usage            {m['gh_calls']} gh calls ({m['gh_retries']} retries); rate limit left: "
               + (str(rate) if rate is not None else "unknown"))
    if m["sequential_estimate_seconds"] is not None:
        seq = m["sequential_estimate_seconds"]
        speed = f", {m['speedup']:.1f}x" if m["speedup"] else ""
        out.append(f"  sequential estimate  {_s(seq)} s vs measured {_s(run_setup)} s{speed}")
        out.append(f"                       (spawn phase {_s(m['spawn_phase_seconds'])} s + "
                   + " + ".join(f"{n} {_s(m['step_seconds'][n])} s" for n in status.STEPS) + " one after another)")
    else:
        out.append("  sequential estimate  n/a (no measured setup yet)")
    out += [""] + render_timeline(st, width)
    out += merge_view.text_lines(st.project, st.id)
    found = problems(st)
    if found:
        out += ["", "Problems (what to run: README, \"Recovering a task\")"]
        for t, why, log in found:
            head = t.id if why.startswith("setup failed") else f"{t.id} {status.STATE_WORDS.get(t.state, t.state)}:"
            out.append(f"  {head} {why}" + (f" (log {log})" if log else ""))
    if st.next_wave:
        out += ["", f"Next wave ready: {', '.join(st.next_wave)} (parallel-setup execute --run {st.id})"]
    return "\n".join(out) + "\n"


def problems(st: status.RunStatus) -> list[tuple[status.TaskStatus, str, str | None]]:
    """(task, why, log) of each task that needs the user: stuck, or a call of it was refused.
    The text's Problems section and the page's show exactly these."""
    found = []
    for t in st.tasks:
        if t.state not in status.STUCK and not t.permission_denials:
            continue
        why = ""
        if t.state == "unverified":
            why = "; ".join(t.failed_claims) or t.reason or "not verified"
        elif t.state in status.STUCK:
            why = t.reason or "no reason recorded"
        if t.permission_denials:
            why = status.denials_text(t) + (f"; {why}" if why else "")
        # One line each: a reason may be a command's whole output (`--json` keeps all of it).
        why = _cut(" ".join(why.split()), 400)
        found.append((t, why, t.log if t.log and t.state in ("failed", "setup_failed") else None))
    return found


def _segments(t: status.TaskStatus, elapsed: float) -> list[tuple[str, float, float]]:
    """(kind, start, end) in seconds since planning ended, in time order."""
    segs = []
    start = t.spawned if t.spawned is not None else t.setup_start
    if start is None:
        return segs
    end = t.ended if t.ended is not None else elapsed
    first_step = min([s["start"] for s in t.steps.values() if s.get("start") is not None], default=t.setup_start)
    if first_step is not None and first_step > start:
        segs.append(("wait", start, first_step))
    for name in status.STEPS:
        s = t.steps.get(name, {})
        if s.get("start") is not None and s.get("seconds") is not None:
            segs.append((name, s["start"], s["start"] + s["seconds"]))
    if t.setup_end is not None and end > t.setup_end:
        segs.append(("work", t.setup_end, end))
    elif not segs:
        segs.append(("wait", start, end))
    return segs


def render_timeline(st: status.RunStatus, width: int) -> list[str]:
    elapsed = st.now - st.created_at
    ends = [t.ended for t in st.tasks if t.ended is not None]
    span = max([1.0] + ends + ([elapsed] if st.counts.get("running") else []))
    name_w = max(8, min(20, max([4] + [len(t.id) for t in st.tasks])))
    cols = max(20, width - name_w - 3)
    per = span / cols
    lines = [f"Timeline (0 s = planning ended, 1 column = {per:.2f} s, {span:.1f} s in all)"]
    for t in st.tasks:
        row = [" "] * cols
        cursor = 0  # every setup step gets at least one column, in order
        for kind, a, b in _segments(t, elapsed):
            ch = STEP_CHARS.get(kind, "." if kind == "wait" else "=")
            lo = min(cols - 1, max(0, int(a / per)))
            if kind in STEP_CHARS:
                lo = min(cols - 1, max(lo, cursor))
            hi = min(cols, max(lo + 1, int(round(b / per))))
            for i in range(lo, hi):
                if kind in STEP_CHARS or row[i] == " ":
                    row[i] = ch
            cursor = max(cursor, hi)
        if t.state in END_CHARS and (t.ended is not None or t.state == "running"):
            end = t.ended if t.ended is not None else elapsed
            row[min(cols - 1, max(cursor, int(round(end / per))) - 1)] = END_CHARS[t.state]
        lines.append(f"{_cut(t.id, name_w):<{name_w}} |{''.join(row).rstrip()}")
    lines.append(f"{'':<{name_w}}  " + _axis(span, cols))
    lines.append("legend: . spawned  i issue  w worktree  e env  = working  "
                 "D done  F failed  S setup failed  U unverified  L lost  > running")
    return lines


def _axis(span: float, cols: int) -> str:
    axis = [" "] * (cols + 8)
    for k in range(5):
        x = int(cols * k / 4)
        label = f"{span * k / 4:.0f}s" if span >= 20 else f"{span * k / 4:.1f}s"
        if k == 4:
            x = max(0, cols - len(label))
        for i, ch in enumerate(label):
            if x + i < len(axis):
                axis[x + i] = ch
    return "".join(axis).rstrip()


# -- HTML ----------------------------------------------------------------------------------

def render_html(st: status.RunStatus) -> str:
    """A self-contained page: the metrics and an inline SVG timeline, one bar per task."""
    elapsed = st.now - st.created_at
    ends = [t.ended for t in st.tasks if t.ended is not None]
    span = max([1.0] + ends + ([elapsed] if st.counts.get("running") else []))
    left, plot_w, row_h, top = 180, 720, 28, 40
    scale = plot_w / span
    height = top + row_h * len(st.tasks) + 70
    svg = [f'<svg xmlns="http://www.w3.org/2000/svg" id="timeline" width="{left + plot_w + 40}" height="{height}" '
           f'viewBox="0 0 {left + plot_w + 40} {height}" font-family="sans-serif" font-size="12" '
           f'data-span="{span:.3f}" data-scale="{scale:.6f}">']
    for k in range(6):  # axis
        x = left + plot_w * k / 5
        svg.append(f'<line x1="{x:.1f}" y1="{top - 8}" x2="{x:.1f}" y2="{top + row_h * len(st.tasks)}" '
                   'stroke="#ddd"/>')
        svg.append(f'<text class="tick" x="{x:.1f}" y="{top - 14}" text-anchor="middle">{span * k / 5:.1f} s</text>')
    for i, t in enumerate(st.tasks):
        y = top + i * row_h
        svg.append(f'<text x="{left - 8}" y="{y + 17}" text-anchor="end">{html.escape(t.id)}</text>')
        segs = _segments(t, elapsed)
        if not segs:
            svg.append(f'<g class="bar" data-task="{html.escape(t.id)}" data-state="{t.state}" '
                       f'data-start="0" data-end="0"></g>')
            continue
        a, b = segs[0][1], max(s[2] for s in segs)
        svg.append(f'<g class="bar" data-task="{html.escape(t.id)}" data-state="{t.state}" '
                   f'data-start="{a:.3f}" data-end="{b:.3f}">')
        svg.append(f'<title>{html.escape(t.id)}: {t.state}, setup {_s(t.setup_seconds)} s, total {_s(t.total_seconds)} s'
                   '</title>')
        for kind, s0, s1 in segs:
            w = max(0.5, (s1 - s0) * scale)
            svg.append(f'<rect class="seg seg-{kind}" x="{left + s0 * scale:.2f}" y="{y + 5}" width="{w:.2f}" '
                       f'height="{row_h - 10}" fill="{COLORS[kind]}"><title>{kind} {s1 - s0:.1f} s</title></rect>')
        marker = COLORS.get(t.state, COLORS["running"])
        svg.append(f'<rect class="end" x="{left + b * scale - 3:.2f}" y="{y + 3}" width="3" height="{row_h - 6}" '
                   f'fill="{marker}"/>')
        svg.append("</g>")
    ly = top + row_h * len(st.tasks) + 30
    x = left
    for kind, label in (("wait", "spawned, before setup"), ("issue", "issue"), ("worktree", "worktree"),
                        ("env", "env"), ("work", "working"), ("done", "done"), ("failed", "failed"),
                        ("setup_failed", "setup failed"), ("unverified", "unverified"), ("lost", "lost"),
                        ("running", "running")):
        svg.append(f'<g class="legend"><rect x="{x}" y="{ly}" width="12" height="12" fill="{COLORS[kind]}"/>'
                   f'<text x="{x + 16}" y="{ly + 10}">{label}</text></g>')
        x += 30 + 7 * len(label)
    svg.append(f'<text x="{left}" y="{ly + 32}" fill="#555">seconds since planning ended</text>')
    svg.append("</svg>")
    m = st.metrics
    rows = [("Run setup time", f"{_s(m['run_setup_seconds'])} s"),
            ("Parallel efficiency", _pct(m["parallel_efficiency"])),
            ("Error rate", f"tasks {m['failed_tasks']}/{m['tasks']} ({_pct(m['task_error_rate'])}), "
                           f"attempts {m['failed_attempts']}/{m['attempts']} ({_pct(m['attempt_error_rate'])})"),
            ("API usage", f"{m['gh_calls']} gh calls ({m['gh_retries']} retries), rate limit left "
                          f"{m['rate_limit_remaining'] if m['rate_limit_remaining'] is not None else 'unknown'}"),
            ("Sequential estimate", f"{_s(m['sequential_estimate_seconds'])} s vs measured "
                                    f"{_s(m['run_setup_seconds'])} s")]
    metrics = "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(v)}</td></tr>" for k, v in rows)
    task_rows = "".join(
        f"<tr><td>{html.escape(t.id)}</td><td>{'#' + str(t.issue) if t.issue is not None else '-'}</td>"
        f"<td>{html.escape(t.branch or '-')}</td><td class=\"state-{t.state}\">{t.state}</td>"
        + "".join(f"<td>{_s(t.steps.get(n, {}).get('seconds'))}</td>" for n in status.STEPS)
        + f"<td>{_s(t.setup_seconds)}</td><td>{_s(t.work_seconds)}</td><td>{_s(t.total_seconds)}</td></tr>"
        for t in st.tasks)
    problem_rows = "".join(
        f"<tr><td>{html.escape(t.id)}</td><td class=\"state-{t.state}\">{t.state}</td><td>{html.escape(why)}</td>"
        f"<td>{html.escape(log or '-')}</td></tr>" for t, why, log in problems(st))
    problem_section = (
        '<h2>Problems</h2>\n<p>What to run: the README, "Recovering a task".</p>\n'
        f'<table id="problems"><tr><th>task</th><th>state</th><th>what happened</th><th>log</th></tr>{problem_rows}'
        "</table>\n") if problem_rows else ""
    c = st.counts
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>parallel run {html.escape(st.id)}</title>
<style>
body {{ font-family: sans-serif; margin: 24px; color: #111; }}
table {{ border-collapse: collapse; margin: 12px 0; }}
th, td {{ padding: 3px 10px; border-bottom: 1px solid #eee; text-align: left; }}
.state-done {{ color: {COLORS['done']}; }} .state-failed {{ color: {COLORS['failed']}; }}
.state-unverified {{ color: {COLORS['unverified']}; }} .state-setup_failed {{ color: {COLORS['setup_failed']}; }}
.state-lost {{ color: {COLORS['lost']}; }}
</style></head><body>
<h1>Run {html.escape(st.id)}</h1>
<p>{len(st.tasks)} tasks: {html.escape(status.counts_text(c))}.</p>
<h2>Timeline</h2>
{''.join(svg)}
<h2>Metrics</h2>
<table id="metrics">{metrics}</table>
<h2>Tasks</h2>
<table id="tasks"><tr><th>task</th><th>issue</th><th>branch</th><th>state</th><th>issue s</th><th>worktree s</th>
<th>env s</th><th>setup s</th><th>work s</th><th>total s</th></tr>{task_rows}</table>
{problem_section}{merge_view.html_section(st.project, st.id)}
</body></html>
"""

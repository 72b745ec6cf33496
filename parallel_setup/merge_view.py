"""The merge train in ``parallel-setup status``: each task's merge state and the train's timeline.

Shown after the setup timeline (text), as ``merge`` in ``--json``, and as a section of the HTML
page (with the conflict forecast). Nothing is shown for a run the train never touched, so a
status page before ``merge`` is unchanged. Read only: it never takes the train's lock.
"""

from __future__ import annotations

import html
from pathlib import Path
from typing import List, Optional

from . import merge, runs


def _load(project, run_id: str) -> Optional[runs.Run]:
    try:
        return runs.load_run(Path(project), run_id)
    except Exception:  # noqa: BLE001 - status must show the rest of the run whatever this finds
        return None


def merge_data(project, run_id: str) -> Optional[dict]:
    """Plain data: the branch, each task's merge state, the timeline; None before the first train."""
    run = _load(project, run_id)
    if run is None:
        return None
    info = merge.train_status(run)
    if not info["events"] and info["branch"] is None:
        return None
    start = next((e["t"] for e in info["events"] if e.get("event") == "merge_start"), None)
    timeline = []
    for e in info["events"]:
        kind = e.get("event")
        if kind == "merge_start":
            what = f"train started ({e.get('strategy')}, {len(e.get('tasks') or [])} tasks to merge)"
        elif kind == "merge_task":
            what = f"{e.get('task')}: {e.get('result')}" + (f" in {e['seconds']:.1f} s" if isinstance(
                e.get("seconds"), (int, float)) else "")
        elif kind == "merge_tests":
            what = f"tests after {', '.join(e.get('tasks') or []) or '?'}: exit {e.get('exit')} ({e.get('seconds', 0):.1f} s)"
        elif kind == "merge_stop":
            what = f"stopped at {e.get('task')}: {e.get('reason')}"
        elif kind == "merge_resolver":
            what = f"resolver spawned for {e.get('resolves')}"
        elif kind == "landed":
            what = f"landed: {e.get('base')} at {str(e.get('to'))[:8]}" + (", pushed" if e.get("pushed") else "")
        else:
            what = str(kind)
        timeline.append({"t": round(float(e["t"]) - float(start if start is not None else e["t"]), 3),
                         "event": kind, "task": e.get("task"), "text": what})
    stop = info["stop"]
    return {"branch": info["branch"], "tip": info["tip"], "tasks": info["tasks"],
            "merged": sorted(info["merged"]), "stop": None if stop is None else {
                "task": stop.get("task"), "reason": stop.get("reason"), "message": stop.get("message")},
            "timeline": timeline}


def text_lines(project, run_id: str) -> List[str]:
    data = merge_data(project, run_id)
    if data is None:
        return []
    merged = len(data["merged"])
    head = f"Merge train ({data['branch'] or 'no integration branch'}"
    head += f" at {data['tip'][:8]}" if data["tip"] else ""
    head += f", {merged} merged" + (f"; stopped at {data['stop']['task']}: {data['stop']['reason']}"
                                     if data["stop"] else "") + ")"
    out = ["", head]
    w = max(8, max(len(t) for t in data["tasks"]) if data["tasks"] else 8)
    for tid, state in data["tasks"].items():
        out.append(f"  {tid:<{w}}  {state or 'not merged'}")
    out.append("")
    out.append("Merge timeline (0 s = the first train started)")
    for row in data["timeline"]:
        out.append(f"  {row['t']:>8.1f} s  {row['text']}")
    return out


def html_section(project, run_id: str) -> str:
    """The merge section of the status page: the forecast matrix, each task's state, the timeline."""
    run = _load(project, run_id)
    if run is None:
        return ""
    data = merge_data(project, run_id)
    try:
        cands, skipped = merge.select(run)
        fc = merge.forecast(run, cands)
    except Exception:  # noqa: BLE001 - e.g. no base branch: the page still shows the rest
        fc, skipped = None, []
    if fc is not None and not fc.order and data is None:
        return ""  # nothing verified to merge yet
    if fc is None and data is None:
        return ""
    parts = ['<h2>Merge</h2>']
    if fc is not None:
        if not fc.available:
            parts.append(f'<p id="forecast-note">{html.escape(fc.note)}</p>')
        else:
            bad = {frozenset((c.a, c.b)): c.files for c in fc.conflicts}
            base_bad = {c.a: c.files for c in fc.base_conflicts}
            head = "".join(f"<th>{i + 1}</th>" for i in range(len(fc.order)))
            rows = []
            for i, a in enumerate(fc.order):
                cells = [f'<td class="{"conflict" if a in base_bad else "clean"}" title="'
                         f'{html.escape(", ".join(base_bad.get(a, [])))}">{"x" if a in base_bad else "."}</td>']
                for b in fc.order:
                    files = bad.get(frozenset((a, b)))
                    cells.append("<td>-</td>" if a == b else
                                 f'<td class="conflict" data-pair="{html.escape(a)} {html.escape(b)}" '
                                 f'title="{html.escape(", ".join(files))}">x</td>' if files else '<td class="clean">.</td>')
                rows.append(f"<tr><th>{i + 1}. {html.escape(a)}</th>{''.join(cells)}</tr>")
            parts.append(f"<p>Conflict forecast against {html.escape(fc.base_ref)} ({fc.base_commit[:8]}), "
                         f"{fc.pairs_checked} merges in memory (x = conflict, B = the base):</p>")
            parts.append(f'<table id="forecast"><tr><th>merge order</th><th>B</th>{head}</tr>{"".join(rows)}</table>')
    if skipped:
        parts.append("<p>Not merged: " + "; ".join(f"{html.escape(s.id)} ({html.escape(s.reason)})"
                                                  for s in skipped) + "</p>")
    if data is not None:
        rows = "".join(f'<tr><td>{html.escape(t)}</td><td class="merge-{html.escape((s or "none").split()[0])}">'
                       f'{html.escape(s or "not merged")}</td></tr>' for t, s in data["tasks"].items())
        parts.append(f'<table id="merge-tasks"><tr><th>task</th><th>merge</th></tr>{rows}</table>')
        tl = "".join(f"<tr><td>{r['t']:.1f} s</td><td>{html.escape(r['text'])}</td></tr>" for r in data["timeline"])
        parts.append(f'<h3>Merge timeline</h3><table id="merge-timeline">{tl}</table>')
    return "\n".join(parts) + "\n"

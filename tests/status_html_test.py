"""The HTML timeline rendered by a real headless Chromium: one bar per task, widths to scale."""

from __future__ import annotations

import os
import re
import shutil
import subprocess

import pytest

from parallel_setup import status
from parallel_setup.commands.status import render_html
from tests.support.runs import RUN_ID, pinned_synthetic_project

CHROMIUM = shutil.which("chromium") or ("/usr/bin/chromium" if os.path.exists("/usr/bin/chromium") else None)
pytestmark = pytest.mark.skipif(CHROMIUM is None and not os.environ.get("CI"),
                                reason="chromium is not installed (CI installs it)")


def chromium(tmp_path, *args: str) -> subprocess.CompletedProcess:
    cmd = [CHROMIUM or "chromium", "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
           "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync",
           f"--user-data-dir={tmp_path / 'profile'}", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120)


@pytest.fixture
def page(tmp_path, monkeypatch):
    project = pinned_synthetic_project(tmp_path, monkeypatch)
    st = status.load_run(project, RUN_ID)
    path = tmp_path / "timeline.html"
    path.write_text(render_html(st), encoding="utf-8")
    return st, path


def test_chromium_renders_one_bar_per_task_to_scale(tmp_path, page):
    st, path = page
    # The DOM after Chromium parsed it: the SVG survived as SVG, with every bar and segment.
    proc = chromium(tmp_path, "--dump-dom", path.as_uri())
    assert proc.returncode == 0, proc.stderr
    dom = proc.stdout
    bars = re.findall(r'<g class="bar" data-task="([^"]+)" data-state="(\w+)" data-start="([\d.]+)" '
                      r'data-end="([\d.]+)">(.*?)</g>', dom, re.S)
    assert [b[0] for b in bars] == [t.id for t in st.tasks]
    assert [b[1] for b in bars] == ["done", "setup_failed", "unverified", "running", "pending"]
    scale = float(re.search(r'data-scale="([\d.]+)"', dom).group(1))
    assert scale == pytest.approx(720 / 50.0)
    for task, (_, _, start, end, inner) in zip(st.tasks, bars):
        rects = re.findall(r'<rect class="seg seg-(\w+)" x="([\d.]+)" y="[\d.]+" width="([\d.]+)"', inner)
        if task.state == "pending":
            assert rects == []
            continue
        kinds = [r[0] for r in rects]
        assert kinds[0] == "wait" and "issue" in kinds
        total = sum(float(r[2]) for r in rects)
        assert total == pytest.approx((float(end) - float(start)) * scale, abs=1.0)
        steps = {r[0]: float(r[2]) for r in rects}
        for name in ("issue", "worktree", "env"):
            if task.steps.get(name, {}).get("seconds") is not None:
                assert steps[name] == pytest.approx(task.steps[name]["seconds"] * scale, abs=0.6)
    assert len(re.findall(r'<g class="legend">', dom)) == 11
    assert "seconds since planning ended" in dom


def test_chromium_screenshot(tmp_path, page):
    _, path = page
    shot = tmp_path / "shot.png"
    proc = chromium(tmp_path, "--window-size=1000,700", f"--screenshot={shot}", path.as_uri())
    assert proc.returncode == 0, proc.stderr
    data = shot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10000


def test_the_page_lists_the_problems_status_names_refused_calls_included(tmp_path, monkeypatch):
    from parallel_setup import events
    from parallel_setup.commands.status import problems, render_text
    project = pinned_synthetic_project(tmp_path, monkeypatch)
    run_dir = project / ".parallel" / "runs" / RUN_ID
    done = status.load_run(project, RUN_ID).tasks[0]
    assert done.state == "done"
    events.append_event(run_dir, "permission_denied", task=done.id, tool="Bash",
                        command="cd /w && git commit -m '<x> & y'")
    st = status.load_run(project, RUN_ID)
    path = tmp_path / "timeline.html"
    path.write_text(render_html(st), encoding="utf-8")
    proc = chromium(tmp_path, "--dump-dom", path.as_uri())
    assert proc.returncode == 0, proc.stderr
    table = re.search(r'<table id="problems">(.*?)</table>', proc.stdout, re.S).group(1)
    rows = [re.findall(r"<td[^>]*>(.*?)</td>", row, re.S) for row in re.findall(r"<tr>(.*?)</tr>", table, re.S)[1:]]
    expected = [[t.id, t.state, why.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;"), log or "-"]
                for t, why, log in problems(st)]
    assert rows == expected and len(rows) >= 3  # the refused call, the failed setup, the unverified task
    assert [r[0] for r in rows][:1] == [done.id]
    assert rows[0][2] == "permission denied: Bash `cd /w &amp;&amp; git commit -m '&lt;x&gt; &amp; y'`"
    for t, why, _ in problems(st):  # the text names the same
        assert why in render_text(st)


def test_a_reason_of_many_lines_is_one_problem_line(tmp_path, monkeypatch):
    from parallel_setup import events
    from parallel_setup.commands.status import problems, render_text
    project = pinned_synthetic_project(tmp_path, monkeypatch)
    run_dir = project / ".parallel" / "runs" / RUN_ID
    st = status.load_run(project, RUN_ID)
    running = next(t for t in st.tasks if t.state == "running")
    reason = "Exit code 128\nAuthor identity unknown\n\n*** Please tell me who you are.\n" + "x" * 600
    events.append_event(run_dir, "task_end", task=running.id, state="failed", reason=reason, failed_claims=[],
                        notes=[], log=None, facts={}, via="test")
    st = status.load_run(project, RUN_ID)
    (why,) = [w for t, w, _ in problems(st) if t.id == running.id]
    assert why.startswith("Exit code 128 Author identity unknown *** Please tell me who you are. xxx")
    assert "\n" not in why and len(why) == 400 and why.endswith("~")
    line = next(l for l in render_text(st).splitlines() if l.startswith(f"  {running.id} "))
    assert f"failed: {why}" in line  # then the log
    assert status.load_run(project, RUN_ID).task(running.id).reason == reason  # --json keeps all of it

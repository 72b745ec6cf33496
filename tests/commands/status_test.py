"""``parallel-setup status``: what people and Claude read, snapshotted with a pinned clock, width and paths."""

from __future__ import annotations

import json

import pytest

from parallel_setup import status
from parallel_setup.cli import main
from tests.support.git import make_repo
from tests.support.runs import RUN_ID, T0, make_run, pinned_synthetic_project


@pytest.fixture
def run_project(tmp_path, monkeypatch):
    return pinned_synthetic_project(tmp_path, monkeypatch)


def status_out(capsys, project, *args) -> str:
    assert main(["-C", str(project), "status", *args]) == 0
    return capsys.readouterr().out


def test_status_text(run_project, capsys, snapshot):
    assert status_out(capsys, run_project, "--width", "100") == snapshot


def test_status_text_narrow(run_project, capsys, snapshot):
    assert status_out(capsys, run_project, RUN_ID, "--width", "60") == snapshot


def test_status_json(run_project, capsys, snapshot):
    out = status_out(capsys, run_project, "--json").replace(str(run_project), "<project>")
    data = json.loads(out)
    assert data["counts"] == {"done": 1, "failed": 0, "setup_failed": 1, "unverified": 1, "lost": 0,
                              "running": 1, "pending": 1}
    assert data["next_wave"] == ["password-reset"]
    assert out == snapshot


def test_metrics_follow_the_definitions(run_project):
    st = status.load_run(run_project, RUN_ID)
    m = st.metrics
    setups = {t.id: t.setup_seconds for t in st.tasks if t.setup_seconds is not None}
    assert setups == pytest.approx({"user-model": 2.4, "login-endpoint": 1.4, "docs": 1.6, "signup-endpoint": 3.3})
    # run setup: planning ended (T0) -> the last setup end (signup-endpoint: 3.9 + 3.3)
    assert m["run_setup_seconds"] == pytest.approx(7.2)
    assert m["parallel_efficiency"] == pytest.approx(sum(setups.values()) / (4 * 7.2))
    assert (m["failed_tasks"], m["task_error_rate"]) == (1, pytest.approx(0.2))
    assert (m["failed_attempts"], m["attempts"]) == (2, 12)  # one retry + one failed step; 11 steps + 1 retry
    assert (m["gh_calls"], m["gh_retries"], m["rate_limit_remaining"]) == (5, 1, 4986)
    # sequential: spawn phase (last spawn 1.9 s) + every step one after another
    assert m["sequential_estimate_seconds"] == pytest.approx(1.9 + sum(setups.values()))


def test_html_written_beside_text(run_project, capsys, tmp_path):
    out = status_out(capsys, run_project, "--width", "100", "--html", str(tmp_path / "t.html"))
    assert out.endswith(f"HTML timeline: {tmp_path / 't.html'}\n")
    page = (tmp_path / "t.html").read_text()
    assert page.count('class="bar"') == 5 and "http://" not in page.replace("http://www.w3.org/2000/svg", "")


def test_no_runs_and_unknown_run(tmp_path, capsys):
    assert main(["-C", str(tmp_path), "status"]) == 1
    assert capsys.readouterr().err == (f"parallel-setup: no runs in {tmp_path / '.parallel' / 'runs'}; "
                                       "start one with /parallel:execute\n")
    make_run(tmp_path, [{"id": "a", "title": "A"}])
    assert main(["-C", str(tmp_path), "status", "20000101-000000-0000"]) == 1
    assert capsys.readouterr().err == (f"parallel-setup: no run '20000101-000000-0000' in "
                                       f"{tmp_path / '.parallel' / 'runs'} (runs: {RUN_ID})\n")


def test_no_runs_ok_in_a_repository(tmp_path, capsys, monkeypatch):
    """--no-runs-ok (the /parallel:status ! line): a next step on stdout and exit 0, from a subfolder too."""
    repo = make_repo(tmp_path, origin=False)
    runs = repo / ".parallel" / "runs"
    monkeypatch.chdir(repo / "src")
    assert main(["status", "--no-runs-ok", "--width", "100"]) == 0
    assert capsys.readouterr() == (
        f"No parallel runs in this repository yet (nothing in {runs}).\n"
        "Make a plan with /parallel:plan <goal>, then run it with /parallel:execute.\n", "")
    # saved plans, and a run folder an interrupted execute left without run.json
    (repo / ".parallel" / "plans").mkdir(parents=True)
    (repo / ".parallel" / "plans" / "cache-layer.yaml").write_text("name: cache-layer\n")
    (runs / "20261122-101500-0bad").mkdir(parents=True)
    assert main(["status", "--no-runs-ok"]) == 0
    assert capsys.readouterr() == (
        f"No parallel runs in this repository yet (nothing in {runs}).\n"
        "1 folder(s) there have no run.json (an interrupted execute?): 20261122-101500-0bad.\n"
        "Saved plans: cache-layer. Run one with /parallel:execute [plan] (the most recent one if you name none).\n",
        "")
    # without the flag (scripts) it still fails
    assert main(["status"]) == 1
    assert capsys.readouterr().err == f"parallel-setup: no runs in {runs}; start one with /parallel:execute\n"


def test_no_runs_ok_outside_git(tmp_path, capsys):
    """A folder with .parallel/ (saved plans) that is not a git repository: says why nothing can run there."""
    (tmp_path / ".parallel" / "plans").mkdir(parents=True)
    (tmp_path / ".parallel" / "plans" / "cache-layer.yaml").write_text("name: cache-layer\n")
    assert main(["-C", str(tmp_path), "status", "--no-runs-ok"]) == 0
    assert capsys.readouterr() == (
        f"No parallel runs here: {tmp_path} is not a git repository, and a parallel run needs one.\n"
        "It has saved plans (cache-layer), but /parallel:execute runs only in a git repository.\n"
        "Open Claude Code in your project's repository (or run `git init` and make a first commit here), "
        "then make a plan with /parallel:plan <goal> and run it with /parallel:execute.\n", "")
    assert main(["-C", str(tmp_path), "status"]) == 1  # still an error for scripts
    capsys.readouterr()
    # no .parallel at all, not even a folder
    assert main(["-C", str(tmp_path / "missing"), "status", "--no-runs-ok"]) == 0
    assert capsys.readouterr().out.startswith(f"No parallel runs here: {tmp_path / 'missing'} is not a git "
                                              "repository")


def test_no_runs_ok_with_runs_or_a_named_run(run_project, capsys):
    """The flag changes nothing when there is a run; an unknown run id named on purpose is still an error."""
    plain = status_out(capsys, run_project, "--width", "100")
    assert status_out(capsys, run_project, "--no-runs-ok", "--width", "100") == plain
    assert main(["-C", str(run_project), "status", "--no-runs-ok", "20000101-000000-0000"]) == 1


def test_fresh_run_before_any_spawn(tmp_path, capsys, monkeypatch, snapshot):
    make_run(tmp_path, [{"id": "a", "title": "A"}, {"id": "b", "title": "B", "depends_on": ["a"]}])
    monkeypatch.setattr(status, "_now", lambda: T0 + 2.0)
    assert status_out(capsys, tmp_path, "--width", "80") == snapshot

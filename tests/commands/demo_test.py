"""``parallel-setup demo`` end to end: a scratch repository, both approaches, the measured table."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from parallel_setup import demo
from parallel_setup.cli import main
from tests.support.github import requires_gh

SMALL = ["--tasks", "2", "--issue-latency", "0.2", "--files", "120"]


def _numbers(row: str) -> list[float]:
    return [float(x) for x in re.findall(r"(-?\d+(?:\.\d+)?) s\b", row)]


def _row(text: str, name: str) -> str:
    rows = [line for line in text.splitlines() if line.startswith("| ") and name in line]
    assert rows, f"no row {name!r} in:\n{text}"
    return rows[0]


def _check_table(out: str) -> None:
    issue = _numbers(_row(out, "Issue creation"))
    worktree = _numbers(_row(out, "Worktree creation"))
    total = _numbers(_row(out, "Total setup"))
    assert len(issue) == 3 and len(worktree) == 3 and len(total) == 3, out
    # sequential issue creation is two issues after another, each at least the latency
    assert issue[0] >= 0.4
    assert issue[1] >= 0.2  # each issue takes at least the latency; which approach wins is not asserted
    assert abs(issue[0] - issue[1] - issue[2]) < 0.02  # the third column is the difference
    assert total[0] >= issue[0] and total[1] >= issue[1]  # a total includes its issue step
    assert abs(total[0] - total[1] - total[2]) < 0.02
    assert "not measurable without Claude" in _row(out, "Spawn agents")
    assert re.search(r"Speed-up: \d+\.\dx", out)


@requires_gh
def test_demo_github_mode_prints_the_measured_table_and_cleans_up(tmp_path, capsys):
    work = tmp_path / "demo"
    assert main(["demo", *SMALL, "--mode", "github", "--workdir", str(work)]) == 0
    captured = capsys.readouterr()
    _check_table(captured.out)
    assert "real gh + fake GitHub" in captured.out
    assert "github mode: the real gh" in captured.err
    assert "Cleaned up" in captured.out
    assert not work.exists()


def test_the_demo_uses_the_fake_github_whenever_gh_is_installed(tmp_path, monkeypatch):
    """What the README's first line promises: gh on PATH means the embedded fake GitHub."""
    gh = shutil.which("gh")
    if gh:
        assert demo.choose_mode() == ("github", f"the real gh ({gh}) against an embedded fake GitHub on 127.0.0.1")
    monkeypatch.setenv("PATH", str(tmp_path))  # a machine without gh
    assert demo.choose_mode() == ("local", "gh is not installed, so issues are local files with the same "
                                           "simulated latency (install gh to run on the embedded fake GitHub)")
    readme_first = (Path(__file__).resolve().parents[2] / "README.md").read_text().split("```bash\n", 1)[1]
    assert readme_first.splitlines()[0] == (
        "python3 scripts/parallel-setup demo   # the main job on an embedded fake GitHub through the real gh "
        "(local issue files when gh is not installed): no GitHub account, no API key")


def test_demo_local_mode_keeps_its_files_when_asked(tmp_path, capsys):
    work = tmp_path / "demo"
    assert main(["demo", *SMALL, "--mode", "local", "--keep", "--workdir", str(work)]) == 0
    captured = capsys.readouterr()
    _check_table(captured.out)
    assert "local issues" in captured.out and "local mode" in captured.err
    assert f"Files kept in {work}" in captured.out
    projects = sorted(p for p in work.iterdir() if p.is_dir() and (p / "worktrees").is_dir())
    assert len(projects) == 2  # traditional and parallel
    for project in projects:
        trees = sorted(p.name for p in (project / "worktrees").iterdir())
        assert trees == ["local-1", "local-2"]
        assert sorted(p.name for p in (project / ".parallel" / "issues").glob("*.md")) == ["1.md", "2.md"]
    runs = list(work.glob("parallel-*/.parallel/runs/*/events.jsonl"))
    assert len(runs) == 1


def test_demo_json_with_env_step(tmp_path, capsys):
    work = tmp_path / "demo"
    assert main(["demo", *SMALL, "--mode", "local", "--env-step", "--json", "--workdir", str(work)]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["mode"] == "local" and result["failures"] == []
    for approach in ("traditional", "parallel"):
        phases = result[approach]["phases"]
        assert phases["issue"] >= 0.2 and phases["worktree"] > 0 and phases["env"] > 0
    assert result["traditional"]["total"] > 0 and result["parallel"]["total"] > 0
    assert result["speedup"] == pytest.approx(result["traditional"]["total"] / result["parallel"]["total"], rel=0.01)
    assert result["spawn_reference_bytes"] <= 300
    assert not work.exists()


def test_demo_runs_from_a_relocated_plugin_folder(plugin_copy, tmp_path):
    """The README's first command, from the installed plugin's folder, outside any repository."""
    env = dict(os.environ, TMPDIR=str(tmp_path))
    proc = subprocess.run([sys.executable, str(plugin_copy / "scripts" / "parallel-setup"), "demo",
                           "--tasks", "2", "--issue-latency", "0", "--files", "60", "--mode", "local"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "| **Total setup**" in proc.stdout
    assert list(tmp_path.glob("parallel-demo-*")) == []


def test_scratch_repository_is_realistic(tmp_path):
    repo = demo.build_repository(tmp_path, files=300, commits=5)
    files = subprocess.run(["git", "ls-files"], cwd=repo, capture_output=True, text=True).stdout.split()
    assert len(files) >= 300
    assert {Path(f).suffix for f in files} >= {".py", ".js", ".md", ".css", ".json"}
    log = subprocess.run(["git", "log", "--oneline"], cwd=repo, capture_output=True, text=True).stdout
    assert len(log.splitlines()) == 5
    assert subprocess.run(["git", "rev-parse", "origin/main"], cwd=repo, capture_output=True).returncode == 0


@pytest.mark.parametrize("batch", [False, True])
@requires_gh
def test_batched_issues_and_worktree_pool(tmp_path, batch):
    """The opt-in optimizations work: one GraphQL request for every issue; pool worktrees claimed."""
    demo.build_repository(tmp_path, files=80, commits=2)
    bare = tmp_path / "scratch.git"
    with demo.open_service("github", 0.1) as service:
        m = demo.measure_once(tmp_path, bare, "parallel", 3, service, env_step=False, pool=not batch,
                              batch=batch)
        assert m.failures == []
        numbers = sorted(i["number"] for i in service.server.issues(demo.GH_REPO))
        assert numbers == [1, 2, 3]
        creates = [r for r in service.server.requests if r.get("operation") in ("IssueCreate", "IssueCreateBatch")]
        assert len(creates) == (1 if batch else 3)
        if not batch:
            assert m.extra["pool_claims"] == 3
        t = demo.measure_once(tmp_path, bare, "traditional", 2, service, env_step=False, batch=batch)
        assert t.failures == [] and len(service.server.issues(demo.GH_REPO)) == 5

"""``benchmarks/run.py --quick``: runs end to end and writes a sane table, JSON and SVG; the chart; the env cases."""

from __future__ import annotations

import json
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from tests.support.github import requires_gh

ROOT = Path(__file__).resolve().parent.parent


@requires_gh
def test_quick_benchmark_writes_table_json_and_svg(tmp_path):
    out = tmp_path / "results"
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "run.py"), "--quick", "--ns", "1,2",
                           "--latencies", "0.2", "--files", "100", "--hook-runs", "2", "--out", str(out)],
                          capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]

    result = json.loads((out / "results.json").read_text(encoding="utf-8"))
    assert result["quick"] is True and result["reps"] == 1 and result["mode"] == "github"
    labels = {s["label"] for s in result["summary"].values()}
    assert labels == {"traditional", "traditional+batch", "parallel", "parallel+pool", "parallel+batch"}
    for s in result["summary"].values():
        assert s["failures"] == 0, s
        assert s["min"] <= s["median"] <= s["max"]
        assert s["median"] >= 0.2  # every setup waits for at least one issue
    trad2 = next(s for s in result["summary"].values() if s["label"] == "traditional" and s["n"] == 2)
    assert trad2["phases"]["issue"] >= 0.4  # two issues, one after the other
    pool_rows = [r for r in result["rows"] if r["label"] == "parallel+pool"]
    assert all(r["extra"]["pool_claims"] == r["n"] for r in pool_rows)
    names = [t["name"] for t in result["targets"]]
    assert len(names) == 6 and any("spawn reference" in n for n in names)
    sr = result["spawn_render"]
    assert 0 < sr["spawn_ref_bytes_max"] <= 300 < sr["prompt_bytes_median"]
    assert sr["render_median"] > sr["bare_python_median"] > 0
    assert [b["n"] for b in result["bounds"]] == [1, 2] and all(b["failed"] == 0 for b in result["bounds"])
    assert result["machine"]["cpus"] >= 1
    ad = result["after_delete"]  # one checkout before and after deleting worktrees, measured last
    assert ad["deleted_worktrees"] == 10 and ad["before_wall"] > 0 and ad["after_wall"] > 0
    assert result["trash_emptied_early"] == 0 and " at " in result["workdir_fs"]

    md = (out / "results.md").read_text(encoding="utf-8")
    assert "| approach | N=1 | N=2 |" in md and "| parallel+pool |" in md and "## Targets" in md

    svg = ET.fromstring((out / "setup-time.svg").read_text(encoding="utf-8"))
    ns = {"s": "http://www.w3.org/2000/svg"}
    assert len(svg.findall("s:polyline", ns)) == 5
    assert any("traditional" in (t.text or "") for t in svg.findall("s:text", ns))
    assert "speed-up" in proc.stdout or "Targets" in proc.stdout


def test_the_chart_uses_a_log_scale_and_drops_single_points():
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import run as bench  # benchmarks/run.py
    def s(label, n, v):
        return {"label": label, "n": n, "latency": 1.0, "env_step": False, "median": v, "min": v, "max": v}
    summary = {f"{l}-{n}": s(l, n, v) for l, n, v in [
        ("traditional", 1, 1.1), ("traditional", 20, 60.0), ("parallel", 1, 1.2), ("parallel", 20, 2.5),
        ("parallel+pool", 1, 1.15), ("parallel+pool", 20, 1.4), ("parallel+batch", 5, 15.0)]}
    svg = ET.fromstring(bench.svg_plot(summary, "t"))
    ns = {"s": "http://www.w3.org/2000/svg"}
    lines = svg.findall("s:polyline", ns)
    assert len(lines) == 3  # parallel+batch has one point: no line
    texts = [t.text or "" for t in svg.findall("s:text", ns)]
    assert any("log scale" in t for t in texts) and not any("parallel+batch" in t for t in texts)
    ends = {float(l.get("points").split()[-1].split(",")[1]) for l in lines}
    # At N=20, 1.4 s and 2.5 s are told apart (on a linear axis to 60 s they were 8 px apart).
    assert len(ends) == 3 and min(abs(a - b) for a in ends for b in ends if a != b) > 20


def test_env_cases_measure_cold_warm_and_no_env_and_run_the_projects_tests(tmp_path):
    from benchmarks import env_cases
    from benchmarks.trash import Trash
    trash = Trash(tmp_path / ".trash")
    result = env_cases.run_cases(tmp_path, [1], log=lambda m: None, trash=trash)
    if set(result["errors"]) == {"python", "node"}:
        pytest.skip(f"neither project could be built (PyPI and npm unreachable?): {result['errors']}")
    for name, rows in result["cases"].items():
        by = {r["variant"]: r for r in rows}
        assert set(by) == {"cold", "warm", "no env"} and all(not r["failures"] for r in rows), rows
        assert by["warm"]["env"].startswith("ready from the pool (") and by["warm"]["pool_claims"] == 1
        assert by["cold"]["pool_claims"] == 0 and not by["cold"]["env"].startswith("ready")
        assert by["no env"]["env"] == "none" and by["warm"]["fill_seconds"] > 0
    names = [t["name"] for t in env_cases.targets(result)]
    assert len(names) == 2 * len(result["cases"]) and all(t["value"] for t in env_cases.targets(result))
    assert "| warm |" in "\n".join(env_cases.markdown(result))
    assert trash.count > 0 and not any((tmp_path / name / "worktrees").exists() for name in ("pyapp", "nodeapp"))


def test_the_trash_keeps_folders_until_emptied_and_empties_early_when_the_disk_runs_short(tmp_path):
    from benchmarks.trash import Trash
    for name in ("a", "b"):
        (tmp_path / name / "sub").mkdir(parents=True)
        (tmp_path / name / "sub" / "f").write_text("x")
    trash = Trash(tmp_path / ".trash")
    trash.put(tmp_path / "a")
    trash.put(tmp_path / "missing")  # nothing there: nothing to do
    assert not (tmp_path / "a").exists() and trash.count == 1 and trash.emptied_early == 0
    assert [p.name for p in (tmp_path / ".trash").iterdir()] == ["00001-a"]  # renamed, not deleted
    assert (tmp_path / ".trash" / "00001-a" / "sub" / "f").read_text() == "x"
    short = Trash(tmp_path / ".trash2", min_free_bytes=1 << 62)  # no disk has that much free
    short.put(tmp_path / "b")
    assert short.emptied_early == 1 and not (tmp_path / ".trash2").exists() and not (tmp_path / "b").exists()
    trash.empty()
    assert not (tmp_path / ".trash").exists()


def test_the_file_system_is_named_and_an_ext4_journal_is_read_from_sysfs(tmp_path):
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import run as bench
    assert " at /" in bench.filesystem(tmp_path)
    assert bench.ext4_journal("/dev/no-such-device") is None
    for line in Path("/proc/mounts").read_text().splitlines():
        dev, mount, kind = line.split()[:3]
        if kind == "ext4" and bench.ext4_journal(dev) is not None:  # a real ext4 here: its verdict is shown
            journal = bench.ext4_journal(dev)
            assert bench.filesystem(Path(mount)) == ("ext4" if journal else "ext4 (no journal)") + f" at {mount}"


def test_the_env_chart_has_a_line_per_project_and_variant():
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import run as bench
    rows = [{"n": n, "variant": v, "total": t * n} for n in (1, 10) for v, t in
            (("cold", 2.0), ("warm", 0.2), ("no env", 0.15))]
    svg = ET.fromstring(bench.env_svg({"cases": {"python": rows, "node": rows + [
        {"n": 5, "variant": "warm", "total": None, "failures": ["x"]}]}}))
    ns = {"s": "http://www.w3.org/2000/svg"}
    assert len(svg.findall("s:polyline", ns)) == 6
    texts = {t.text for t in svg.findall("s:text", ns)}
    assert {"Python: cold", "Python: warm", "Node: no env"} <= texts

"""``benchmarks/run.py --quick``: runs end to end and writes a sane table, JSON and SVG."""

from __future__ import annotations

import json
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

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

    md = (out / "results.md").read_text(encoding="utf-8")
    assert "| approach | N=1 | N=2 |" in md and "| parallel+pool |" in md and "## Targets" in md

    svg = ET.fromstring((out / "setup-time.svg").read_text(encoding="utf-8"))
    ns = {"s": "http://www.w3.org/2000/svg"}
    assert len(svg.findall("s:polyline", ns)) == 5
    assert any("traditional" in (t.text or "") for t in svg.findall("s:text", ns))
    assert "speed-up" in proc.stdout or "Targets" in proc.stdout

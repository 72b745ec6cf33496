"""200 writer processes append to one event log at the same moment: no lost, torn or interleaved line."""

from __future__ import annotations

import json
import subprocess
import sys
import time

from parallel_setup import events

WRITERS = 200
LINES_EACH = 3
WRITER = r"""
import os, sys, time
sys.path.insert(0, sys.argv[1])
from parallel_setup import events
run_dir, go, n = sys.argv[2], sys.argv[3], int(sys.argv[4])
while not os.path.exists(go):
    time.sleep(0.001)
for k in range(3):
    events.append_event(run_dir, "step_end", task=f"task-{n}", step=f"s{k}", writer=n, k=k,
                        detail=(f"{n:04d}-{k}-" * 400))  # about 3 KB a line
"""


def test_200_concurrent_writers(tmp_path):
    root = str(__import__("pathlib").Path(events.__file__).resolve().parent.parent)
    run_dir = tmp_path / "runs" / "20261122-101500-3fa2"
    run_dir.mkdir(parents=True)
    go = tmp_path / "go"
    procs = [subprocess.Popen([sys.executable, "-S", "-c", WRITER, root, str(run_dir), str(go), str(n)])
             for n in range(WRITERS)]
    time.sleep(0.5)
    go.touch()
    assert [p.wait(timeout=120) for p in procs] == [0] * WRITERS
    raw = (run_dir / "events.jsonl").read_bytes()
    lines = raw.split(b"\n")
    assert lines[-1] == b""  # ends with a newline
    records = [json.loads(line) for line in lines[:-1]]  # every line parses: none torn or interleaved
    assert len(records) == WRITERS * LINES_EACH
    seen = {(r["writer"], r["k"]) for r in records}
    assert seen == {(n, k) for n in range(WRITERS) for k in range(LINES_EACH)}  # none lost
    for r in records:
        assert r["detail"] == f"{r['writer']:04d}-{r['k']}-" * 400
        assert r["task"] == f"task-{r['writer']}" and r["run"] == run_dir.name
    assert len(events.read_events(run_dir)) == WRITERS * LINES_EACH

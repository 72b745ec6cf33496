"""The event log: one JSON object a line, whole lines under concurrent writers."""

from __future__ import annotations

import json
import multiprocessing
import subprocess

from parallel_setup import events


def _writer(run_dir: str, n: int, k: int) -> None:
    for i in range(k):
        events.append_event(run_dir, "gh_call", task=f"t{n}", op="x" * 300, attempt=i)


def test_append_and_read(tmp_path):
    run_dir = tmp_path / "20261122-101500-3fa2"
    run_dir.mkdir()
    e = events.append_event(run_dir, "run_created", t=1.5, tasks=["a"], mode="local")
    assert e == {"t": 1.5, "event": "run_created", "run": run_dir.name, "task": None, "tasks": ["a"], "mode": "local"}
    events.append_event(run_dir, "step_start", task="a", step="issue", detail="ünï")
    assert [x["event"] for x in events.read_events(run_dir)] == ["run_created", "step_start"]
    assert events.read_events(run_dir, task="a")[0]["detail"] == "ünï"


def test_bad_lines_are_skipped(tmp_path):
    (tmp_path / "events.jsonl").write_bytes(b'{"event": "a", "t": 1}\nnot json\n[1]\n\xff\xfe\n{"t": 2, "event": "b"}\n{"t": 3, "ev')
    assert [e["event"] for e in events.read_events(tmp_path)] == ["a", "b"]
    assert events.read_events(tmp_path / "missing") == []


def test_concurrent_writers_never_interleave(tmp_path):
    procs = [multiprocessing.Process(target=_writer, args=(str(tmp_path), n, 50)) for n in range(8)]
    for p in procs:
        p.start()
    # bash writers too, the way setup.sh appends
    line = '{"t":1,"event":"bash","run":"r","task":"b","pad":"' + "y" * 300 + '"}'
    bash = subprocess.Popen(["bash", "-c", f"for i in $(seq 100); do printf '%s\\n' '{line}' >>{tmp_path}/events.jsonl; done"])
    for p in procs:
        p.join()
    bash.wait()
    lines = (tmp_path / "events.jsonl").read_text().splitlines()
    assert len(lines) == 8 * 50 + 100
    assert all(isinstance(json.loads(l), dict) for l in lines)


def test_stdlib_only():
    source = open(events.__file__, encoding="utf-8").read()
    imports = {l.split()[1].split(".")[0] for l in source.splitlines() if l.startswith(("import ", "from "))}
    assert imports <= {"__future__", "json", "os", "time", "pathlib", "typing"}

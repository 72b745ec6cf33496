"""Per-task port blocks and database names: O_EXCL leases in a per-user folder, released by cleanup.

Real processes: 20 interpreters lease at the same instant (they wait for one start time).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from parallel_setup import ports, runs
from tests.setup_script_test import make_plan

ROOT = Path(__file__).resolve().parent.parent
LEASE = ("import sys, time, json\n"
         "from parallel_setup import ports\n"
         "start = float(sys.argv[4])\n"
         "time.sleep(max(0.0, start - time.time()))\n"
         "l = ports.lease_task(sys.argv[1], sys.argv[2], sys.argv[3])\n"
         "print(json.dumps([l.block, l.first, l.db_name]))\n")


def fake_run(project: Path, run_id: str) -> None:
    (project / ".parallel" / "runs" / run_id).mkdir(parents=True, exist_ok=True)


def test_twenty_tasks_started_in_the_same_instant_get_twenty_distinct_blocks(tmp_path):
    project = tmp_path / "proj"
    fake_run(project, "r1")
    start = time.time() + 1.5  # every process is up and waiting by then
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    procs = [subprocess.Popen([sys.executable, "-c", LEASE, str(project), "r1", f"task-{i}", str(start)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
             for i in range(20)]
    results = []
    for p in procs:
        out, err = p.communicate(timeout=60)
        assert p.returncode == 0, err
        results.append(json.loads(out))
    blocks = [r[0] for r in results]
    assert len(set(blocks)) == 20 and len({r[1] for r in results}) == 20 and len({r[2] for r in results}) == 20
    held = ports.leases()
    assert sorted(l.block for l in held) == sorted(blocks)
    assert {l.task_id for l in held} == {f"task-{i}" for i in range(20)}
    # A task asking again gets the block it holds.
    again = ports.lease_task(project, "r1", "task-3")
    assert again.block == results[3][0]

    assert ports.release_run(project, "r1") == 20
    assert ports.leases() == [] and ports.release_run(project, "r1") == 0


def test_release_frees_the_blocks_and_a_dead_runs_lease_is_taken_over(tmp_path):
    project = tmp_path / "proj"
    for run_id in ("old", "live", "next"):
        fake_run(project, run_id)
    old = ports.lease_task(project, "old", "a")
    live = ports.lease_task(project, "live", "a")
    assert (old.block, live.block) == (0, 1)
    assert old.env() == {"PARALLEL_PORT": "20000", "PORT": "20000", "PARALLEL_PORT_FIRST": "20000",
                         "PARALLEL_PORT_LAST": "20009",
                         "PARALLEL_PORTS": " ".join(str(p) for p in range(20000, 20010)),
                         "PARALLEL_DB_NAME": "par_a_0"}
    shutil.rmtree(project / ".parallel" / "runs" / "old")  # the run is gone, its lease was never released
    taken = ports.lease_task(project, "next", "b")
    assert taken.block == 0 and ports.find(project, "old", "a") is None
    assert ports.release_run(project, "live") == 1
    assert [l.run_id for l in ports.leases()] == ["next"]


def test_a_block_something_else_listens_on_is_skipped(tmp_path):
    project = tmp_path / "proj"
    fake_run(project, "r")
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind(("127.0.0.1", ports.FIRST_PORT))
        except OSError:
            pytest.skip(f"port {ports.FIRST_PORT} is taken on this machine already")
        s.listen()
        lease = ports.lease_task(project, "r", "t")
    assert lease.block == 1 and [l.block for l in ports.leases()] == [1]


def test_each_rendered_task_holds_its_own_block_until_the_run_is_released(repo):
    run = runs.create_run(repo, make_plan(3), mode="local")
    held = {l.task_id: l for l in ports.leases()}
    assert sorted(held) == ["t01", "t02", "t03"] and len({l.block for l in held.values()}) == 3
    runs.render_task(run, "t02")  # a re-render (execute --run) keeps the block
    assert ports.find(repo, run.id, "t02") == held["t02"]
    assert ports.release_run(repo, run.id) == 3

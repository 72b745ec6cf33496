"""Warm pool worktrees with real environments: uv, pip, npm and pnpm, installed offline.

Real git, real installers, real processes: the pool's fill installs each worktree's
environment, a task's setup claims one (``git worktree move``), and the project's own
tests then run in the moved worktree. Installs come from a wheelhouse and a packed npm
package built in the test's folder (PIP_NO_INDEX, UV_OFFLINE, npm offline).
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from parallel_setup import pool, runs
from tests.setup_script_test import make_plan
from tests.support import envs
from tests.support.git import git, git_commit, make_repo


@pytest.fixture(autouse=True)
def _quiet(monkeypatch, tmp_path):
    monkeypatch.setenv("PARALLEL_GH", str(tmp_path / "no-such-gh"))
    monkeypatch.delenv("PARALLEL_WORKTREE_POOL", raising=False)


def offline(monkeypatch, tmp_path, path=None) -> None:
    for k, v in envs.offline_env(tmp_path, envs.wheelhouse(tmp_path), path).items():
        monkeypatch.setenv(k, v)


def fill(repo: Path, size: int = 1, setup: str = "auto") -> pool.FillResult:
    with open(repo.parent / "fill.log", "a", encoding="utf-8") as log:
        result = pool.fill(repo, size, "main", log=log, setup=setup)
    assert not result.failed and not result.env_failed, (result, (repo.parent / "fill.log").read_text())
    return result


def one_task_run(repo: Path, setup: str = "auto") -> runs.Run:
    plan = make_plan(tasks=[{"id": "t1", "title": "T", "description": "d", "setup": setup}])
    return runs.create_run(repo, plan, mode="local", worktree_pool=pool.pool_dir(repo))


def run_ok(cmd, cwd: Path) -> str:
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, (cmd, proc.stdout, proc.stderr)
    return proc.stdout + proc.stderr


# --------------------------------------------------------------------------
# Python: uv and pip


def uv_locked_files(tmp_path: Path) -> dict:
    """The project without requirements.txt, with a uv.lock made by the real ``uv lock`` (offline)."""
    files = {k: v for k, v in envs.PY_FILES.items() if k != "requirements.txt"}
    files["pyproject.toml"] = files["pyproject.toml"].replace('"tinydep"', '"tinydep<2"')
    staging = tmp_path / "lock-staging"
    for name, text in files.items():
        (staging / name).parent.mkdir(parents=True, exist_ok=True)
        (staging / name).write_text(text)
    run_ok(["uv", "lock", "--quiet"], staging)
    files["uv.lock"] = (staging / "uv.lock").read_text()
    return files


@pytest.mark.parametrize("installer", ["uv", "pip", "uv sync"])
def test_a_warm_slot_claimed_and_moved_still_runs_the_projects_tests(tmp_path, monkeypatch, installer):
    uv = envs.uv_folder()
    if installer != "pip" and uv is None:
        pytest.skip("uv is not installed (pyproject.toml's test extra lists it)")
    offline(monkeypatch, tmp_path, envs.path_without_uv(tmp_path) if installer == "pip"
            else f"{uv}:{os.environ['PATH']}")
    repo = make_repo(tmp_path, files=uv_locked_files(tmp_path) if installer == "uv sync" else envs.PY_FILES)
    result = fill(repo)
    assert result.env_installed == 1
    [slot] = pool.free_slots(repo)
    record = pool.read_env_record(slot.path)
    shown = {"pip": "pip install -r requirements.txt (.venv)", "uv": "uv pip install -r requirements.txt (.venv)",
             "uv sync": "uv sync"}[installer]
    assert record["did"] == shown and record["path"] == str(slot.path)
    key_files = ["pyproject.toml", "uv.lock"] if installer == "uv sync" else ["pyproject.toml", "requirements.txt"]
    assert [k.split()[0] for k in record["key"]] == ["setup", "file", "file"]
    assert [k.split()[1] for k in record["key"][1:]] == key_files

    run = one_task_run(repo)
    out = runs.run_setup(run, "t1", timeout=300)
    assert out["status"] == "ok", out
    assert out["pool"] is True
    assert out["env"] == f"ready from the pool ({shown})"
    assert out["notes"] == []
    wt = Path(out["worktree"])
    assert not slot.path.exists() and not pool.env_record_path(slot.path).exists()
    # The project's tests, its console script and an import from outside the worktree all work.
    assert "OK" in run_ok([str(wt / ".venv" / "bin" / "python"), "-m", "unittest", "discover", "-s", "tests"], wt)
    assert run_ok([str(wt / ".venv" / "bin" / "widget-hello")], tmp_path).strip() == "hello widget"
    imported = run_ok([str(wt / ".venv" / "bin" / "python"), "-c", "import widget; print(widget.__file__)"], tmp_path)
    assert imported.strip() == str(wt / "widget" / "__init__.py")  # the editable install names the new folder
    leftover = subprocess.run(["grep", "-rlF", str(slot.path), str(wt / ".venv" / "bin")], capture_output=True, text=True)
    assert leftover.stdout == ""
    assert git(wt, "status", "--porcelain").stdout == ""
    log = (run.task_dir("t1") / "setup.log").read_text()
    assert f"--- env: moved from {slot.path}:" in log


def test_a_changed_lockfile_makes_the_claim_fall_back_and_say_why(tmp_path, monkeypatch):
    uv = envs.uv_folder()
    offline(monkeypatch, tmp_path, f"{uv}:{os.environ['PATH']}" if uv else envs.path_without_uv(tmp_path))
    repo = make_repo(tmp_path, files=envs.PY_FILES)
    fill(repo)
    git_commit(repo, "loosen the pin", {"requirements.txt": "tinydep>=1.0,<2\n-e .\n"})
    git(repo, "push", "-q", "origin", "main")

    out = runs.run_setup(one_task_run(repo), "t1", timeout=300)
    assert out["status"] == "ok" and out["pool"] is True, out
    assert out["notes"] == ["the pool worktree's environment did not fit (requirements.txt changed since the "
                            "pool was filled): ran the environment step"]
    assert "install -r requirements.txt (.venv)" in out["env"] and not out["env"].startswith("ready")
    wt = Path(out["worktree"])
    assert "OK" in run_ok([str(wt / ".venv" / "bin" / "python"), "-m", "unittest", "discover", "-s", "tests"], wt)


def test_a_changed_setup_command_and_a_pool_without_environments_fall_back(tmp_path, monkeypatch):
    offline(monkeypatch, tmp_path, envs.path_without_uv(tmp_path))
    repo = make_repo(tmp_path, files=envs.PY_FILES)
    fill(repo, size=2, setup="none")
    assert all(pool.read_env_record(s.path) is None for s in pool.free_slots(repo))
    out = runs.run_setup(one_task_run(repo, setup="echo prepared > prepared.txt"), "t1", timeout=300)
    assert out["status"] == "ok" and out["env"] == "echo prepared > prepared.txt" and out["notes"] == [], out

    fill(repo, size=1, setup="echo other > other.txt")
    [slot] = pool.free_slots(repo)
    assert pool.read_env_record(slot.path)["did"] == "echo other > other.txt"
    run = one_task_run(repo, setup="echo prepared > prepared.txt")
    out = runs.run_setup(run, "t1", timeout=300)
    assert out["notes"] == ["the pool worktree's environment did not fit (the setup command changed since the "
                            "pool was filled): ran the environment step"], out
    assert Path(out["worktree"], "prepared.txt").read_text() == "prepared\n"


# --------------------------------------------------------------------------
# Node: npm and pnpm


@pytest.mark.parametrize("tool", ["npm", "pnpm"])
def test_node_modules_from_the_pool_survive_the_move(tmp_path, monkeypatch, tool):
    npm_cache = tmp_path / "npm-cache"
    env = {"npm_config_cache": str(npm_cache), "npm_config_update_notifier": "false"}
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    binary = envs.pnpm_bin() if tool == "pnpm" else "npm"
    if tool == "pnpm":
        monkeypatch.setenv("PATH", f"{Path(binary).parent}:{os.environ['PATH']}")
        monkeypatch.setenv("npm_config_store_dir", str(tmp_path / "pnpm-store"))
    tarball = envs.npm_package(tmp_path)
    files = envs.node_files("vendor/tinynode-1.0.0.tgz")
    repo = make_repo(tmp_path, files=files)
    (repo / "vendor").mkdir()
    tarball.replace(repo / "vendor" / tarball.name)
    envs.lock_node_project(repo, binary, env)
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "lock")
    git(repo, "push", "-q", "origin", "main")
    monkeypatch.setenv("npm_config_offline", "true")

    fill(repo)
    [slot] = pool.free_slots(repo)
    shown = "pnpm install --frozen-lockfile" if tool == "pnpm" else "npm ci"
    assert pool.read_env_record(slot.path)["did"] == shown
    out = runs.run_setup(one_task_run(repo), "t1", timeout=300)
    assert out["status"] == "ok" and out["env"] == f"ready from the pool ({shown})", out
    wt = Path(out["worktree"])
    assert "ok" in run_ok(["npm", "test"], wt)
    assert git(wt, "status", "--porcelain").stdout == ""


# --------------------------------------------------------------------------
# setup.log and failures


def test_env_output_goes_to_setup_log_with_its_time_and_a_failure_names_its_last_lines(repo):
    plan = make_plan(tasks=[{"id": "bad", "title": "T", "description": "d",
                             "setup": "echo installing one\necho 'E: no such package: nope' >&2\nexit 4"}])
    run = runs.create_run(repo, plan, mode="local")
    out = runs.run_setup(run, "bad")
    assert out["_exit"] == 1 and out["step"] == "env"
    log_path = run.task_dir("bad") / "setup.log"
    assert out["reason"] == (f"'echo installing one ...' failed with exit status 4: installing one | "
                             f"E: no such package: nope (see {log_path})")
    lines = log_path.read_text().splitlines()
    stamped = [l for l in lines if l.endswith("   installing one")]
    assert len(stamped) == 1 and stamped[0][2] == ":" and stamped[0][5] == ":"  # HH:MM:SS before each line
    assert any(l.startswith("--- env: echo installing one ...: exit 4, ") for l in lines)


def test_the_env_step_gets_the_tasks_ports_and_database_name(repo):
    plan = make_plan(tasks=[{"id": "srv", "title": "T", "description": "d",
                             "setup": "echo \"$PORT $PARALLEL_PORT $PARALLEL_DB_NAME $PARALLEL_PORTS\" > ports.txt"}])
    run = runs.create_run(repo, plan, mode="local")
    out = runs.run_setup(run, "srv")
    assert out["status"] == "ok", out
    port, same, db, *block = Path(out["worktree"], "ports.txt").read_text().split()
    assert port == same and block == [str(p) for p in range(int(port), int(port) + 10)]
    assert db.startswith("par_srv_")
    prompt = (run.task_dir("srv") / "prompt.md").read_text()
    assert f"PORT={port}" in prompt and db in prompt and str(run.task_dir("srv") / "ports.env") in prompt
    env_file = (run.task_dir("srv") / "ports.env").read_text()
    assert f"PARALLEL_PORT='{port}'" in env_file and f"PARALLEL_DB_NAME='{db}'" in env_file

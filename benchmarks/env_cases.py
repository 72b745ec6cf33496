"""The environment cases of the benchmark: real projects whose setup installs real dependencies.

* python: a project with 4 real dependencies from PyPI (``six``, ``idna``, ``attrs``,
  ``packaging``; downloaded once with ``pip download`` into a wheelhouse, then installed
  offline: ``UV_OFFLINE``/``PIP_NO_INDEX`` with ``--find-links``), set up with
  ``setup: auto`` (uv when it is installed, else pip);
* node: a project with 4 real npm packages (``ms``, ``kleur``, ``is-number``,
  ``picocolors``), locked once from the registry, then ``npm ci --prefer-offline`` from the
  warm npm cache (no registry request for what the cache holds).

For N = 1, 5, 10 tasks set up at once, three ways, measured in one run:

* ``cold``: no pool: ``git worktree add`` and the environment step in every task;
* ``warm``: the pool filled beforehand with the environment installed (``pool.fill``,
  while the model would plan: not part of the time); the claim moves the worktree and
  fixes the venv's paths;
* ``no env``: the pool filled beforehand, ``setup: none`` (the floor: what a task costs
  without an environment).

The measure is "all agents ready with their environment": from the first setup script's
start to the last one's end. Each case then runs the project's own tests in one
worktree, so a broken environment cannot pass for a fast one.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable, Dict, List, Sequence

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from parallel_setup import pool, runs  # noqa: E402
from parallel_setup.plans import parse_plan  # noqa: E402

from benchmarks.trash import Trash  # noqa: E402

PY_DEPS = ["six==1.16.0", "idna==3.7", "attrs==23.2.0", "packaging==24.0"]
BUILD_BACKEND = "flit_core==3.9.0"
NODE_DEPS = {"ms": "2.1.3", "kleur": "4.1.5", "is-number": "7.0.0", "picocolors": "1.0.1"}
CACHE = Path.home() / ".cache" / "parallel-bench"


def _run(cmd: Sequence[str], cwd: Path, env: Dict[str, str] | None = None, timeout: float = 600) -> str:
    proc = subprocess.run(list(cmd), cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed in {cwd}: {proc.stderr.strip()[-800:]}")
    return proc.stdout


def wheelhouse() -> Path:
    """The dependencies' wheels, downloaded from PyPI once (then reused offline)."""
    folder = CACHE / "wheelhouse"
    folder.mkdir(parents=True, exist_ok=True)
    _run([sys.executable, "-m", "pip", "download", "-q", "--only-binary=:all:", "-d", str(folder),
          *PY_DEPS, BUILD_BACKEND], cwd=folder)
    return folder


def _git_project(root: Path, name: str, files: Dict[str, str]) -> Path:
    repo = root / name
    repo.mkdir(parents=True)
    for rel, text in files.items():
        (repo / rel).parent.mkdir(parents=True, exist_ok=True)
        (repo / rel).write_text(text, encoding="utf-8")
    bare = root / f"{name}.git"
    for cmd in (["git", "init", "-q", "-b", "main"], ["git", "add", "-A"],
                ["git", "-c", "user.name=bench", "-c", "user.email=bench@example.invalid", "commit", "-qm", "init"],
                ["git", "init", "-q", "--bare", str(bare)], ["git", "remote", "add", "origin", str(bare)],
                ["git", "push", "-q", "-u", "origin", "main"], ["git", "fetch", "-q", "origin"]):
        _run(cmd, repo)
    return repo


def python_project(root: Path) -> Path:
    deps = ", ".join(f'"{d}"' for d in PY_DEPS)
    return _git_project(root, "pyapp", {
        ".gitignore": ".venv/\n__pycache__/\n",
        "pyproject.toml": ('[build-system]\nrequires = ["flit_core>=3.4,<4"]\nbuild-backend = "flit_core.buildapi"\n\n'
                           f'[project]\nname = "pyapp"\nversion = "0.1"\ndescription = "bench"\ndependencies = [{deps}]\n'),
        "pyapp/__init__.py": "import attrs, idna, packaging.version, six\n\n\ndef ok():\n    return idna.encode('a.b') == b'a.b'\n",
        "tests/test_app.py": "import unittest\n\nimport pyapp\n\n\nclass T(unittest.TestCase):\n"
                             "    def test_ok(self):\n        self.assertTrue(pyapp.ok())\n",
    })


def node_project(root: Path, env: Dict[str, str]) -> Path:
    files = {".gitignore": "node_modules/\n",
             "package.json": json.dumps({"name": "nodeapp", "version": "1.0.0", "private": True,
                                         "scripts": {"test": "node test.js"}, "dependencies": NODE_DEPS}, indent=2),
             "test.js": "const ms = require('ms'); if (ms('1s') !== 1000) process.exit(1); "
                        "require('kleur'); require('is-number'); require('picocolors'); console.log('ok');\n"}
    staging = root / "node-lock"
    staging.mkdir(parents=True)
    for rel, text in files.items():
        (staging / rel).write_text(text, encoding="utf-8")
    # Once, from the registry: the lockfile and a warm cache (the runs below are offline).
    _run(["npm", "install", "--no-audit", "--no-fund"], staging, env)
    files["package-lock.json"] = (staging / "package-lock.json").read_text(encoding="utf-8")
    shutil.rmtree(staging)
    return _git_project(root, "nodeapp", files)


def _plan(n: int, setup: str):
    import yaml
    data = {"schema_version": 1, "name": "bench-env", "goal": "benchmark", "defaults": {"setup": setup},
            "tasks": [{"id": f"t{i:02d}", "title": f"Task {i}", "description": "d"} for i in range(1, n + 1)]}
    return parse_plan(yaml.safe_dump(data), "plan.yaml", max_tasks=100)


def _reset(repo: Path, trash: Trash) -> None:
    """Put away every worktree, branch and run of earlier cases (the pool too): the folders go
    to ``trash`` (deleting them would slow the next case's checkouts; benchmarks/trash.py)."""
    trash.put(repo / "worktrees")  # the pool's slots live in worktrees/.pool
    trash.put(repo / ".parallel")
    subprocess.run(["git", "worktree", "prune"], cwd=repo, capture_output=True)
    for b in _run(["git", "for-each-ref", "--format=%(refname:short)", "refs/heads/feature/"], repo).split():
        subprocess.run(["git", "branch", "-q", "-D", b], cwd=repo, capture_output=True)


def measure(repo: Path, n: int, variant: str, env: Dict[str, str], check: Callable[[Path], None],
            trash: Trash) -> Dict[str, Any]:
    """One case: N setups at once; seconds until the last is ready, and the fill's seconds."""
    _reset(repo, trash)
    setup = "none" if variant == "no env" else "auto"
    fill_seconds = None
    saved = dict(os.environ)
    os.environ.update(env)
    try:
        if variant != "cold":
            t = time.time()
            filled = pool.fill(repo, n, "main", log=None, setup=setup)
            fill_seconds = round(time.time() - t, 2)
            if filled.failed or filled.env_failed or filled.free < n:
                raise RuntimeError(f"pool fill: {filled}")
        run = runs.create_run(repo, _plan(n, setup), mode="local", fetch=False,
                              worktree_pool=None if variant == "cold" else pool.pool_dir(repo))
        t0 = time.time()
        with ThreadPoolExecutor(max_workers=n) as ex:
            results = list(ex.map(lambda t: runs.run_setup(run, t, env=dict(os.environ), timeout=900), run.tasks))
        total = time.time() - t0
    finally:
        os.environ.clear()
        os.environ.update(saved)
    failures = [r.get("reason") for r in results if r.get("status") != "ok"]
    if not failures and variant != "no env":
        check(Path(results[0]["worktree"]))
    return {"n": n, "variant": variant, "total": round(total, 3), "fill_seconds": fill_seconds,
            "env": results[0].get("env"), "pool_claims": sum(1 for r in results if r.get("pool")),
            "env_seconds_max": max((r["seconds"]["env"] or 0) for r in results), "failures": failures}


def run_cases(work: Path, ns: Sequence[int], log, trash: Trash) -> Dict[str, Any]:
    """Both projects, every N, the three variants; a project that cannot be built is reported, not fatal."""
    out: Dict[str, Any] = {"ns": list(ns), "cases": {}, "errors": {}}
    npm_env = dict(os.environ, npm_config_cache=str(CACHE / "npm-cache"), npm_config_update_notifier="false")
    projects = {}
    try:
        wheels = wheelhouse()
        py_env = {"UV_OFFLINE": "1", "UV_FIND_LINKS": str(wheels), "PIP_NO_INDEX": "1", "PIP_FIND_LINKS": str(wheels),
                  "UV_NO_PROGRESS": "1", "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
        repo = python_project(work)

        def py_check(wt: Path) -> None:
            _run([str(wt / ".venv" / "bin" / "python"), "-m", "unittest", "discover", "-s", "tests"], wt)
        projects["python"] = (repo, py_env, py_check)
        out["python_installer"] = "uv" if shutil.which("uv") else "pip"
    except (RuntimeError, OSError, subprocess.SubprocessError) as e:
        out["errors"]["python"] = str(e)
    try:
        repo = node_project(work, npm_env)
        node_env = {"npm_config_cache": npm_env["npm_config_cache"], "npm_config_prefer_offline": "true",
                    "npm_config_update_notifier": "false"}

        def node_check(wt: Path) -> None:
            _run(["npm", "test"], wt)
        projects["node"] = (repo, node_env, node_check)
    except (RuntimeError, OSError, subprocess.SubprocessError) as e:
        out["errors"]["node"] = str(e)
    for name, (repo, env, check) in projects.items():
        rows: List[Dict[str, Any]] = []
        for n in ns:
            for variant in ("no env", "warm", "cold"):
                try:
                    row = measure(repo, n, variant, env, check, trash)
                except (RuntimeError, OSError, subprocess.SubprocessError) as e:
                    row = {"n": n, "variant": variant, "total": None, "failures": [str(e)[-500:]]}
                rows.append(row)
                log(f"env case {name} N={n} {variant}: {row['total']} s"
                    + (f" (fill {row.get('fill_seconds')} s)" if row.get("fill_seconds") is not None else "")
                    + (f" FAILED: {row['failures'][:1]}" if row["failures"] else ""))
        out["cases"][name] = rows
        _reset(repo, trash)
    return out


def targets(env_result: Dict[str, Any]) -> List[Dict[str, Any]]:
    """The issue's two environment targets per project, at the largest N measured."""
    found = []
    for name, rows in env_result.get("cases", {}).items():
        n = max(r["n"] for r in rows)
        by = {r["variant"]: r.get("total") for r in rows if r["n"] == n and not r.get("failures")}
        warm, floor, cold = by.get("warm"), by.get("no env"), by.get("cold")
        found.append({"name": f"{name}: warm pool / no env step, N={n} (all ready)", "target": 1.5, "better": "lower",
                      "unit": "x", "value": round(warm / floor, 2) if warm and floor else None})
        found.append({"name": f"{name}: cold env step / warm pool, N={n} (speed-up)", "target": 10.0,
                      "better": "higher", "unit": "x", "value": round(cold / warm, 2) if warm and cold else None})
    for t in found:
        v = t["value"]
        t["met"] = None if v is None else (v <= t["target"] if t["better"] == "lower" else v >= t["target"])
    return found


def markdown(env_result: Dict[str, Any]) -> List[str]:
    lines = ["## Environment cases: all agents ready with their environment (s)", "",
             f"Python: {len(PY_DEPS)} dependencies from PyPI ({', '.join(PY_DEPS)}), installed offline from a "
             f"wheelhouse by `setup: auto` with {env_result.get('python_installer', '?')}; Node: "
             f"{len(NODE_DEPS)} npm packages, `npm ci` offline from a warm npm cache. cold: no pool (git worktree "
             "add + the environment step); warm: pool filled beforehand with the environment (fill time in "
             "brackets, not part of the setup); no env: pool, `setup: none`.", ""]
    ns = env_result.get("ns", [])
    for name, rows in env_result.get("cases", {}).items():
        lines += [f"### {name}", "", "| variant | " + " | ".join(f"N={n}" for n in ns) + " |",
                  "|---|" + "---|" * len(ns)]
        for variant in ("no env", "warm", "cold"):
            cells = []
            for n in ns:
                r = next((r for r in rows if r["n"] == n and r["variant"] == variant), None)
                if r is None or r.get("total") is None:
                    cells.append("failed" if r else "-")
                else:
                    cells.append(f"{r['total']:.2f}" + (f" (fill {r['fill_seconds']:.1f})"
                                                        if r.get("fill_seconds") is not None else ""))
            lines.append(f"| {variant} | " + " | ".join(cells) + " |")
        lines.append("")
    for name, err in env_result.get("errors", {}).items():
        lines += [f"{name}: not measured: {err}", ""]
    return lines

#!/usr/bin/env python3
"""Every benchmark of parallel-setup in one command: the seed's claims, measured.

    python3 benchmarks/run.py [--quick] [--reps 3] [--out benchmarks/results]

Setup of N tasks (N in 1, 5, 10, 20, 50) on a 2,000-file scratch repository with a
bare origin, real git worktrees, and the real ``gh`` against the embedded fake
GitHub (3 s and 0 s per issue), with and without an environment step, both ways:

* traditional: one process, every issue, then every worktree, then every env step;
* parallel: every task's rendered setup.sh at once (what the subagents do);

and the seed's two "future optimizations" as opt-in variants measured in the same
run: a worktree pool (``+pool``) and batched issue creation (``+batch``: all issues
in one GraphQL request). Also measured: bytes per spawn (the short reference vs the
full prompt), the render of 20 tasks including interpreter start, each hook's
latency vs a bare ``python3 -c pass`` (benchmarks/hook_latency.py), and what bounds
setup at large N (CPU time vs wall time of concurrent worktree checkouts).

Writes ``results.md``, ``results.json`` and ``setup-time.svg`` to ``--out`` and prints
the table and the target ratios. ``--quick`` is a smoke test (small N, 1 repetition,
a smaller repository, low latency) that finishes in well under a minute.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from parallel_setup import demo  # noqa: E402

from benchmarks import env_cases  # noqa: E402
from benchmarks.trash import Trash  # noqa: E402

TARGETS = {
    "speedup_n20": 8.0,            # parallel vs traditional at N=20, 3 s per issue: at least
    "scaling_n20_n1": 2.0,         # parallel N=20 / N=1: at most
    "scaling_n20_n1_pool": 1.3,    # with the worktree pool: at most
    "render_20_seconds": 1.0,      # render of 20 tasks incl. interpreter start: under
    "spawn_ref_bytes": 300,        # per task: at most
    "hook_p95_ms_over_bare": 60.0,  # each hook's p95 minus bare python's p95: at most
}


# ---------------------------------------------------------------------------
# The matrix


def matrix(quick: bool, ns: Sequence[int], latencies: Sequence[float], env_steps: Sequence[bool]
           ) -> List[Dict[str, Any]]:
    """Every configuration to measure: approach, options, n, latency, env step.

    Budget on a 2-core machine (about 10 minutes a repetition): the sequential
    runs at 3 s per issue dominate (1+5+10+20+50 issues = 258 s of waiting alone).
    Where a result follows from others it is not run again, and the report says so:
    traditional with an env step at 3 s (its phases are sequential and add, the env
    phase is measured at 0 s) or at N=50 (N x the env step alone); parallel with an
    env step at 3 s only at N=1 and N=20; batching at 3 s only at N=5 (the server runs a batch's creates one after another: about N x 3 s).
    """
    configs = []
    for latency in latencies:
        slow = latency >= 1.0 and not quick
        for env_step in env_steps:
            for n in ns:
                variants = [("parallel", False, False), ("parallel", True, False)]
                if slow and env_step:
                    variants = [("parallel", False, False)] if n in (1, 20) else []
                elif not (env_step and n > 20 and not quick):
                    variants.insert(0, ("traditional", False, False))
                if not env_step and (not slow or n == 5):
                    variants += [("traditional", False, True), ("parallel", False, True)]
                for approach, pool, batch in variants:
                    configs.append({"approach": approach, "pool": pool, "batch": batch, "n": n,
                                    "latency": latency, "env_step": env_step})
    return configs


def config_key(c: Dict[str, Any]) -> str:
    label = c["approach"] + ("+pool" if c["pool"] else "") + ("+batch" if c["batch"] else "")
    return f"{label}|n={c['n']}|lat={c['latency']:g}|env={int(c['env_step'])}"


def estimate_seconds(configs: Sequence[Dict[str, Any]]) -> float:
    total = 0.0
    for c in configs:
        n, lat = c["n"], c["latency"]
        env = 1.0 if c["env_step"] else 0.0
        if c["approach"] == "traditional":
            total += n * (lat + 0.3 + env)
        elif c["batch"]:
            total += n * lat + 0.5 + n * (0.15 + env) / 2
        else:
            total += lat + 0.5 + n * (0.15 + env) / 2
        total += 1.0 + (n * 0.15 if c["pool"] else 0)  # clone, pool, clean-up
    return total


# ---------------------------------------------------------------------------
# Runs


def filesystem(path: Path) -> str:
    """The filesystem type holding ``path`` (from /proc/mounts), e.g. ``tmpfs at /dev/shm`` or
    ``ext4 at /``; an ext4 without a journal says so (``ext4 (no journal) at /``): there, files
    created soon after many were deleted cost far more kernel time (benchmarks/trash.py)."""
    try:
        real = str(Path(path).resolve())
        best, kind, device = "", "unknown", ""
        with open("/proc/mounts", encoding="utf-8") as f:
            for line in f:
                parts = line.split()
                if len(parts) >= 3 and (real == parts[1] or real.startswith(parts[1].rstrip("/") + "/")) \
                        and len(parts[1]) > len(best):
                    device, best, kind = parts[0], parts[1], parts[2]
        if kind == "ext4" and ext4_journal(device) is False:
            kind = "ext4 (no journal)"
        return f"{kind} at {best}" if best else kind
    except OSError:
        return "unknown"


def ext4_journal(device: str) -> Optional[bool]:
    """Whether the ext4 on ``device`` (e.g. /dev/vda) has a journal; None when sysfs does not say."""
    try:
        name = os.path.basename(os.path.realpath(device))
        with open(f"/sys/fs/ext4/{name}/journal_task", encoding="utf-8") as f:
            return f.read().strip() != "<none>"
    except OSError:
        return None


def default_workdir(tmpfs: bool = False) -> Path:
    """The disk users have: the temporary folder when it is on the project's own file system, else
    a folder beside the project. ``tmpfs``: /dev/shm (when it exists with 4 GB free), only when asked.

    Disks differ more than tmpfs suggests: on this machine kind's root disk, an ext4 without a
    journal, ``git worktree add`` of a 2,000-file repository costs about 0.13 s of kernel time,
    and about 1 s right after thousands of files were deleted (the kernel scans past inodes
    freed in the last minutes; benchmarks/trash.py). The report names the file system.
    """
    if tmpfs:
        shm = Path("/dev/shm")
        try:
            st = os.statvfs(shm)
            if shm.is_dir() and os.access(shm, os.W_OK) and st.f_bavail * st.f_frsize > 4 << 30:
                return shm
        except OSError:
            pass
    tmp = Path(tempfile.gettempdir())
    try:
        if os.stat(tmp).st_dev == os.stat(ROOT).st_dev:
            return tmp
    except OSError:
        pass
    return ROOT.parent


def loadavg() -> Optional[float]:
    try:
        return round(os.getloadavg()[0], 2)
    except OSError:
        return None


def run_matrix(configs: List[Dict[str, Any]], reps: int, files: int, work: Path, mode: str,
               log, trash: Trash) -> Tuple[List[Dict[str, Any]], Dict[str, Any]]:
    """Every configuration ``reps`` times, interleaved so that drift hits all alike.

    Each measurement's clone goes to ``trash``, not away: removing it would slow the next
    one's checkouts on a journal-less ext4 (benchmarks/trash.py).
    """
    t = time.time()
    demo.build_repository(work, files=files)
    bare = work / "scratch.git"
    repo_info = {"files": files, "build_seconds": round(time.time() - t, 2),
                 "tracked_files": len(demo._git(work / "scratch", "ls-files").stdout.splitlines())}
    trash.put(work / "scratch")
    service = demo.open_service(mode, 0.0)
    rows: List[Dict[str, Any]] = []
    try:
        for rep in range(reps):
            for i, c in enumerate(configs):
                if service.server is not None:
                    service.server.set_issue_latency(c["latency"])
                service.latency = c["latency"]
                load0 = loadavg()
                m = demo.measure_once(work, bare, c["approach"], c["n"], service, c["env_step"],
                                      pool=c["pool"], batch=c["batch"], keep=True)
                trash.put(Path(m.extra["project"]))
                row = m.as_dict()
                row.update(rep=rep, key=config_key(c), load_before=load0, load_after=loadavg())
                row["extra"].pop("issues", None)
                rows.append(row)
                log(f"rep {rep + 1}/{reps} [{i + 1}/{len(configs)}] {row['key']}: {row['total']:.2f} s"
                    f" (cpu {row['cpu_seconds']:.2f} s, load {load0})"
                    + (f" FAILED: {row['failures'][:1]}" if row["failures"] else ""))
    finally:
        service.close()
    return rows, repo_info


def summarize(rows: List[Dict[str, Any]]) -> Dict[str, Dict[str, Any]]:
    """Median, min, max of the total (and of each phase) per configuration."""
    groups: Dict[str, List[Dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault(r["key"], []).append(r)
    out: Dict[str, Dict[str, Any]] = {}
    for key, rs in groups.items():
        totals = [r["total"] for r in rs]
        first = rs[0]
        summary = {
            "label": first["label"], "n": first["n"], "latency": first["latency"], "env_step": first["env_step"],
            "reps": len(rs), "median": round(statistics.median(totals), 3), "min": round(min(totals), 3),
            "max": round(max(totals), 3), "cpu_median": round(statistics.median(r["cpu_seconds"] for r in rs), 3),
            "failures": sum(len(r["failures"]) for r in rs),
            "phases": {},
        }
        for step in ("issue", "worktree", "env"):
            vals = [r["phases"][step] for r in rs if r["phases"].get(step) is not None]
            if vals:
                summary["phases"][step] = round(statistics.median(vals), 3)
        pools = [r["extra"].get("pool_prepare_seconds") for r in rs if r["extra"].get("pool_prepare_seconds")]
        if pools:
            summary["pool_prepare_median"] = round(statistics.median(pools), 3)
        out[key] = summary
    return out


# ---------------------------------------------------------------------------
# The other measurements


def measure_spawn_and_render(work: Path, bare: Path, trash: Trash, n: int = 20, reps: int = 5) -> Dict[str, Any]:
    """Bytes per spawn (short reference vs full prompt) and the CLI render of ``n`` tasks.

    The render is timed as the main agent runs it: a new interpreter running
    ``scripts/parallel-setup execute`` (local mode, no fetch), which creates the run,
    renders every prompt and setup script and prints the spawn instructions.
    """
    from parallel_setup import runs
    project = demo.clone(bare, work / f"render-{time.time_ns()}")
    try:
        plan = demo.write_plan(project, n, "local", env_step=False)
        times = []
        last_out = ""
        for _ in range(reps):
            t = time.perf_counter()
            proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "parallel-setup"), "-C", str(project),
                                   "execute", str(plan), "--mode", "local", "--no-fetch", "--new-run"],
                                  capture_output=True, text=True, cwd=project)
            times.append(time.perf_counter() - t)
            if proc.returncode != 0:
                raise RuntimeError(f"execute failed (exit {proc.returncode}): {proc.stderr.strip()[-500:]}")
            last_out = proc.stdout
        bare_python = []
        for _ in range(reps):
            t = time.perf_counter()
            subprocess.run([sys.executable, "-c", "pass"], check=True)
            bare_python.append(time.perf_counter() - t)
        run = runs.load_run(project)
        refs = [len(runs.reference_json(run.short_reference(tid)).encode()) for tid in run.tasks]
        prompts = [run.prompt_path(tid).stat().st_size for tid in run.tasks]
        return {
            "tasks": n, "render_seconds": [round(x, 4) for x in times],
            "render_median": round(statistics.median(times), 4), "render_max": round(max(times), 4),
            "bare_python_median": round(statistics.median(bare_python), 4),
            "spawn_ref_bytes_max": max(refs), "spawn_ref_bytes_median": int(statistics.median(refs)),
            "prompt_bytes_median": int(statistics.median(prompts)), "prompt_bytes_max": max(prompts),
            "spawn_bytes_total_refs": sum(refs), "spawn_bytes_total_prompts": sum(prompts),
            "execute_output_bytes": len(last_out.encode()),
        }
    finally:
        trash.put(project)


def measure_bounds(work: Path, bare: Path, ns: Sequence[int], trash: Trash) -> List[Dict[str, Any]]:
    """N concurrent ``git worktree add`` (no issues, no scripts): wall vs CPU time.

    On C cores, CPU seconds / wall seconds near C means the checkouts are CPU-bound;
    well below C with a long wall time means they wait on the disk or on locks.
    """
    import resource
    out = []
    for n in ns:
        project = demo.clone(bare, work / f"bounds-{n}-{time.time_ns()}")
        try:
            r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
            t = time.perf_counter()
            procs = [subprocess.Popen(demo.worktree_command(k + 1), cwd=project, stdout=subprocess.DEVNULL,
                                      stderr=subprocess.PIPE) for k in range(n)]
            failed = sum(p.wait() != 0 for p in procs)
            wall = time.perf_counter() - t
            r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
            user, sys_ = r1.ru_utime - r0.ru_utime, r1.ru_stime - r0.ru_stime
            # one checkout alone, for the per-worktree cost
            t = time.perf_counter()
            subprocess.run(demo.worktree_command(10_000), cwd=project, check=True, capture_output=True)
            single = time.perf_counter() - t
            out.append({"n": n, "wall": round(wall, 3), "user": round(user, 3), "sys": round(sys_, 3),
                        "cpu": round(user + sys_, 3), "cpu_per_wall": round((user + sys_) / wall, 2) if wall else None,
                        "single_worktree": round(single, 3), "failed": failed, "load": loadavg()})
        finally:
            trash.put(project)
    return out


def measure_after_delete(work: Path, bare: Path, n: int = 10, reps: int = 3) -> Dict[str, Any]:
    """One ``git worktree add`` before and right after ``n`` worktrees were deleted.

    Shows what benchmarks/trash.py avoids and what a user's next run meets after a clean-up
    on this disk: on a journal-less ext4 the kernel scans past the freed inodes (kernel time
    grows), on a journaled one nothing changes. Run last: its deletions skew what follows.
    """
    import resource

    def one(project: Path, k: int) -> Tuple[float, float]:
        r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        t = time.perf_counter()
        subprocess.run(demo.worktree_command(k), cwd=project, check=True, capture_output=True)
        wall = time.perf_counter() - t
        return wall, resource.getrusage(resource.RUSAGE_CHILDREN).ru_stime - r0.ru_stime

    project = demo.clone(bare, work / f"after-delete-{time.time_ns()}")
    try:
        before = [one(project, 20_000 + k) for k in range(reps)]
        for k in range(n):
            subprocess.run(demo.worktree_command(30_000 + k), cwd=project, check=True, capture_output=True)
        t = time.perf_counter()
        for k in range(n):
            shutil.rmtree(project / f"{demo.name_prefixes('github')[1]}{30_000 + k}")
        delete_seconds = time.perf_counter() - t
        after = [one(project, 40_000 + k) for k in range(reps)]
    finally:
        shutil.rmtree(project, ignore_errors=True)
    med = lambda xs: round(statistics.median(xs), 3)  # noqa: E731
    return {"deleted_worktrees": n, "delete_seconds": round(delete_seconds, 3),
            "before_wall": med([w for w, _ in before]), "before_sys": med([s for _, s in before]),
            "after_wall": med([w for w, _ in after]), "after_sys": med([s for _, s in after]), "reps": reps}


_HOOK_ROW = re.compile(r"^(?P<name>.+?)\s+(?P<p50>[\d.]+)\s+(?P<p95>[\d.]+)\s+(?P<x>[\d.]+)\s+(?P<over>[+-][\d.]+)\s*(?P<ok>ok|OVER)?\s*$")


def measure_hooks(runs_count: int) -> Dict[str, Any]:
    """Run benchmarks/hook_latency.py when it exists and read its table."""
    script = ROOT / "benchmarks" / "hook_latency.py"
    if not script.exists():
        return {"available": False, "note": "benchmarks/hook_latency.py is not there"}
    proc = subprocess.run([sys.executable, str(script), "--runs", str(runs_count)], capture_output=True,
                          text=True, cwd=ROOT, timeout=900)
    if proc.returncode != 0:
        return {"available": False, "note": f"hook_latency.py failed (exit {proc.returncode}): "
                                            f"{proc.stderr.strip()[-300:]}"}
    rows = []
    for line in proc.stdout.splitlines():
        m = _HOOK_ROW.match(line)
        if m and not line.startswith("scenario"):
            rows.append({"scenario": m.group("name").strip(), "p50_ms": float(m.group("p50")),
                         "p95_ms": float(m.group("p95")), "p95_over_bare_ms": float(m.group("over"))})
    hooks = [r for r in rows if not r["scenario"].startswith("bare")]
    worst = max((r["p95_over_bare_ms"] for r in hooks), default=None)
    return {"available": True, "runs": runs_count, "rows": rows, "worst_p95_over_bare_ms": worst,
            "table": proc.stdout.strip()}


# ---------------------------------------------------------------------------
# Targets, table, SVG


def _get(summary: Dict[str, Dict[str, Any]], label: str, n: int, latency: float, env: bool = False
         ) -> Optional[Dict[str, Any]]:
    for s in summary.values():
        if s["label"] == label and s["n"] == n and abs(s["latency"] - latency) < 1e-9 and s["env_step"] == env:
            return s
    return None


def targets(summary: Dict[str, Dict[str, Any]], extras: Dict[str, Any], big_n: int, latency: float
            ) -> List[Dict[str, Any]]:
    rows = []

    def add(name: str, value: Optional[float], target: float, better: str, unit: str, note: str = "") -> None:
        if value is None:
            rows.append({"name": name, "value": None, "target": target, "met": None, "unit": unit,
                         "note": note or "not measured in this run"})
            return
        met = value >= target if better == "higher" else value <= target
        rows.append({"name": name, "value": round(value, 3), "target": target, "met": met, "unit": unit,
                     "better": better, "note": note})

    trad, par = _get(summary, "traditional", big_n, latency), _get(summary, "parallel", big_n, latency)
    par1, pool, pool1 = (_get(summary, "parallel", 1, latency), _get(summary, "parallel+pool", big_n, latency),
                         _get(summary, "parallel+pool", 1, latency))
    add(f"parallel vs traditional, N={big_n}, {latency:g} s/issue (speed-up)",
        trad["median"] / par["median"] if trad and par else None, TARGETS["speedup_n20"], "higher", "x")
    add(f"parallel N={big_n} / N=1 ({latency:g} s/issue)",
        par["median"] / par1["median"] if par and par1 else None, TARGETS["scaling_n20_n1"], "lower", "x")
    add(f"parallel+pool N={big_n} / N=1 ({latency:g} s/issue)",
        pool["median"] / pool1["median"] if pool and pool1 else None, TARGETS["scaling_n20_n1_pool"], "lower", "x")
    sr = extras.get("spawn_render") or {}
    add(f"render of {sr.get('tasks', 20)} tasks incl. interpreter start (median)", sr.get("render_median"),
        TARGETS["render_20_seconds"], "lower", "s")
    add("spawn reference per task (largest)", sr.get("spawn_ref_bytes_max"), TARGETS["spawn_ref_bytes"], "lower",
        "bytes", f"full prompt: {sr.get('prompt_bytes_median')} bytes (median)" if sr else "")
    hooks = extras.get("hooks") or {}
    add("hook p95 minus bare python p95 (worst hook)", hooks.get("worst_p95_over_bare_ms"),
        TARGETS["hook_p95_ms_over_bare"], "lower", "ms", hooks.get("note", ""))
    return rows


def markdown(summary: Dict[str, Dict[str, Any]], result: Dict[str, Any]) -> str:
    lines = [f"# parallel-setup benchmark ({result['date']})", "",
             f"Machine: {result['machine'].get('cpu', '?')}, {result['machine'].get('cpus')} CPUs, "
             f"{result['machine'].get('memory_gib', '?')} GiB; {result['machine'].get('git')}; "
             f"{result['machine'].get('gh') or 'no gh'}; Python {result['machine'].get('python')}. "
             f"Repository: {result['repository']['tracked_files']} files, work folder on "
             f"{result.get('workdir_fs', '?')}. Issues: {result['mode']} mode. "
             f"{result['reps']} repetition(s); median (min-max) of the total setup time in seconds.",
             ""]
    loads = [r.get("load_before") for r in result["rows"] if r.get("load_before") is not None]
    if loads:
        lines.append(f"Load average during the run: median {statistics.median(loads):.1f}, max {max(loads):.1f} "
                     f"(on {result['machine'].get('cpus')} CPUs; above that, other work shared the machine).")
        lines.append("")
    labels = sorted({s["label"] for s in summary.values()},
                    key=lambda l: ["traditional", "traditional+batch", "parallel", "parallel+pool",
                                   "parallel+batch"].index(l) if l in ("traditional", "traditional+batch", "parallel",
                                                                       "parallel+pool", "parallel+batch") else 9)
    for latency in sorted({s["latency"] for s in summary.values()}, reverse=True):
        for env in (False, True):
            subset = [s for s in summary.values() if s["latency"] == latency and s["env_step"] == env]
            if not subset:
                continue
            ns = sorted({s["n"] for s in subset})
            lines.append(f"## {latency:g} s per issue, {'with' if env else 'no'} environment step")
            lines.append("")
            lines.append("| approach | " + " | ".join(f"N={n}" for n in ns) + " |")
            lines.append("|---|" + "---|" * len(ns))
            for label in labels:
                cells = []
                for n in ns:
                    s = _get(summary, label, n, latency, env)
                    cells.append(f"{s['median']:.2f} ({s['min']:.2f}-{s['max']:.2f})"
                                 + (" FAIL" if s["failures"] else "") if s else "-")
                if any(c != "-" for c in cells):
                    lines.append(f"| {label} | " + " | ".join(cells) + " |")
            lines.append("")
    if result.get("env_cases"):
        lines += env_cases.markdown(result["env_cases"])
        load = result["env_cases"].get("load") or []
        if load:
            lines += [f"Load average at the start and end of the environment cases: {load[0]}, {load[-1]}.", ""]
    lines.append("## Targets")
    lines.append("")
    lines.append("| measure | value | target | met |")
    lines.append("|---|---|---|---|")
    for t in result["targets"]:
        value = "-" if t["value"] is None else f"{t['value']:g} {t['unit']}"
        op = ">=" if t.get("better") == "higher" else "<="
        met = "n/a" if t["met"] is None else ("yes" if t["met"] else "**no**")
        lines.append(f"| {t['name']} | {value} | {op} {t['target']:g} {t['unit']} | {met} "
                     + (f"({t['note']})" if t.get("note") else "") + " |")
    lines.append("")
    for key, where in (("bounds", result.get("workdir_fs", "")), ("bounds_disk", result.get("bounds_disk_fs", ""))):
        bounds = result.get(key) or []
        if not bounds:
            continue
        lines.append(f"## What bounds setup at large N: N concurrent `git worktree add` ({where})")
        lines.append("")
        lines.append("| N | wall s | user s | sys s | CPU/wall | one worktree alone s |")
        lines.append("|---|---|---|---|---|---|")
        for b in bounds:
            lines.append(f"| {b['n']} | {b['wall']:.2f} | {b['user']:.2f} | {b['sys']:.2f} | {b['cpu_per_wall']} | "
                         f"{b['single_worktree']:.2f} |")
        lines.append("")
    ad = result.get("after_delete") or {}
    if ad:
        lines.append(f"## One checkout before and right after deleting {ad['deleted_worktrees']} worktrees "
                     f"({result.get('workdir_fs', '')})")
        lines.append("")
        lines.append(f"Before: {ad['before_wall']:.2f} s ({ad['before_sys']:.2f} s of kernel time); right after "
                     f"deleting them ({ad['delete_seconds']:.2f} s): {ad['after_wall']:.2f} s ({ad['after_sys']:.2f} s of "
                     f"kernel time); median of {ad['reps']}. On an ext4 without a journal the kernel scans past the "
                     "inodes freed in the last minutes, so the measurements above never delete anything until the "
                     "benchmark ends (benchmarks/trash.py)"
                     + (f"; the disk ran short and the trash was emptied {result['trash_emptied_early']} time(s) "
                        "during the run" if result.get("trash_emptied_early") else "") + ".")
        lines.append("")
    sr = result.get("spawn_render") or {}
    if sr:
        lines.append(f"Spawn: {sr['spawn_ref_bytes_median']} bytes per short reference vs "
                     f"{sr['prompt_bytes_median']} bytes per full prompt (median; "
                     f"{sr['spawn_bytes_total_refs']} vs {sr['spawn_bytes_total_prompts']} bytes for {sr['tasks']} tasks). "
                     f"Render of {sr['tasks']} tasks (`scripts/parallel-setup execute`, new interpreter): median "
                     f"{sr['render_median']:.3f} s, max {sr['render_max']:.3f} s; bare `python3 -c pass`: "
                     f"{sr['bare_python_median']:.3f} s.")
        lines.append("")
    hooks = result.get("hooks") or {}
    if hooks.get("available"):
        lines.append("## Hook latency (benchmarks/hook_latency.py)")
        lines.append("")
        lines.append("```")
        lines.append(hooks["table"])
        lines.append("```")
        lines.append("")
    if result.get("skipped_note"):
        lines.append(result["skipped_note"])
        lines.append("")
    return "\n".join(lines)


_COLORS = {"traditional": "#d62728", "traditional+batch": "#ff7f0e", "parallel": "#1f77b4",
           "parallel+pool": "#2ca02c", "parallel+batch": "#9467bd",
           "cold": "#d62728", "warm": "#2ca02c", "no env": "#7f7f7f"}


def env_svg(env_result: Dict[str, Any]) -> str:
    """The environment cases: all ready vs N, per variant; Python solid, Node dashed."""
    summary: Dict[str, Dict[str, Any]] = {}
    for project, rows in env_result.get("cases", {}).items():
        for r in rows:
            if r.get("total") is None:
                continue
            summary[f"{project}|{r['variant']}|{r['n']}"] = {
                "label": r["variant"], "n": r["n"], "latency": 1.0 if project == "python" else 0.0,
                "env_step": False, "median": r["total"], "min": r["total"], "max": r["total"]}
    return svg_plot(summary, "All agents ready with their environment vs N", y_label="all ready",
                    legend=lambda label, latency: f"{'Python' if latency else 'Node'}: {label}")


def svg_plot(summary: Dict[str, Dict[str, Any]], title: str, y_label: str = "setup time",
             legend=lambda label, latency: f"{label}, {latency:g} s/issue") -> str:
    """Setup time against N, one line per approach and issue latency (solid 3 s, dashed 0 s); no env step."""
    series: Dict[Tuple[str, float], List[Tuple[int, float, float, float]]] = {}
    for s in summary.values():
        if s["env_step"]:
            continue
        series.setdefault((s["label"], s["latency"]), []).append((s["n"], s["median"], s["min"], s["max"]))
    for pts in series.values():
        pts.sort()
    series = {k: v for k, v in series.items() if len(v) > 1}  # a single point is no line: the tables have it
    if not series:
        return "<svg xmlns='http://www.w3.org/2000/svg' width='10' height='10'/>"
    width, height = 760, 460
    left, right, top, bottom = 70, 210, 50, 60
    pw, ph = width - left - right, height - top - bottom
    ns = sorted({p[0] for pts in series.values() for p in pts})
    # A log scale: the series span 0.1 s to minutes, and on a linear axis all but the slowest
    # lie on top of each other near zero. x is logarithmic too (N = 1, 5, 10, 20, 50).
    import math
    lo_v = min(max(p[2], 1e-3) for pts in series.values() for p in pts)
    hi_v = max(p[3] for pts in series.values() for p in pts)
    ylo, yhi = 10 ** math.floor(math.log10(lo_v)), 10 ** math.ceil(math.log10(max(hi_v, lo_v * 1.01)))
    xmin, xmax = min(ns), max(ns)

    def x(n: float) -> float:
        if xmax == xmin:
            return left + pw / 2
        return left + (math.log(n) - math.log(xmin)) / (math.log(xmax) - math.log(xmin)) * pw

    def y(v: float) -> float:
        v = max(v, ylo)
        return top + ph - (math.log10(v) - math.log10(ylo)) / (math.log10(yhi) - math.log10(ylo)) * ph

    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
           f'viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="12">',
           f'<rect width="{width}" height="{height}" fill="white"/>',
           f'<text x="{left}" y="24" font-size="15" font-weight="bold">{_esc(title)}</text>']
    decade = ylo
    while decade <= yhi * 1.0001:
        for m in (1, 2, 5):
            v = decade * m
            if v > yhi * 1.0001:
                break
            out.append(f'<line x1="{left}" y1="{y(v):.1f}" x2="{left + pw}" y2="{y(v):.1f}" '
                       f'stroke="{"#d0d0d0" if m == 1 else "#f0f0f0"}"/>')
            out.append(f'<text x="{left - 8}" y="{y(v) + 4:.1f}" text-anchor="end">{v:g}</text>')
        decade *= 10
    for n in ns:
        out.append(f'<line x1="{x(n):.1f}" y1="{top + ph}" x2="{x(n):.1f}" y2="{top + ph + 5}" stroke="black"/>')
        out.append(f'<text x="{x(n):.1f}" y="{top + ph + 20}" text-anchor="middle">{n}</text>')
    out.append(f'<line x1="{left}" y1="{top + ph}" x2="{left + pw}" y2="{top + ph}" stroke="black"/>')
    out.append(f'<line x1="{left}" y1="{top}" x2="{left}" y2="{top + ph}" stroke="black"/>')
    out.append(f'<text x="{left + pw / 2}" y="{height - 15}" text-anchor="middle">tasks (N)</text>')
    out.append(f'<text x="18" y="{top + ph / 2}" text-anchor="middle" '
               f'transform="rotate(-90 18 {top + ph / 2})">{_esc(y_label)} (s, log scale), median; bars: min-max</text>')
    ly = top + 10
    for (label, latency), pts in sorted(series.items(), key=lambda kv: (-kv[0][1], kv[0][0])):
        color = _COLORS.get(label, "#555")
        dash = "" if latency >= 1 else ' stroke-dasharray="6 4"'
        path = " ".join(f"{x(n):.1f},{y(med):.1f}" for n, med, _, _ in pts)
        out.append(f'<polyline points="{path}" fill="none" stroke="{color}" stroke-width="2"{dash}/>')
        for n, med, lo, hi in pts:
            out.append(f'<line x1="{x(n):.1f}" y1="{y(lo):.1f}" x2="{x(n):.1f}" y2="{y(hi):.1f}" stroke="{color}"/>')
            out.append(f'<circle cx="{x(n):.1f}" cy="{y(med):.1f}" r="3" fill="{color}"/>')
        out.append(f'<line x1="{left + pw + 15}" y1="{ly}" x2="{left + pw + 45}" y2="{ly}" stroke="{color}" '
                   f'stroke-width="2"{dash}/>')
        out.append(f'<text x="{left + pw + 52}" y="{ly + 4}">{_esc(legend(label, latency))}</text>')
        ly += 20
    out.append("</svg>")
    return "\n".join(out) + "\n"


def _esc(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


# ---------------------------------------------------------------------------


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true",
                        help="smoke test: N in 1 and 4, 0.5 s per issue, 1 repetition, 300 files")
    parser.add_argument("--reps", type=int, default=None, help="repetitions (default 3; 1 with --quick)")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results", help="output folder")
    parser.add_argument("--ns", default=None, help="comma-separated N values (default 1,5,10,20,50)")
    parser.add_argument("--latencies", default=None, help="comma-separated seconds per issue (default 3,0)")
    parser.add_argument("--files", type=int, default=None, help="files in the scratch repository (default 2000)")
    parser.add_argument("--mode", choices=("auto", "github", "local"), default="auto")
    parser.add_argument("--no-env-step", action="store_true", help="skip the runs with an environment step")
    parser.add_argument("--hook-runs", type=int, default=None, help="rounds for hook_latency.py (default 40)")
    parser.add_argument("--skip-extras", action="store_true", help="only the setup matrix")
    parser.add_argument("--workdir", type=Path, default=None,
                        help="where the scratch repositories go (default: on the project's own disk); "
                             "see default_workdir()")
    parser.add_argument("--tmpfs", action="store_true", help="measure on /dev/shm instead of the project's disk")
    parser.add_argument("--env-ns", default=None,
                        help="N values of the environment cases (default 1,5,10; none with --quick unless given)")
    parser.add_argument("--no-env-cases", action="store_true",
                        help="skip the environment cases (Python and Node projects with real dependencies)")
    args = parser.parse_args(argv)

    quick = args.quick
    reps = args.reps or (1 if quick else 3)
    ns = [int(v) for v in args.ns.split(",")] if args.ns else ([1, 4] if quick else [1, 5, 10, 20, 50])
    latencies = ([float(v) for v in args.latencies.split(",")] if args.latencies
                 else ([0.5] if quick else [3.0, 0.0]))
    files = args.files or (300 if quick else 2000)
    env_steps = [False] if (quick or args.no_env_step) else [False, True]
    hook_runs = args.hook_runs or (5 if quick else 40)
    mode, reason = demo.choose_mode(args.mode)
    configs = matrix(quick, ns, latencies, env_steps)
    big_n = 20 if 20 in ns else max(ns)
    target_latency = 3.0 if 3.0 in latencies else max(latencies)

    def log(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    log(f"benchmark: {len(configs)} configurations x {reps} repetition(s), N in {ns}, latency {latencies} s, "
        f"env step {env_steps}, {files} files, issues: {mode} ({reason}); "
        f"estimated {estimate_seconds(configs) * reps / 60:.0f} min; load {loadavg()} on {os.cpu_count()} CPUs")
    base = args.workdir or default_workdir(args.tmpfs)
    base.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="parallel-bench-", dir=base))
    log(f"work folder: {work} ({filesystem(work)})")
    trash = Trash(work / ".trash")
    started = time.time()
    try:
        rows, repo_info = run_matrix(configs, reps, files, work, mode, log, trash)
        summary = summarize(rows)
        extras: Dict[str, Any] = {}
        if not args.skip_extras:
            demo.build_repository(work / "extras", files=files)
            bare = extras_bare = work / "extras" / "scratch.git"
            log("spawn bytes and render time ...")
            extras["spawn_render"] = measure_spawn_and_render(work, bare, trash, n=20, reps=3 if quick else 7)
            log("bounds: concurrent worktree checkouts ...")
            extras["bounds"] = measure_bounds(work, bare, ns, trash)
            disk_base = default_workdir(tmpfs=not args.tmpfs)  # the other kind of disk, for comparison
            if filesystem(disk_base) != filesystem(work):
                disk = Path(tempfile.mkdtemp(prefix="parallel-bench-disk-", dir=disk_base))
                try:
                    log(f"bounds on {disk} ({filesystem(disk)}) ...")
                    disk_trash = Trash(disk / ".trash")
                    extras["bounds_disk"] = measure_bounds(disk, bare, ns, disk_trash)
                    extras["bounds_disk_fs"] = filesystem(disk)
                finally:
                    shutil.rmtree(disk, ignore_errors=True)
            log("hook latency ...")
            extras["hooks"] = measure_hooks(hook_runs)
        env_ns = [int(v) for v in args.env_ns.split(",")] if args.env_ns else ([] if quick else [1, 5, 10])
        if env_ns and not args.no_env_cases:
            log(f"environment cases, N in {env_ns} ...")
            load0 = loadavg()
            extras["env_cases"] = env_cases.run_cases(work / "env", env_ns, log, trash)
            extras["env_cases"]["load"] = [load0, loadavg()]
        if not args.skip_extras:
            log("one checkout before and after deleting 10 worktrees ...")
            extras["after_delete"] = measure_after_delete(work, extras_bare)
        result = {
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(started)),
            "seconds": round(time.time() - started, 1), "quick": quick, "reps": reps, "ns": ns,
            "latencies": latencies, "env_steps": env_steps, "env_step_command": demo.ENV_STEP,
            "mode": mode, "mode_reason": reason, "machine": demo.machine_info(),
            "workdir_fs": filesystem(work), "trash_emptied_early": trash.emptied_early,
            "platform": platform.platform(), "repository": repo_info,
            "summary": summary, "rows": rows, **extras,
            "skipped_note": ("Not run (they follow from the runs above): traditional with an environment step "
                             "at >= 1 s per issue (its phases are sequential and add up; the env phase is measured "
                             "at 0 s) or at N=50; parallel with an environment step at >= 1 s per issue only at N=1 and "
                             "N=20; batched variants at >= 1 s per issue except N=5 (GraphQL runs "
                             "a mutation's creates one after another, so a batch takes about N x the latency).")
            if any(l >= 1.0 for l in latencies) and not quick else "",
        }
        result["targets"] = targets(summary, extras, big_n, target_latency)
        if extras.get("env_cases"):
            result["targets"] += env_cases.targets(extras["env_cases"])
        args.out.mkdir(parents=True, exist_ok=True)
        md = markdown(summary, result)
        (args.out / "results.md").write_text(md, encoding="utf-8")
        (args.out / "results.json").write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
        (args.out / "setup-time.svg").write_text(
            svg_plot(summary, f"Setup time vs N ({files} files, {result['machine'].get('cpus')} CPUs, "
                              f"{mode} issues, {result['workdir_fs']})"), encoding="utf-8")
        if extras.get("env_cases"):
            (args.out / "env-setup-time.svg").write_text(env_svg(extras["env_cases"]), encoding="utf-8")
        print(md)
        print(f"\nresults: {args.out / 'results.md'}, {args.out / 'results.json'}, {args.out / 'setup-time.svg'} "
              f"({result['seconds']:.0f} s)")
        return 0
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())

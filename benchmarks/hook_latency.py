#!/usr/bin/env python3
"""Each hook's latency (p50/p95) beside a bare ``python3 -c pass``, measured side by side.

    python3 benchmarks/hook_latency.py [--runs N] [--no-site]

Hooks run exactly as ``hooks/hooks.json`` starts them (``python3 -S scripts/hook.py
EVENT``: no site-packages, the hooks need only the standard library).

Every round runs the bare interpreter and every hook scenario once, in turn, so
machine noise hits all of them alike. Scenarios: each event in a project that is
not a parallel project (the fast path every session pays), and the work each hook
does in a real run (a git repository with a bare origin, real payloads from
``tests/data/fixtures``). Target: every hook's p95 within 60 ms of bare python.
Not a timed test; it prints a table and exits 0.

The baseline is a bare ``python3 -c pass``. ``--no-site`` makes it ``python3 -S -c
pass`` instead, the stricter comparison: some machines have a site-packages ``.pth``
file that imports pathlib, re, typing... into every interpreter started without -S,
which makes the default baseline slower than the hooks themselves start.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.hooks.conftest import FIXTURES, make_task_branch, report_text, setup_end  # noqa: E402
from tests.support.git import make_repo  # noqa: E402
from tests.support.runs import RUN_ID, make_run, short_ref  # noqa: E402

HOOK = ROOT / "scripts" / "hook.py"
TARGET_MS = 60.0


def fixture(name: str) -> dict:
    return json.loads((FIXTURES / name).read_text(encoding="utf-8"))


def scenarios(project: Path, elsewhere: Path) -> dict[str, tuple[str, dict]]:
    """name -> (event, payload). Payloads whose effect is once-only are re-armed in ``rearm``."""
    out = {}
    for event, name in [("PreToolUse", "background/PreToolUse-Agent.json"),
                        ("PostToolUse", "background/PostToolUse-Agent-async_launched.json"),
                        ("SubagentStart", "foreground/SubagentStart.json"),
                        ("SubagentStop", "background/SubagentStop.json"),
                        ("UserPromptSubmit", "UserPromptSubmit-slash-command.json"),
                        ("Stop", "background/Stop-while-running.json")]:
        payload = fixture(name)
        payload["cwd"] = str(elsewhere)
        out[f"{event} (not a parallel project)"] = (event, payload)

    pre = fixture("background/PreToolUse-Agent.json")
    pre["cwd"] = str(project)
    pre["tool_input"].update(prompt=short_ref(RUN_ID, "alpha"), subagent_type="parallel:parallel-task-executor")
    pre["tool_use_id"] = "toolu_bench"
    out["PreToolUse expand + spawn"] = ("PreToolUse", pre)
    bash = fixture("foreground/PreToolUse-Bash-in-subagent.json")  # every Bash call of the session
    bash.update(cwd=str(project), tool_input={"command": "npm test", "description": "tests"})
    out["PreToolUse Bash, not a setup"] = ("PreToolUse", bash)
    from parallel_setup import trusted
    script = project / ".parallel" / "runs" / RUN_ID / "tasks" / "alpha" / "setup.sh"
    script.write_text("echo setup\n", encoding="utf-8")
    trusted.record_setup(script.parent)
    out["PreToolUse Bash, setup approved"] = ("PreToolUse", dict(
        bash, agent_id="agentbench1", tool_input={"command": f"bash {script}", "description": "setup"}))
    post = fixture("background/PostToolUse-Agent-async_launched.json")
    post.update(cwd=str(project), tool_use_id="toolu_bench")
    post["tool_response"]["agentId"] = "agentbench1"
    out["PostToolUse async_launched"] = ("PostToolUse", post)
    start = fixture("foreground/SubagentStart.json")
    start.update(cwd=str(project), agent_id="agentbench1", agent_type="parallel:parallel-task-executor")
    out["SubagentStart"] = ("SubagentStart", start)
    sha = make_task_branch(project, 1)
    setup_end(project, "alpha", 1)
    stop = fixture("background/SubagentStop.json")
    stop.update(cwd=str(project), agent_id="agentbench1", last_assistant_message=report_text("alpha", 1, sha))
    out["SubagentStop report + verify"] = ("SubagentStop", stop)
    note = fixture("background/UserPromptSubmit-task-notification.json")
    note["cwd"] = str(project)
    note["prompt"] = note["prompt"].replace("a22eae28874b8e5b8", "agentbench1")
    out["UserPromptSubmit summary"] = ("UserPromptSubmit", note)
    main_stop = fixture("background/Stop-while-running.json")
    main_stop["cwd"] = str(project)
    out["Stop while running"] = ("Stop", main_stop)
    return out


def rearm(project: Path) -> None:
    """Let SubagentStop ingest the report again in the next round (the end is recorded once)."""
    marker = project / ".parallel" / "runs" / RUN_ID / "hooks" / "ended-alpha"
    marker.unlink(missing_ok=True)


def timed(cmd: list[str], data: bytes, env: dict) -> float:
    start = time.perf_counter()
    subprocess.run(cmd, input=data, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env, check=False)
    return (time.perf_counter() - start) * 1000


def hook_flags() -> list[str]:
    """The interpreter options hooks.json starts every hook with (the same for all of them)."""
    config = json.loads((ROOT / "hooks" / "hooks.json").read_text(encoding="utf-8"))
    commands = {h["command"] for groups in config["hooks"].values() for g in groups for h in g["hooks"]}
    flags = {tuple(c.split('"${CLAUDE_PLUGIN_ROOT}/scripts/hook.py"')[0].split()[1:]) for c in commands}
    if len(flags) != 1:
        raise SystemExit(f"hooks.json starts its hooks in different ways: {sorted(commands)}")
    return list(flags.pop())


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=40, help="rounds (default 40)")
    parser.add_argument("--no-site", action="store_true",
                        help="run bare python and the hooks with -S (no site-packages .pth files)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        cfg = tmp / "gitconfig"
        cfg.write_text("[init]\n\tdefaultBranch = main\n")
        os.environ.update(GIT_CONFIG_GLOBAL=str(cfg), GIT_CONFIG_NOSYSTEM="1", GIT_AUTHOR_NAME="B",
                          GIT_AUTHOR_EMAIL="b@example.invalid", GIT_COMMITTER_NAME="B",
                          GIT_COMMITTER_EMAIL="b@example.invalid", XDG_STATE_HOME=str(tmp / "state"))
        project = make_repo(tmp)
        make_run(project, [{"id": "alpha", "title": "A"}, {"id": "beta", "title": "B"}],
                 created_at=time.time() - 5)
        elsewhere = tmp / "elsewhere"
        elsewhere.mkdir()
        env = dict(os.environ, CLAUDE_PLUGIN_ROOT=str(ROOT), CLAUDE_PLUGIN_DATA=str(tmp / "data"),
                   PARALLEL_VERIFY_GH="0")
        env.pop("CLAUDE_PROJECT_DIR", None)
        cases = scenarios(project, elsewhere)
        python = [sys.executable, *hook_flags()]
        bare = [sys.executable] + (["-S"] if args.no_site else []) + ["-c", "pass"]
        times: dict[str, list[float]] = {"bare python3 -c pass": []}
        for name in cases:
            times[name] = []
        for _ in range(args.runs):
            times["bare python3 -c pass"].append(timed(bare, b"", env))
            for name, (event, payload) in cases.items():
                rearm(project)
                times[name].append(timed(python + [str(HOOK), event], json.dumps(payload).encode(), env))
    base50, base95 = pct(times["bare python3 -c pass"], 50), pct(times["bare python3 -c pass"], 95)
    width = max(len(n) for n in times)
    print(f"{'scenario':<{width}}  {'p50 ms':>7} {'p95 ms':>7}  {'p50 x':>6} {'p95 +ms':>8}  target")
    worst = 0.0
    for name, values in times.items():
        p50, p95 = pct(values, 50), pct(values, 95)
        diff = p95 - base95
        worst = max(worst, diff)
        ok = "" if name.startswith("bare") else ("ok" if diff <= TARGET_MS else "OVER")
        print(f"{name:<{width}}  {p50:7.1f} {p95:7.1f}  {p50 / base50:6.2f} {diff:+8.1f}  {ok}")
    print(f"\n{args.runs} rounds on {os.cpu_count()} CPUs, {sys.executable} {sys.version.split()[0]}; "
          f"hooks run as python3 {' '.join(hook_flags())} (hooks.json), baseline python3 "
          f"{'-S ' if args.no_site else ''}-c pass; worst p95 difference {worst:+.1f} ms (target {TARGET_MS:.0f} ms)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

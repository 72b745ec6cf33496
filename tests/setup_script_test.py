"""setup.sh for real: real git repositories with a bare origin, the real gh against a fake GitHub.

Each test renders a run with ``runs.create_run`` and executes the tasks' setup scripts as
the subagents would, many at once where concurrency matters.
"""

from __future__ import annotations

import json
import os
import subprocess
import textwrap
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Dict, List, Optional

import pytest
import yaml

from parallel_setup import events, runs
from parallel_setup.fake_github import FakeGitHub
from parallel_setup.issue_mode import ModeDecision, Repository
from parallel_setup.plans import parse_plan
from tests.support.git import branches, git, worktrees
from tests.support.github import requires_gh

REPO_SLUG = "acme/widgets"
GH_REPO = Repository("github.localhost", "acme", "widgets")
#: Fast retries for tests: 50 ms first backoff.
FAST = {"PARALLEL_BACKOFF": "0.05", "PARALLEL_BACKOFF_CAP": "0.2", "PARALLEL_GH_TIMEOUT": "20"}


def make_plan(n: int = 3, *, tasks: Optional[List[dict]] = None, **top) -> "runs.Plan":
    data = {"schema_version": 1, "name": "demo", "goal": "Exercise the setup scripts.",
            "defaults": {"setup": "none"}}
    data.update(top)
    data["tasks"] = tasks if tasks is not None else [
        {"id": f"t{i:02d}", "title": f"Task {i}", "description": f"Do thing {i}."} for i in range(1, n + 1)]
    return parse_plan(yaml.safe_dump(data, allow_unicode=True, sort_keys=False), "plan.yaml", max_tasks=100)


def github_run(project: Path, plan, **kw) -> runs.Run:
    decision = ModeDecision("github", "test: fake GitHub", GH_REPO)
    return runs.create_run(project, plan, decision=decision, **kw)


def local_run(project: Path, plan, **kw) -> runs.Run:
    return runs.create_run(project, plan, mode="local", **kw)


def setup_env(server: Optional[FakeGitHub] = None, config_dir: Optional[Path] = None, **extra: str) -> Dict[str, str]:
    env = server.env(config_dir=str(config_dir)) if server else dict(os.environ)
    env.update(FAST)
    env.update(extra)
    return env


def run_all(run: runs.Run, env: Dict[str, str], tasks: Optional[List[str]] = None) -> Dict[str, dict]:
    """Every task's setup.sh at the same moment; task id -> final JSON line (+ _exit)."""
    tasks = tasks or run.tasks
    with ThreadPoolExecutor(max_workers=len(tasks)) as pool:
        results = list(pool.map(lambda t: runs.run_setup(run, t, env=env, timeout=120), tasks))
    return dict(zip(tasks, results))


def check_event_log(run: runs.Run) -> List[dict]:
    """Every line of the event log is a JSON object with the common fields."""
    lines = (run.dir / "events.jsonl").read_text(encoding="utf-8").splitlines()
    parsed = [json.loads(line) for line in lines]
    for e in parsed:
        assert {"t", "event", "run", "task"} <= set(e), e
        assert e["run"] == run.id
    return parsed


@pytest.fixture
def server():
    with FakeGitHub(issue_latency=0.05) as s:
        yield s


@pytest.fixture
def gh_env(server, tmp_path_factory):
    return setup_env(server, tmp_path_factory.mktemp("gh-config"))


# --------------------------------------------------------------------------
# GitHub mode


@requires_gh
def test_twenty_concurrent_setups_then_rerun_creates_nothing(repo, server, gh_env):
    run = github_run(repo, make_plan(20))
    results = run_all(run, gh_env)

    assert {t: r["status"] for t, r in results.items()} == {t: "ok" for t in run.tasks}
    numbers = sorted(r["issue"] for r in results.values())
    assert numbers == list(range(1, 21))
    issues = server.issues(REPO_SLUG)
    assert len(issues) == 20
    for tid, r in results.items():
        assert r["_exit"] == 0
        assert r["branch"] == f"feature/task-{r['issue']}"
        assert r["worktree"] == str(repo / "worktrees" / f"task-{r['issue']}")
        assert r["issue_url"] == f"https://github.localhost/acme/widgets/issues/{r['issue']}"
        assert set(r["seconds"]) == {"issue", "worktree", "env", "total"}
        assert json.loads((run.task_dir(tid) / "setup.json").read_text()) == {
            k: v for k, v in r.items() if not k.startswith("_")}
    assert branches(repo) == sorted(["main"] + [f"feature/task-{n}" for n in range(1, 21)])
    assert len(worktrees(repo)) == 21
    # Branches start at origin/main and do not track it (no shared-config writes).
    main_sha = git(repo, "rev-parse", "origin/main").stdout.strip()
    assert git(repo, "rev-parse", "feature/task-7").stdout.strip() == main_sha
    assert git(repo, "config", "--get-regexp", r"^branch\.feature", check=False).stdout == ""
    # The main checkout stays clean.
    assert git(repo, "status", "--porcelain").stdout == ""

    log = check_event_log(run)
    per_task = {t: [e["event"] for e in log if e["task"] == t] for t in run.tasks}
    for t, kinds in per_task.items():
        assert kinds[0] == "setup_start" and kinds[-1] == "setup_end", (t, kinds)
        assert kinds.count("step_end") == 3
    assert sum(1 for e in log if e["event"] == "gh_call") >= 20

    created_before = server.counters()["issues_created"]
    again = run_all(run, gh_env)
    assert all(r["status"] == "ok" and r["reused"] == {"issue": True, "worktree": True} for r in again.values())
    assert {t: r["issue"] for t, r in again.items()} == {t: r["issue"] for t, r in results.items()}
    assert server.counters()["issues_created"] == created_before == 20
    assert len(worktrees(repo)) == 21 and len(branches(repo)) == 21


HOSTILE_TITLE = "Fix $(touch {pwned}) `touch {pwned}` 'single' \"double\" {{{{ 7*7 }}}} ünïcødé ✓ \\n"
HOSTILE_BODY = """\
Run $(touch {pwned}) and `touch {pwned}`; also ${{HOME}} and $HOME.
'single' "double" \\ backslash
EOF
{{{{ 7*7 }}}} {{% if true %}}jinja{{% endif %}}
```
a fence
```
Ünïcødé: 日本語 ✓
"""


@requires_gh
def test_hostile_text_arrives_verbatim_and_runs_nothing(repo, server, gh_env, tmp_path):
    pwned = tmp_path / "pwned"
    assert not Path("/tmp/pwned").exists()
    title = HOSTILE_TITLE.format(pwned="/tmp/pwned")
    body = HOSTILE_BODY.format(pwned=pwned)
    plan = make_plan(tasks=[{"id": "evil", "title": title, "description": body,
                             "labels": ["$(touch /tmp/pwned)"]}],
                     defaults={"setup": "none", "copy_files": ["it's $(x).env"]})
    run = github_run(repo, plan, labels=False)
    result = runs.run_setup(run, "evil", env=gh_env)

    assert result["status"] == "ok", result
    (issue,) = server.issues(REPO_SLUG)
    assert issue["title"] == title.strip()
    assert issue["body"].startswith(body.rstrip())
    assert runs.marker_for(run.id, "evil") in issue["body"]
    assert not pwned.exists()
    assert not Path("/tmp/pwned").exists()
    # The unknown label failed and the issue was created without it, said so.
    assert any("labels not applied" in n for n in result["notes"])
    # In the script, plan values are quoted data, never code.
    script = run.setup_script("evil").read_text()
    assert "touch" not in script.replace("'$(touch /tmp/pwned)'", "")
    assert "'it'\"'\"'s $(x).env'" in script


@requires_gh
def test_a_502_then_success(repo, server, gh_env):
    server.fail_next("502", match="IssueCreate")
    run = github_run(repo, make_plan(1))
    result = runs.run_setup(run, "t01", env=gh_env)

    assert result["status"] == "ok" and result["issue"] == 1
    assert len(server.issues(REPO_SLUG)) == 1
    log = check_event_log(run)
    calls = [e for e in log if e["event"] == "gh_call" and e["op"] == "issue_create"]
    assert [(c["attempt"], c["http_status"]) for c in calls] == [(1, 502), (2, 200)]
    (retry,) = [e for e in log if e["event"] == "retry"]
    assert retry["step"] == "issue" and "502" in retry["reason"]
    # After a failure that may have created the issue, setup looks for it before creating again.
    assert [e["op"] for e in log if e["event"] == "gh_call"] == ["issue_create", "issue_lookup", "issue_create"]


@requires_gh
def test_secondary_rate_limit_honours_retry_after(repo, server, gh_env):
    server.fail_next("secondary_rate_limit", match="IssueCreate", retry_after=1)
    run = github_run(repo, make_plan(1))
    start = time.time()
    result = runs.run_setup(run, "t01", env=gh_env)

    assert result["status"] == "ok"
    assert time.time() - start >= 1.0
    log = check_event_log(run)
    first = [e for e in log if e["event"] == "gh_call"][0]
    assert first["http_status"] == 403 and first["retry_after"] == 1
    (retry,) = [e for e in log if e["event"] == "retry"]
    assert "secondary rate limit" in retry["reason"] and retry["sleep"] >= 1.0
    assert len(server.issues(REPO_SLUG)) == 1


@requires_gh
def test_timeout_then_success_never_duplicates(repo, server, gh_env):
    server.fail_next("timeout", match="IssueCreate", hang=5)
    run = github_run(repo, make_plan(1))
    result = runs.run_setup(run, "t01", env=dict(gh_env, PARALLEL_GH_TIMEOUT="1"))
    assert result["status"] == "ok"
    assert len(server.issues(REPO_SLUG)) == 1
    calls = [e for e in check_event_log(run) if e["event"] == "gh_call"]
    assert calls[0]["exit"] == 124 and calls[0]["http_status"] is None
    assert [c["op"] for c in calls] == ["issue_create", "issue_lookup", "issue_create"]


@requires_gh
def test_one_task_failing_for_good_leaves_the_others(repo, server, gh_env):
    plan = make_plan(tasks=[{"id": f"t{i}", "title": "flaky one" if i == 2 else f"Task {i}",
                             "description": "d"} for i in range(1, 5)])
    server.fail_always("502", title_contains="flaky")
    run = github_run(repo, plan)
    results = run_all(run, dict(gh_env, PARALLEL_RETRIES="3"))

    failed = results.pop("t2")
    assert failed["_exit"] == 1
    assert failed["status"] == "failed" and failed["step"] == "issue"
    assert "HTTP 502" in failed["reason"] and "gave up after 3 attempts" in failed["reason"]
    assert failed["issue"] is None and failed["worktree"] is None
    assert all(r["status"] == "ok" for r in results.values())
    assert len(server.issues(REPO_SLUG)) == 3
    assert len(worktrees(repo)) == 4
    end = [e for e in check_event_log(run) if e["event"] == "step_end" and e["task"] == "t2"]
    assert end[-1]["ok"] is False and end[-1]["step"] == "issue"


@requires_gh
def test_crash_after_the_api_call_finds_the_issue_by_its_marker(repo, server, gh_env):
    run = github_run(repo, make_plan(1))
    first = runs.run_setup(run, "t01", env=gh_env)
    assert first["status"] == "ok"
    # Simulate dying right after the API call: the intent exists, the record does not.
    (run.task_dir("t01") / "issue.record").unlink()
    again = runs.run_setup(run, "t01", env=gh_env)
    assert again["status"] == "ok" and again["issue"] == first["issue"]
    assert again["reused"]["issue"] is True
    assert len(server.issues(REPO_SLUG)) == 1


@requires_gh
def test_labels_not_allowed_issues_created_without_them(repo, server, gh_env, monkeypatch):
    server.fail_always("bad_credentials", match="POST /repos/*/labels")
    for k, v in server.gh_variables(gh_env["GH_CONFIG_DIR"]).items():
        monkeypatch.setenv(k, v)
    run = github_run(repo, make_plan(2, issues={"labels": ["parallel"]}))
    assert run.data["labels_ok"] is False
    assert "could not create labels" in run.data["labels_note"]
    (labels_event,) = events.read_events(run.dir, event="labels")
    assert labels_event["ok"] is False and "parallel" in labels_event["failed"]
    results = run_all(run, gh_env)
    assert all(r["status"] == "ok" for r in results.values())
    assert all(i["labels"] == [] for i in server.issues(REPO_SLUG))


@requires_gh
def test_labels_created_once_and_applied(repo, server, gh_env, monkeypatch):
    for k, v in server.gh_variables(gh_env["GH_CONFIG_DIR"]).items():
        monkeypatch.setenv(k, v)
    plan = make_plan(2, issues={"labels": ["parallel", "needs review"]})
    run = github_run(repo, plan)
    assert run.data["labels_ok"] is True
    run_all(run, gh_env)
    assert sorted(l["name"] for l in server.labels(REPO_SLUG)) == ["needs review", "parallel"]
    assert all(sorted(i["labels"]) == ["needs review", "parallel"]
               for i in server.issues(REPO_SLUG))
    # A second run reuses the existing labels.
    run2 = github_run(repo, plan)
    (ev,) = events.read_events(run2.dir, event="labels")
    assert ev["ok"] is True and ev["created"] == [] and sorted(ev["existing"]) == ["needs review", "parallel"]


@requires_gh
def test_unauthenticated_gh_fails_with_the_reason(repo, server, gh_env):
    server.set_reject_auth(True)
    run = github_run(repo, make_plan(1))
    result = runs.run_setup(run, "t01", env=gh_env)
    assert result["status"] == "failed" and result["step"] == "issue"
    assert result["reason"].startswith("gh is not authenticated")


# --------------------------------------------------------------------------
# Git


def test_worktree_lock_contention_is_retried(repo):
    run = local_run(repo, make_plan(1))
    lock = Path(git(repo, "rev-parse", "--git-common-dir").stdout.strip())
    lock = (repo / lock if not lock.is_absolute() else lock) / "refs" / "heads" / "feature" / "local-1.lock"
    lock.parent.mkdir(parents=True)
    lock.write_text("")  # another git process holds the ref
    proc = subprocess.Popen(["bash", str(run.setup_script("t01"))], cwd=repo, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True,
                            env={**os.environ, **FAST, "PARALLEL_BACKOFF": "0.3"})
    time.sleep(0.4)
    lock.unlink()
    out, _ = proc.communicate(timeout=60)
    result = json.loads(out.splitlines()[-1])
    assert result["status"] == "ok", result
    retries = events.read_events(run.dir, event="retry")
    assert retries and retries[0]["step"] == "worktree" and "lock" in retries[0]["reason"]


def test_existing_branch_is_reused_when_the_worktree_was_removed(repo):
    run = local_run(repo, make_plan(1))
    first = runs.run_setup(run, "t01")
    git(repo, "worktree", "remove", first["worktree"])
    again = runs.run_setup(run, "t01")
    assert again["status"] == "ok" and again["worktree"] == first["worktree"]
    assert Path(again["worktree"], "README.md").exists()


def test_local_numbering_skips_a_worktree_and_branch_someone_else_made(repo):
    run = local_run(repo, make_plan(1))
    git(repo, "worktree", "add", "-b", "feature/local-1", "worktrees/local-1")
    git(repo, "branch", "feature/local-2")
    result = runs.run_setup(run, "t01")
    assert result["status"] == "ok" and result["issue"] == 3 and result["branch"] == "feature/local-3"
    assert git(repo / "worktrees" / "local-1", "branch", "--show-current").stdout.strip() == "feature/local-1"


def test_tasks_branch_from_the_commit_execute_resolved_even_if_the_base_moves(repo):
    run = local_run(repo, make_plan(1))
    pinned = run.data["base_commit"]
    assert pinned == git(repo, "rev-parse", "origin/main").stdout.strip()
    git(repo, "commit", "-q", "--allow-empty", "-m", "later")
    git(repo, "update-ref", "refs/remotes/origin/main", "HEAD")  # origin/main moved on after execute
    result = runs.run_setup(run, "t01")
    assert result["status"] == "ok"
    assert git(Path(result["worktree"]), "rev-parse", "HEAD").stdout.strip() == pinned


def test_missing_base_branch_fails_at_the_worktree_step(repo):
    run = local_run(repo, make_plan(1))
    run.data["base_commit"] = ""  # a run made before base commits were recorded: the ref is used
    runs.render_task(run, "t01")
    git(repo, "update-ref", "-d", "refs/remotes/origin/main")
    result = runs.run_setup(run, "t01")
    assert result["status"] == "failed" and result["step"] == "worktree"
    assert "origin/main" in result["reason"]
    assert result["issue"] == 1  # the issue step had succeeded and is kept


# --------------------------------------------------------------------------
# Local mode


def test_local_numbering_under_twenty_way_concurrency(repo):
    (repo / ".parallel" / "issues").mkdir(parents=True)
    (repo / ".parallel" / "issues" / "3.md").write_text("# an older issue\n")
    run = local_run(repo, make_plan(20))
    results = run_all(run, setup_env(PARALLEL_LOCAL_ISSUE_LATENCY="0.05"))
    numbers = sorted(r["issue"] for r in results.values())
    assert numbers == list(range(4, 24))
    files = sorted(int(p.stem) for p in (repo / ".parallel" / "issues").glob("*.md"))
    assert files == [3] + list(range(4, 24))
    for tid, r in results.items():
        text = (repo / ".parallel" / "issues" / f"{r['issue']}.md").read_text()
        assert text.startswith(f"# {run.plan.task(tid).title}\n")
        assert runs.marker_for(run.id, tid) in text
        assert r["issue_url"] == f".parallel/issues/{r['issue']}.md"
    assert not list((repo / ".parallel" / "issues").glob(".tmp-*"))
    assert git(repo, "status", "--porcelain").stdout == ""
    # Again: nothing new.
    again = run_all(run, setup_env())
    assert {t: r["issue"] for t, r in again.items()} == {t: r["issue"] for t, r in results.items()}
    assert len(list((repo / ".parallel" / "issues").glob("*.md"))) == 21


def test_local_mode_without_origin(tmp_path):
    from tests.support.git import make_repo
    project = make_repo(tmp_path, origin=False)
    run = local_run(project, make_plan(1))
    assert run.data["base_ref"] == "main"
    result = runs.run_setup(run, "t01")
    assert result["status"] == "ok" and result["branch"] == "feature/local-1"


# --------------------------------------------------------------------------
# The environment step


def test_env_copies_files_and_runs_the_setup_command(repo):
    (repo / ".env").write_text("SECRET=1\n")
    (repo / "config").mkdir()
    (repo / "config" / "local.ini").write_text("[x]\n")
    plan = make_plan(tasks=[
        {"id": "cmd", "title": "T", "description": "d", "setup": "echo prepared > prepared.txt\necho two"},
        {"id": "off", "title": "T", "description": "d", "setup": "none"},
    ], defaults={"copy_files": [".env", "config/local.ini", "missing.txt"]})
    run = local_run(repo, plan)
    results = run_all(run, setup_env())
    cmd, off = results["cmd"], results["off"]
    assert cmd["status"] == "ok" and cmd["env"] == "echo prepared > prepared.txt ..."
    assert Path(cmd["worktree"], "prepared.txt").read_text() == "prepared\n"
    assert Path(cmd["worktree"], ".env").read_text() == "SECRET=1\n"
    assert Path(cmd["worktree"], "config", "local.ini").exists()
    assert "copy_files not found in the main checkout: missing.txt" in cmd["notes"]
    assert off["env"] == "none"
    assert not Path(off["worktree"], "prepared.txt").exists()


def test_env_failure_reports_the_step_and_keeps_issue_and_worktree(repo):
    plan = make_plan(tasks=[{"id": "bad", "title": "T", "description": "d", "setup": "echo oops >&2; exit 3"}])
    run = local_run(repo, plan)
    result = runs.run_setup(run, "bad")
    assert result["_exit"] == 1
    assert result["step"] == "env"
    assert result["reason"].startswith("'echo oops >&2; exit 3' failed with exit status 3")
    assert result["issue"] == 1 and Path(result["worktree"]).is_dir()
    assert "oops" in (run.task_dir("bad") / "setup.log").read_text()


def test_env_auto_detects_and_says_which(repo, tmp_path):
    git_files = {"package-lock.json": "{}", "package.json": "{}", "go.mod": "module x\n"}
    for name, text in git_files.items():
        (repo / name).write_text(text)
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "deps")
    git(repo, "push", "-q", "origin", "main")
    # Fake tools on PATH: record what ran.
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("npm", "go"):
        script = bin_dir / tool
        script.write_text(f"#!/bin/sh\necho {tool} \"$@\" >> {tmp_path}/ran.txt\n")
        script.chmod(0o755)
    run = local_run(repo, make_plan(tasks=[{"id": "a", "title": "T", "description": "d", "setup": "auto"}]))
    env = setup_env(PATH=f"{bin_dir}:{os.environ['PATH']}")
    result = runs.run_setup(run, "a", env=env)
    assert result["status"] == "ok", result
    assert result["env"] == "npm ci; go mod download"
    # npm takes what its shared cache has without asking the registry again (--prefer-offline).
    assert (tmp_path / "ran.txt").read_text() == "npm ci --prefer-offline --no-audit --no-fund\ngo mod download\n"


def test_env_auto_with_a_missing_tool_is_a_note_not_a_failure(repo):
    (repo / "Gemfile").write_text("source 'https://rubygems.org'\n")
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "gemfile")
    git(repo, "push", "-q", "origin", "main")
    run = local_run(repo, make_plan(tasks=[{"id": "a", "title": "T", "description": "d", "setup": "auto"}]))
    result = runs.run_setup(run, "a", env=setup_env(PATH="/usr/bin:/bin"))
    if Path("/usr/bin/bundle").exists():
        pytest.skip("bundler is installed here")
    assert result["status"] == "ok"
    assert "bundle install (Gemfile found, bundle not installed)" in result["env"]

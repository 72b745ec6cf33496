"""The fake GitHub answers the real gh CLI (2.23) as GitHub does, faults included."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest

from parallel_setup.fake_github import FakeGitHub
from tests.support.github import REPO, fake_github, gh_env, requires_gh, run_gh  # noqa: F401

pytestmark = requires_gh

GRAPHQL = "http://api.github.localhost/graphql"


def kinds(server: FakeGitHub) -> list:
    return [r["kind"] for r in server.requests]


def create(env, title, body="body", *extra):
    return run_gh(env, "issue", "create", "-R", REPO, "--title", title, "--body", body, *extra)


def admin(server: FakeGitHub, path: str, payload=None):
    data = None if payload is None else json.dumps(payload).encode()
    request = urllib.request.Request(server.url + path, data=data,
                                     headers={"Content-Type": "application/json"})
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(request, timeout=10) as response:
        return json.loads(response.read())


def test_issue_create_prints_url_and_numbers_issues(fake_github, gh_env, tmp_path):
    body_file = tmp_path / "body.md"
    body_file.write_text("## Task\nmarker-1\n")

    first = run_gh(gh_env, "issue", "create", "-R", REPO, "--title", "First", "--body-file", str(body_file))
    second = create(gh_env, "Second", "two")

    assert (first.returncode, first.stdout, first.stderr) == (
        0, "https://github.localhost/acme/widgets/issues/1\n", "")
    assert second.stdout == "https://github.localhost/acme/widgets/issues/2\n"
    assert [(i["number"], i["title"], i["body"]) for i in fake_github.issues("acme/widgets")] == [
        (1, "First", "## Task\nmarker-1\n"), (2, "Second", "two")]
    assert kinds(fake_github) == ["RepositoryInfo", "IssueCreate"] * 2
    assert [r["path"] for r in fake_github.requests] == ["/graphql"] * 4


def test_concurrent_creates_get_distinct_numbers(fake_github, gh_env):
    fake_github.set_issue_latency(0.5)
    results = {}

    def worker(n):
        results[n] = create(gh_env, f"task {n}")

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(20)]
    started = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.monotonic() - started

    assert {r.returncode for r in results.values()} == {0}
    urls = sorted(int(r.stdout.rsplit("/", 1)[1]) for r in results.values())
    assert urls == list(range(1, 21))
    issues = fake_github.issues("acme/widgets")
    assert sorted(i["title"] for i in issues) == sorted(f"task {n}" for n in range(20))
    assert fake_github.counters()["issues_created"] == 20
    assert fake_github.counters()["by_kind"] == {"RepositoryInfo": 20, "IssueCreate": 20}
    assert elapsed < 20 * 0.5 / 2  # latencies overlap instead of adding up


def test_labels_create_idempotently_list_and_attach(fake_github, gh_env):
    made = run_gh(gh_env, "label", "create", "parallel", "-R", REPO, "--force",
                  "--color", "ff0000", "--description", "made by parallel")
    again = run_gh(gh_env, "label", "create", "parallel", "-R", REPO, "--force",
                   "--color", "00ff00", "--description", "run r1")
    no_force = run_gh(gh_env, "label", "create", "parallel", "-R", REPO, "--color", "00ff00")
    run_gh(gh_env, "label", "create", "run-r1", "-R", REPO, "--force", "--color", "ededed")
    listed = run_gh(gh_env, "label", "list", "-R", REPO)
    issue = create(gh_env, "Labelled", "b", "--label", "parallel", "--label", "run-r1")

    assert (made.returncode, made.stdout, made.stderr) == (0, "", "")
    assert (again.returncode, again.stderr) == (0, "")
    assert (no_force.returncode, no_force.stderr) == (
        1, 'label with name "parallel" already exists; use `--force` to update its color and description\n')
    assert listed.stdout == "parallel\trun r1\t#00ff00\nrun-r1\t\t#ededed\n"
    assert issue.stdout == "https://github.localhost/acme/widgets/issues/1\n"
    assert fake_github.issues("acme/widgets")[0]["labels"] == ["parallel", "run-r1"]
    assert kinds(fake_github) == [
        "POST /repos/acme/widgets/labels",  # 201
        "POST /repos/acme/widgets/labels", "PATCH /repos/acme/widgets/labels/parallel",  # 422, update
        "POST /repos/acme/widgets/labels",  # 422 without --force
        "POST /repos/acme/widgets/labels",
        "LabelList",
        "RepositoryInfo", "RepositoryResolveMetadataIDs", "IssueCreate",
    ]
    assert [r["status"] for r in fake_github.requests[:4]] == [201, 422, 200, 422]


def test_missing_label_fails_like_github_and_creates_nothing(fake_github, gh_env):
    run_gh(gh_env, "label", "create", "bug", "-R", REPO)

    result = create(gh_env, "T", "b", "--label", "bug", "--label", "nope")

    assert (result.returncode, result.stdout, result.stderr) == (
        1, "", "could not add label: 'nope' not found\n")
    assert fake_github.issues() == []
    assert kinds(fake_github)[1:] == ["RepositoryInfo", "RepositoryResolveMetadataIDs"]


def test_list_json_and_jq_find_a_marker_newest_first(fake_github, gh_env):
    create(gh_env, "one", "plain")
    create(gh_env, "two", "has <!-- parallel:run=r1 task=t2 --> marker")
    run_gh(gh_env, "issue", "close", "1", "-R", REPO)

    listed = run_gh(gh_env, "issue", "list", "-R", REPO, "--state", "all", "--limit", "100",
                    "--json", "number,url,title,body,labels,state")
    found = run_gh(gh_env, "issue", "list", "-R", REPO, "--state", "all", "--limit", "100",
                   "--json", "number,body",
                   "--jq", '.[] | select(.body | contains("task=t2")) | .number')
    open_only = run_gh(gh_env, "issue", "list", "-R", REPO, "--json", "number")

    assert json.loads(listed.stdout) == [
        {"number": 2, "url": "https://github.localhost/acme/widgets/issues/2", "title": "two",
         "body": "has <!-- parallel:run=r1 task=t2 --> marker", "labels": [], "state": "OPEN"},
        {"number": 1, "url": "https://github.localhost/acme/widgets/issues/1", "title": "one",
         "body": "plain", "labels": [], "state": "CLOSED"},
    ]
    assert found.stdout == "2\n"
    assert open_only.stdout == '[{"number":2}]\n'


def test_view_comment_close_and_add_label(fake_github, gh_env):
    run_gh(gh_env, "label", "create", "done", "-R", REPO)
    create(gh_env, "T", "b")

    comment = run_gh(gh_env, "issue", "comment", "1", "-R", REPO, "--body", "setup ok")
    edit = run_gh(gh_env, "issue", "edit", "1", "-R", REPO, "--add-label", "done")
    close = run_gh(gh_env, "issue", "close", "1", "-R", REPO)
    view = run_gh(gh_env, "issue", "view", "1", "-R", REPO, "--json", "number,state,labels,comments",
                  "--jq", "[.number, .state, .labels[0].name, .comments[0].body]")
    missing = run_gh(gh_env, "issue", "view", "9", "-R", REPO)

    assert comment.stdout == "https://github.localhost/acme/widgets/issues/1#issuecomment-1\n"
    assert edit.stdout == "https://github.localhost/acme/widgets/issues/1\n"
    assert (close.returncode, close.stderr) == (0, "✓ Closed issue #1 (T)\n")
    assert view.stdout == '[1,"CLOSED","done","setup ok"]\n'
    assert (missing.returncode, missing.stderr) == (
        1, "GraphQL: Could not resolve to an issue or pull request with the number of 9. "
           "(repository.issue)\n")


def test_502_once_then_success(fake_github, gh_env):
    fake_github.fail_next("502", match="IssueCreate")

    failed = create(gh_env, "T")
    retried = create(gh_env, "T")

    assert (failed.returncode, failed.stdout, failed.stderr) == (
        1, "", f"HTTP 502: 502 Bad Gateway ({GRAPHQL})\n")
    assert retried.stdout == "https://github.localhost/acme/widgets/issues/1\n"
    assert [(r["kind"], r["status"], r["fault"]) for r in fake_github.requests] == [
        ("RepositoryInfo", 200, None), ("IssueCreate", 502, "502"),
        ("RepositoryInfo", 200, None), ("IssueCreate", 200, None)]
    assert len(fake_github.issues()) == 1


def test_json_5xx_body_and_always_failing_title(fake_github, gh_env):
    fake_github.fail_next("503", body="json")
    fake_github.fail_always("500", title_contains="doomed")

    json_503 = create(gh_env, "fine")
    doomed = [create(gh_env, "doomed task") for _ in range(2)]
    fine = create(gh_env, "fine")

    assert json_503.stderr == f"HTTP 503: Server Error: Service Unavailable ({GRAPHQL})\n"
    assert [d.stderr for d in doomed] == [f"HTTP 500: 500 Internal Server Error ({GRAPHQL})\n"] * 2
    assert fine.stdout == "https://github.localhost/acme/widgets/issues/1\n"
    assert fake_github.counters()["faults_injected"] == 3


def test_secondary_rate_limit_error_and_retry_after_header(fake_github, gh_env):
    fake_github.fail_next("secondary_rate_limit", match="IssueCreate", retry_after=7)

    result = run_gh({**gh_env, "GH_DEBUG": "api"}, "issue", "create", "-R", REPO,
                    "--title", "T", "--body", "b")

    request_id = fake_github.requests[-1]["request_id"]
    assert result.returncode == 1
    assert result.stderr.endswith(
        "HTTP 403: You have exceeded a secondary rate limit. Please wait a few minutes before you "
        "try again. If you reach out to GitHub Support for help, please include the request ID "
        f"{request_id}. ({GRAPHQL})\n")
    assert "< HTTP/1.1 403 Forbidden\n" in result.stderr
    assert "< Retry-After: 7\n" in result.stderr
    assert "< X-Ratelimit-Remaining: 4998\n" in result.stderr
    assert fake_github.issues() == []


def test_primary_rate_limit(fake_github, gh_env):
    fake_github.set_rate_limit(remaining=0, resource="graphql")

    graphql = create(gh_env, "T")
    rest = run_gh(gh_env, "api", "rate_limit", "--jq", ".resources.graphql.remaining")
    fake_github.fail_next("primary_rate_limit", match="GET /rate_limit")
    rest_limited = run_gh(gh_env, "api", "rate_limit")

    assert (graphql.returncode, graphql.stderr) == (1, "GraphQL: API rate limit exceeded for user ID 1.\n")
    assert rest.stdout == "0\n"
    assert rest_limited.returncode == 1
    assert rest_limited.stderr.startswith("gh: API rate limit exceeded for user ID 1.")
    assert rest_limited.stderr.endswith("(HTTP 403)\n")


def test_rate_limit_numbers_and_headers(fake_github, gh_env):
    create(gh_env, "T")  # two GraphQL requests

    limits = run_gh(gh_env, "api", "rate_limit")
    debug = run_gh({**gh_env, "GH_DEBUG": "api"}, "api", "rate_limit")

    resources = json.loads(limits.stdout)["resources"]
    assert {k: (v["limit"], v["used"], v["remaining"]) for k, v in resources.items()} == {
        "core": (5000, 0, 5000), "graphql": (5000, 2, 4998), "search": (5000, 0, 5000)}
    assert "< X-Ratelimit-Limit: 5000\n" in debug.stderr
    assert "< X-Ratelimit-Remaining: 5000\n" in debug.stderr  # rate_limit itself is free
    assert "< X-Ratelimit-Resource: core\n" in debug.stderr
    assert re.search(r"< X-Ratelimit-Reset: \d{10}\n", debug.stderr)


def test_auth_status_logged_in_and_rejected(fake_github, gh_env):
    ok = run_gh(gh_env, "auth", "status", "--hostname", "github.localhost")
    fake_github.set_reject_auth(True)
    rejected = run_gh(gh_env, "auth", "status", "--hostname", "github.localhost")
    call = create(gh_env, "T")

    assert (ok.returncode, ok.stdout, ok.stderr) == (0, "", (
        "github.localhost\n"
        "  ✓ Logged in to github.localhost as octocat (GH_TOKEN)\n"
        "  ✓ Git operations for github.localhost configured to use https protocol.\n"
        "  ✓ Token: ****\n"
        "  ✓ Token scopes: gist, read:org, repo, workflow\n"))
    assert (rejected.returncode, rejected.stderr) == (1, (
        "github.localhost\n"
        "  X github.localhost: authentication failed\n"
        "  - The github.localhost token in GH_TOKEN is no longer valid.\n"))
    assert (call.returncode, call.stderr) == (
        1, f"HTTP 401: Bad credentials ({GRAPHQL})\nTry authenticating with:  gh auth login\n")
    assert kinds(fake_github)[:2] == ["GET /", "UserCurrent"]


def test_unknown_repository_when_auto_create_is_off(tmp_path):
    with FakeGitHub(repos=["acme/widgets"], auto_create_repos=False) as server:
        env = server.env(config_dir=str(tmp_path))
        known = create(env, "T")
        unknown = run_gh(env, "issue", "create", "-R", "github.localhost/acme/nope", "--title", "T",
                         "--body", "b")

    assert known.stdout == "https://github.localhost/acme/widgets/issues/1\n"
    assert (unknown.returncode, unknown.stderr) == (
        1, "GraphQL: Could not resolve to a Repository with the name 'acme/nope'. (repository)\n")


def test_hang_then_disconnect_and_latency(fake_github, gh_env):
    fake_github.fail_next("timeout", hang=0.5)
    started = time.monotonic()
    hung = create(gh_env, "T")
    hung_for = time.monotonic() - started
    fake_github.set_issue_latency(0.4)
    started = time.monotonic()
    slow = create(gh_env, "T")
    slow_for = time.monotonic() - started

    assert (hung.returncode, hung.stderr) == (1, f'Post "{GRAPHQL}": EOF\n')
    assert hung_for >= 0.5
    assert slow.returncode == 0 and slow_for >= 0.4
    assert [r["status"] for r in fake_github.requests] == [0, 200, 200]


def test_admin_http_endpoints(fake_github, gh_env):
    assert admin(fake_github, "/_admin/fail_next",
                 {"kind": "503", "match": "GET /rate_limit"})["faults"][0]["kind"] == "503"
    failed = run_gh(gh_env, "api", "rate_limit")
    create(gh_env, "T", "body with marker-9")

    assert (failed.returncode, failed.stderr) == (1, "gh: HTTP 503\n")
    issues = admin(fake_github, "/_admin/issues?repo=acme/widgets")
    assert [(i["number"], i["body"], i["url"]) for i in issues] == [
        (1, "body with marker-9", "https://github.localhost/acme/widgets/issues/1")]
    assert [(r["kind"], r["status"]) for r in admin(fake_github, "/_admin/requests")] == [
        ("GET /rate_limit", 503), ("RepositoryInfo", 200), ("IssueCreate", 200)]
    assert admin(fake_github, "/_admin/counters")["issues_created"] == 1
    assert admin(fake_github, "/_admin/issue_latency", {"seconds": 2}) == {"ok": True}
    assert fake_github._issue_latency == 2.0
    assert admin(fake_github, "/_admin/auth", {"reject": True}) == {"ok": True}
    assert create(gh_env, "T").stderr.startswith("HTTP 401: Bad credentials")


def test_main_runs_standalone_and_prints_env(tmp_path):
    proc = subprocess.Popen(
        [sys.executable, "-m", "parallel_setup.fake_github", "--port", "0", "--config-dir", str(tmp_path)],
        cwd=Path(__file__).resolve().parent.parent, stdout=subprocess.PIPE, text=True)
    try:
        lines = []
        while not lines or lines[-1] and not lines[-1].startswith("# then:"):
            lines.append(proc.stdout.readline())
        exports = dict(re.findall(r"^export (\w+)=(.*)$", "".join(lines), re.M))
        env = {**os.environ, **exports}
        env.pop("GITHUB_TOKEN", None)
        result = create(env, "T")
    finally:
        proc.terminate()
        proc.wait(timeout=10)

    assert exports["GH_HOST"] == "github.localhost"
    assert exports["GH_CONFIG_DIR"] == str(tmp_path)
    assert re.fullmatch(r"http://127\.0\.0\.1:\d+", exports["HTTP_PROXY"])
    assert result.stdout == "https://github.localhost/acme/widgets/issues/1\n"
    assert proc.returncode == 0


# -- pull requests: the operations gh 2.23 sends, as watched with GH_DEBUG=api


def test_pr_create_list_by_head_and_view_as_gh_sends_them(fake_github, gh_env):
    issue = create(gh_env, "An issue first")
    assert issue.stdout.endswith("/issues/1\n")
    made = run_gh(gh_env, "pr", "create", "-R", REPO, "--head", "feature/task-1", "--base", "main",
                  "--title", "Task 1", "--body", "Closes #1")
    assert (made.returncode, made.stdout) == (0, "https://github.localhost/acme/widgets/pull/2\n"), made.stderr
    # gh looks for an open pull request from the head first, then creates one.
    assert kinds(fake_github)[2:] == ["RepositoryInfo", "PullRequestForBranch", "PullRequestCreate"]
    listed = run_gh(gh_env, "pr", "list", "-R", REPO, "--head", "feature/task-1",
                    "--json", "number,headRefName,baseRefName,state,url")
    assert json.loads(listed.stdout) == [{"number": 2, "headRefName": "feature/task-1", "baseRefName": "main",
                                          "state": "OPEN", "url": "https://github.localhost/acme/widgets/pull/2"}]
    assert kinds(fake_github)[-1] == "PullRequestList"
    other = run_gh(gh_env, "pr", "list", "-R", REPO, "--head", "feature/task-9", "--json", "number")
    assert other.stdout == "[]\n"
    viewed = run_gh(gh_env, "pr", "view", "2", "-R", REPO, "--json", "number,title,body,mergeable,mergeStateStatus")
    assert json.loads(viewed.stdout) == {"number": 2, "title": "Task 1", "body": "Closes #1",
                                         "mergeable": "MERGEABLE", "mergeStateStatus": "CLEAN"}
    assert kinds(fake_github)[-1] == "PullRequestByNumber"
    text = run_gh(gh_env, "pr", "view", "feature/task-1", "-R", REPO)  # by branch, the full query
    assert text.returncode == 0, text.stderr
    assert "title:\tTask 1\nstate:\tOPEN\n" in text.stdout and text.stdout.endswith("Closes #1\n")
    assert [p["number"] for p in fake_github.pulls("acme/widgets")] == [2]


def test_pr_create_again_names_the_open_one_and_merge_state_changes(fake_github, gh_env):
    args = ["pr", "create", "-R", REPO, "--head", "feature/x", "--base", "main", "--title", "X", "--body", "b"]
    assert run_gh(gh_env, *args).returncode == 0
    again = run_gh(gh_env, *args)
    assert again.returncode == 1
    assert again.stderr.endswith('a pull request for branch "feature/x" into branch "main" already exists:\n'
                                 "https://github.localhost/acme/widgets/pull/1\n")
    admin(fake_github, "/_admin/pull_state", {"repo": "acme/widgets", "number": 1, "mergeable": "CONFLICTING"})
    viewed = run_gh(gh_env, "pr", "view", "1", "-R", REPO, "--json", "state,mergeable,mergeStateStatus")
    assert json.loads(viewed.stdout) == {"state": "OPEN", "mergeable": "CONFLICTING", "mergeStateStatus": "DIRTY"}
    fake_github.set_pull_state("acme/widgets", 1, state="MERGED")
    assert run_gh(gh_env, "pr", "list", "-R", REPO, "--head", "feature/x", "--json", "number").stdout == "[]\n"
    merged = run_gh(gh_env, "pr", "list", "-R", REPO, "--state", "merged", "--json", "number,state")
    assert json.loads(merged.stdout) == [{"number": 1, "state": "MERGED"}]
    assert admin(fake_github, "/_admin/pulls?repo=acme/widgets")[0]["state"] == "MERGED"
    missing = run_gh(gh_env, "pr", "view", "7", "-R", REPO, "--json", "number,title")
    assert missing.returncode == 1
    assert "Could not resolve to a PullRequest with the number of 7." in missing.stderr

def test_issues_updated_since_come_page_by_page_as_gh_paginates(fake_github, gh_env):
    fake_github.add_issues("acme/widgets", 5, body="old")
    create(gh_env, "Mine", "<!-- m -->")
    fake_github.add_issues("acme/widgets", 250, body="later")
    since = fake_github.issues("acme/widgets")[0]["createdAt"]
    result = run_gh(dict(gh_env, GH_DEBUG="api"), "api", "--hostname", "github.localhost", "-X", "GET",
                    "repos/acme/widgets/issues", "-f", "state=all", "-f", f"since={since}", "-f", "per_page=100",
                    "--paginate", "--jq", '.[] | select(.body | contains("<!-- m -->")) | .number')

    assert (result.returncode, result.stdout) == (0, "6\n")
    pages = [r for r in fake_github.requests if r["kind"] == "GET /repos/acme/widgets/issues"]
    assert len(pages) == 3  # 256 issues updated since then, 100 a page
    assert "page=2&per_page=100&since=" in result.stderr  # gh followed the Link header
    assert run_gh(gh_env, "api", "--hostname", "github.localhost", "-X", "GET", "repos/acme/widgets/issues",
                  "-f", "state=all", "-f", "since=2999-01-01T00:00:00Z").stdout.strip() == "[]"


def test_unresponsive_accepts_connections_and_never_answers(fake_github, gh_env):
    fake_github.set_unresponsive(hold=2)
    start = time.time()
    result = run_gh(gh_env, "issue", "list", "-R", REPO, timeout=60)
    held = time.time() - start

    assert (result.returncode, result.stderr) == (1, f'Post "{GRAPHQL}": EOF\n')
    assert held >= 2  # the connection was held for its bound, then closed
    assert fake_github.counters()["connections_held"] >= 1
    assert fake_github.requests == []  # nothing was read
    fake_github.set_unresponsive(None)
    assert create(gh_env, "Answered again").returncode == 0

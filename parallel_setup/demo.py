"""Measure the setup both ways on a scratch repository: the engine of ``demo`` and ``benchmarks/``.

*Traditional* is the seed's "before": one process creates every issue, then every
worktree, then (when asked) runs every environment step, one after another.
*Parallel* is the plugin: ``execute``'s code creates a run and renders one
``setup.sh`` per task, and every script runs at once, as N subagents would.

Nothing here needs a GitHub account or an API key. Issues go either to the
embedded fake GitHub through the real ``gh`` (with a simulated per-issue
latency), or to local issue files with the same simulated latency.

Two opt-in optimizations from the seed's "future optimizations" are measured
against the default:

* the **worktree pool** (``parallel_setup.pool``, ``parallel-setup pool on``): detached
  worktrees created ahead (while the plan is being written), each claimed by a setup
  script, moved to ``worktrees/task-N`` and switched to ``feature/task-N`` (no checkout);
* **batched issue creation**: every issue in one GraphQL request
  (``gh api graphql`` with one aliased ``createIssue`` per task).
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, Tuple

from .fake_github import FakeGitHub
from .paths import name_prefixes

#: The fake GitHub repository the demo's issues go to.
GH_HOST = "github.localhost"
GH_REPO = "demo/scratch"
GH_REPO_FULL = f"{GH_HOST}/{GH_REPO}"

#: The environment step ``--env-step`` runs in every worktree: a virtual
#: environment and a byte-compile of the tree, CPU-bound like a real build.
ENV_STEP = "python3 -m venv --without-pip .venv && python3 -m compileall -q -j 1 src > /dev/null"

BASE_REF = "origin/main"

ProgressFn = Callable[[str], None]


def _noop(_: str) -> None:
    pass


# ---------------------------------------------------------------------------
# The scratch repository

_WORDS = ("account order invoice cart item payment session token cache config route view model "
          "schema util helper client server queue worker job event report search billing auth "
          "profile notify export import audit media upload storage metrics admin").split()
_APPS = ("api", "core", "billing", "accounts", "search", "notifications", "storage", "admin")


def _python_file(rng: random.Random, name: str) -> str:
    lines = [f'"""{name}: {rng.choice(_WORDS)} {rng.choice(_WORDS)} handling."""', "",
             "from __future__ import annotations", "", "import json", "import logging", "",
             "log = logging.getLogger(__name__)", ""]
    for f in range(rng.randint(4, 14)):
        fn = f"{rng.choice(_WORDS)}_{rng.choice(_WORDS)}_{f}"
        lines.append(f"def {fn}(value, *, limit={rng.randint(1, 500)}):")
        lines.append(f'    """Return the {rng.choice(_WORDS)} for ``value``."""')
        for _ in range(rng.randint(2, 10)):
            lines.append(f"    value = value + {rng.randint(0, 9999)}  # {rng.choice(_WORDS)} {rng.choice(_WORDS)}")
        lines.append(f"    if value > limit:\n        log.debug('{fn} %s', value)\n    return value\n")
    return "\n".join(lines) + "\n"


def _js_file(rng: random.Random, name: str) -> str:
    lines = [f"// {name}", "'use strict';", ""]
    for f in range(rng.randint(3, 12)):
        fn = f"{rng.choice(_WORDS)}{rng.choice(_WORDS).title()}{f}"
        lines.append(f"export function {fn}(state, action) {{")
        for _ in range(rng.randint(2, 8)):
            lines.append(f"  state = {{ ...state, {rng.choice(_WORDS)}: action.{rng.choice(_WORDS)} ?? {rng.randint(0, 99)} }};")
        lines.append("  return state;\n}\n")
    return "\n".join(lines) + "\n"


def _md_file(rng: random.Random, name: str) -> str:
    paras = []
    for _ in range(rng.randint(3, 12)):
        paras.append(" ".join(rng.choice(_WORDS) for _ in range(rng.randint(20, 80))).capitalize() + ".")
    return f"# {name}\n\n" + "\n\n".join(paras) + "\n"


def _css_file(rng: random.Random, name: str) -> str:
    rules = []
    for _ in range(rng.randint(5, 30)):
        rules.append(f".{rng.choice(_WORDS)}-{rng.choice(_WORDS)} {{ margin: {rng.randint(0, 32)}px; "
                     f"color: #{rng.randint(0, 0xFFFFFF):06x}; }}")
    return f"/* {name} */\n" + "\n".join(rules) + "\n"


def _json_file(rng: random.Random, name: str) -> str:
    return json.dumps({"name": name, "settings": {w: rng.randint(0, 1000) for w in rng.sample(_WORDS, 12)}},
                      indent=2) + "\n"


def scratch_tree(files: int = 2000, seed: int = 7) -> List[Tuple[str, Callable[[random.Random, str], str]]]:
    """(path, generator) for ``files`` files in a plausible web-service layout."""
    rng = random.Random(seed)
    plan: List[Tuple[str, Callable[[random.Random, str], str]]] = [
        ("README.md", _md_file), ("pyproject.toml", lambda r, n: '[project]\nname = "scratch"\nversion = "0.1.0"\n'),
        ("package.json", _json_file), (".gitignore", lambda r, n: ".venv/\n__pycache__/\nnode_modules/\n"),
    ]
    kinds = [  # (weight, folder pattern, extension, generator)
        (45, "src/scratch/{app}/{sub}", "py", _python_file),
        (20, "tests/{app}", "py", _python_file),
        (15, "web/src/{app}/{sub}", "js", _js_file),
        (8, "web/styles/{app}", "css", _css_file),
        (8, "docs/{app}", "md", _md_file),
        (4, "config/{app}", "json", _json_file),
    ]
    weights = [k[0] for k in kinds]
    seen = {p for p, _ in plan}
    while len(plan) < files:
        _, folder, ext, gen = rng.choices(kinds, weights)[0]
        path = folder.format(app=rng.choice(_APPS), sub=rng.choice(_WORDS)) + \
            f"/{rng.choice(_WORDS)}_{rng.choice(_WORDS)}_{len(plan)}.{ext}"
        if path not in seen:
            seen.add(path)
            plan.append((path, gen))
    for folder in sorted({os.path.dirname(p) for p, _ in plan if p.endswith(".py") and p.startswith("src/")}):
        plan.append((f"{folder}/__init__.py", lambda r, n: ""))
    return plan


def build_repository(root: Path, files: int = 2000, commits: int = 25, seed: int = 7,
                     name: str = "scratch") -> Path:
    """A bare ``root/<name>.git`` with ``commits`` commits of ``files`` files, and a clone of it.

    Built with ``git fast-import`` (about half a second for 2,000 files); the clone at
    ``root/<name>`` has ``origin`` pointing at the bare repository and ``main`` checked out.
    """
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    bare = root / f"{name}.git"
    _git(root, "init", "-q", "--bare", str(bare))
    _git(bare, "symbolic-ref", "HEAD", "refs/heads/main")
    tree = scratch_tree(files, seed)
    rng = random.Random(seed + 1)
    chunks: List[bytes] = []

    def data(payload: bytes) -> None:
        chunks.append(b"data %d\n" % len(payload))
        chunks.append(payload)
        chunks.append(b"\n")

    stamp = 1_700_000_000
    for c in range(1, commits + 1):
        chunks.append(b"commit refs/heads/main\nmark :%d\n" % c)
        chunks.append(b"author Demo <demo@example.invalid> %d +0000\n" % (stamp + c * 3600))
        chunks.append(b"committer Demo <demo@example.invalid> %d +0000\n" % (stamp + c * 3600))
        data(b"initial layout" if c == 1 else b"change %d" % c)
        if c > 1:
            chunks.append(b"from :%d\n" % (c - 1))
        changed = tree if c == 1 else rng.sample(tree, min(len(tree), max(5, len(tree) // 40)))
        for path, gen in changed:
            chunks.append(b"M 100644 inline %s\n" % path.encode())
            data(gen(rng, path).encode())
        chunks.append(b"\n")
    env = _git_env()
    proc = subprocess.run(["git", "fast-import", "--quiet"], cwd=bare, input=b"".join(chunks),
                          capture_output=True, env=env)
    if proc.returncode != 0:
        raise RuntimeError(f"git fast-import failed: {proc.stderr.decode(errors='replace')}")
    clone(bare, root / name)
    return root / name


def clone(bare: Path, dest: Path) -> Path:
    """A fresh working clone of ``bare`` (hard-linked objects; about 0.3 s)."""
    _git(dest.parent, "clone", "-q", str(bare), str(dest))
    _git(dest, "config", "user.name", "Demo")
    _git(dest, "config", "user.email", "demo@example.invalid")
    return dest


def _git_env() -> Dict[str, str]:
    env = dict(os.environ)
    env.setdefault("GIT_AUTHOR_NAME", "Demo")
    env.setdefault("GIT_AUTHOR_EMAIL", "demo@example.invalid")
    env.setdefault("GIT_COMMITTER_NAME", "Demo")
    env.setdefault("GIT_COMMITTER_EMAIL", "demo@example.invalid")
    return env


def _git(cwd: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run(["git", "-c", "init.defaultBranch=main", *args], cwd=cwd, capture_output=True,
                          text=True, env=_git_env())
    if check and proc.returncode != 0:
        raise RuntimeError(f"git {' '.join(args)} failed in {cwd}: {proc.stderr.strip()}")
    return proc


# ---------------------------------------------------------------------------
# Issues: the fake GitHub (with a batched create) or local files


class BatchingFakeGitHub(FakeGitHub):
    """The fake GitHub plus one operation: ``mutation IssueCreateBatch``.

    ``gh api graphql`` sends one mutation with an aliased ``createIssue(input: $iK)``
    per issue. GraphQL runs a mutation's top-level fields one after another, so
    each issue costs the server's per-issue latency in turn, as on GitHub; what a
    batch saves is the client's per-request work (a ``gh`` process, a repository
    look-up, a round trip), not the server's.
    """

    _ALIAS_RE = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)\s*:\s*createIssue\s*\(\s*input\s*:\s*\$([A-Za-z_][A-Za-z0-9_]*)\s*\)")

    def _gql_IssueCreateBatch(self, query: str, variables: Dict[str, Any]) -> Dict[str, Any]:
        data: Dict[str, Any] = {}
        with self._lock:
            latency = self._issue_latency
        for alias, var in self._ALIAS_RE.findall(query):
            if latency > 0:
                self._stopping.wait(latency)
            single = self._gql_IssueCreate(query, {"input": variables.get(var) or {}})
            if single.get("errors"):
                return {"data": None, "errors": single["errors"]}
            data[alias] = single["data"]["createIssue"]
        return {"data": data}


@dataclass
class IssueService:
    """Where issues go for one measurement, and the environment scripts need for it."""

    mode: str  # "github" or "local"
    latency: float
    server: Optional[FakeGitHub] = None
    gh_config: Optional[str] = None

    @property
    def repository(self) -> Optional[str]:
        return GH_REPO_FULL if self.mode == "github" else None

    def env(self, base: Optional[Dict[str, str]] = None) -> Dict[str, str]:
        env = dict(os.environ if base is None else base)
        if self.server is not None:
            env = self.server.env(base=env, config_dir=self.gh_config)
        env["PARALLEL_LOCAL_ISSUE_LATENCY"] = f"{self.latency:g}"
        return env

    def issues_created(self) -> int:
        if self.server is not None:
            return len(self.server.issues(GH_REPO))
        return 0

    def close(self) -> None:
        if self.server is not None:
            self.server.stop()
            self.server = None
        if self.gh_config:
            shutil.rmtree(self.gh_config, ignore_errors=True)

    def __enter__(self) -> "IssueService":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def gh_available() -> Optional[str]:
    return shutil.which("gh")


def choose_mode(requested: str = "auto") -> Tuple[str, str]:
    """``(mode, reason)``: the fake GitHub through ``gh`` when gh is installed, else local."""
    gh = gh_available()
    if requested == "local":
        return "local", "local issue files were asked for (--mode local)"
    if gh is None:
        if requested == "github":
            raise RuntimeError("--mode github needs the gh CLI on PATH")
        return "local", ("gh is not installed, so issues are local files with the same simulated latency "
                         "(install gh to run on the embedded fake GitHub)")
    return "github", f"the real gh ({gh}) against an embedded fake GitHub on 127.0.0.1"


def open_service(mode: str, latency: float) -> IssueService:
    if mode == "github":
        server = BatchingFakeGitHub(issue_latency=latency, repos=[GH_REPO])
        server.start()
        config = tempfile.mkdtemp(prefix="parallel-demo-gh-")
        return IssueService("github", latency, server, config)
    return IssueService("local", latency)


# ---------------------------------------------------------------------------
# Measurements


@dataclass
class Step:
    task: str
    step: str  # "issue", "worktree", "env"
    start: float
    end: float
    ok: bool = True
    detail: str = ""

    @property
    def seconds(self) -> float:
        return self.end - self.start


@dataclass
class Measurement:
    """One setup of N tasks by one approach; times are Unix seconds."""

    approach: str  # "traditional" or "parallel"
    n: int
    mode: str
    latency: float
    env_step: bool
    options: Dict[str, Any] = field(default_factory=dict)
    started: float = 0.0
    ended: float = 0.0
    steps: List[Step] = field(default_factory=list)
    failures: List[str] = field(default_factory=list)
    extra: Dict[str, Any] = field(default_factory=dict)
    cpu_seconds: float = 0.0  # user + system CPU of every child process

    @property
    def label(self) -> str:
        opts = [k for k, v in sorted(self.options.items()) if v]
        return self.approach + "".join(f"+{o}" for o in opts)

    @property
    def total(self) -> float:
        return self.ended - self.started

    def phase(self, step: str) -> Optional[float]:
        """Wall time during which ``step`` ran for any task (first start to last end)."""
        rows = [s for s in self.steps if s.step == step]
        if not rows:
            return None
        return max(s.end for s in rows) - min(s.start for s in rows)

    def step_sum(self, step: str) -> float:
        return sum(s.seconds for s in self.steps if s.step == step)

    def as_dict(self) -> Dict[str, Any]:
        return {
            "approach": self.approach, "label": self.label, "n": self.n, "mode": self.mode,
            "latency": self.latency, "env_step": self.env_step, "options": self.options,
            "total": round(self.total, 4),
            "phases": {s: (round(v, 4) if v is not None else None)
                       for s in ("issue", "worktree", "env") for v in [self.phase(s)]},
            "step_sums": {s: round(self.step_sum(s), 4) for s in ("issue", "worktree", "env")},
            "cpu_seconds": round(self.cpu_seconds, 3), "failures": self.failures, "extra": self.extra,
        }


def _children_cpu() -> float:
    import resource
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


# ---------------------------------------------------------------------------
# Traditional: one process, one step after another


_ISSUE_URL_RE = re.compile(r"/issues/(\d+)\s*$")


def _run(cmd: Sequence[str], cwd: Path, env: Dict[str, str], timeout: float = 300,
         stdin_data: Optional[str] = None) -> subprocess.CompletedProcess:
    return subprocess.run(list(cmd), cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout,
                          input=stdin_data, stdin=None if stdin_data is not None else subprocess.DEVNULL)


def create_issue_gh(repo: Path, service: IssueService, title: str, body: str, env: Dict[str, str]) -> int:
    proc = _run(["gh", "issue", "create", "-R", GH_REPO_FULL, "--title", title, "--body", body], repo, env)
    m = _ISSUE_URL_RE.search(proc.stdout.strip())
    if proc.returncode != 0 or not m:
        raise RuntimeError(f"gh issue create failed (exit {proc.returncode}): {proc.stderr.strip()[-300:]}")
    return int(m.group(1))


def create_issue_local(repo: Path, latency: float, title: str, body: str) -> int:
    """A local issue file after the simulated latency (the number: the next free one)."""
    if latency > 0:
        time.sleep(latency)
    folder = repo / ".parallel" / "issues"
    folder.mkdir(parents=True, exist_ok=True)
    n = 1 + max((int(p.stem) for p in folder.glob("*.md") if p.stem.isdigit()), default=0)
    while True:
        try:
            fd = os.open(folder / f"{n}.md", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            n += 1
            continue
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(f"# {title}\n\n{body}\n")
        return n


def create_issues_batch(repo: Path, service: IssueService, items: Sequence[Tuple[str, str]],
                        env: Dict[str, str], workdir: Path) -> List[int]:
    """Every issue in one GraphQL mutation (plus one repository look-up): two ``gh`` calls."""
    owner, name = GH_REPO.split("/")
    proc = _run(["gh", "api", "graphql", "-f",
                 "query=query RepositoryInfo($owner: String!, $name: String!) "
                 "{ repository(owner: $owner, name: $name) { id } }",
                 "-f", f"owner={owner}", "-f", f"name={name}"], repo, env)
    if proc.returncode != 0:
        raise RuntimeError(f"gh api graphql (repository) failed: {proc.stderr.strip()[-300:]}")
    repo_id = json.loads(proc.stdout)["data"]["repository"]["id"]
    n = len(items)
    query = ("mutation IssueCreateBatch(" + ", ".join(f"$i{k}: CreateIssueInput!" for k in range(n)) + ") { "
             + " ".join(f"i{k}: createIssue(input: $i{k}) {{ issue {{ number url }} }}" for k in range(n)) + " }")
    body = {"query": query, "variables": {f"i{k}": {"repositoryId": repo_id, "title": t, "body": b}
                                          for k, (t, b) in enumerate(items)}}
    # gh sends stdin (--input -) chunked, which the fake server does not read; a file has a length.
    request = workdir / f"issue-batch-{os.getpid()}-{time.time_ns()}.json"
    request.write_text(json.dumps(body), encoding="utf-8")
    try:
        proc = _run(["gh", "api", "graphql", "--input", str(request)], repo, env)
    finally:
        request.unlink()
    if proc.returncode != 0:
        raise RuntimeError(f"gh api graphql (batch) failed: {proc.stderr.strip()[-300:]}")
    data = json.loads(proc.stdout)["data"]
    return [int(data[f"i{k}"]["issue"]["number"]) for k in range(n)]


def worktree_command(n: int, base_ref: str = BASE_REF, mode: str = "github") -> List[str]:
    """What setup.sh runs, too: no upstream tracking (no shared config write), the mode's names."""
    branch, worktree = name_prefixes(mode)
    return ["git", "worktree", "add", "-q", "--no-track", "-b", f"{branch}{n}", f"{worktree}{n}", base_ref]


def run_traditional(repo: Path, tasks: Sequence[Tuple[str, str, str]], service: IssueService,
                    env_cmd: Optional[str] = None, batch: bool = False,
                    progress: ProgressFn = _noop) -> Measurement:
    """The seed's "before": every issue, then every worktree, then every env step, in turn.

    ``tasks``: (task id, title, body) per task.
    """
    m = Measurement("traditional", len(tasks), service.mode, service.latency, env_cmd is not None,
                    {"batch": bool(batch)})
    env = service.env()
    cpu0 = _children_cpu()
    numbers: Dict[str, int] = {}
    total = len(tasks)
    m.started = time.time()
    if batch and service.mode == "github":
        t = time.time()
        progress(f"issues 0/{total} (one batched request)")
        got = create_issues_batch(repo, service, [(title, body) for _, title, body in tasks], env,
                                  repo / ".git")
        end = time.time()
        for (tid, _, _), num in zip(tasks, got):
            numbers[tid] = num
            m.steps.append(Step(tid, "issue", t, end, True, f"#{num}"))
        progress(f"issues {total}/{total}")
    else:
        for i, (tid, title, body) in enumerate(tasks):
            progress(f"issues {i}/{total}")
            t = time.time()
            if service.mode == "github":
                num = create_issue_gh(repo, service, title, body, env)
            else:
                num = create_issue_local(repo, service.latency, title, body)
            numbers[tid] = num
            m.steps.append(Step(tid, "issue", t, time.time(), True, f"#{num}"))
        progress(f"issues {total}/{total}")
    for i, (tid, _, _) in enumerate(tasks):
        progress(f"issues {total}/{total} · worktrees {i}/{total}")
        t = time.time()
        proc = _run(worktree_command(numbers[tid], mode=service.mode), repo, env)
        ok = proc.returncode == 0
        if not ok:
            m.failures.append(f"{tid}: git worktree add: {proc.stderr.strip()[-200:]}")
        m.steps.append(Step(tid, "worktree", t, time.time(), ok))
    if env_cmd:
        for i, (tid, _, _) in enumerate(tasks):
            progress(f"issues {total}/{total} · worktrees {total}/{total} · env {i}/{total}")
            t = time.time()
            proc = _run(["bash", "-c", env_cmd], repo / f"{name_prefixes(service.mode)[1]}{numbers[tid]}", env)
            ok = proc.returncode == 0
            if not ok:
                m.failures.append(f"{tid}: env step: {proc.stderr.strip()[-200:]}")
            m.steps.append(Step(tid, "env", t, time.time(), ok))
    m.ended = time.time()
    m.cpu_seconds = _children_cpu() - cpu0
    m.extra["issues"] = numbers
    return m


# ---------------------------------------------------------------------------
# Parallel: every task's setup.sh at once


@dataclass
class RenderedRun:
    run_id: str
    run_dir: Path
    scripts: Dict[str, Path]  # task id -> setup.sh
    render_seconds: float = 0.0


def render_run(project: Path, plan_path: Path, mode: str, env: Dict[str, str],
               worktree_pool: Optional[Path] = None) -> RenderedRun:
    """Create a run and render every task's setup.sh with ``execute``'s own code."""
    from . import runs  # execute's engine (imported late: it needs Jinja2)
    t = time.time()
    run = runs.create_run(project, plan_path, mode=mode, env=env, worktree_pool=worktree_pool)
    seconds = time.time() - t
    if run.mode != mode:
        raise RuntimeError(f"execute chose {run.mode} issues, not {mode}: {run.data.get('mode_reason')}")
    scripts = {tid: run.setup_script(tid) for tid in run.tasks}
    return RenderedRun(run.id, run.dir, scripts, seconds)


def _steps_from_events(run_dir: Path) -> Tuple[List[Step], Dict[str, float]]:
    from . import events
    starts: Dict[Tuple[str, str], float] = {}
    steps: List[Step] = []
    ends: Dict[str, float] = {}
    for e in events.iter_events(run_dir):
        task, kind = e.get("task"), e.get("event")
        if kind == "step_start":
            starts[(task, e.get("step"))] = float(e["t"])
        elif kind == "step_end" and (task, e.get("step")) in starts:
            steps.append(Step(task, e.get("step"), starts.pop((task, e.get("step"))), float(e["t"]),
                              bool(e.get("ok")), str(e.get("detail") or e.get("reason") or "")))
        elif kind == "setup_end":
            ends[task] = float(e["t"])
    return steps, ends


def run_parallel(project: Path, rendered: RenderedRun, service: IssueService, env_step: bool,
                 options: Optional[Dict[str, Any]] = None, progress: ProgressFn = _noop,
                 started: Optional[float] = None) -> Measurement:
    """Start every task's setup.sh at the same moment and wait for all of them."""
    m = Measurement("parallel", len(rendered.scripts), service.mode, service.latency, env_step,
                    dict(options or {}))
    env = service.env()
    cpu0 = _children_cpu()
    logs = Path(tempfile.mkdtemp(prefix="parallel-demo-out-"))
    m.started = started if started is not None else time.time()
    procs = []
    for tid, script in rendered.scripts.items():
        out = open(logs / f"{tid}.out", "w+b")
        err = open(logs / f"{tid}.err", "w+b")
        procs.append((tid, subprocess.Popen(["bash", str(script)], cwd=project, env=env, stdout=out, stderr=err,
                                            stdin=subprocess.DEVNULL), out, err))
    try:
        pending = {tid for tid, *_ in procs}
        while pending:
            for tid, p, _, _ in procs:
                if tid in pending and p.poll() is not None:
                    pending.discard(tid)
            if pending:
                progress(_parallel_progress(rendered.run_dir, len(procs)))
                time.sleep(0.1)
        m.ended = time.time()
        progress(_parallel_progress(rendered.run_dir, len(procs)))
        for tid, p, out, err in procs:
            out.seek(0)
            lines = [line for line in out.read().decode(errors="replace").splitlines() if line.strip()]
            try:
                result = json.loads(lines[-1]) if lines else {}
            except ValueError:
                result = {}
            if p.returncode != 0 or result.get("status") != "ok":
                err.seek(0)
                m.failures.append(f"{tid}: {result.get('step', '?')}: "
                                  f"{result.get('reason') or err.read().decode(errors='replace').strip()[-200:]}")
            else:
                m.extra.setdefault("issues", {})[tid] = result.get("issue")
    finally:
        for tid, p, out, err in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
            out.close()
            err.close()
        shutil.rmtree(logs, ignore_errors=True)
    m.cpu_seconds = _children_cpu() - cpu0
    m.steps, ends = _steps_from_events(rendered.run_dir)
    if not env_step:
        m.steps = [s for s in m.steps if s.step != "env"]
    m.extra["render_seconds"] = round(rendered.render_seconds, 4)
    m.extra["run_id"] = rendered.run_id
    return m


def _parallel_progress(run_dir: Path, total: int) -> str:
    from . import events
    done = {"issue": 0, "worktree": 0, "env": 0}
    finished = 0
    for e in events.iter_events(run_dir):
        if e.get("event") == "step_end" and e.get("step") in done:
            done[e["step"]] += 1
        elif e.get("event") == "setup_end":
            finished += 1
    return (f"issues {done['issue']}/{total} · worktrees {done['worktree']}/{total} · "
            f"set up {finished}/{total}")


# ---------------------------------------------------------------------------
# Plans and one measurement

_TASK_TOPICS = ["billing export", "account settings page", "search filters", "audit log", "upload limits",
                "session timeout", "invoice PDF", "notification digest", "admin roles", "metrics endpoint",
                "cart discounts", "password rules", "storage quotas", "report scheduler", "webhook retries"]


def demo_tasks(n: int) -> List[Dict[str, Any]]:
    tasks = []
    for k in range(n):
        topic = _TASK_TOPICS[k % len(_TASK_TOPICS)] + ("" if k < len(_TASK_TOPICS) else f" ({k // len(_TASK_TOPICS) + 1})")
        tid = f"task-{k + 1:02d}"
        tasks.append({
            "id": tid, "title": f"Add {topic}",
            "description": (f"Implement {topic} in src/scratch/ and cover it with a test under tests/. "
                            "Done when the new test passes."),
            "files": [f"src/scratch/feature_{k + 1:02d}.py", f"tests/test_feature_{k + 1:02d}.py"],
        })
    return tasks


def write_plan(project: Path, n: int, mode: str, env_step: bool) -> Path:
    import yaml  # a dependency of the CLI
    plan = {
        "schema_version": 1, "name": "demo",
        "goal": f"Demonstrate parallel setup with {n} independent tasks.",
        "base_branch": "main",
        "issues": {"mode": mode, **({"repository": GH_REPO_FULL} if mode == "github" else {}), "labels": []},
        "defaults": {"setup": ENV_STEP if env_step else "none"},
        "tasks": demo_tasks(n),
    }
    path = project / ".parallel" / "plans" / "demo.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(plan, sort_keys=False, width=100), encoding="utf-8")
    return path


def _exclude_state(project: Path) -> None:
    from .gitutil import ensure_excluded
    ensure_excluded(project)


def measure_once(workroot: Path, bare: Path, approach: str, n: int, service: IssueService,
                 env_step: bool, pool: bool = False, batch: bool = False,
                 progress: ProgressFn = _noop, keep: bool = False) -> Measurement:
    """One measurement in a fresh clone under ``workroot`` (removed afterwards unless ``keep``)."""
    label = approach + ("+pool" if pool else "") + ("+batch" if batch else "")
    project = clone(bare, workroot / f"{label}-n{n}-{time.time_ns()}")
    _exclude_state(project)
    try:
        plan_path = write_plan(project, n, service.mode, env_step)
        if approach == "traditional":
            tasks = [(t["id"], t["title"], t["description"]) for t in demo_tasks(n)]
            m = run_traditional(project, tasks, service, ENV_STEP if env_step else None, batch=batch,
                                progress=progress)
        else:
            pool_seconds = pool_path = None
            if pool:  # filled while planning: not part of the setup time
                from . import pool as worktree_pool
                filled = worktree_pool.fill(project, n, "main")
                if filled.failed or filled.free < n:
                    raise RuntimeError(f"the worktree pool has {filled.free} of {n} worktrees: {filled.failed}")
                pool_seconds, pool_path = filled.seconds, worktree_pool.pool_dir(project)
            started = time.time()
            rendered = render_run(project, plan_path, service.mode, service.env(), worktree_pool=pool_path)
            batch_steps: List[Step] = []
            if batch and service.mode == "github":
                items = []
                for tid in rendered.scripts:
                    tdir = rendered.run_dir / "tasks" / tid
                    title = (tdir / "issue-title.txt").read_text(encoding="utf-8").strip()
                    body = (tdir / "issue-body.md").read_text(encoding="utf-8")
                    items.append((title, body))
                t = time.time()
                numbers = create_issues_batch(project, service, items, service.env(), rendered.run_dir)
                end = time.time()
                for tid, num in zip(rendered.scripts, numbers):
                    url = f"https://{GH_HOST}/{GH_REPO}/issues/{num}"
                    (rendered.run_dir / "tasks" / tid / "issue.record").write_text(f"{num} {url}\n", encoding="utf-8")
                    batch_steps.append(Step(tid, "issue", t, end, True, f"#{num} (batch)"))
            m = run_parallel(project, rendered, service, env_step, {"pool": pool, "batch": batch}, progress,
                             started=started)
            m.steps = batch_steps + m.steps
            if pool_seconds is not None:
                m.extra["pool_prepare_seconds"] = round(pool_seconds, 3)
                m.extra["pool_claims"] = sum(1 for s in m.steps if s.step == "worktree" and "pool" in s.detail)
        m.options = {"pool": bool(pool), "batch": bool(batch)}
        m.extra["project"] = str(project)
        return m
    finally:
        if not keep:
            remove_project(project)


def remove_project(project: Path) -> None:
    shutil.rmtree(project, ignore_errors=True)


# ---------------------------------------------------------------------------
# The demo's table and progress display


class Progress:
    """One line redrawn in place on a terminal (with a running clock); plain lines otherwise.

    Off a terminal a line is written only when the text changes, so logs stay short.
    """

    def __init__(self, stream=None, enabled: bool = True):
        self.stream = stream or sys.stderr
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.enabled = enabled
        self.prefix = ""
        self.t0 = time.time()
        self.last = ""
        self.width = shutil.get_terminal_size((100, 20)).columns
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._ticker: Optional[threading.Thread] = None

    def phase(self, prefix: str) -> None:
        self.finish()
        self.prefix = prefix
        self.t0 = time.time()
        if self.enabled and self.tty and self._ticker is None:
            self._stop.clear()
            self._ticker = threading.Thread(target=self._tick, daemon=True)
            self._ticker.start()

    def _tick(self) -> None:
        while not self._stop.wait(0.25):
            with self._lock:
                if self.last:
                    self._draw()

    def _draw(self) -> None:
        line = f"{self.prefix}: {self.last} · {time.time() - self.t0:4.1f} s"
        self.stream.write("\r\033[K" + line[: self.width - 1])
        self.stream.flush()

    def __call__(self, text: str) -> None:
        if not self.enabled:
            return
        with self._lock:
            if self.tty:
                self.last = text
                self._draw()
            elif text != self.last:
                self.last = text
                self.stream.write(f"{self.prefix}: {text}\n")
                self.stream.flush()

    def say(self, text: str) -> None:
        if not self.enabled:
            return
        self.finish()
        with self._lock:
            self.stream.write(text + "\n")
            self.stream.flush()

    def finish(self) -> None:
        if self._ticker is not None:
            self._stop.set()
            self._ticker.join()
            self._ticker = None
        with self._lock:
            if self.enabled and self.tty and self.last:
                self.stream.write("\n")
                self.stream.flush()
            self.last = ""


def fmt_s(value: Optional[float]) -> str:
    if value is None:
        return "-"
    return f"{value:.1f} s" if abs(value) >= 10 else f"{value:.2f} s"


def seed_table(seq: Measurement, par: Measurement) -> str:
    """The seed's table (Phase / Sequential / Parallel / Saved) with measured numbers."""
    rows: List[Tuple[str, str, str, str]] = []
    rows.append(("Planning", "not measured", "not measured", "0 s (same both ways)"))
    render = par.extra.get("render_seconds")
    rows.append(("Render run (execute)", "-", fmt_s(render), fmt_s(-render) if render is not None else "-"))
    names = {"issue": "Issue creation", "worktree": "Worktree creation", "env": "Environment step"}
    for step, name in names.items():
        s, p = seq.phase(step), par.phase(step)
        if s is None and p is None:
            continue
        saved = fmt_s(s - p) if s is not None and p is not None else "-"
        rows.append((name, fmt_s(s), fmt_s(p) + (" *" if p is not None else ""), saved))
    spawn_note = "not measurable without Claude"
    rows.append(("Spawn agents", spawn_note, spawn_note, "-"))
    saved_total = seq.total - par.total
    pct = 100.0 * saved_total / seq.total if seq.total > 0 else 0.0
    rows.append(("**Total setup**", f"**{fmt_s(seq.total)}**", f"**{fmt_s(par.total)}**",
                 f"**{fmt_s(saved_total)}**"))
    rows.append(("**Improvement**", "-", "-", f"**{pct:.0f} %**"))
    headers = ("Phase", "Sequential", "Parallel", "Saved")
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]
    out = ["| " + " | ".join(h.ljust(w) for h, w in zip(headers, widths)) + " |",
           "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
    for r in rows:
        out.append("| " + " | ".join(c.ljust(w) for c, w in zip(r, widths)) + " |")
    return "\n".join(out)


def machine_info() -> Dict[str, Any]:
    info: Dict[str, Any] = {"cpus": os.cpu_count(), "python": sys.version.split()[0],
                            "platform": sys.platform}
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    info["cpu"] = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    try:
        with open("/proc/meminfo", encoding="utf-8") as f:
            kb = int(f.readline().split()[1])
            info["memory_gib"] = round(kb / 1024 / 1024, 1)
    except (OSError, ValueError, IndexError):
        pass
    for tool in ("git", "gh"):
        try:
            out = subprocess.run([tool, "--version"], capture_output=True, text=True, timeout=10).stdout
            info[tool] = out.splitlines()[0] if out else None
        except (OSError, subprocess.SubprocessError):
            info[tool] = None
    try:
        info["loadavg"] = list(os.getloadavg())
    except OSError:
        pass
    return info


def spawn_bytes(project: Path, run_id: str) -> Dict[str, int]:
    """Bytes the main agent writes per task (the short Agent call) vs the full prompt it replaces."""
    from . import runs
    run = runs.load_run(project, run_id)
    refs = [len(runs.reference_json(run.short_reference(t)).encode()) for t in run.tasks]
    prompts = [run.prompt_path(t).stat().st_size for t in run.tasks]
    return {"reference_max": max(refs), "prompt_median": sorted(prompts)[len(prompts) // 2]}


# ---------------------------------------------------------------------------
# The demo


@dataclass
class DemoOptions:
    tasks: int = 5
    issue_latency: float = 3.0
    files: int = 2000
    keep: bool = False
    mode: str = "auto"
    env_step: bool = False
    json: bool = False
    workdir: Optional[Path] = None  # default: a new temporary folder


def run_demo(opts: DemoOptions, out=None, err=None) -> Dict[str, Any]:
    """Build the scratch repository, set up N tasks both ways, return (and print) the results."""
    out = out or sys.stdout
    progress = Progress(err or sys.stderr)
    mode, reason = choose_mode(opts.mode)
    root = Path(opts.workdir) if opts.workdir else Path(tempfile.mkdtemp(prefix="parallel-demo-"))
    root.mkdir(parents=True, exist_ok=True)
    service: Optional[IssueService] = None
    kept = False
    try:
        progress.say(f"parallel-setup demo: {opts.tasks} tasks, {opts.issue_latency:g} s per issue, "
                     f"{opts.files} files{', with an environment step' if opts.env_step else ''}")
        progress.say(f"issues: {mode} mode: {reason}")
        progress.phase("building a scratch repository")
        progress(f"{opts.files} files, 25 commits, a bare origin")
        t = time.time()
        build_repository(root, files=opts.files)
        bare = root / "scratch.git"
        progress.say(f"scratch repository: {root / 'scratch'} ({opts.files} files, 25 commits; "
                     f"origin {bare}) in {time.time() - t:.1f} s")
        service = open_service(mode, opts.issue_latency)
        progress.phase("traditional (one process, one step after another)")
        seq = measure_once(root, bare, "traditional", opts.tasks, service, opts.env_step, progress=progress,
                           keep=True)
        progress.say(f"traditional: {fmt_s(seq.total)}")
        progress.phase("parallel (every task's setup.sh at once)")
        par = measure_once(root, bare, "parallel", opts.tasks, service, opts.env_step, progress=progress,
                           keep=True)
        progress.say(f"parallel: {fmt_s(par.total)}")
        failures = seq.failures + par.failures
        spawn = spawn_bytes(Path(par.extra["project"]), par.extra["run_id"])
        speedup = seq.total / par.total if par.total > 0 else None
        result = {
            "tasks": opts.tasks, "issue_latency": opts.issue_latency, "files": opts.files, "mode": mode,
            "mode_reason": reason, "env_step": ENV_STEP if opts.env_step else None,
            "traditional": seq.as_dict(), "parallel": par.as_dict(),
            "speedup": round(speedup, 2) if speedup else None,
            "spawn_reference_bytes": spawn["reference_max"], "prompt_bytes": spawn["prompt_median"],
            "failures": failures,
            "workdir": str(root), "kept": opts.keep, "machine": machine_info(),
        }
        if opts.json:
            out.write(json.dumps(result, indent=2) + "\n")
        else:
            out.write(_demo_report(opts, mode, reason, seq, par, speedup, root, spawn))
        out.flush()
        kept = opts.keep
        return result
    finally:
        if service is not None:
            service.close()
        progress.finish()
        if not kept:
            shutil.rmtree(root, ignore_errors=True)


def _demo_report(opts: DemoOptions, mode: str, reason: str, seq: Measurement, par: Measurement,
                 speedup: Optional[float], root: Path, spawn: Dict[str, int]) -> str:
    lines = ["", f"Setup of {opts.tasks} tasks, measured ({'real gh + fake GitHub' if mode == 'github' else 'local issues'}, "
             f"{opts.issue_latency:g} s per issue, {opts.files}-file repository"
             f"{', environment step: ' + ENV_STEP if opts.env_step else ''})", "",
             seed_table(seq, par), ""]
    lines.append("* parallel steps overlap: each is the span from the first task starting it to the last "
                 "finishing it, so they do not add up to the total.")
    lines.append(f"Spawn agents: the main agent writes one short Agent call per task ({spawn['reference_max']} bytes "
                 f"instead of a {spawn['prompt_median']}-byte prompt); how long that takes depends on the model, "
                 "so it is not measured here.")
    if speedup:
        lines.append(f"Speed-up: {speedup:.1f}x ({fmt_s(seq.total)} -> {fmt_s(par.total)}).")
    for f in seq.failures + par.failures:
        lines.append(f"FAILED: {f}")
    if opts.keep:
        lines.append("")
        lines.append(f"Files kept in {root}:")
        lines.append(f"  {root / 'scratch.git'}  the bare origin")
        trees = name_prefixes(mode)[1] + "N"
        lines.append(f"  {seq.extra['project']}  traditional: {trees}" + (", .parallel/issues/" if mode == "local" else ""))
        lines.append(f"  {par.extra['project']}  parallel: {trees}, .parallel/runs/{par.extra.get('run_id')}/")
        lines.append(f"Remove them with: rm -rf {root}")
    else:
        lines.append(f"Cleaned up {root} (use --keep to keep the repositories, worktrees and run logs).")
    return "\n".join(lines) + "\n"

"""PreToolUse on Bash and the file tools: approve exactly a run's own work, and nothing else.

Observed on Claude Code 2.1.328 and 2.1.332 (docs/platform-notes.md, section 6): a
plugin agent's ``permissionMode``/``allowedTools`` frontmatter is ignored, and in
``default``/``acceptEdits`` mode a subagent's ``bash .../setup.sh`` is refused; a
PreToolUse ``permissionDecision: "allow"`` lets that one call run.

What this hook answers (everything else gets no decision, so the user's own rules apply):

* **The setup command**, always: ``bash <setup.sh>`` exactly as the prompt template writes it,
  for a task listed in that run's ``run.json``, the script a regular file (not a symlink, its
  real path the one under ``<project>/.parallel/runs/<run>/tasks/<task>/``), owned by this
  user, not writable by others, and byte for byte what execute rendered
  (:mod:`parallel_setup.trusted`). No other shell around it.
* **The task's own work**, only when the repository opted in (``parallel-setup permissions
  on``, :data:`OPT_IN`): for a subagent the hooks linked to a task of a run that has not
  ended, Read/Edit/Write of files inside that task's worktree (never ``.git``) and, in local
  issue mode, of its own ``.parallel/issues/<N>.md``, and Bash
  ``cd <worktree> && <commands>`` joined by ``&&``, each one of: the task's test command as
  the plan writes it, ``git add <paths inside>``, ``git commit -m ...``, ``git push
  [-u] origin <its branch>``, ``git status``/``git log``/``git rev-parse HEAD``/``git diff``,
  ``gh issue comment <its issue> [-R <run's repository>] --body ...|--body-file -`` (a
  quoted here-document is allowed as that command's standard input).
  The merge train's resolver subagent, the same way, while it works on the stop it was
  spawned for: files inside the integration worktree ``worktrees/merge-<run>`` that stop
  names (``merge/resolve-<task>.json``), the train's test commands, ``git add``, ``git
  commit -m``/``-am``, and reading history (``git log``/``diff``/``show``/``status`` of any
  ref or path); never a push, a comment, or anything that moves a branch.
* **A guard**: Edit/Write of the files these approvals trust (``.parallel/runs/**``,
  ``.parallel/permissions.json``) asks the user, unless the session bypasses permissions.

A command is parsed conservatively (:func:`split_command`): quotes without expansions,
words of plain characters, ``&&`` between commands; any ``;``, ``|``, ``&``, redirection,
``$``, backtick, glob, ``~``, comment or newline outside quotes means "not ours".
"""

from __future__ import annotations

import json
import os
import re
import stat
import time

from .common import AGENT_TYPE, RESOLVER_TYPE, Ctx, join, load_json, safe_id

#: The repository's opt-in (per machine: .parallel/ is excluded from git).
OPT_IN = os.path.join(".parallel", "permissions.json")
FILE_TOOLS = ("Read", "Edit", "Write", "MultiEdit", "NotebookEdit")
WRITE_TOOLS = ("Edit", "Write", "MultiEdit", "NotebookEdit")
BASH_KEYS = {"command", "description", "timeout", "run_in_background"}
#: Characters a bare shell word may hold (no expansion, glob, operator or comment).
BARE = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_@%+=:,./-")
DQ_UNSAFE = set('$`\\!')
# Patterns, compiled on first use (re caches them): a hook on every Bash call must not pay for them.
#: ``bash <path>``: the path bare or single-quoted, as ``shlex.quote`` writes it.
SETUP_RE = r"bash[ \t]+(?:'([^']+)'|([A-Za-z0-9_@%+=:,./-]+))[ \t]*"
HEREDOC_RE = (r"(?s)(?P<head>[^\n]*?)[ \t]*<<[ \t]*(?P<q>['\"])(?P<delim>[A-Za-z_][A-Za-z0-9_]*)(?P=q)\n"
              r"(?P<body>(?:.*\n)?)(?P=delim)\n?")
CD_RE = r"cd[ \t]+('[^']+'|[A-Za-z0-9_@%+=:,./-]+)[ \t]+&&[ \t]+"
#: The flags the resolver may give git log/diff/show/status besides refs and paths (none writes a
#: file or runs a program: no --output, --ext-diff or --textconv).
RESOLVER_READ_FLAGS = {"-p", "--patch", "--stat", "--oneline", "--name-only", "--name-status", "--cached",
                       "--staged", "--", "-s", "--short", "--porcelain", "-b", "--merge", "--cc", "--no-color",
                       "-1", "-3", "-5", "-10", "-20"}
GIT_READ = {"status": {"-s", "--short", "--porcelain", "-b", "--branch"},
            "log": {"--oneline", "-1", "-3", "-5", "-10", "--stat"},
            "diff": {"--stat", "--cached", "--staged", "--name-only"}}


def pre_tool_use(ctx: Ctx):
    tool = ctx.get("tool_name")
    tool_input = ctx.tool_input()
    if tool == "Bash":
        command = tool_input.get("command")
        if not isinstance(command, str) or len(command) > 65536 or "\x00" in command \
                or not set(tool_input) <= BASH_KEYS:
            return None
        if "setup.sh" in command:
            approved = approve_setup(ctx, command)
            if approved:
                return approved
        if not opted_in(ctx.project) or not command.lstrip().startswith("cd "):
            return None
        return approve_work_bash(ctx, command)
    if tool in FILE_TOOLS:
        path = tool_input.get("file_path") or tool_input.get("notebook_path")
        if not isinstance(path, str) or not os.path.isabs(path) or "\x00" in path or len(path) > 4096:
            return None
        if tool in WRITE_TOOLS and guarded(ctx, path):
            return decision("ask", "parallel: this file decides what parallel approves; confirm the change")
        if opted_in(ctx.project):
            return approve_work_file(ctx, tool, path)
    return None


def decision(kind: str, reason: str) -> dict:
    return {"hookSpecificOutput": {"hookEventName": "PreToolUse", "permissionDecision": kind,
                                   "permissionDecisionReason": reason}}


# -- the setup command --------------------------------------------------------------------

def approve_setup(ctx: Ctx, command: str):
    match = re.fullmatch(SETUP_RE, command.strip(" \t"))
    if not match:
        return None
    path = match.group(1) or match.group(2)
    found = setup_task(ctx.project, path)
    if found is None:
        return None
    run, task = found
    agent_id = safe_id(ctx.get("agent_id"))
    if agent_id:
        known = ctx.find_agent(agent_id)
        if known is not None and known[1] and known != (run, task):
            return None  # an agent of another task (or run) running this task's setup
        if known is None or not known[1]:
            ctx.write_marker(run, "agent", agent_id, task)  # the agent that set a task up works on it
    ctx.use_run(run)
    return decision("allow", f"parallel: setup of task {task} of run {run}")


def listed(info, task: str) -> bool:
    """``task`` is one of the tasks ``run.json`` lists."""
    tasks = info.get("tasks") if isinstance(info, dict) else None
    return isinstance(tasks, list) and task in tasks


def setup_task(project: str, path: str):
    """(run, task) when ``path`` is a launched task's rendered setup.sh, else None."""
    if not os.path.isabs(path) or os.path.normpath(path) != path:
        return None
    runs = join(project, ".parallel", "runs")
    real_runs = os.path.realpath(runs)
    for base in {runs, real_runs}:
        prefix = base + os.sep
        if not path.startswith(prefix):
            continue
        parts = path[len(prefix):].split(os.sep)
        if len(parts) != 4 or parts[1] != "tasks" or parts[3] != "setup.sh":
            return None
        run, task = safe_id(parts[0]), safe_id(parts[2])
        if run is None or task is None:
            return None
        info = load_json(join(runs, run, "run.json"))
        if not listed(info, task):
            return None
        expected = join(real_runs, run, "tasks", task, "setup.sh")
        try:
            st = os.lstat(path)
        except OSError:
            return None
        if not stat.S_ISREG(st.st_mode) or os.path.realpath(path) != expected:
            return None
        if st.st_uid != os.getuid() or st.st_mode & stat.S_IWOTH:
            return None
        from .. import trusted  # hashlib: only for a command that looks like a setup
        if not trusted.setup_is_recorded(path):
            return None  # changed since execute rendered it (or rendered elsewhere)
        return run, task
    return None


# -- the opt-in ---------------------------------------------------------------------------

def opt_in_setting(project: str) -> bool:
    """What ``.parallel/permissions.json`` says (anyone may have written it)."""
    data = load_json(join(project, OPT_IN))
    return isinstance(data, dict) and data.get("worktree_work") is True


def opted_in(project: str) -> bool:
    """The opt-in is on: the setting says so and ``parallel-setup permissions on`` recorded it."""
    if not opt_in_setting(project):
        return False
    from .. import trusted
    return trusted.opt_in_recorded(project)


def guarded(ctx: Ctx, path: str) -> bool:
    if ctx.get("permission_mode") == "bypassPermissions":
        return False
    state = os.path.realpath(join(ctx.project, ".parallel"))
    real = os.path.realpath(path)
    return real == join(state, "permissions.json") or real.startswith(join(state, "runs") + os.sep)


def work_scope(ctx: Ctx):
    """What the calling subagent may do: its task's worktree, branch, issue and test, or None."""
    agent_id = safe_id(ctx.get("agent_id"))
    agent_type = ctx.get("agent_type") or ""
    if agent_id is not None and RESOLVER_TYPE in agent_type:
        return resolver_scope(ctx, agent_id)
    if agent_id is None or AGENT_TYPE not in agent_type:
        return None
    known = ctx.find_agent(agent_id)
    if known is None or not known[1]:
        return None
    run, task = known
    if os.path.exists(ctx.marker(run, "ended", task)):
        return None
    info = load_json(join(ctx.run_dir(run), "run.json"))
    setup = load_json(join(ctx.task_dir(run, task), "setup.json"))
    if not listed(info, task) or not isinstance(setup, dict):
        return None
    if setup.get("status") != "ok" or setup.get("task") != task or setup.get("run") != run:
        return None
    worktree = setup.get("worktree")
    real = worktree_real(ctx, worktree)
    if real is None:
        return None
    test = task_test(info, task)
    return {"run": run, "task": task, "worktree": worktree, "real": real, "branch": setup.get("branch"),
            "issue": setup.get("issue"), "repository": info.get("repository"),
            "local_issue": local_issue_file(ctx.project, info, setup.get("issue")),
            "tests": [test] if test else [], "resolver": False}


def worktree_real(ctx: Ctx, worktree):
    """The real path of a worktree a scope names, or None when it is not one to work in."""
    if not isinstance(worktree, str) or not os.path.isabs(worktree) or not os.path.isdir(worktree):
        return None
    real = os.path.realpath(worktree)
    project = os.path.realpath(ctx.project)
    if real in ("/", project) or (project + os.sep).startswith(real + os.sep):
        return None  # the worktree must never be the main checkout or hold it
    return real


def resolver_scope(ctx: Ctx, agent_id: str):
    """The merge resolver's: the integration worktree of the stop it was spawned for (hooks/resolver.py
    links it at SubagentStart and unlinks it at SubagentStop), and the train's tests."""
    found = ctx.find_marker("resolver", agent_id)
    if found is None:
        return None
    run, name = found
    if safe_id(name) is None or not name.startswith("resolve-"):
        return None
    data = load_json(join(ctx.run_dir(run), "merge", name + ".json"))
    if not isinstance(data, dict) or data.get("run") != run:
        return None
    worktree = data.get("worktree")
    real = worktree_real(ctx, worktree)
    # Only the train's own worktree, worktrees/merge-<run> of this project (as merge.py makes it).
    from ..paths import WORKTREES_DIRNAME  # only for a resolver's call: plain calls never import pathlib
    if real is None or real != join(os.path.realpath(ctx.project), WORKTREES_DIRNAME, f"merge-{run}"):
        return None
    tests = data.get("tests") if isinstance(data.get("tests"), list) else []
    return {"run": run, "task": name, "worktree": worktree, "real": real, "branch": None, "issue": None,
            "repository": None, "local_issue": None, "resolver": True,
            "tests": [t.strip() for t in tests if isinstance(t, str) and t.strip()]}


def local_issue_file(project: str, info: dict, issue):
    """A local-mode task's issue file, ``.parallel/issues/<N>.md`` (its Result goes there), or None."""
    if info.get("issue_mode") != "local" or isinstance(issue, bool) or not isinstance(issue, int):
        return None
    return os.path.realpath(join(project, ".parallel", "issues", f"{issue}.md"))


def task_test(info: dict, task: str):
    plan = info.get("plan") if isinstance(info.get("plan"), dict) else {}
    for t in plan.get("tasks") or []:
        if isinstance(t, dict) and t.get("id") == task and isinstance(t.get("test"), str) and t["test"].strip():
            return t["test"].strip()
    defaults = plan.get("defaults") if isinstance(plan.get("defaults"), dict) else {}
    test = defaults.get("test")
    return test.strip() if isinstance(test, str) and test.strip() else None


def inside(scope: dict, path: str, base: str | None = None) -> bool:
    """``path`` (absolute, or relative to ``base``) lies inside the worktree, outside its ``.git``."""
    if not path or "\x00" in path:
        return False
    full = os.path.normpath(path if os.path.isabs(path) else join(base or scope["worktree"], path))
    real = os.path.realpath(full)
    root = scope["real"]
    if not real.startswith(root + os.sep):
        return False
    return ".git" not in real[len(root) + 1:].split(os.sep)


def approve_work_file(ctx: Ctx, tool: str, path: str):
    scope = work_scope(ctx)
    if scope is None:
        return None
    if scope["local_issue"] and tool in ("Read", "Edit", "Write") and os.path.realpath(path) == scope["local_issue"] \
            and os.path.isfile(path) and not os.path.islink(path):
        return decision("allow", f"parallel: {tool} of the local issue of task {scope['task']} (opt-in)")
    if not inside(scope, path):
        return None
    return decision("allow", f"parallel: {tool} inside {whose(scope)} (opt-in)")


def whose(scope: dict) -> str:
    if scope["resolver"]:
        return f"the merge train's worktree of run {scope['run']}"
    return f"the worktree of task {scope['task']}"


def approve_work_bash(ctx: Ctx, command: str):
    scope = work_scope(ctx)
    if scope is None:
        return None
    if ok_work_command(scope, command):
        if scope["resolver"]:
            return decision("allow", f"parallel: the merge resolver's work in {whose(scope)} (opt-in)")
        return decision("allow", f"parallel: work of task {scope['task']} in its worktree (opt-in)")
    return None


def ok_work_command(scope: dict, command: str) -> bool:
    """True when ``command`` is ``cd <worktree> && ...`` made only of the task's own work."""
    command = command.strip(" \t\n")
    stdin_body = None
    heredoc = re.fullmatch(HEREDOC_RE, command)
    if heredoc:
        body = heredoc.group("body")
        if any(line == heredoc.group("delim") for line in body.split("\n")):
            return False
        command, stdin_body = heredoc.group("head"), body
    head = re.match(CD_RE, command)
    if not head:
        return False
    target = head.group(1).strip("'")
    if os.path.normpath(target) != os.path.normpath(scope["worktree"]) and \
            os.path.realpath(target) != scope["real"]:
        return False
    rest = command[head.end():]
    if stdin_body is None and rest in scope["tests"]:
        return True
    segments = split_command(rest)
    if not segments:
        return False
    # A test command that is one simple command may also be one of the && commands.
    single_tests = [words[0] for words in map(split_command, scope["tests"]) if words and len(words) == 1]
    for i, words in enumerate(segments):
        last = i == len(segments) - 1  # a here-document is the last command's standard input
        if words in single_tests and stdin_body is None:
            continue
        if not ok_segment(scope, words, reads_stdin=stdin_body is not None and last):
            return False
    return True


def ok_segment(scope: dict, words: list, reads_stdin: bool) -> bool:
    if not words:
        return False
    if words[0] == "git" and len(words) >= 2:
        return not reads_stdin and ok_git(scope, words[1], words[2:])
    if words[0] == "gh" and words[1:3] == ["issue", "comment"]:
        return ok_gh_comment(scope, words[3:], reads_stdin)
    return False


def ok_git(scope: dict, sub: str, args: list) -> bool:
    if sub == "add":
        paths = [a for a in args if a != "--"]
        return bool(paths) and all(not a.startswith("-") and inside(scope, a) for a in paths)
    if sub == "commit":
        i, messages = 0, 0
        while i < len(args):
            a = args[i]
            if (a in ("-m", "--message") or a == "-am" and scope["resolver"]) and i + 1 < len(args):
                messages += 1
                i += 2
                continue
            if a in ("-q", "--quiet") or a in ("-a", "--all") and scope["resolver"]:
                i += 1
                continue
            if a.startswith("--message=") or (a.startswith("-m") and len(a) > 2):
                messages += 1
                i += 1
                continue
            return False
        return messages > 0
    if sub == "push":
        rest = [a for a in args if a not in ("-u", "--set-upstream", "-q", "--quiet")]
        return bool(scope["branch"]) and rest == ["origin", scope["branch"]]
    if sub == "rev-parse":
        return args == ["HEAD"]
    if scope["resolver"] and sub in ("log", "diff", "show", "status"):
        return all(a in RESOLVER_READ_FLAGS or not a.startswith("-") for a in args)  # refs and paths
    if sub in GIT_READ:
        return all(a in GIT_READ[sub] for a in args)
    return False


def ok_gh_comment(scope: dict, args: list, reads_stdin: bool) -> bool:
    issue = scope["issue"]
    if isinstance(issue, bool) or not isinstance(issue, int) or not args or args[0] != str(issue):
        return False
    i, body, stdin = 1, False, False
    while i < len(args):
        a, value = args[i], args[i + 1] if i + 1 < len(args) else None
        if a in ("-R", "--repo") and value is not None:
            repo = scope["repository"]
            if not isinstance(repo, str) or value not in (repo, repo.split("/", 1)[-1]):
                return False
        elif a in ("-b", "--body") and value is not None:
            body = True
        elif a in ("-F", "--body-file") and value == "-":
            body = stdin = True
        else:
            return False
        i += 2
    return body and stdin == reads_stdin


def split_command(command: str):
    """The commands of ``c1 && c2 && ...`` as lists of words, or None when it holds anything else."""
    segments: list = [[]]
    i, n = 0, len(command)
    while i < n:
        c = command[i]
        if c in " \t":
            i += 1
            continue
        if command.startswith("&&", i):
            if not segments[-1]:
                return None
            segments.append([])
            i += 2
            continue
        word = []
        while i < n and command[i] not in " \t":
            c = command[i]
            if c == "'":
                end = command.find("'", i + 1)
                if end < 0:
                    return None
                word.append(command[i + 1:end])
                i = end + 1
            elif c == '"':
                end = command.find('"', i + 1)
                if end < 0 or DQ_UNSAFE.intersection(command[i + 1:end]):
                    return None
                word.append(command[i + 1:end])
                i = end + 1
            elif c in BARE:
                word.append(c)
                i += 1
            else:
                return None
        segments[-1].append("".join(word))
    return segments if segments[-1] else None


# -- denials, read from a subagent's transcript -------------------------------------------

def record_denials(ctx: Ctx, run: str, task: str, agent_id, transcript_path, final_text=None,
                   wait: float = 3.0) -> int:
    """Record one ``permission_denied`` event per refused tool call in the transcript; return how many.

    Claude Code 2.1.328 marks a refused call's tool_result line with ``"permissionDecision":
    {"decision": "reject", ...}`` and ``toolDenialKind``; the call itself is the ``tool_use``
    block with the same id in an earlier assistant line. The transcript is written behind
    SubagentStop (seen: a refusal not yet in it when the hook ran), so with ``final_text``
    (the subagent's last message) this waits up to ``wait`` seconds for that message to be in
    the transcript: everything before it is then too.
    """
    if not isinstance(transcript_path, str) or not transcript_path:
        return 0
    marker = final_text.strip()[:200] if isinstance(final_text, str) and final_text.strip() else None
    deadline = time.monotonic() + wait
    while True:
        read = _read_transcript(transcript_path, marker)
        if read is None:
            return 0
        calls, denied, complete = read
        if complete or marker is None or time.monotonic() >= deadline:
            break
        time.sleep(0.05)
    for tool_use_id, result, entry in denied:
        call = calls.get(tool_use_id) or {}
        tool_input = call.get("input") if isinstance(call.get("input"), dict) else {}
        what = tool_input.get("command") or tool_input.get("file_path") or tool_input.get("notebook_path")
        decided = entry.get("permissionDecision") or {}
        ctx.record(run, "permission_denied", task, agent_id=agent_id, tool=call.get("name") or "?",
                   command=what if isinstance(what, str) else None, tool_use_id=tool_use_id,
                   reason=_first_sentence(result), kind=entry.get("toolDenialKind"),
                   source=decided.get("reasonCode") if isinstance(decided, dict) else None)
    return len(denied)


def _read_transcript(path: str, marker):
    """(tool_use blocks by id, refused (id, result, line), whether ``marker`` was seen), or None."""
    calls, denied, complete = {}, [], False
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            for line in f:
                if '"tool_use"' not in line and '"permissionDecision"' not in line and '"assistant"' not in line:
                    continue
                try:
                    entry = json.loads(line)
                except ValueError:
                    continue
                message = entry.get("message") if isinstance(entry, dict) else None
                content = message.get("content") if isinstance(message, dict) else None
                for block in content if isinstance(content, list) else []:
                    if not isinstance(block, dict):
                        continue
                    kind = block.get("type")
                    if kind == "tool_use":
                        calls[block.get("id")] = block
                    elif kind == "tool_result" and _rejected(entry):
                        denied.append((block.get("tool_use_id"), block.get("content"), entry))
                    elif kind == "text" and marker and isinstance(block.get("text"), str):
                        shown = block["text"].strip()[:200]
                        complete = complete or bool(shown) and marker.startswith(shown)
    except OSError:
        return None
    return calls, denied, complete


def _rejected(entry: dict) -> bool:
    decided = entry.get("permissionDecision")
    return isinstance(decided, dict) and decided.get("decision") == "reject"


def _first_sentence(result) -> str:
    if isinstance(result, list):
        result = " ".join(b.get("text", "") for b in result if isinstance(b, dict))
    text = result if isinstance(result, str) else ""
    cut = text.find(". ")
    return (text[:cut + 1] if cut > 0 else text)[:300]

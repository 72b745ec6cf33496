"""Template overrides: which template is in effect, ejecting one, what changed, does it render.

A template is looked up by name in the repository's ``.parallel/templates/``, then the
user's ``~/.config/parallel-setup/templates/``, then the built-in ``templates/``
(``render.search_path``). This module answers the questions a person customizing them has:

* ``sources``: for every template, the file in effect and the ones it shadows;
* ``eject``: copy a built-in (or a skeleton that extends it and overrides one block)
  into an override folder, stamped on its first line with the plugin version and the
  hash of the built-in it came from; the built-in's text is kept beside it under
  ``.originals/<hash>/`` so that after a plugin update ``diff`` can still show what
  the built-in was (commit both: the team sees the same);
* ``diff``: the override against the built-in it came from, the built-in's changes
  since the eject, and a warning when there are any;
* ``check``: render every effective template against a plan and against hostile plan
  text, and a static pass over the override's source (a misspelt variable in an
  ``{% if %}`` branch the plan does not take is still found), each finding with its
  file, line and variable; a warning for a value put into bash without ``sh``.
"""

from __future__ import annotations

import difflib
import hashlib
import os
import re
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional, Set, Tuple

import jinja2
from jinja2 import meta, nodes

from . import __version__, render, runs
from .errors import FatalError
from .paths import EXAMPLE_PLAN
from .plans import Plan, load_plan_file, parse_plan
from .render import BUILTIN_PREFIX, TEMPLATE_NAMES, TemplateError, check_name, error_location, make_environment

#: What each template renders, for ``list`` (the README's table says the same).
RENDERS = {
    "subagent-prompt.md.j2": "each subagent's full prompt (prompt.md)",
    "setup.sh.j2": "each task's setup script (setup.sh: issue, worktree, environment)",
    "issue-title.txt.j2": "each task's issue title",
    "issue-body.md.j2": "each task's issue body",
    "completion-report.md.j2": "the completion report instructions (included by the prompt)",
    "spawn-instructions.md.j2": "what execute prints for the main agent (the Agent calls)",
    "merge-conflict.md.j2": "the resolver subagent's prompt when the merge train stops (merge)",
}
#: Templates rendered with the spawn variables instead of the task variables.
SPAWN_TEMPLATES = ("spawn-instructions.md.j2",)
#: Templates rendered with the merge train's stop variables (parallel-setup merge).
MERGE_TEMPLATES = ("merge-conflict.md.j2",)
#: Where the built-in text an override was ejected from is kept, inside its folder.
ORIGINALS_DIRNAME = ".originals"
HASH_CHARS = 16

STAMP_RE = re.compile(r"\A\{#-? parallel-setup override of (?P<name>\S+): ejected from parallel-setup "
                      r"(?P<version>\S+), built-in sha256:(?P<hash>[0-9a-f]{%d})\b" % HASH_CHARS)
BLOCK_RE = re.compile(r"\{%-?\s*(?:(block)\s+(\w+)(?:\s+scoped)?(?:\s+required)?|(endblock)(?:\s+\w+)?)\s*[-+]?%\}")

#: Values that are safe unquoted in bash by construction (ids, enums, the version).
SAFE_IN_BASH = {"task_id", "run_id", "version", "mode", "task.id", "run.id", "run.mode",
                "branch_prefix", "worktree_prefix", "setup_deadline"}
SAFE_FILTERS = {"sh", "int", "float", "length", "count"}
JINJA_NAMES = {"loop", "super", "self", "caller", "varargs", "kwargs", "true", "false", "none",
               "True", "False", "None"}

HOSTILE_TITLE = "$(touch /tmp/pwned) `id` \"quoted\" 'single' {{ 7*7 }} {% raw %} ü"
HOSTILE_TEXT = ("Text from a plan is data: $(touch /tmp/pwned), `id`, ${HOME}, \"double\" and 'single' quotes,\n"
                "EOF\n'EOF'\n```` a fence ````\n{{ 7*7 }} {% if true %}x{% endif %} {% endraw %} {# #}\n"
                "a backslash \\ at the end \\\nnon-ASCII: ü 中文\n")


class OverrideError(FatalError):
    """An eject or diff that cannot be done as asked."""


# --------------------------------------------------------------------------
# Where each template comes from


@dataclass
class Source:
    kind: str  # "built-in", "repository", "user"
    path: Path


@dataclass
class TemplateInfo:
    name: str
    effective: Source
    shadowed: List[Source]

    @property
    def overridden(self) -> bool:
        return self.effective.kind != "built-in"

    def text(self) -> str:
        """The effective source, read as the loader reads it (a symbolic link out of the
        template folders is refused here too)."""
        path = self.effective.path
        root = path.parent.resolve()
        resolved = path.resolve()
        if root not in resolved.parents:
            raise TemplateError(f"template {self.name!r} resolves to {resolved}, outside the template folders")
        return path.read_text(encoding="utf-8")


def folders(project: Optional[Path]) -> List[Source]:
    """The loader's folders (``render.search_path``), highest priority first, with what each is."""
    path = render.search_path(project)
    kinds = (["repository"] if project is not None else []) + ["user"] + ["built-in"]
    assert len(kinds) == len(path), path
    return [Source(k, p) for k, p in zip(kinds, path)]


def override_folder(project: Optional[Path], user: bool) -> Path:
    if not user and project is None:
        raise OverrideError("not in a repository: use --user to eject into the user-level folder")
    wanted = "user" if user else "repository"
    return next(f.path for f in folders(project) if f.kind == wanted)


def sources(project: Optional[Path]) -> List[TemplateInfo]:
    """Every template, the file in effect and the files it shadows."""
    found = []
    for name in TEMPLATE_NAMES:
        present = [Source(f.kind, f.path / name) for f in folders(project) if (f.path / name).is_file()]
        found.append(TemplateInfo(name, present[0], present[1:]))
    return found


def info(project: Optional[Path], name: str) -> TemplateInfo:
    known(name)
    return next(t for t in sources(project) if t.name == name)


def closest(word: str, candidates: Iterable[str]) -> Optional[str]:
    """The candidate ``word`` most likely meant: a close spelling, else the one it begins."""
    pool = sorted(set(candidates))
    close = difflib.get_close_matches(word, pool, n=1, cutoff=0.6)
    if close:
        return close[0]
    starting = [c for c in pool if word and c.startswith(word)]
    return starting[0] if len(starting) == 1 else None


def known(name: str) -> str:
    check_name(name)
    if name not in TEMPLATE_NAMES:
        close = closest(name, TEMPLATE_NAMES)
        hint = f"; did you mean {close}?" if close else ""
        raise OverrideError(f"no template named {name!r}{hint} (templates: {', '.join(TEMPLATE_NAMES)})")
    return name


def stray_files(project: Optional[Path]) -> List[Tuple[Path, Optional[str]]]:
    """``.j2`` files in the override folders that no template name matches and no template
    includes (so never used: a misspelt name, usually), each with the closest template name."""
    env = make_environment(project)
    used = {n for name in TEMPLATE_NAMES for n, _, _ in _chain(env, name)}
    stray = []
    for f in folders(project)[:-1]:
        if not f.path.is_dir():
            continue
        for p in sorted(f.path.iterdir()):
            if (p.name.startswith(".") or not p.name.endswith(".j2") or p.is_dir() or p.name in used
                    or p.name in TEMPLATE_NAMES):
                continue
            stray.append((p, closest(p.name, TEMPLATE_NAMES)))
    return stray


def display(path: Path, project: Optional[Path]) -> str:
    """A path as people read it: relative to the repository, ~ for the home folder, builtin/NAME for shipped ones."""
    path = Path(path)
    try:
        return BUILTIN_PREFIX + str(path.relative_to(render.TEMPLATES_DIR))
    except ValueError:
        pass
    if project is not None:
        try:
            return str(path.relative_to(project))
        except ValueError:
            pass
    home = Path(os.path.expanduser("~"))
    try:
        return "~/" + str(path.relative_to(home))
    except ValueError:
        return str(path)


# --------------------------------------------------------------------------
# Built-ins, hashes, stamps, blocks


def builtin_text(name: str) -> str:
    return (render.TEMPLATES_DIR / known(name)).read_text(encoding="utf-8")


def text_hash(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:HASH_CHARS]


@dataclass
class Stamp:
    name: str
    version: str
    hash: str


def read_stamp(text: str) -> Optional[Stamp]:
    m = STAMP_RE.match(text)
    return Stamp(m["name"], m["version"], m["hash"]) if m else None


def strip_stamp(text: str) -> str:
    """The override's text without its stamp line (what was ejected, plus the user's changes)."""
    return text.split("\n", 1)[1] if read_stamp(text) and "\n" in text else text


def stamp_line(name: str, builtin_hash: str) -> str:
    return (f"{{# parallel-setup override of {name}: ejected from parallel-setup {__version__}, "
            f"built-in sha256:{builtin_hash}. `parallel-setup templates diff {name}` shows what changed "
            f"in the built-in since. #}}\n")


def blocks(text: str) -> Dict[str, str]:
    """Each named block's source text (tags included), by name, in order."""
    found: Dict[str, str] = {}
    stack: List[Tuple[str, int]] = []
    for m in BLOCK_RE.finditer(text):
        if m.group(1):
            stack.append((m.group(2), m.start()))
        elif stack:
            name, start = stack.pop()
            found[name] = text[start:m.end()]
    return dict(sorted(found.items(), key=lambda kv: text.index(kv[1])))


def extends_builtin(text: str) -> bool:
    return re.search(r"\{%-?\s*extends\s+['\"]" + re.escape(BUILTIN_PREFIX), text) is not None


def replaced_blocks(text: str) -> Dict[str, bool]:
    """The blocks an override defines: name -> True when it keeps the built-in's text ({{ super() }})."""
    return {name: "super()" in body for name, body in blocks(text).items()}


def originals_dirs(project: Optional[Path]) -> List[Path]:
    return [f.path / ORIGINALS_DIRNAME for f in folders(project)[:-1]]


def original(project: Optional[Path], name: str, wanted_hash: str) -> Optional[str]:
    """The built-in text with this hash: today's built-in, or one kept when an override was ejected."""
    today = builtin_text(name)
    if text_hash(today) == wanted_hash:
        return today
    for folder in originals_dirs(project):
        candidate = folder / wanted_hash / name
        if candidate.is_file():
            text = candidate.read_text(encoding="utf-8")
            if text_hash(text) == wanted_hash:
                return text
    return None


def keep_original(folder: Path, name: str, text: str) -> Path:
    path = folder / ORIGINALS_DIRNAME / text_hash(text) / name
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        _write_new(path, text, overwrite=True)
    return path


def _write_new(path: Path, text: str, overwrite: bool = False) -> None:
    """Write ``text`` to ``path``: a new file (O_EXCL: never an existing override) unless ``overwrite``."""
    if overwrite:
        tmp = path.with_name(f".{path.name}.tmp.{os.getpid()}")
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
        return
    try:
        with open(path, "x", encoding="utf-8") as f:
            f.write(text)
    except FileExistsError:
        raise OverrideError(f"{path} already exists: eject never overwrites an override") from None


# --------------------------------------------------------------------------
# eject


def eject(project: Optional[Path], name: str, *, user: bool = False, block: Optional[str] = None,
          append: Optional[str] = None) -> Path:
    """Copy the built-in ``name`` (or, with ``block``, a template that extends it and overrides
    that block) into the repository's (or the user's) override folder; returns the new file."""
    known(name)
    folder = override_folder(project, user)
    target = folder / name
    if target.exists():
        raise OverrideError(f"{display(target, project)} already exists: an override is in place, and eject "
                            f"never overwrites one (see `parallel-setup templates diff {name}`; move it away "
                            f"to eject again)")
    builtin = builtin_text(name)
    digest = text_hash(builtin)
    if append is not None and block is None:
        raise OverrideError("--append needs --block: it adds the text to that block")
    if block is None:
        body = builtin
    else:
        names = list(blocks(builtin))
        if block not in names:
            close = closest(block, names)
            hint = f"; did you mean {close}?" if close else ""
            raise OverrideError(f"{name} has no block {block!r}{hint} (blocks: {', '.join(names) or 'none'})")
        body = (f"{{% extends \"{BUILTIN_PREFIX}{name}\" %}}\n"
                f"{{# Everything not in a block below comes from the built-in, also after a plugin update. #}}\n"
                f"{{% block {block} %}}\n{{{{ super() }}}}\n{_appended(append)}{{% endblock %}}\n")
    folder.mkdir(parents=True, exist_ok=True)
    keep_original(folder, name, builtin)
    _write_new(target, stamp_line(name, digest) + body)
    return target


def _appended(text: Optional[str]) -> str:
    """Text added after ``{{ super() }}``, as written (Jinja syntax in it is kept literal).

    A block's text ends with a newline, and the one after ``{{ super() }}`` makes the blank
    line before the added text: a paragraph of its own in Markdown."""
    if not text:
        return ""
    text = text.rstrip("\n") + "\n"
    if re.search(r"\{[{%#]", text):
        if re.search(r"\{%-?\s*endraw", text):
            raise OverrideError("--append text contains {% endraw %}; edit the file instead")
        text = "{% raw %}" + text + "{% endraw %}\n"
    return text


# --------------------------------------------------------------------------
# diff


def diff(project: Optional[Path], name: Optional[str] = None) -> Tuple[str, bool]:
    """The report of ``templates diff``, and whether any override is stale (its built-in changed)."""
    chosen = [info(project, name)] if name else [t for t in sources(project) if t.overridden]
    if not chosen:
        return ("No overrides: every template is the built-in one. "
                "`parallel-setup templates eject NAME` makes one.\n", False)
    out: List[str] = []
    stale_any = False
    for t in chosen:
        text, stale = _diff_one(project, t)
        out.append(text)
        stale_any = stale_any or stale
    return "\n".join(out), stale_any


def _udiff(a: str, b: str, a_name: str, b_name: str) -> str:
    lines = list(difflib.unified_diff(a.splitlines(keepends=True), b.splitlines(keepends=True), a_name, b_name, n=2))
    return "".join(l if l.endswith("\n") else l + "\n" for l in lines)


@dataclass
class Staleness:
    """How an override stands against today's built-in (one derivation for list, diff and check)."""
    stamp: Optional[Stamp]
    then: Optional[str]  # the built-in it was ejected from, when known
    today: str
    extending: bool
    changed_blocks: List[str]  # with ``extending``: the blocks it overrides that changed since

    @property
    def builtin_changed(self) -> bool:
        return self.stamp is not None and self.stamp.hash != text_hash(self.today)

    @property
    def stale(self) -> bool:
        """The built-in changed in a way the override does not get by itself: a whole copy
        whose built-in changed, or an extending override whose blocks changed (or unknown)."""
        if not self.builtin_changed:
            return False
        return not self.extending or self.then is None or bool(self.changed_blocks)


def staleness(project: Optional[Path], t: TemplateInfo) -> Staleness:
    text = t.text()
    stamp = read_stamp(text)
    today = builtin_text(t.name)
    then = original(project, t.name, stamp.hash) if stamp else None
    extending = extends_builtin(text)
    changed: List[str] = []
    if extending and then is not None and then != today:
        old_blocks, new_blocks = blocks(then), blocks(today)
        changed = [b for b in replaced_blocks(text) if old_blocks.get(b) != new_blocks.get(b)]
    return Staleness(stamp, then, today, extending, changed)


def _diff_one(project: Optional[Path], t: TemplateInfo) -> Tuple[str, bool]:
    name = t.name
    if not t.overridden:
        return f"{name}: no override, the built-in is in effect.\n", False
    shown = display(t.effective.path, project)
    text = t.text()
    s = staleness(project, t)
    today, today_hash, stamp, then = s.today, text_hash(s.today), s.stamp, s.then
    then_label = f"{BUILTIN_PREFIX}{name} (sha256:{stamp.hash}, when ejected)" if stamp else ""
    today_label = f"{BUILTIN_PREFIX}{name} (sha256:{today_hash}, today)"
    lines = [f"{name}: {t.effective.kind} override {shown}"]
    if stamp is None:
        lines.append("  no eject stamp: which built-in it came from is unknown; shown against today's built-in")
        lines.append(_udiff(today, text, today_label, shown))
        return "\n".join(lines) + "\n", False
    lines.append(f"  ejected from parallel-setup {stamp.version}, built-in sha256:{stamp.hash}; "
                 f"today's built-in: sha256:{today_hash}" + ("" if s.builtin_changed else " (unchanged)"))
    overridden = replaced_blocks(text)
    if s.extending:
        lines.append("  extends the built-in; blocks it overrides: "
                     + (", ".join(f"{b} ({'appends' if k else 'replaces'})" for b, k in overridden.items()) or "none"))
    if s.builtin_changed and then is None:
        lines.append(f"  WARNING: the built-in {name} changed since this override was ejected, and the version it "
                     f"came from is not kept ({ORIGINALS_DIRNAME}/{stamp.hash}/{name} is missing): compare the "
                     f"override with today's built-in below")
    elif s.builtin_changed:
        change = f"(parallel-setup {stamp.version} -> {__version__})"
        if not s.extending:
            lines.append(f"  WARNING: the built-in {name} changed since this override was ejected {change}; "
                         f"this copy does not have these changes:")
        elif s.changed_blocks:
            lines.append(f"  WARNING: the built-in {name} changed since this override was ejected {change}, "
                         f"in blocks it overrides:")
            for b in s.changed_blocks:
                lines.append(f"    block {b}: " + ("it appends to it ({{ super() }}), so it gets the change; check "
                                                   "that its addition still fits" if overridden[b] else
                                                   "it replaces it, so it does NOT get the change"))
        else:
            lines.append(f"  the built-in changed since the eject {change}, outside the blocks this override "
                         f"has: it gets those changes as they are")
        lines.append(_udiff(then, today, then_label, today_label))
    body = strip_stamp(text)
    if not s.extending:
        if then is not None:
            lines.append("  your changes (the override against the built-in it came from):")
            lines.append(_udiff(then, body, then_label, shown) or "  (none: the override is the built-in as ejected)")
        if s.builtin_changed or then is None:
            lines.append("  the override against today's built-in:")
            lines.append(_udiff(today, body, today_label, shown))
    else:
        mine, theirs = blocks(body), blocks(today)
        for b in overridden:
            lines.append(f"  block {b}: today's built-in against the override:")
            lines.append(_udiff(theirs.get(b, ""), mine[b], today_label, shown))
    if s.stale:
        lines.append(f"  When the override has what it needs, `parallel-setup templates diff {name} --accept` "
                     f"records today's built-in as the one it is based on.")
    return "\n".join(l.rstrip("\n") for l in lines) + "\n", s.stale


def accept(project: Optional[Path], name: str) -> Path:
    """Record today's built-in as the one the override is based on (after bringing it up to date)."""
    t = info(project, name)
    if not t.overridden:
        raise OverrideError(f"{name} has no override: nothing to accept")
    text = t.text()
    today = builtin_text(name)
    keep_original(t.effective.path.parent, name, today)
    _write_new(t.effective.path, stamp_line(name, text_hash(today)) + strip_stamp(text), overwrite=True)
    return t.effective.path


# --------------------------------------------------------------------------
# check


@dataclass(frozen=True)
class Finding:
    level: str  # "error" or "warning"
    file: str  # as displayed
    line: Optional[int]
    template: str
    message: str

    def format(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        return f"{where}: {self.level}: {self.template}: {self.message}"


@dataclass
class CheckReport:
    plan_shown: str
    findings: List[Finding] = field(default_factory=list)
    overrides: int = 0

    @property
    def errors(self) -> List[Finding]:
        return [f for f in self.findings if f.level == "error"]

    @property
    def warnings(self) -> List[Finding]:
        return [f for f in self.findings if f.level == "warning"]

    def add(self, finding: Finding) -> None:
        if finding not in self.findings:
            self.findings.append(finding)

    def format(self) -> str:
        lines = [f.format() for f in self.findings]
        n_err, n_warn = len(self.errors), len(self.warnings)
        checked = (f"{len(TEMPLATE_NAMES)} templates ({self.overrides} overridden) against plan {self.plan_shown} "
                   f"and hostile plan text")
        if not self.findings:
            lines.append(f"templates ok: {checked}")
        else:
            lines.append(f"templates: {_count(n_err, 'error')}, {_count(n_warn, 'warning')}; checked {checked}")
        return "\n".join(lines) + "\n"


def _count(n: int, word: str) -> str:
    return f"{n} {word}" + ("" if n == 1 else "s")


def plan_for_check(project: Optional[Path], plan: Optional[str] = None) -> Tuple[Plan, str]:
    """The plan named, else the most recently saved one, else the shipped example."""
    from .commands.plan import resolve_plan_path  # the one rule for "which plan"
    path: Optional[Path] = None
    if plan:
        path = resolve_plan_path(project or Path.cwd(), plan)
    elif project is not None:
        try:
            path = resolve_plan_path(project, None)
        except FatalError:
            path = None
    if path is None:
        example = load_plan_file(EXAMPLE_PLAN)
        return example, f"{example.name} (the shipped example)"
    loaded = load_plan_file(path, project=project)
    return loaded, f"{loaded.name} ({display(Path(path).resolve(), project)})"


def hostile_plan() -> Plan:
    """A valid plan whose every free-text field is hostile to a template, to bash and to Markdown."""
    import json
    data = {
        "schema_version": 1, "name": "hostile-text", "goal": HOSTILE_TEXT, "base_branch": "main",
        "issues": {"mode": "local", "labels": ["parallel", "it's"]},
        "defaults": {"setup": "echo \"$(id)\" 'q' && touch ./it\\'s", "test": "pytest -k 'a and $(id)'",
                     "copy_files": [".env", "it's here/$(id).txt"]},
        "tasks": [
            {"id": "hostile-base", "title": HOSTILE_TITLE, "description": HOSTILE_TEXT, "setup": "none"},
            {"id": "hostile-text", "title": HOSTILE_TITLE, "description": HOSTILE_TEXT,
             "files": ["src/it's $(id).py", "docs/`x`/*.md"], "depends_on": ["hostile-base"],
             "labels": ["{{ 7*7 }}"]},
        ],
    }
    return parse_plan(json.dumps(data), "hostile plan text", max_tasks=10)


PREVIEW_RUN_ID = "00000000-000000-0000"
#: Each variant renders every template once per task: the two issue modes and their branches.
VARIANTS = (
    {"issue_mode": "github", "repository": "github.com/acme/widgets", "has_origin": True,
     "issue_updates": "comment", "background": True, "worktree_pool": None},
    {"issue_mode": "local", "repository": None, "has_origin": False, "issue_updates": "none",
     "background": False, "worktree_pool": "/nonexistent/worktrees/.pool"},
)


def preview_run(project: Path, plan: Plan, variant: Dict[str, Any]) -> runs.Run:
    """A run as execute would create it, in memory only: nothing is written."""
    data = {"format": runs.FORMAT, "id": PREVIEW_RUN_ID, "created_at": 0.0, "project": str(project),
            "plan_path": None, "plan": plan.data, "mode_reason": "templates check",
            "base_ref": f"origin/{plan.base_branch}", "base_commit": "0" * 40, "base_note": "",
            "labels": [l for l in plan.labels if l], "labels_ok": True, "labels_note": "",
            "max_concurrency": runs.DEFAULT_MAX_CONCURRENCY, "tasks": [t.id for t in plan.tasks],
            "version": __version__, **variant}
    return runs.Run(project, PREVIEW_RUN_ID, data, plan)


def contexts(project: Path, plan: Plan) -> Iterable[Tuple[str, Dict[str, Any]]]:
    """(template name, variables) for every render the check does with this plan."""
    from .commands.execute import spawn_context
    from .commands.merge import resolver_context
    for variant in VARIANTS:
        run = preview_run(project, plan, variant)
        states = {t: runs.TaskState(t) for t in run.tasks}
        shapes = set()
        for tid in run.tasks:
            task = plan.task(tid)
            # Tasks that differ only in their text take the same branches: one of each shape
            # (execute runs this check on every run, so it stays fast for 50 tasks).
            shape = (bool(task.files), bool(task.depends_on), bool(task.test), task.setup in ("auto", "none")
                     and task.setup, bool(task.labels))
            if shape in shapes:
                continue
            shapes.add(shape)
            ctx = runs.template_context(run, tid, states)
            for name in TEMPLATE_NAMES:
                if name not in SPAWN_TEMPLATES + MERGE_TEMPLATES:
                    yield name, ctx
        spawn = spawn_context(run, run.tasks, [(run.tasks[-1], "waits for its dependencies")], states,
                              foreground=not variant["background"], resumed=variant["issue_mode"] == "local")
        for name in SPAWN_TEMPLATES:
            yield name, spawn
        for stop in preview_stops(run):
            ctx = resolver_context(run, stop, worktree=f"{project}/worktrees/merge-{run.id}",
                                   branch=f"parallel/{run.id}", strategy="merge", tests=["make test"], states=states)
            for name in MERGE_TEMPLATES:
                yield name, ctx


def preview_stops(run: runs.Run) -> List[Any]:
    """One merge-train stop of each kind the resolver template branches on, for the check."""
    from .merge import Stop
    first, last = run.tasks[0], run.tasks[-1]
    return [Stop("conflict", last, files=["src/app.py"], collides_with=[first], merged_before=[first]),
            Stop("tests", last, merged_before=[first], semantic=True, test_command="make test", test_exit=1,
                 output_tail="FAILED test_app.py", tasks=[last], culprits=[first], culprits_note="red together"),
            Stop("markers", last, files=["src/app.py"], merged_before=[first])]


def check(project: Optional[Path], plan: Optional[Plan] = None, plan_shown: Optional[str] = None,
          *, bash_syntax: bool = True, static_builtins: bool = False) -> CheckReport:
    """Render every effective template against ``plan`` (default: ``plan_for_check``) and hostile
    text, and check the overrides' source (with ``static_builtins``, the built-ins' too: the
    test suite does, so a run does not pay for it). Writes nothing."""
    if plan is None:
        plan, plan_shown = plan_for_check(project)
    where = project if project is not None else Path.cwd()
    report = CheckReport(plan_shown or plan.name)
    env = make_environment(project)
    infos = sources(project)
    report.overrides = sum(1 for t in infos if t.overridden)
    for path, close in stray_files(project):
        report.add(Finding("warning", display(path, project), None, path.name,
                           "not a template name, so never used" + (f"; did you mean {close}?" if close else "")))
    for t in infos:
        if t.overridden:
            try:
                _check_stamp(project, t, report)
            except TemplateError:
                pass  # the render below reports it, with its file
    broken: Set[str] = set()
    static_done: Set[str] = set()
    bash_checked: Set[int] = set()
    for source_plan in (plan, hostile_plan()):
        variables = contexts(where, source_plan)
        while True:
            try:
                name, ctx = next(variables)
            except StopIteration:
                break
            except Exception as e:  # noqa: BLE001 - the preview's gap, not the user's template
                report.add(Finding("warning", "templates check", None, "(all)",
                                   f"could not build the variables execute gives the templates ({type(e).__name__}: "
                                   f"{e}), so they were not rendered here; execute renders them as before"))
                break
            if name in broken:
                continue
            if name not in static_done:
                static_done.add(name)
                _static(env, name, ctx, project, report, static_builtins)
            out = _render(env, name, ctx, project, report)
            if out is None:
                broken.add(name)
            elif (name == "setup.sh.j2" and bash_syntax and info(project, name).overridden
                    and id(source_plan) not in bash_checked):
                bash_checked.add(id(source_plan))
                _bash_syntax(out, name, ctx, project, report, hostile=source_plan is not plan)
    return report


def _check_stamp(project: Optional[Path], t: TemplateInfo, report: CheckReport) -> None:
    s = staleness(project, t)
    if s.stale and s.stamp is not None:
        what = (f"block {', '.join(s.changed_blocks)} of the built-in changed" if s.changed_blocks
                else "the built-in changed")
        report.add(Finding("warning", display(t.effective.path, project), 1, t.name,
                           f"{what} since this override was ejected from parallel-setup {s.stamp.version} "
                           f"(sha256:{s.stamp.hash}); see `parallel-setup templates diff {t.name}`"))


def _file_shown(filename: Optional[str], name: str, project: Optional[Path]) -> str:
    """The file a finding is in: the failing frame's, else the template's effective file."""
    if filename and not filename.startswith("<"):
        return display(Path(filename), project)
    return display(info(project, name).effective.path, project) if name in TEMPLATE_NAMES else name


def _render(env: jinja2.Environment, name: str, ctx: Dict[str, Any], project: Optional[Path],
            report: CheckReport) -> Optional[str]:
    try:
        return env.get_template(name).render(**ctx)
    except jinja2.TemplateSyntaxError as e:
        report.add(Finding("error", display(Path(e.filename), project) if e.filename else name, e.lineno, name,
                           f"syntax error: {e.message}"))
    except jinja2.TemplateNotFound as e:
        report.add(Finding("error", _file_shown(None, name, project), None, name,
                           f"extends or includes {e.name!r}, which is not found"))
    except jinja2.UndefinedError as e:
        filename, line = error_location(e)
        source = _source_line(filename, line)
        report.add(Finding("error", _file_shown(filename, name, project), line, name,
                           _undefined_message(str(e.message), source, ctx)))
    except RecursionError:
        report.add(Finding("error", _file_shown(None, name, project), None, name,
                           f"extends or includes itself; to build on the shipped one, extend "
                           f"\"{BUILTIN_PREFIX}{name}\""))
    except TemplateError as e:
        filename, line = error_location(e)
        report.add(Finding("error", _file_shown(filename, name, project), line, name, str(e)))
    except Exception as e:  # noqa: BLE001 - any render failure is the template's, reported
        filename, line = error_location(e)
        report.add(Finding("error", _file_shown(filename, name, project), line, name,
                           f"{type(e).__name__}: {e}"))
    return None


def _source_line(filename: Optional[str], line: Optional[int]) -> str:
    if not filename or not line or filename.startswith("<"):
        return ""
    try:
        return Path(filename).read_text(encoding="utf-8").splitlines()[line - 1]
    except (OSError, IndexError):
        return ""


def _suggest(word: str, candidates: Iterable[str], prefix: str = "") -> str:
    close = closest(word, candidates)
    return f"; did you mean '{prefix}{close}'?" if close else ""


def _undefined_message(message: str, source: str, ctx: Dict[str, Any]) -> str:
    m = re.match(r"'(\w+)' is undefined", message)
    if m:
        return f"'{m[1]}' is undefined{_suggest(m[1], ctx)}"
    m = re.match(r"'.*' has no attribute '(\w+)'", message)
    if m:
        attr = m[1]
        base = re.search(r"(\w+)\s*\.\s*" + re.escape(attr) + r"\b", source)
        if base and isinstance(ctx.get(base[1]), dict):
            return f"'{base[1]}.{attr}' is undefined{_suggest(attr, ctx[base[1]], base[1] + '.')}"
        keys = [k for v in ctx.values() if isinstance(v, dict) for k in v]
        return f"attribute '{attr}' is undefined{_suggest(attr, keys)}"
    return message


def _is_builtin(filename: str) -> bool:
    return Path(filename).resolve().parent == render.TEMPLATES_DIR.resolve()


def _chain(env: jinja2.Environment, name: str) -> List[Tuple[str, str, str]]:
    """(name, filename, source) of a template and every template it extends or includes."""
    seen, todo, out = set(), [name], []
    while todo:
        n = todo.pop(0)
        if n in seen:
            continue
        seen.add(n)
        try:
            source, filename, _ = env.loader.get_source(env, n)  # type: ignore[union-attr]
            ast = env.parse(source)
        except Exception:  # noqa: BLE001 - reported by the render
            continue
        out.append((n, filename or n, source))
        todo += [r for r in meta.find_referenced_templates(ast) if isinstance(r, str)]
    return out


def variables_used(env: jinja2.Environment, name: str) -> List[str]:
    """The variables a template (with what it extends and includes) reads from its context."""
    used, bound = set(), set()
    for _, _, source in _chain(env, name):
        ast = env.parse(source)
        used |= meta.find_undeclared_variables(ast)
        bound |= _bound_names(ast)
    return sorted(used - bound)


def block_variables(env: jinja2.Environment, source: str) -> Dict[str, List[str]]:
    """For each block of a template, the variables (and ``name.attribute``) its text uses."""
    ast = env.parse(source)
    bound = _bound_names(ast) | JINJA_NAMES
    found = {}
    for block in ast.find_all(nodes.Block):
        names = {n.name for n in block.find_all(nodes.Name) if n.ctx == "load" and n.name not in bound}
        attrs = {f"{g.node.name}.{g.attr}" for g in block.find_all(nodes.Getattr)
                 if isinstance(g.node, nodes.Name) and g.node.name in names}
        found[block.name] = sorted(attrs | {n for n in names if not any(a.startswith(n + ".") for a in attrs)})
    return found


def _bound_names(ast: nodes.Template) -> Set[str]:
    bound = set()
    for node in ast.find_all((nodes.Assign, nodes.AssignBlock, nodes.For, nodes.With)):
        targets = [node.target] if not isinstance(node, nodes.With) else list(node.targets)
        for target in targets:
            bound |= {n.name for n in target.find_all(nodes.Name)} | (
                {target.name} if isinstance(target, nodes.Name) else set())
    for node in ast.find_all((nodes.Macro, nodes.CallBlock)):
        bound |= {a.name for a in node.args}
        if isinstance(node, nodes.Macro):
            bound.add(node.name)
    for node in ast.find_all((nodes.Import, nodes.FromImport)):
        bound |= {node.target} if isinstance(node, nodes.Import) else {
            (n[1] if isinstance(n, tuple) else n) for n in node.names}
    return bound


def _static(env: jinja2.Environment, name: str, ctx: Dict[str, Any], project: Optional[Path],
            report: CheckReport, builtins: bool = False) -> None:
    """Names and attributes the source uses that the variables do not have, on any branch."""
    chain = [c for c in _chain(env, name) if builtins or not _is_builtin(c[1])]
    parsed = [(n, f, env.parse(s)) for n, f, s in chain]
    bound = set(JINJA_NAMES) | set(env.globals) | set().union(*(_bound_names(a) for _, _, a in parsed))
    for _, filename, ast in parsed:
        shown = display(Path(filename), project)
        builtin = _is_builtin(filename)
        for node in ast.find_all(nodes.Name):
            if node.ctx == "load" and node.name not in ctx and node.name not in bound:
                report.add(Finding("error", shown, node.lineno, name,
                                   f"'{node.name}' is undefined{_suggest(node.name, ctx)}"))
        for node in ast.find_all((nodes.Getattr, nodes.Getitem)):
            base = node.node
            attr = node.attr if isinstance(node, nodes.Getattr) else (
                node.arg.value if isinstance(node.arg, nodes.Const) and isinstance(node.arg.value, str) else None)
            if (attr is None or not isinstance(base, nodes.Name) or base.name in bound
                    or not isinstance(ctx.get(base.name), dict) or not ctx[base.name] or attr in ctx[base.name]
                    or hasattr(dict, attr)):
                continue
            report.add(Finding("error", shown, node.lineno, name,
                               f"'{base.name}.{attr}' is undefined{_suggest(attr, ctx[base.name], base.name + '.')}"))
        if name == "setup.sh.j2" and not builtin:
            _unquoted_in_bash(ast, shown, name, report)


def _expr_text(node: nodes.Node) -> str:
    if isinstance(node, nodes.Name):
        return node.name
    if isinstance(node, nodes.Getattr):
        return f"{_expr_text(node.node)}.{node.attr}"
    if isinstance(node, nodes.Getitem) and isinstance(node.arg, nodes.Const):
        return f"{_expr_text(node.node)}[{node.arg.value!r}]"
    if isinstance(node, nodes.Filter):
        return f"{_expr_text(node.node)} | {node.name}" if node.node is not None else node.name
    if isinstance(node, nodes.Call):
        return f"{_expr_text(node.node)}(...)"
    return "an expression"


def _safe_in_bash(node: nodes.Node) -> bool:
    if isinstance(node, nodes.Const) or isinstance(node, nodes.TemplateData):
        return True
    if isinstance(node, nodes.Filter) and node.name in SAFE_FILTERS:
        return True
    if isinstance(node, nodes.Call) and isinstance(node.node, (nodes.Name, nodes.Getattr)):
        return _expr_text(node.node) == "super" or _expr_text(node.node).startswith("self.")
    if isinstance(node, nodes.CondExpr):
        return _safe_in_bash(node.expr1) and (node.expr2 is None or _safe_in_bash(node.expr2))
    return _expr_text(node) in SAFE_IN_BASH


def _unquoted_in_bash(ast: nodes.Template, shown: str, name: str, report: CheckReport) -> None:
    for output in ast.find_all(nodes.Output):
        for node in output.nodes:
            if not _safe_in_bash(node):
                text = _expr_text(node)
                report.add(Finding("warning", shown, node.lineno, name,
                                   f"{{{{ {text} }}}} goes into bash without the sh filter: plan text in it "
                                   f"would run as code; write {{{{ {text} | sh }}}}"))


def _bash_syntax(script: str, name: str, ctx: Dict[str, Any], project: Optional[Path], report: CheckReport,
                 hostile: bool) -> None:
    """``bash -n`` on a rendered setup script: an error names the line of the script and shows it."""
    bash = shutil.which("bash")
    if bash is None:
        return
    proc = subprocess.run([bash, "-n"], input=script, capture_output=True, text=True, timeout=30)
    if proc.returncode == 0:
        return
    first = (proc.stderr.strip().splitlines() or ["bash -n failed"])[0]
    m = re.match(r"^.*?: line (\d+): (.*)$", first)
    if m:
        number = int(m[1])
        lines = script.splitlines()
        shown = lines[number - 1].strip() if 0 < number <= len(lines) else ""
        first = f"line {number}: {m[2]}" + (f": {shown}" if shown else "")
    if hostile and any(f.template == name and "is not valid bash" in f.message for f in report.errors):
        return  # already broken with the plan's own text
    report.add(Finding("error", _file_shown(None, name, project), None, name,
                       f"the rendered script{' (with hostile plan text)' if hostile else ''} is not valid bash, "
                       f"{first}"))


def check_before_run(project: Path, plan: Plan, plan_shown: str, *, resuming: bool = False) -> CheckReport:
    """What execute runs first: a FatalError, before anything is created (or, resuming, before
    any task is launched), when a template does not render."""
    report = check(project, plan, plan_shown)
    if report.errors:
        what = ("so no task was launched and nothing was changed" if resuming else
                "so no run was started and nothing was created (no run folder, issue or label)")
        raise FatalError(f"the templates do not render, {what}:\n" + report.format().rstrip("\n")
                         + "\nFix them (`parallel-setup templates check` shows this again), then run execute again.")
    return report

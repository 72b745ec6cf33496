"""The plan format: load a YAML plan, validate it against the published schema
and the rules a schema cannot express, and report every problem at once.

Every problem names the file, the line where it can, and the task::

    plan.yaml:14: error: task 'api': depends_on: unknown task 'db'
    plan.yaml:9: warning: task 'ui': unknown field 'owner' (ignored)

Errors make a plan unusable; warnings do not.
"""

from __future__ import annotations

import fnmatch
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import yaml

from .errors import FatalError
from .paths import PLAN_SCHEMA

DEFAULT_MAX_TASKS = 50
MAX_ID_LENGTH = 40
_ID_CHARS = re.compile(r"^[A-Za-z0-9._-]+$")
#: GitHub's limits: an issue title of at most 256 characters, a body of at most 65,536.
GITHUB_TITLE_MAX = 256
GITHUB_BODY_MAX = 65536
#: Deepest nesting of lists and mappings a plan may have (a plan needs 4).
MAX_DEPTH = 32
#: Fields that may hold several lines (every other text is one line).
MULTILINE_FIELDS = ("goal", "description", "setup", "test")
#: C0 controls, DEL and C1 controls (terminal escapes start with ESC or CSI), never in a plan.
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")
_CONTROL_OR_BREAK = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")
_CONTROL_NAMES = {0: "NUL", 7: "BEL", 8: "backspace", 9: "tab", 10: "line break", 13: "carriage return",
                  27: "ESC, a terminal escape", 127: "DEL", 0x9b: "CSI, a terminal escape",
                  0x2028: "line separator", 0x2029: "paragraph separator"}


def printable(text) -> str:
    """``text`` with every control character shown as an escape (``\\x1b``): safe for a terminal.
    Line breaks and tabs are kept."""
    return _CONTROL.sub(lambda m: f"\\x{ord(m.group(0)):02x}", str(text))


def control_problem(value: str, multiline: bool) -> str | None:
    """Why a text cannot be used (a control character, or a line break in a one-line field)."""
    found = (_CONTROL if multiline else _CONTROL_OR_BREAK).search(value)
    if found is None:
        return None
    code = ord(found.group(0))
    name = _CONTROL_NAMES.get(code, "a control character")
    line = value.count("\n", 0, found.start()) + 1
    where = f"line {line} of the text, character {found.start() - (value.rfind(chr(10), 0, found.start()) + 1) + 1}" \
        if multiline and "\n" in value else f"character {found.start() + 1}"
    what = ("must be one line" if code in (10, 13, 0x2028, 0x2029) and not multiline
            else f"contains U+{code:04X} ({name})")
    return f"{what} at {where}; remove it (plans hold plain text)"


@dataclass(frozen=True)
class Problem:
    level: str  # "error" or "warning"
    line: int | None
    message: str
    where: str = ""

    def format(self, filename: str) -> str:
        location = f"{filename}:{self.line}" if self.line else filename
        where = f"{self.where}: " if self.where else ""
        return printable(f"{location}: {self.level}: {where}{self.message}").replace("\n", "\\n")


class PlanInvalid(FatalError):
    """A plan with errors; ``problems`` holds every error and warning found."""

    def __init__(self, filename: str, problems: list[Problem]):
        self.filename = filename
        self.problems = problems
        super().__init__(format_problems(filename, problems), prefixed=False)


def format_problems(filename: str, problems: list[Problem]) -> str:
    lines = [p.format(filename) for p in problems]
    errors = sum(p.level == "error" for p in problems)
    warnings = len(problems) - errors
    lines.append(f"{filename}: {_count(errors, 'error')}, {_count(warnings, 'warning')}")
    return "\n".join(lines)


def _count(n: int, word: str) -> str:
    return f"{n} {word}" + ("" if n == 1 else "s")


@dataclass
class Task:
    id: str
    title: str
    description: str
    files: list[str] = field(default_factory=list)
    depends_on: list[str] = field(default_factory=list)
    setup: str = "auto"
    test: str | None = None
    labels: list[str] = field(default_factory=list)


@dataclass
class Plan:
    name: str
    goal: str
    base_branch: str | None  # None: origin's default branch (runs.choose_base)
    issue_mode: str
    repository: str | None
    labels: list[str]
    copy_files: list[str]
    tasks: list[Task]
    data: dict  # the plan as written (for snapshots)
    warnings: list[Problem] = field(default_factory=list)

    def task(self, task_id: str) -> Task:
        for t in self.tasks:
            if t.id == task_id:
                return t
        raise KeyError(task_id)

    def waves(self) -> list[list[str]]:
        """Task ids grouped by dependency depth: wave 0 needs nothing."""
        return dependency_waves({t.id: t.depends_on for t in self.tasks})


def dependency_waves(deps: dict[str, list[str]]) -> list[list[str]]:
    """Group ids into waves; assumes no cycles and no unknown ids. Iterative: a chain of
    any length is fine."""
    depth: dict[str, int] = {}
    for root in deps:
        if root in depth:
            continue
        stack = [(root, False)]
        while stack:
            node, expanded = stack.pop()
            if expanded:
                depth[node] = 1 + max((depth.get(d, 0) for d in deps.get(node, []) if d in deps), default=-1)
                continue
            if node in depth:
                continue
            depth[node] = 0  # guards against cycles in unvalidated input
            stack.append((node, True))
            stack.extend((d, False) for d in deps.get(node, []) if d in deps and d not in depth)
    waves: list[list[str]] = [[] for _ in range(max(depth.values(), default=-1) + 1)]
    for node in deps:  # keeps plan order inside a wave
        waves[depth[node]].append(node)
    return waves


# --------------------------------------------------------------------------
# Loading


def load_schema() -> dict:
    with open(PLAN_SCHEMA, encoding="utf-8") as f:
        return json.load(f)


def max_tasks_default() -> int:
    raw = os.environ.get("PARALLEL_MAX_TASKS", "")
    return int(raw) if raw.isdigit() and int(raw) > 0 else DEFAULT_MAX_TASKS


def load_plan_file(path: str | os.PathLike, *, max_tasks: int | None = None,
                   project: Path | None = None) -> Plan:
    """Read and validate a plan file; raise PlanInvalid listing every error."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise FatalError(f"{path}: no such plan file") from None
    except UnicodeDecodeError as e:
        raise FatalError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start})") from None
    except OSError as e:
        raise FatalError(f"{path}: cannot read: {e.strerror}") from None
    return parse_plan(text, str(path), max_tasks=max_tasks, project=project)


def parse_plan(text: str, filename: str, *, max_tasks: int | None = None,
               project: Path | None = None) -> Plan:
    problems, data = check_plan(text, max_tasks=max_tasks, project=project)
    if any(p.level == "error" for p in problems):
        raise PlanInvalid(filename, problems)
    return _build(data, [p for p in problems if p.level == "warning"])


def check_plan(text: str, *, max_tasks: int | None = None,
               project: Path | None = None) -> tuple[list[Problem], Any]:
    """Every problem in a plan's text, in line order, and the parsed data."""
    checker = _Checker(max_tasks if max_tasks is not None else max_tasks_default(), project)
    data = checker.run(text)
    problems = sorted(checker.problems, key=lambda p: (p.line or 0))
    return problems, data


def _build(data: dict, warnings: list[Problem]) -> Plan:
    defaults = data.get("defaults") or {}
    issues = data.get("issues") or {}
    tasks = []
    for t in data["tasks"]:
        tasks.append(Task(
            id=t["id"], title=t["title"].strip(), description=t["description"],
            files=list(t.get("files") or []), depends_on=list(t.get("depends_on") or []),
            setup=t.get("setup") or defaults.get("setup") or "auto",
            test=t.get("test") or defaults.get("test"),
            labels=list(t.get("labels") or []),
        ))
    return Plan(
        name=data["name"], goal=data["goal"], base_branch=data.get("base_branch") or None,
        issue_mode=issues.get("mode") or "auto", repository=issues.get("repository"),
        labels=list(issues.get("labels") or []), copy_files=list(defaults.get("copy_files") or []),
        tasks=tasks, data=data, warnings=warnings,
    )


# --------------------------------------------------------------------------
# Validation

_TYPE_NAMES = {
    "object": "a mapping", "array": "a list", "string": "a string",
    "integer": "an integer", "number": "a number", "boolean": "true or false", "null": "empty",
}


# bool before int: True is an int in Python, but "true or false" in a plan.
_JSON_TYPES = ((bool, "boolean"), (int, "integer"), (float, "number"), (str, "string"),
               (list, "array"), (dict, "object"))


def _type_of(value: Any) -> str:
    """The JSON Schema type name of a parsed YAML value."""
    if value is None:
        return "null"
    return next((name for kind, name in _JSON_TYPES if isinstance(value, kind)), type(value).__name__)


def _describe(value: Any) -> str:
    kind = _TYPE_NAMES.get(_type_of(value), _type_of(value))
    if isinstance(value, (dict, list)) or value is None:
        return kind
    shown = repr(value) if isinstance(value, str) else json.dumps(value, default=str)
    if len(shown) > 40:
        shown = shown[:37] + "..."
    return f"{kind} ({shown})"


class _Checker:
    def __init__(self, max_tasks: int, project: Path | None):
        self.max_tasks = max_tasks
        self.project = project
        self.problems: list[Problem] = []
        self.schema = load_schema()

    def add(self, level: str, node: yaml.Node | None, message: str, where: str = "") -> None:
        line = node.start_mark.line + 1 if node is not None else None
        self.problems.append(Problem(level, line, message, where))

    # -- YAML

    def structure_problem(self, text: str) -> bool:
        """Refuse what could make loading the plan hang or overflow: YAML aliases (a few
        hundred bytes of ``*ref`` can expand to billions of nodes) and deep nesting."""
        depth = 0
        try:
            for event in yaml.parse(text, Loader=yaml.SafeLoader):
                if isinstance(event, yaml.AliasEvent):
                    self.problems.append(Problem(
                        "error", event.start_mark.line + 1,
                        f"YAML alias *{event.anchor} is not allowed in a plan; write the value out in full"))
                    return True
                if isinstance(event, (yaml.SequenceStartEvent, yaml.MappingStartEvent)):
                    depth += 1
                    if depth > MAX_DEPTH:
                        self.problems.append(Problem(
                            "error", event.start_mark.line + 1,
                            f"lists and mappings are nested more than {MAX_DEPTH} deep; a plan needs 4"))
                        return True
                elif isinstance(event, (yaml.SequenceEndEvent, yaml.MappingEndEvent)):
                    depth -= 1
        except yaml.YAMLError:
            return False  # compose reports the syntax error with its line
        return False

    def run(self, text: str) -> Any:
        if self.structure_problem(text):
            return None
        try:
            node = yaml.compose(text, Loader=yaml.SafeLoader)
        except yaml.YAMLError as e:
            mark = getattr(e, "problem_mark", None)
            problem = getattr(e, "problem", None) or str(e)
            line = mark.line + 1 if mark is not None else None
            column = f" (column {mark.column + 1})" if mark is not None else ""
            self.problems.append(Problem("error", line, f"YAML syntax: {problem}{column}"))
            return None
        if node is None:
            self.problems.append(Problem("error", None, "the plan is empty"))
            return None
        try:
            data = self.to_python(node, "")
        except yaml.YAMLError as e:  # e.g. an unknown tag
            mark = getattr(e, "problem_mark", None)
            line = mark.line + 1 if mark is not None else None
            self.problems.append(Problem("error", line, f"YAML: {getattr(e, 'problem', None) or e}"))
            return None
        if not isinstance(data, dict):
            self.add("error", node, f"the plan must be a mapping of fields, got {_describe(data)}")
            return data
        self.check(node, data, self.schema, [])
        tasks_node = self.child(node, "tasks")
        if isinstance(data.get("tasks"), list) and isinstance(tasks_node, yaml.SequenceNode):
            self.check_tasks(tasks_node, data["tasks"])
        return data

    def to_python(self, node: yaml.Node, where: str) -> Any:
        """Construct the value, flagging duplicate keys (PyYAML keeps the last silently)."""
        if isinstance(node, yaml.MappingNode):
            seen: dict[Any, yaml.Node] = {}
            out = {}
            for k, v in node.value:
                key = self.to_python(k, where)
                if not isinstance(key, (str, int, float, bool)) and key is not None:
                    self.add("error", k, f"a key must be plain text, got {_describe(key)}", where)
                    continue
                if key in seen:
                    self.add("error", k, f"duplicate key '{key}' (first at line {seen[key].start_mark.line + 1})", where)
                seen[key] = k
                out[key] = self.to_python(v, where)
            return out
        if isinstance(node, yaml.SequenceNode):
            return [self.to_python(v, where) for v in node.value]
        loader = yaml.SafeLoader("")
        return loader.construct_object(node, deep=True)

    @staticmethod
    def child(node: yaml.Node, key: str) -> yaml.Node | None:
        if isinstance(node, yaml.MappingNode):
            for k, v in node.value:
                if isinstance(k, yaml.ScalarNode) and k.value == key:
                    return v
        return None

    # -- schema (the subset of JSON Schema the published file uses)

    def check(self, node: yaml.Node, value: Any, schema: dict, path: list, where: str = "") -> None:
        label = self.label(path)
        prefix = ": ".join(x for x in (where, label) if x)
        expected = schema.get("type")
        if expected and not self.type_ok(value, expected):
            if value is None and expected != "null":
                self.add("error", node, f"{label + ' ' if label else ''}is empty; expected {_TYPE_NAMES[expected]}".lstrip(), where)
            else:
                self.add("error", node, f"expected {_TYPE_NAMES[expected]}, got {_describe(value)}", prefix)
            return
        if "enum" in schema and value not in schema["enum"]:
            allowed = ", ".join(json.dumps(v) if not isinstance(v, str) else v for v in schema["enum"])
            self.add("error", node, f"{_describe(value)} is not one of: {allowed}", prefix)
        if isinstance(value, str):
            bad = control_problem(value, multiline=bool(path) and path[-1] in MULTILINE_FIELDS)
            if bad:
                self.add("error", node, bad, prefix or where)
            if len(value.strip()) < schema.get("minLength", 0):
                self.add("error", node, "must not be empty", prefix)
            if "maxLength" in schema and len(value) > schema["maxLength"]:
                self.add("error", node, f"is {len(value)} characters long; at most {schema['maxLength']}", prefix)
            if "pattern" in schema and not re.search(schema["pattern"], value):
                self.add("error", node, f"{value!r} {self.pattern_hint(path)}", prefix)
        if isinstance(value, list):
            if len(value) < schema.get("minItems", 0):
                msg = "the plan has no tasks" if path == ["tasks"] else f"needs at least {schema['minItems']} item(s)"
                self.add("error", node, msg, "" if path == ["tasks"] else prefix)
            items = schema.get("items")
            # Tasks are checked one by one in check_tasks, named by their id.
            if items is not None and path != ["tasks"] and isinstance(node, yaml.SequenceNode):
                for i, (child_node, child) in enumerate(zip(node.value, value)):
                    self.check(child_node, child, items, path + [i], where)
        if isinstance(value, dict) and isinstance(node, yaml.MappingNode):
            props = schema.get("properties", {})
            for req in schema.get("required", []):
                if req not in value:
                    self.add("error", node, f"missing required field '{req}'", prefix)
            for k_node, v_node in node.value:
                key = k_node.value if isinstance(k_node, yaml.ScalarNode) else None
                if key not in value:
                    continue
                if key in props:
                    self.check(v_node, value[key], props[key], path + [key], where)
                elif schema.get("additionalProperties") is False:
                    known = ", ".join(props)
                    self.add("warning", k_node, f"unknown field '{key}' (ignored; known fields: {known})", prefix)

    @staticmethod
    def type_ok(value: Any, expected: str) -> bool:
        actual = _type_of(value)
        return actual == expected or (expected == "number" and actual == "integer")

    @staticmethod
    def label(path: list) -> str:
        """tasks > 2 > depends_on  ->  'tasks[2] > depends_on'-like text, tasks by id elsewhere."""
        out = ""
        for p in path:
            if isinstance(p, int):
                out += f"[{p}]"
            else:
                out += (" > " if out else "") + p
        return out

    @staticmethod
    def pattern_hint(path: list) -> str:
        if path == ["name"]:
            return "is not a usable plan name: use lowercase letters, digits and '-', starting with a letter or digit, at most 63 characters"
        if path[:2] == ["issues", "repository"]:
            return "is not a repository: use OWNER/REPO or HOST/OWNER/REPO"
        return "does not have the expected form"

    # -- task rules a schema cannot express

    def task_where(self, index: int, task: Any) -> str:
        if isinstance(task, dict) and isinstance(task.get("id"), str) and task["id"].strip():
            return f"task '{task['id']}'"
        return f"task #{index + 1}"

    def check_tasks(self, tasks_node: yaml.SequenceNode, tasks: list) -> None:
        item_schema = self.schema["properties"]["tasks"]["items"]
        id_nodes: dict[str, yaml.Node] = {}
        deps: dict[str, list[str]] = {}
        dep_nodes: dict[str, yaml.Node] = {}
        for i, (node, task) in enumerate(zip(tasks_node.value, tasks)):
            where = self.task_where(i, task)
            self.check(node, task, item_schema, [], where)
            if not isinstance(task, dict):
                continue
            tid = task.get("id")
            if isinstance(tid, str):
                id_node = self.child(node, "id")
                reasons = id_problems(tid)
                if reasons:
                    self.add("error", id_node, f"id {tid!r} is not usable as a branch name or path: {'; '.join(reasons)}", where)
                if tid in id_nodes:
                    self.add("error", id_node, f"duplicate id '{tid}' (first at line {id_nodes[tid].start_mark.line + 1})", where)
                else:
                    id_nodes[tid] = id_node
                dl = task.get("depends_on")
                deps.setdefault(tid, [])
                if isinstance(dl, list):
                    deps[tid] = [d for d in dl if isinstance(d, str)]
                    dep_nodes[tid] = self.child(node, "depends_on")
        for i, (node, task) in enumerate(zip(tasks_node.value, tasks)):
            if not isinstance(task, dict) or not isinstance(task.get("id"), str):
                continue
            tid = task["id"]
            dnode = self.child(node, "depends_on")
            if not isinstance(dnode, yaml.SequenceNode):
                continue
            for item in dnode.value:
                if not isinstance(item, yaml.ScalarNode):
                    continue
                dep = item.value
                if dep == tid:
                    self.add("error", item, "depends on itself", f"task '{tid}'")
                elif dep not in id_nodes:
                    self.add("error", item, f"depends_on: unknown task '{dep}'", f"task '{tid}'")
        for cycle in find_cycles(deps):
            first = cycle[0]
            self.add("error", dep_nodes.get(first) or id_nodes.get(first),
                     "dependency cycle: " + " -> ".join(cycle + [first]))
        if len(tasks) > self.max_tasks:
            self.add("error", tasks_node,
                     f"the plan has {len(tasks)} tasks; the maximum is {self.max_tasks} "
                     "(raise it with --max-tasks or PARALLEL_MAX_TASKS)")
        self.check_overlaps(tasks_node, tasks)

    def check_overlaps(self, tasks_node: yaml.SequenceNode, tasks: list) -> None:
        owned: list[tuple[str, str, yaml.Node]] = []
        for node, task in zip(tasks_node.value, tasks):
            if not isinstance(task, dict) or not isinstance(task.get("id"), str):
                continue
            fnode = self.child(node, "files")
            if not isinstance(fnode, yaml.SequenceNode):
                continue
            for item in fnode.value:
                if isinstance(item, yaml.ScalarNode) and item.value:
                    owned.append((task["id"], item.value, item))
        repo_files = _repo_files(self.project) if self.project else None
        reported = set()
        for i, (ta, pa, node_a) in enumerate(owned):
            for tb, pb, node_b in owned[i + 1:]:
                if ta == tb or (ta, tb) in reported:
                    continue
                shared = overlap(pa, pb, repo_files)
                if shared:
                    reported.add((ta, tb))
                    self.add("warning", node_b,
                             f"tasks '{ta}' and '{tb}' both own {shared} (line {node_a.start_mark.line + 1} and here); "
                             "they may conflict when merged")


def id_problems(tid: str) -> list[str]:
    """Why an id cannot be a branch name and a folder name (empty list: fine)."""
    reasons = []
    if tid == "":
        return ["it is empty"]
    if any(c.isspace() for c in tid):
        reasons.append("contains whitespace")
    if "/" in tid or "\\" in tid:
        reasons.append("contains a slash")
    if ".." in tid:
        reasons.append("contains '..'")
    if tid.startswith("-"):
        reasons.append("starts with '-'")
    if tid.startswith("."):
        reasons.append("starts with '.'")
    if tid.endswith(".lock") or tid.endswith("."):
        reasons.append("ends with '.lock' or '.'")
    if len(tid) > MAX_ID_LENGTH:
        reasons.append(f"is {len(tid)} characters long (at most {MAX_ID_LENGTH})")
    bad = sorted({c for c in tid if not c.isspace() and c not in "/\\" and not _ID_CHARS.match(c)})
    if bad:
        reasons.append("contains " + ", ".join(repr(c) for c in bad) + " (use letters, digits, '.', '_' and '-')")
    return reasons


def find_cycles(deps: dict[str, list[str]]) -> list[list[str]]:
    """Each dependency cycle once, rotated to start at its first id in plan order.
    Iterative (a depth-first search with its own stack): a chain of any length is fine."""
    order = {n: i for i, n in enumerate(deps)}
    cycles, seen_keys = [], set()
    color: dict[str, int] = {}
    path: list[str] = []

    def found(d: str) -> None:
        cyc = path[path.index(d):]
        start = min(range(len(cyc)), key=lambda k: order[cyc[k]])
        cyc = cyc[start:] + cyc[:start]
        key = frozenset(cyc)
        if key not in seen_keys:
            seen_keys.add(key)
            cycles.append(cyc)

    for root in deps:
        if root in color:
            continue
        color[root] = 1
        path.append(root)
        work = [iter(deps.get(root, []))]
        while work:
            for d in work[-1]:
                if d not in deps or d == path[-1]:
                    continue
                if color.get(d) == 1:
                    found(d)
                elif color.get(d) is None:
                    color[d] = 1
                    path.append(d)
                    work.append(iter(deps.get(d, [])))
                    break
            else:
                work.pop()
                color[path.pop()] = 2
    return cycles


_GLOB_CHARS = set("*?[")


def overlap(a: str, b: str, repo_files: list[str] | None) -> str | None:
    """A description of what two ownership entries share, or None."""
    a, b = a.strip("/").removeprefix("./"), b.strip("/").removeprefix("./")
    glob_a, glob_b = bool(_GLOB_CHARS & set(a)), bool(_GLOB_CHARS & set(b))
    if a == b:
        return f"'{a}'"
    if not glob_a and not glob_b:
        if b.startswith(a + "/") or a.startswith(b + "/"):
            return f"'{a}' and '{b}'"
        return None
    if not glob_a and fnmatch.fnmatchcase(a, b):
        return f"'{a}' (matches '{b}')"
    if not glob_b and fnmatch.fnmatchcase(b, a):
        return f"'{b}' (matches '{a}')"
    if glob_a and glob_b and repo_files:
        for f in repo_files:
            if fnmatch.fnmatchcase(f, a) and fnmatch.fnmatchcase(f, b):
                return f"'{f}' (matches '{a}' and '{b}')"
    return None


def _repo_files(project: Path) -> list[str] | None:
    import subprocess
    try:
        out = subprocess.run(["git", "ls-files"], cwd=project, capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.splitlines() if out.returncode == 0 else None


def iter_errors(problems: Iterable[Problem]) -> list[Problem]:
    return [p for p in problems if p.level == "error"]

"""``parallel-setup plan``: validate, show, save and list plans.

/parallel:plan has Claude write a plan and save it through ``plan save``, so an
invalid plan is never saved silently.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from ..errors import FatalError
from ..gitutil import ensure_excluded
from ..paths import EXAMPLE_PLAN, PLAN_SCHEMA, find_project_root, plans_dir
from ..plans import Plan, PlanInvalid, format_problems, load_plan_file, parse_plan, printable


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("plan", help="validate, show, save and list plans",
                       description="Validate, show, save and list plans (.parallel/plans/<name>.yaml).")
    verbs = p.add_subparsers(dest="verb", metavar="VERB")
    verbs.required = True

    v = verbs.add_parser("validate", help="check a plan file and report every problem with its line",
                         description="Check a plan file and report every problem at once, each with its file, "
                                     "line and task. Exit 1 on any error; warnings alone exit 0.")
    v.add_argument("file", help="the plan file (YAML)")
    _max_tasks(v)
    v.set_defaults(func=validate)

    s = verbs.add_parser("show", help="summarize a plan: tasks, dependency waves, owned files, overlaps",
                         description="Validate a plan and summarize it: tasks, dependency waves, owned files, overlaps.")
    s.add_argument("file", nargs="?", help="the plan file, or a saved plan's name (default: the most recent plan)")
    _max_tasks(s)
    s.set_defaults(func=show)

    sv = verbs.add_parser("save", help="validate a plan and save it as .parallel/plans/<name>.yaml",
                          description="Validate a plan (from FILE, or standard input with '-' or no FILE) and "
                                      "save it as .parallel/plans/<name>.yaml. An invalid plan is not saved: its "
                                      "problems are printed and the exit status is 1. A plan of the same name "
                                      "is replaced; the old one is kept under .parallel/plans/history/.")
    sv.add_argument("file", nargs="?", default="-", help="the plan file, or '-' for standard input (default)")
    _max_tasks(sv)
    sv.set_defaults(func=save)

    ls = verbs.add_parser("list", help="list saved plans, newest first")
    ls.set_defaults(func=list_plans)

    sc = verbs.add_parser("schema", help="print the plan format's JSON Schema")
    sc.set_defaults(func=lambda args: _print_file(PLAN_SCHEMA))
    ex = verbs.add_parser("example", help="print a worked example plan")
    ex.set_defaults(func=lambda args: _print_file(EXAMPLE_PLAN))


def _max_tasks(p: argparse.ArgumentParser) -> None:
    p.add_argument("--max-tasks", type=int, default=None, metavar="N",
                   help="most tasks a plan may have (default: $PARALLEL_MAX_TASKS or 50)")


def _print_file(path: Path) -> int:
    sys.stdout.write(path.read_text(encoding="utf-8"))
    return 0


def _project(args: argparse.Namespace) -> Path:
    return find_project_root(args.project)


def validate(args: argparse.Namespace) -> int:
    project = _project(args)
    plan = load_plan_file(args.file, max_tasks=args.max_tasks, project=project)
    for w in plan.warnings:
        print(w.format(args.file), file=sys.stderr)
    print(f"{args.file}: valid plan '{plan.name}' with {len(plan.tasks)} task(s)"
          + (f", {len(plan.warnings)} warning(s)" if plan.warnings else ""))
    return 0


def resolve_plan_path(project: Path, name: str | None) -> Path:
    """A file path, a saved plan's name, or (None) the most recently saved plan."""
    if name:
        candidate = Path(name)
        if candidate.exists():
            return candidate
        saved = plans_dir(project) / (name if name.endswith(".yaml") else f"{name}.yaml")
        if saved.exists():
            return saved
        raise FatalError(f"no plan file or saved plan named '{name}' (saved plans: {plans_dir(project)})")
    plans = sorted(plans_dir(project).glob("*.yaml"), key=lambda p: p.stat().st_mtime, reverse=True)
    if not plans:
        raise FatalError(f"no saved plan in {plans_dir(project)}; create one with /parallel:plan <goal>")
    return plans[0]


def show(args: argparse.Namespace) -> int:
    project = _project(args)
    path = resolve_plan_path(project, args.file)
    plan = load_plan_file(path, max_tasks=args.max_tasks, project=project)
    print(summarize(plan, display_path(project, path)))
    return 0


def display_path(project: Path, path: Path) -> str:
    """A path relative to the project when it is inside it (shorter, and stable in output)."""
    try:
        return str(Path(path).resolve().relative_to(project))
    except ValueError:
        return str(path)


DEFAULT_BASE = "origin's default branch"


def summarize(plan: Plan, filename: str) -> str:
    """The human summary: waves, tasks, owned files, overlaps."""
    waves = plan.waves()
    lines = [f"Plan '{plan.name}': {plan.goal.strip().splitlines()[0]}",
             f"File: {filename}",
             f"Base branch: {plan.base_branch or DEFAULT_BASE}; issues: {plan.issue_mode}"
             + (f" ({plan.repository})" if plan.repository else "")
             + (f"; labels: {', '.join(plan.labels)}" if plan.labels else ""),
             f"{len(plan.tasks)} task(s) in {len(waves)} wave(s)"]
    width = max(len(t.id) for t in plan.tasks)
    for n, wave in enumerate(waves, 1):
        lines.append("")
        lines.append(f"Wave {n} " + ("(starts at once)" if n == 1 else f"(after wave {n - 1})"))
        for tid in wave:
            t = plan.task(tid)
            after = f"  [after: {', '.join(t.depends_on)}]" if t.depends_on else ""
            lines.append(f"  {t.id.ljust(width)}  {t.title}{after}")
            if t.files:
                lines.append(f"  {' ' * width}  owns: {', '.join(t.files)}")
    overlaps = [w for w in plan.warnings if "both own" in w.message]
    lines.append("")
    lines.append("Overlaps: " + ("none" if not overlaps else ""))
    for w in overlaps:
        lines.append(f"  line {w.line}: {w.message}")
    others = [w for w in plan.warnings if w not in overlaps]
    if others:
        lines.append("Warnings:")
        lines.extend(f"  {w.format(filename)}" for w in others)
    return printable("\n".join(lines))  # plan text never reaches the terminal raw


def _keep_draft(project: Path, raw: bytes) -> str:
    """Keep rejected standard input byte for byte under drafts/; the sentence that says where."""
    drafts = plans_dir(project) / "drafts"
    draft = drafts / f"rejected-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.yaml"
    try:
        drafts.mkdir(parents=True, exist_ok=True)
        draft.write_bytes(raw)
    except OSError as e:
        return (f"\nThe plan was NOT saved, and your text could not be kept in {drafts} ({e.strerror}): "
                "make that folder writable, or copy the text from where you wrote it.")
    return f"\nThe plan was NOT saved; your text is kept, byte for byte, in {draft}"


def _utf8(raw: bytes, source: str) -> tuple[str | None, str | None]:
    """(text, None), or (None, the error naming the first bad byte's line and column)."""
    try:
        return raw.decode("utf-8"), None
    except UnicodeDecodeError as e:
        line = raw.count(b"\n", 0, e.start) + 1
        column = e.start - (raw.rfind(b"\n", 0, e.start) + 1) + 1
        return None, (f"{source}:{line}: error: not UTF-8 text: byte 0x{raw[e.start]:02x} at column {column} "
                      f"({e.reason}); save the plan as UTF-8")


def save(args: argparse.Namespace) -> int:
    project = _project(args)
    if args.file == "-":
        raw, source = sys.stdin.buffer.read(), "<stdin>"
    else:
        try:
            raw, source = Path(args.file).read_bytes(), args.file
        except OSError as e:
            raise FatalError(f"{args.file}: cannot read: {e.strerror}") from None
    text, problem = _utf8(raw, source)
    if problem is None:
        try:
            plan = parse_plan(text, source, max_tasks=args.max_tasks, project=project)
        except PlanInvalid as e:
            problem = format_problems(source, e.problems)
    if problem is not None:
        # keep what was typed: lose nothing
        kept = _keep_draft(project, raw) if args.file == "-" else "\nThe plan was NOT saved."
        raise FatalError(problem + kept, prefixed=False) from None
    ensure_excluded(project)
    target_dir = plans_dir(project)
    target_dir.mkdir(parents=True, exist_ok=True)
    target = target_dir / f"{plan.name}.yaml"
    if target.exists() and target.read_bytes() != raw:
        history = target_dir / "history"
        history.mkdir(exist_ok=True)
        os.replace(target, history / f"{plan.name}-{time.strftime('%Y%m%d-%H%M%S')}.yaml")
    tmp = target.with_suffix(f".tmp{os.getpid()}")
    tmp.write_bytes(raw)  # the user's bytes, unchanged
    os.replace(tmp, target)
    shown = display_path(project, target)
    for w in plan.warnings:
        print(w.format(str(shown)), file=sys.stderr)
    print(f"Saved {shown}\n")
    print(summarize(plan, str(shown)))
    print(f"\nNext: /parallel:execute {plan.name}")
    return 0


def list_plans(args: argparse.Namespace) -> int:
    project = _project(args)
    plans = sorted(plans_dir(project).glob("*.yaml"), key=lambda p: p.stat().st_mtime, reverse=True)
    if not plans:
        print(f"No saved plans in {plans_dir(project)}.")
        return 0
    for p in plans:
        stamp = time.strftime("%Y-%m-%d %H:%M", time.localtime(p.stat().st_mtime))
        print(f"{stamp}  {printable(p.stem)}")
    return 0

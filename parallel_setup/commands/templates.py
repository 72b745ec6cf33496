"""``parallel-setup templates``: find, eject, compare and check the prompt and setup templates.

The verbs (the work is in ``parallel_setup/overrides.py``):

* ``list``: every template, what it renders, its blocks and variables, the file in effect;
* ``show NAME [--builtin]``: the effective (or shipped) source;
* ``eject NAME [--user] [--block BLOCK [--append TEXT]]``: a stamped copy to change;
* ``diff [NAME]``: an override against the built-in it came from and today's;
* ``check [PLAN]``: render every effective template; exit 1 on any error.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Optional

from .. import overrides
from ..paths import find_project_root
from .. import render
from ..render import make_environment

HELP = "list, show, eject, diff and check the prompt and setup templates (your overrides)"

DESCRIPTION = """\
The templates parallel renders (each subagent's prompt, each task's setup
script, the issue title and body, the report instructions, execute's spawn
instructions) and your overrides of them. A file of the same name in the
repository's .parallel/templates/ (commit it: the team shares it) or in
~/.config/parallel-setup/templates/ (every repository) overrides the built-in.

An override can extend the built-in and change one block, so it keeps every
later improvement of the rest:

  parallel-setup templates eject subagent-prompt.md.j2 --block commit \\
      --append 'Run `make lint` before every commit and fix what it reports.'
  parallel-setup templates check
  git add .parallel/templates && git commit -m "prompt: make lint before commits"

execute runs the same check first and starts no run whose templates do not render."""


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("templates", help=HELP, description=DESCRIPTION,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    verbs = p.add_subparsers(dest="templates_command", metavar="VERB")
    verbs.required = True

    ls = verbs.add_parser("list", help="every template, what it renders, its blocks, and the file in effect",
                          description="Every template: what it renders, its blocks, the variables it uses, and "
                                      "where the one in effect comes from (builtin, the repository's "
                                      ".parallel/templates/, the user's ~/.config/parallel-setup/templates/).")
    ls.set_defaults(func=run_list)

    show = verbs.add_parser("show", help="print a template's source (the one in effect)",
                            description="Print the source of the template in effect (an override, if any), "
                                        "or with --builtin the shipped one.")
    show.add_argument("name", metavar="NAME", help="a template name, such as setup.sh.j2")
    show.add_argument("--builtin", action="store_true", help="the shipped template, even when overridden")
    show.set_defaults(func=run_show)

    ej = verbs.add_parser("eject", help="copy a built-in template into .parallel/templates/ to change it",
                          description="Copy the built-in template into the repository's .parallel/templates/ "
                                      "(--user: ~/.config/parallel-setup/templates/), stamped with the plugin "
                                      "version and the hash of the built-in (kept under .originals/ for diff). "
                                      "With --block, write a template that extends the built-in and overrides "
                                      "only that block, keeping its text ({{ super() }}). Never overwrites an "
                                      "existing override.")
    ej.add_argument("name", metavar="NAME", help="a template name, such as subagent-prompt.md.j2")
    ej.add_argument("--user", action="store_true", help="into the user-level folder (every repository)")
    ej.add_argument("--block", metavar="BLOCK", help="override only this block (see `templates list`)")
    ej.add_argument("--append", metavar="TEXT", help="with --block: text added after the block's built-in text")
    ej.set_defaults(func=run_eject)

    df = verbs.add_parser("diff", help="an override against the built-in it came from and today's built-in",
                          description="Show each override (or NAME's) against the built-in it was ejected from "
                                      "and against today's built-in, with a warning when the built-in changed "
                                      "since the eject (after a plugin update) and what changed. Exit status 1 "
                                      "when an override is stale.")
    df.add_argument("name", nargs="?", metavar="NAME", help="one template (default: every override)")
    df.add_argument("--accept", action="store_true",
                    help="with NAME: record today's built-in as the one the override is based on (once it has "
                         "what it needs), so diff and check stop warning")
    df.set_defaults(func=run_diff)

    ck = verbs.add_parser("check", help="render every template in effect against a plan and hostile text",
                          description="Render every template in effect against a plan (PLAN, else the most "
                                      "recently saved plan, else the shipped example) and against hostile plan "
                                      "text, and report each error with its file, line and the missing or "
                                      "misspelt variable (with the closest known one), and a warning for a "
                                      "value an override puts into bash without the sh filter. Exit status 1 "
                                      "on any error.")
    ck.add_argument("plan", nargs="?", metavar="PLAN", help="a plan file or a saved plan's name")
    ck.set_defaults(func=run_check)


def _project(args: argparse.Namespace) -> Optional[Path]:
    return find_project_root(args.project)


def run_list(args: argparse.Namespace) -> int:
    print(format_list(_project(args)), end="")
    return 0


def format_list(project: Optional[Path]) -> str:
    env = make_environment(project)
    out = []
    for t in overrides.sources(project):
        text = t.text()
        mark = "  [override]" if t.overridden else ""
        out.append(f"{t.name}{mark}")
        out.append(f"  renders:   {overrides.RENDERS[t.name]}")
        where = "built-in" if not t.overridden else f"{t.effective.kind}: {overrides.display(t.effective.path, project)}"
        if t.overridden and overrides.extends_builtin(text):
            changed = list(overrides.replaced_blocks(text))
            where += (", extends the built-in, overrides block" + ("s " if len(changed) > 1 else " ")
                      + (", ".join(changed) or "none"))
        if t.overridden and overrides.staleness(project, t).stale:
            where += " (STALE: the built-in changed since the eject; see `templates diff`)"
        out.append(f"  in effect: {where}")
        for s in t.shadowed:
            if s.kind != "built-in":
                out.append(f"  shadowed:  {s.kind}: {overrides.display(s.path, project)}")
        names = list(overrides.blocks(overrides.builtin_text(t.name)))
        if names:
            out.append(f"  blocks:    {' '.join(names)}")
        out.append(f"  variables: {' '.join(overrides.variables_used(env, t.name)) or 'none'}")
    for path, close in overrides.stray_files(project):
        out.append(f"warning: {overrides.display(path, project)} is not a template name, so it is never used"
                   + (f"; did you mean {close}?" if close else ""))
    out.append("")
    out.append("Overrides: .parallel/templates/ (this repository; commit it to share) and "
               "~/.config/parallel-setup/templates/ (every repository), in that order, before the built-in. "
               "An override can {% extends \"builtin/NAME\" %} and replace one block.")
    return "\n".join(out) + "\n"


def run_show(args: argparse.Namespace) -> int:
    project = _project(args)
    t = overrides.info(project, args.name)
    if args.builtin:
        path, text = render.TEMPLATES_DIR / t.name, overrides.builtin_text(t.name)
    else:
        path, text = t.effective.path, t.text()
    print(f"# {overrides.display(path, project)}", file=sys.stderr)
    sys.stdout.write(text)
    return 0


def run_eject(args: argparse.Namespace) -> int:
    project = _project(args)
    target = overrides.eject(project, args.name, user=args.user, block=args.block, append=args.append)
    shown = overrides.display(target, project)
    what = f"block {args.block} of builtin/{args.name}" if args.block else f"builtin/{args.name}"
    print(f"Ejected {what} to {shown}; the built-in it came from is kept in "
          f"{overrides.display(target.parent / overrides.ORIGINALS_DIRNAME, project)}/ for `templates diff`.")
    print(f"Edit it, run `parallel-setup templates check`, and commit {overrides.display(target.parent, project)}/"
          if not args.user else "Edit it, then run `parallel-setup templates check`.")
    return 0


def run_diff(args: argparse.Namespace) -> int:
    project = _project(args)
    if args.accept:
        if not args.name:
            raise overrides.OverrideError("--accept needs the template's NAME")
        path = overrides.accept(project, args.name)
        print(f"{overrides.display(path, project)} is now based on today's built-in {args.name} "
              f"(parallel-setup {overrides.__version__}).")
        return 0
    text, stale = overrides.diff(project, args.name)
    print(text, end="")
    return 1 if stale else 0


def run_check(args: argparse.Namespace) -> int:
    project = _project(args)
    plan, shown = overrides.plan_for_check(project, args.plan)
    report = overrides.check(project, plan, shown)
    print(report.format(), end="")
    return 1 if report.errors else 0

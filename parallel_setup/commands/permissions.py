"""``parallel-setup permissions``: the repository's opt-in for the subagents' own work.

Whatever the setting, the hooks approve each launched task's setup command (and nothing else):
that is what lets a run start in Claude Code's ``default`` and ``acceptEdits`` modes. With the
opt-in on, they also approve a run's subagent's own work inside its own worktree (see
``parallel_setup/hooks/permissions.py`` for exactly what). The setting lives in
``.parallel/permissions.json``, per machine (``.parallel/`` is excluded from git).
"""

from __future__ import annotations

import argparse
import json
import os
import time

from .. import trusted
from ..gitutil import ensure_excluded
from ..hooks.permissions import OPT_IN, opt_in_setting, opted_in
from ..paths import find_project_root

HELP = "let a run's subagents work inside their own worktrees without permission prompts (opt-in)"

DESCRIPTION = """\
Claude Code asks before a subagent runs a command or edits a file, unless the
session bypasses permissions. parallel always approves one command per task:
its setup script (`bash .parallel/runs/<run>/tasks/<task>/setup.sh`, the file
execute rendered). The rest of a subagent's work follows your permission rules.

`permissions on` lets the subagents of this repository's runs also do exactly
their own work without prompts: Read, Edit and Write of files inside their own
worktree (never its .git), and `cd <worktree> && ...` running the task's test
command, `git add` of files inside it, `git commit -m`, `git push [-u] origin
<its branch>`, `git status/log/diff/rev-parse HEAD`, and `gh issue comment` on
its own issue. Nothing outside the worktree, nothing for other agents or for
you: those calls still follow your rules. Per machine (.parallel/ is not
committed; `permissions on` also records it under ~/.local/state/parallel-setup/,
outside the project, so a file written there by anyone else does not count);
`permissions off` turns it off."""

STATES = {True: "on", False: "off"}


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("permissions", help=HELP, description=DESCRIPTION,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    verbs = p.add_subparsers(dest="permissions_command", metavar="VERB")
    verbs.required = True
    for verb, text in (("on", "approve the subagents' own work inside their worktrees"),
                       ("off", "only approve the setup scripts; the rest follows your rules"),
                       ("status", "show the setting")):
        v = verbs.add_parser(verb, help=text, description=text[0].upper() + text[1:] + ".")
        if verb == "status":
            v.add_argument("--json", action="store_true", help="as JSON")
        v.set_defaults(func=run, verb=verb)


def summary_line(project) -> str:
    """One line about the setting, as execute and status print it."""
    if opted_in(os.fspath(project)):
        return "Permissions: setups approved; subagents work in their worktrees without prompts (opt-in on)"
    return ("Permissions: setups approved; the subagents' other calls follow your rules "
            "(/parallel:permissions on lets them work in their worktrees without prompts)")


def run(args: argparse.Namespace) -> int:
    project = find_project_root(args.project)
    path = project / OPT_IN
    if args.verb in ("on", "off"):
        ensure_excluded(project)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}")
        tmp.write_text(json.dumps({"worktree_work": args.verb == "on", "set_at": time.time()}) + "\n",
                       encoding="utf-8")
        os.replace(tmp, path)
        trusted.record_opt_in(project, args.verb == "on")
    on = opted_in(str(project))
    if getattr(args, "json", False):
        print(json.dumps({"worktree_work": on, "setting": str(path)}))
        return 0
    print(f"Subagents' work inside their worktrees: {STATES[on]} (setting: {OPT_IN}).")
    if not on and opt_in_setting(str(project)):
        print(f"{OPT_IN} says on, but it was not turned on with `parallel-setup permissions on` on this "
              "machine (a file anyone may write is not enough): run that to turn it on.")
    print(summary_line(project))
    return 0

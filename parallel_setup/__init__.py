"""parallel: plan a goal as independent tasks and run them as parallel subagents.

Each subagent sets up its own GitHub issue, git worktree and environment as its
first action (the Parallel Setup Pattern), instead of the main agent doing all
setup one task after another.

This package is imported by the hook scripts, which may only use the standard
library: keep this module (and ``paths``, ``events``, ``hooks``) free of
third-party imports.
"""

__version__ = "0.1.0"

"""Where things are: the plugin's own files, and the state it keeps in a project.

Everything is located from this file's own location, never from a folder name:
Claude Code installs a plugin into a version-named cache folder.
Standard library only (hooks import this).
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
#: The plugin folder (the repository root) when running from it; for a
#: ``pip install``-ed package this is site-packages and is not used for data.
PLUGIN_ROOT = PACKAGE_DIR.parent


def _data_dir(name: str) -> Path:
    """A data folder shipped beside the package (plugin) or inside it (wheel)."""
    inside = PACKAGE_DIR / name
    if inside.is_dir():
        return inside
    return PLUGIN_ROOT / name


#: A task's branch and worktree: ``feature/task-N`` on ``worktrees/task-N`` where N is its
#: GitHub issue number (the pattern's convention); local issue N (``.parallel/issues/N.md``)
#: has ``feature/local-N`` on ``worktrees/local-N``, so the two numberings never share a name.
BRANCH_PREFIX = "feature/task-"
WORKTREE_PREFIX = "worktrees/task-"
LOCAL_BRANCH_PREFIX = "feature/local-"
LOCAL_WORKTREE_PREFIX = "worktrees/local-"


def name_prefixes(mode: str) -> "tuple[str, str]":
    """(branch prefix, worktree prefix) of an issue mode (``github`` or ``local``)."""
    if mode == "local":
        return LOCAL_BRANCH_PREFIX, LOCAL_WORKTREE_PREFIX
    return BRANCH_PREFIX, WORKTREE_PREFIX


TEMPLATES_DIR = _data_dir("templates")
SCHEMAS_DIR = _data_dir("schemas")
PLAN_SCHEMA = SCHEMAS_DIR / "plan.schema.json"
EXAMPLE_PLAN = SCHEMAS_DIR / "example-plan.yaml"

STATE_DIRNAME = ".parallel"
WORKTREES_DIRNAME = "worktrees"


def find_project_root(start: str | os.PathLike | None = None) -> Path:
    """The git top level containing ``start`` (default: cwd), else ``start`` itself.

    A worktree inside ``worktrees/`` maps back to the main checkout, so a
    subagent working in its worktree still finds the run state.
    """
    start_path = Path(start or os.getcwd()).resolve()
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--path-format=absolute", "--git-common-dir"],
            cwd=start_path, capture_output=True, text=True, timeout=10,
        )
    except (OSError, subprocess.SubprocessError):
        return start_path
    if out.returncode != 0 or not out.stdout.strip():
        return start_path
    common = Path(out.stdout.strip())
    if common.name == ".git":
        return common.parent
    return start_path


def state_dir(project: Path) -> Path:
    return project / STATE_DIRNAME


def plans_dir(project: Path) -> Path:
    return state_dir(project) / "plans"


def runs_dir(project: Path) -> Path:
    return state_dir(project) / "runs"


def run_dir(project: Path, run_id: str) -> Path:
    return runs_dir(project) / run_id


def task_dir(project: Path, run_id: str, task_id: str) -> Path:
    return run_dir(project, run_id) / "tasks" / task_id


def user_templates_dirs(project: Path | None) -> list[Path]:
    """Override folders, highest priority first: the project's, then the user's."""
    dirs = []
    if project is not None:
        dirs.append(state_dir(project) / "templates")
    config_home = os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    dirs.append(Path(config_home) / "parallel-setup" / "templates")
    return dirs

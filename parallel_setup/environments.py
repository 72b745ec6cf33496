"""A worktree's environment step: what ``setup: auto`` runs, and what the environment depends on.

One table (``AUTO``) says which installer runs for which project file; both the setup
script (``templates/setup.sh.j2``, at the task's setup) and the worktree pool's fill
(``pool.fill``, ahead of time) walk it the same way:

* the rows come in groups (Python, Node, Rust, Go, Ruby); in each group the first
  row whose file is in the worktree decides the file;
* among that file's rows, the first whose tool is installed runs; when none is, the
  step is skipped with a note ("uv.lock found, uv not installed").

The fast installers come first where they are present: uv before pip (uv also makes
the venv), pnpm for a pnpm lockfile, npm with ``--prefer-offline`` (it takes what is in
its cache without asking the registry again). Their caches are the per-user defaults
(``~/.cache/uv``, ``~/.cache/pip``, ``~/.npm``, pnpm's store), shared by every worktree:
a second worktree installs from the cache (uv and pnpm hard-link from it) instead of
downloading again.

The environment's *key* (``key_parts``) is what it depends on: the setup command and
the git blob of every file the table names, at a commit. A pool worktree filled with
key K is ready for a task whose key is K; otherwise the task's setup runs the step.

Moving a worktree (the pool's claim is a ``git worktree move``) breaks a Python venv:
its scripts' ``#!`` lines, its ``activate`` scripts and the editable install's ``.pth``
file name the old folder. The setup script rewrites the old folder's path to the new
one in exactly those text files (``relocate_venvs`` in setup.sh.j2; milliseconds,
against 1.2 s for uv or 5.4 s for pip to reinstall the project). ``node_modules``
holds relative links and survives the move as it is.
Standard library only.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Tuple

_UV_VENV = "uv venv -q --allow-existing .venv && uv pip install --python .venv/bin/python"
_PIP_VENV = "python3 -m venv .venv && .venv/bin/python -m pip install --disable-pip-version-check"
_NPM = "--prefer-offline --no-audit --no-fund"


@dataclass(frozen=True)
class Installer:
    group: str
    file: str   # the project file that selects this row (relative to the worktree)
    tool: str   # the program that must be on PATH
    shown: str  # what setup.json's "env" and the log call it
    command: str  # run with bash -c in the worktree


AUTO: Tuple[Installer, ...] = (
    Installer("python", "uv.lock", "uv", "uv sync", "uv sync --frozen"),
    Installer("python", "requirements.txt", "uv", "uv pip install -r requirements.txt (.venv)",
              f"{_UV_VENV} -r requirements.txt"),
    Installer("python", "requirements.txt", "python3", "pip install -r requirements.txt (.venv)",
              f"{_PIP_VENV} -r requirements.txt"),
    Installer("python", "pyproject.toml", "uv", "uv pip install -e . (.venv)", f"{_UV_VENV} -e ."),
    Installer("python", "pyproject.toml", "python3", "pip install -e . (.venv)", f"{_PIP_VENV} -e ."),
    Installer("python", "setup.py", "uv", "uv pip install -e . (.venv)", f"{_UV_VENV} -e ."),
    Installer("python", "setup.py", "python3", "pip install -e . (.venv)", f"{_PIP_VENV} -e ."),
    Installer("node", "pnpm-lock.yaml", "pnpm", "pnpm install --frozen-lockfile",
              "pnpm install --frozen-lockfile --prefer-offline"),
    Installer("node", "yarn.lock", "yarn", "yarn install --frozen-lockfile",
              "yarn install --frozen-lockfile --prefer-offline"),
    Installer("node", "package-lock.json", "npm", "npm ci", f"npm ci {_NPM}"),
    Installer("node", "package.json", "npm", "npm install", f"npm install {_NPM}"),
    Installer("rust", "Cargo.toml", "cargo", "cargo fetch", "cargo fetch"),
    Installer("go", "go.mod", "go", "go mod download", "go mod download"),
    Installer("ruby", "Gemfile", "bundle", "bundle install", "bundle install"),
)

#: Every file an environment is keyed on (the table's files, and the lockfiles they pair with).
KEY_FILES: Tuple[str, ...] = tuple(dict.fromkeys(
    [i.file for i in AUTO] + ["Cargo.lock", "go.sum", "Gemfile.lock", "poetry.lock", "Pipfile.lock",
                              ".python-version", ".nvmrc"]))


def auto_rows() -> List[Dict[str, str]]:
    """The table as the setup script's template reads it."""
    return [{"group": i.group, "file": i.file, "tool": i.tool, "shown": i.shown, "command": i.command}
            for i in AUTO]


def choose(worktree: Path, which) -> Tuple[List[Installer], List[str]]:
    """(installers to run, skipped notes) for a worktree; ``which(tool)`` says whether a tool is on PATH.

    The same walk as ``env_auto`` in setup.sh.j2.
    """
    chosen: List[Installer] = []
    skipped: List[str] = []
    groups = list(dict.fromkeys(i.group for i in AUTO))
    for group in groups:
        rows = [i for i in AUTO if i.group == group]
        file = next((i.file for i in rows if (worktree / i.file).exists()), None)
        if file is None:
            continue
        candidates = [i for i in rows if i.file == file]
        pick = next((i for i in candidates if which(i.tool)), None)
        if pick:
            chosen.append(pick)
        else:
            skipped.append(f"{candidates[0].shown} ({file} found, {candidates[0].tool} not installed)")
    return chosen, skipped


def setup_digest(setup: str) -> str:
    return hashlib.sha256(setup.encode("utf-8")).hexdigest()[:16]


def key_parts(project: Path, commit: str, setup: str) -> List[str]:
    """What an environment set up with ``setup`` at ``commit`` depends on, one fact a line.

    ``setup <digest>`` and ``file <path> <blob>`` for each key file present at the commit.
    Empty when the setup is ``none`` (nothing to install, nothing to match).
    """
    if setup.strip() == "none":
        return []
    parts = [f"setup {setup_digest(setup)}"]
    for path, blob in sorted(_key_blobs(str(project), commit).items()):
        parts.append(f"file {path} {blob}")
    return parts


_BLOBS: Dict[Tuple[str, str], Dict[str, str]] = {}


def _key_blobs(project: str, commit: str) -> Dict[str, str]:
    """The key files' blob ids at a commit (one ``git ls-tree``; cached per commit)."""
    cached = _BLOBS.get((project, commit))
    if cached is not None:
        return cached
    proc = subprocess.run(["git", "-C", project, "ls-tree", "-z", commit, "--", *KEY_FILES],
                          capture_output=True, text=True)
    blobs: Dict[str, str] = {}
    for entry in proc.stdout.split("\0"):
        meta, _, path = entry.partition("\t")
        fields = meta.split()
        if len(fields) == 3 and fields[1] == "blob":
            blobs[path] = fields[2]
    if proc.returncode == 0:
        _BLOBS[(project, commit)] = blobs
    return blobs


class _Discard:
    """A log that keeps nothing (a fill without a log)."""

    def write(self, text: str) -> int:
        return len(text)

    def flush(self) -> None:
        pass


def run_installers(worktree: Path, setup: str, env: Optional[Mapping[str, str]], log, timeout: float = 1800
                   ) -> Tuple[bool, str]:
    """Run the environment step in a worktree (the pool's fill); (ok, what ran or why it failed)."""
    import shutil
    import time
    run_env = dict(env if env is not None else os.environ)
    if log is None:
        log = _Discard()
    if setup.strip() == "none":
        return True, "none"
    if setup.strip() == "auto":
        chosen, skipped = choose(worktree, lambda tool: shutil.which(tool, path=run_env.get("PATH")))
        steps = [(i.shown, i.command) for i in chosen]
    else:
        steps, skipped = [(setup.strip().splitlines()[0], setup)], []
    done = []
    for shown, command in steps:
        t0 = time.time()
        print(f"{time.strftime('%H:%M:%S')} env: running {shown} in {worktree.name}", file=log, flush=True)
        proc = subprocess.run(["bash", "-c", command], cwd=worktree, env=run_env, stdin=subprocess.DEVNULL,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=timeout)
        for line in proc.stdout.splitlines():
            print(f"{time.strftime('%H:%M:%S')}   {line}", file=log)
        if proc.returncode != 0:
            tail = " | ".join(l.strip() for l in proc.stdout.strip().splitlines()[-3:])
            return False, f"'{shown}' failed with exit status {proc.returncode}: {tail}"
        print(f"{time.strftime('%H:%M:%S')} env: {shown} done ({time.time() - t0:.1f} s)", file=log, flush=True)
        done.append(shown)
    if skipped:
        done.append("skipped: " + ", ".join(skipped))
    return True, "; ".join(done) or "nothing detected"

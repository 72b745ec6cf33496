"""Shared fixtures: isolated git config, real repositories, a relocated plugin copy."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from tests.support.git import make_repo

REPO_ROOT = Path(__file__).resolve().parent.parent
#: What a plugin install copies (Claude Code copies the whole plugin folder).
PLUGIN_PARTS = [".claude-plugin", "commands", "agents", "hooks", "scripts", "templates",
                "schemas", "parallel_setup", "README.md", "LICENSE", "assets"]


#: Build and install artefacts no test may leave in the checkout (a plugin install copies the folder).
ARTEFACTS = ["build", "dist", "node_modules", "*.egg-info"]


def _artefacts() -> set:
    return {p.name for pattern in ARTEFACTS for p in REPO_ROOT.glob(pattern)}


@pytest.fixture(autouse=True, scope="session")
def _checkout_stays_clean():
    """Fails the session (at teardown) when a test left build/, *.egg-info... in the plugin folder."""
    before = _artefacts()
    yield
    left = sorted(_artefacts() - before)
    assert not left, f"tests left {', '.join(left)} in {REPO_ROOT}: build from a copy, install outside the checkout"


@pytest.fixture(autouse=True, scope="session")
def _isolated_git_config(tmp_path_factory):
    """No user or system git config, a fixed identity: results cannot depend on the machine."""
    cfg = tmp_path_factory.mktemp("gitconfig") / "config"
    cfg.write_text("[init]\n\tdefaultBranch = main\n[advice]\n\tdetachedHead = false\n")
    saved = {k: os.environ.get(k) for k in ("GIT_CONFIG_GLOBAL", "GIT_CONFIG_NOSYSTEM", "GIT_AUTHOR_NAME",
                                            "GIT_AUTHOR_EMAIL", "GIT_COMMITTER_NAME", "GIT_COMMITTER_EMAIL")}
    os.environ.update(GIT_CONFIG_GLOBAL=str(cfg), GIT_CONFIG_NOSYSTEM="1",
                      GIT_AUTHOR_NAME="Test", GIT_AUTHOR_EMAIL="test@example.invalid",
                      GIT_COMMITTER_NAME="Test", GIT_COMMITTER_EMAIL="test@example.invalid")
    yield
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


@pytest.fixture(autouse=True)
def _isolated_port_leases(tmp_path_factory, monkeypatch):
    """Port leases (parallel_setup/ports.py) in a folder of each test, not the user's: the first block is 0."""
    monkeypatch.setenv("PARALLEL_PORTS_DIR", str(tmp_path_factory.mktemp("port-leases")))


@pytest.fixture(autouse=True, scope="session")
def _isolated_state_home(tmp_path_factory):
    """What the permission hook trusts (parallel_setup/trusted.py) goes to a temp folder, never the real home."""
    saved = os.environ.get("XDG_STATE_HOME")
    os.environ["XDG_STATE_HOME"] = str(tmp_path_factory.mktemp("state-home"))
    yield
    if saved is None:
        os.environ.pop("XDG_STATE_HOME", None)
    else:
        os.environ["XDG_STATE_HOME"] = saved


@pytest.fixture
def repo(tmp_path) -> Path:
    """A real repository with one commit on main and a bare local origin."""
    return make_repo(tmp_path)


@pytest.fixture(scope="session")
def plugin_copy(tmp_path_factory) -> Path:
    """The plugin copied to a folder with another name (as Claude Code's version-named cache)."""
    dest = tmp_path_factory.mktemp("cache") / "parallel-0.1.0-renamed"
    dest.mkdir()
    for part in PLUGIN_PARTS:
        src = REPO_ROOT / part
        if src.is_dir():
            shutil.copytree(src, dest / part, ignore=shutil.ignore_patterns("__pycache__"))
        elif src.exists():
            shutil.copy2(src, dest / part)
    return dest

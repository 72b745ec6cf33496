"""Pytest fixtures and helpers for driving the real ``gh`` CLI against a fake GitHub.

Use them from a test module (or list this module in ``pytest_plugins``)::

    from tests.support.github import fake_github, gh_env, requires_gh, run_gh  # noqa: F401

    @requires_gh
    def test_create(fake_github, gh_env):
        result = run_gh(gh_env, "issue", "create", "-R", REPO, "--title", "T", "--body", "B")
        assert result.stdout == "https://github.localhost/acme/widgets/issues/1\\n"
"""

from __future__ import annotations

import shutil
import subprocess
from typing import Dict, Iterator

import pytest

from parallel_setup.fake_github import FakeGitHub

#: The repository most tests use, as ``gh -R`` wants it.
REPO = "github.localhost/acme/widgets"

GH = shutil.which("gh")

#: Skip a test when the ``gh`` CLI is missing (CI installs it).
requires_gh = pytest.mark.skipif(GH is None, reason="the gh CLI is not on PATH (CI installs it)")


@pytest.fixture
def fake_github() -> Iterator[FakeGitHub]:
    """A started :class:`FakeGitHub` with default settings, stopped after the test."""
    with FakeGitHub() as server:
        yield server


@pytest.fixture
def gh_env(fake_github: FakeGitHub, tmp_path_factory: pytest.TempPathFactory) -> Dict[str, str]:
    """The environment for ``gh`` against ``fake_github``, with a fresh GH_CONFIG_DIR."""
    return fake_github.env(config_dir=str(tmp_path_factory.mktemp("gh-config")))


def run_gh(env: Dict[str, str], *args: str, timeout: float = 60) -> "subprocess.CompletedProcess[str]":
    """Run ``gh ARGS`` with ``env`` and capture text output; never raises on failure."""
    return subprocess.run([GH or "gh", *args], env=env, capture_output=True, text=True,
                          timeout=timeout, stdin=subprocess.DEVNULL)

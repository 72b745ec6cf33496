"""./run-tests and .ci/run on a Python that refuses system installs (PEP 668), from a clean copy.

./run-tests makes its own virtual environment outside the checkout and installs
pyproject.toml's lists into it; nothing lands in the checkout or the system Python.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.support.claude_cli import find_claude
from tests.support.git import git

ROOT = Path(__file__).resolve().parent.parent
DEBIAN_PYTHON = Path("/usr/bin/python3")


def _refuses_system_installs(python: Path) -> bool:
    if not python.exists():
        return False
    probe = subprocess.run([str(python), "-c", "import os, sys, sysconfig; print(sys.prefix == sys.base_prefix "
                            "and os.path.isfile(os.path.join(sysconfig.get_path('stdlib'), 'EXTERNALLY-MANAGED')))"],
                           capture_output=True, text=True)
    return probe.stdout.strip() == "True"


def clean_copy(dest: Path) -> Path:
    """The checkout's tracked files (as committed or edited), as a clean clone would have them."""
    files = git(ROOT, "ls-files", "-z").stdout.split("\0")
    for name in filter(None, files):
        src = ROOT / name
        if src.is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / name)
    return dest


def listing(folder: Path) -> set:
    return {str(p.relative_to(folder)) for p in folder.rglob("*") if "__pycache__" not in p.parts}


@pytest.mark.skipif(not _refuses_system_installs(DEBIAN_PYTHON),
                    reason="needs a python3 that refuses system installs (Debian's or Ubuntu's)")
def test_run_tests_installs_into_its_own_venv_on_a_python_that_refuses_system_installs(tmp_path):
    claude = find_claude()
    if claude is None:
        pytest.skip("no Claude Code CLI to point CLAUDE_BIN at")
    checkout = clean_copy(tmp_path / "checkout")
    before = listing(checkout)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "python3").symlink_to(DEBIAN_PYTHON)
    cache = tmp_path / "cache"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PIP_", "VIRTUAL_ENV", "PYTHON"))}
    env.update(PATH=f"{bin_dir}:{env['PATH']}", PARALLEL_DEV_CACHE=str(cache), CLAUDE_BIN=claude)
    env.pop("PARALLEL_SKIP_INSTALL", None)
    proc = subprocess.run([str(checkout / "run-tests"), "-q", "tests/events_test.py"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    venv = cache / "venv"
    # the packages pyproject.toml lists, nothing else asked for, and from the venv's own Python
    wanted = (venv / ".requirements").read_text().split()
    assert "pytest>=7" in wanted and "syrupy>=4" in wanted and "PyYAML>=5.4" in wanted
    assert f"== Python packages into {venv}: " in proc.stdout
    assert f"({venv}/bin/python)\n" in proc.stdout
    version = subprocess.run([claude, "--version"], capture_output=True, text=True).stdout.splitlines()[0]
    assert f"Claude Code CLI the tests use: {version} ({claude})\n" in proc.stdout  # CLAUDE_BIN's, not the pin's
    assert re.search(r"\d+ passed", proc.stdout)
    assert listing(checkout) - before == set()  # no venv, node_modules, build/ or egg-info in the checkout
    assert not (cache / "claude-code").exists()  # CLAUDE_BIN given: no CLI installed

    again = subprocess.run([str(checkout / "run-tests"), "-q", "tests/events_test.py"], cwd=tmp_path, env=env,
                           capture_output=True, text=True, timeout=900)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert "== Python packages" not in again.stdout and "== virtual environment" not in again.stdout


def test_ci_runs_the_readmes_test_command_on_the_pinned_and_the_newest_cli():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    setup = readme.split("```bash\n", 1)[1].split("```", 1)[0].splitlines()
    assert len(setup) == 2 and setup[1].split("#")[0].strip() == "./run-tests"
    ci = [line.strip() for line in (ROOT / ".ci" / "run").read_text().splitlines()
          if line.strip() and not line.lstrip().startswith("#")]
    assert any(line.startswith("./run-tests ") for line in ci)  # the README's command, installing
    assert any("npm view @anthropic-ai/claude-code version" in line for line in ci)
    assert any(line.startswith("PARALLEL_CLAUDE_VERSION=$newest ./run-tests") for line in ci)

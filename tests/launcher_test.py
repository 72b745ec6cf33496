"""scripts/parallel-setup on a machine without PyYAML/Jinja2, and `pip install .`.

No pip install happens when Claude Code installs a plugin, so the launcher must
get its two dependencies itself, once, or say in one line how to.
"""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "schemas" / "example-plan.yaml"


@pytest.fixture(scope="module")
def bare_python(tmp_path_factory) -> Path:
    """A Python with neither PyYAML nor Jinja2 (a venv without system site-packages)."""
    venv = tmp_path_factory.mktemp("bare") / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    probe = subprocess.run([str(python), "-c", "import yaml"], capture_output=True)
    assert probe.returncode != 0, "the bare venv can import yaml"
    return python


def _env(data_dir: Path, **extra: str) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PIP_", "PARALLEL_SETUP_"))}
    env.update(CLAUDE_PLUGIN_DATA=str(data_dir), **extra)
    return env


def test_missing_dependencies_give_a_one_line_fix_when_they_cannot_be_installed(bare_python, plugin_copy, tmp_path):
    data = tmp_path / "data"
    proc = subprocess.run(
        [str(bare_python), str(plugin_copy / "scripts" / "parallel-setup"), "plan", "validate", str(EXAMPLE)],
        capture_output=True, text=True, timeout=120,
        env=_env(data, PIP_CONFIG_FILE=os.devnull, PIP_NO_INDEX="1", PIP_FIND_LINKS=str(tmp_path)))
    assert proc.returncode == 1
    assert proc.stdout == ""
    assert proc.stderr == (
        f"parallel-setup: installing PyYAML and Jinja2 once into {data}/venv\n"
        "parallel-setup: needs PyYAML and Jinja2; install them with: "
        "python3 -m pip install --user pyyaml jinja2\n")
    assert "Traceback" not in proc.stderr
    assert not (data / "venv").exists()  # no half-made venv left to block the next attempt


def test_missing_dependencies_are_installed_once_into_plugin_data(bare_python, plugin_copy, tmp_path):
    """Uses the package index (PyPI) once, as a user's first command would."""
    data = tmp_path / "data"
    cmd = [str(bare_python), str(plugin_copy / "scripts" / "parallel-setup"), "plan", "validate", str(EXAMPLE)]
    first = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=_env(data))
    assert first.returncode == 0, first.stderr
    assert first.stderr == f"parallel-setup: installing PyYAML and Jinja2 once into {data}/venv\n"
    assert first.stdout == f"{EXAMPLE}: valid plan 'add-user-accounts' with 5 task(s)\n"
    second = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=_env(data))
    assert (second.returncode, second.stderr) == (0, "")  # no second install


def test_pip_install_gives_a_working_console_command(tmp_path):
    """The same package installs normally, templates and schema included, as `parallel-setup`."""
    wheels = tmp_path / "wheels"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
                    "-w", str(wheels), str(ROOT)], check=True, capture_output=True, timeout=300)
    (wheel,) = wheels.glob("parallel_setup-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "parallel_setup/schemas/plan.schema.json" in names
    assert "parallel_setup/schemas/example-plan.yaml" in names
    templates = sorted(n for n in names if n.startswith("parallel_setup/templates/"))
    assert templates == sorted(f"parallel_setup/templates/{p.name}" for p in (ROOT / "templates").glob("*.j2"))
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", str(venv)], check=True)
    subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", "--no-deps", str(wheel)],
                   check=True, capture_output=True, timeout=300)
    proc = subprocess.run([str(venv / "bin" / "parallel-setup"), "plan", "validate", str(EXAMPLE)],
                          capture_output=True, text=True, cwd=tmp_path)
    assert (proc.returncode, proc.stdout) == (0, f"{EXAMPLE}: valid plan 'add-user-accounts' with 5 task(s)\n")

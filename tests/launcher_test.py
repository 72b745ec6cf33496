"""scripts/parallel-setup on a machine without PyYAML/Jinja2, and `pip install .`.

No pip install happens when Claude Code installs a plugin, so the launcher must
get its two dependencies itself, once, or say in one line how to.
"""

from __future__ import annotations

import os
import shutil
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


NO_INDEX = {"PIP_CONFIG_FILE": os.devnull, "PIP_NO_INDEX": "1"}
NO_DISTRIBUTION = "pip install failed: ERROR: No matching distribution found for PyYAML>=5.4"


def launch(python: Path, plugin: Path, data: Path, **extra: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(python), str(plugin / "scripts" / "parallel-setup"), "plan", "validate", str(EXAMPLE)],
                          capture_output=True, text=True, timeout=300, env=_env(data, **extra))


def test_missing_dependencies_give_a_one_line_fix_when_they_cannot_be_installed(bare_python, plugin_copy, tmp_path):
    data = tmp_path / "data"
    proc = launch(bare_python, plugin_copy, data, PIP_FIND_LINKS=str(tmp_path), **NO_INDEX)
    assert proc.returncode == 1
    assert proc.stdout == ""
    assert proc.stderr == (
        f"parallel-setup: installing PyYAML and Jinja2 once into {data}/venv\n"
        f"parallel-setup: needs PyYAML and Jinja2 ({NO_DISTRIBUTION}); install them with: "
        f"{bare_python} -m ensurepip && {bare_python} -m pip install pyyaml jinja2\n")
    assert "Traceback" not in proc.stderr
    assert not (data / "venv").exists()  # no half-made venv left to block the next attempt


def test_the_fix_for_a_virtual_environment_works(plugin_copy, tmp_path):
    """A venv's python refuses `pip install --user`: the advice is its own pip, and it works."""
    venv = tmp_path / "user-venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    failed = launch(python, plugin_copy, tmp_path / "data", **NO_INDEX)
    fix = failed.stderr.splitlines()[-1].split("; install them with: ", 1)[1]
    subprocess.run(fix, shell=True, check=True, capture_output=True, timeout=300)  # from PyPI, as a user would
    again = launch(python, plugin_copy, tmp_path / "data")
    assert (again.returncode, again.stderr) == (0, "")  # the venv's own packages: nothing to install


DEBIAN_PYTHON = Path("/usr/bin/python3")


def _externally_managed(python: Path) -> bool:
    if not python.exists():
        return False
    probe = subprocess.run([str(python), "-c", "import os, sysconfig; print(os.path.isfile(os.path.join("
                            "sysconfig.get_path('stdlib'), 'EXTERNALLY-MANAGED')))"], capture_output=True, text=True)
    return probe.stdout.strip() == "True"


@pytest.mark.skipif(not _externally_managed(DEBIAN_PYTHON) or not Path("/usr/bin/apt-get").exists(),
                    reason="needs Debian's or Ubuntu's python3, which refuses system installs (PEP 668)")
def test_on_a_python_that_refuses_system_installs_the_fix_is_the_distributions_packages(plugin_copy, tmp_path):
    data = tmp_path / "data"
    proc = launch(DEBIAN_PYTHON, plugin_copy, data, **NO_INDEX)
    if proc.returncode == 0:
        pytest.skip(f"{DEBIAN_PYTHON} already has PyYAML and Jinja2")
    sudo = "" if os.geteuid() == 0 else "sudo "
    assert proc.stderr.splitlines()[-1] == (
        f"parallel-setup: needs PyYAML and Jinja2 ({NO_DISTRIBUTION}); install them with: "
        f"{sudo}apt-get install python3-yaml python3-jinja2")
    # The old advice fails on this Python ...
    user = subprocess.run([str(DEBIAN_PYTHON), "-m", "pip", "install", "--user", "--dry-run", "jinja2"],
                          capture_output=True, text=True, timeout=120)
    assert user.returncode != 0 and ("externally-managed-environment" in user.stderr
                                     or "No module named pip" in user.stderr)
    # ... the new one resolves (simulated: the shared machine's system Python is left as it is).
    simulated = subprocess.run(["apt-get", "install", "-s", "python3-yaml", "python3-jinja2"],
                               capture_output=True, text=True, timeout=120)
    assert simulated.returncode == 0, simulated.stderr


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


#: What building the wheel reads (a copy of these is built, so build/ and *.egg-info stay out of the checkout).
SOURCE_PARTS = ["pyproject.toml", "README.md", "LICENSE", "parallel_setup", "templates", "schemas"]


def test_pip_install_gives_a_working_console_command(tmp_path):
    """The same package installs normally, templates and schema included, as `parallel-setup`."""
    source = tmp_path / "source"
    for part in SOURCE_PARTS:
        if (ROOT / part).is_dir():
            shutil.copytree(ROOT / part, source / part, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            source.mkdir(exist_ok=True)
            shutil.copy2(ROOT / part, source / part)
    wheels = tmp_path / "wheels"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
                    "-w", str(wheels), str(source)], check=True, capture_output=True, timeout=300)
    assert (source / "build").is_dir()  # the artefacts went to the copy
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

"""Real environments for tests, installed offline: a wheelhouse and an npm package built here.

* ``wheelhouse(root)``: a folder with a hand-made wheel (``tinydep``, no build needed) and
  the ``flit_core`` build backend (downloaded from PyPI once per machine into
  ``~/.cache/parallel-tests/``; the tests skip when that is impossible).
* ``python_project`` / ``node_project``: the files of a small project that depends on them,
  with its own tests (``python -m unittest``, ``npm test``).
* ``offline_env``: the variables that make uv, pip and npm install from those and nothing else.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Dict

import pytest

CACHE = Path.home() / ".cache" / "parallel-tests"
FLIT = "flit_core==3.9.0"


def _record_hash(data: bytes) -> str:
    return "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


def make_wheel(folder: Path, name: str, version: str, module_text: str) -> Path:
    """A pure-Python wheel written by hand (a zip with its dist-info): no build backend needed."""
    files = {f"{name}/__init__.py": module_text.encode(),
             f"{name}-{version}.dist-info/METADATA":
                 f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n".encode(),
             f"{name}-{version}.dist-info/WHEEL":
                 b"Wheel-Version: 1.0\nGenerator: tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n"}
    record = "".join(f"{p},{_record_hash(d)},{len(d)}\n" for p, d in files.items())
    record += f"{name}-{version}.dist-info/RECORD,,\n"
    path = folder / f"{name}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as z:
        for p, d in files.items():
            z.writestr(p, d)
        z.writestr(f"{name}-{version}.dist-info/RECORD", record)
    return path


def flit_wheel() -> Path:
    folder = CACHE / "wheelhouse"
    found = sorted(folder.glob("flit_core-*.whl"))
    if found:
        return found[-1]
    folder.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", FLIT, "-d", str(folder)],
                          capture_output=True, text=True, timeout=120)
    found = sorted(folder.glob("flit_core-*.whl"))
    if proc.returncode != 0 or not found:
        pytest.skip(f"cannot download {FLIT} from PyPI for the offline wheelhouse: {proc.stderr.strip()[-300:]}")
    return found[-1]


def wheelhouse(root: Path) -> Path:
    folder = root / "wheelhouse"
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copy(flit_wheel(), folder)
    make_wheel(folder, "tinydep", "1.0", "def greet(who):\n    return 'hello ' + who\n")
    make_wheel(folder, "tinydep", "2.0", "def greet(who):\n    return 'HELLO ' + who\n")
    return folder


PY_FILES = {
    ".gitignore": ".venv/\nnode_modules/\n__pycache__/\n",
    "pyproject.toml": (
        '[build-system]\nrequires = ["flit_core>=3.4,<4"]\nbuild-backend = "flit_core.buildapi"\n\n'
        '[project]\nname = "widget"\nversion = "0.1"\ndescription = "A test project"\n'
        'dependencies = ["tinydep"]\n\n[project.scripts]\nwidget-hello = "widget:main"\n'),
    "requirements.txt": "tinydep==1.0\n-e .\n",
    "widget/__init__.py": ("import tinydep\n\n\ndef hello():\n    return tinydep.greet('widget')\n\n\n"
                           "def main():\n    print(hello())\n"),
    "tests/test_widget.py": ("import unittest\n\nimport widget\n\n\nclass T(unittest.TestCase):\n"
                             "    def test_hello(self):\n        self.assertEqual(widget.hello(), 'hello widget')\n"),
}


def offline_env(root: Path, wheels: Path, path: str | None = None) -> Dict[str, str]:
    """uv, pip and npm install from the wheelhouse / the npm cache under root, never from a registry."""
    env = {"PIP_NO_INDEX": "1", "PIP_FIND_LINKS": str(wheels), "PIP_DISABLE_PIP_VERSION_CHECK": "1",
           "UV_OFFLINE": "1", "UV_FIND_LINKS": str(wheels), "UV_CACHE_DIR": str(root / "uv-cache"),
           "UV_NO_PROGRESS": "1", "npm_config_cache": str(root / "npm-cache"), "npm_config_offline": "true",
           "npm_config_update_notifier": "false"}
    if path is not None:
        env["PATH"] = path
    return env


def path_without_uv(root: Path) -> str:
    """A PATH with python3 (this interpreter), git, bash and npm, but no uv: pip does the installs."""
    bin_dir = root / "bin-no-uv"
    bin_dir.mkdir(exist_ok=True)
    for name, target in (("python3", sys.executable), ("python", sys.executable)):
        link = bin_dir / name
        if not link.exists():
            link.symlink_to(target)
    return f"{bin_dir}:/usr/local/bin:/usr/bin:/bin" if not shutil.which("uv", path="/usr/local/bin:/usr/bin:/bin") \
        else pytest.skip("uv is installed in a system folder: cannot hide it from PATH")


def uv_folder() -> str | None:
    """The folder holding uv: on PATH, or beside this interpreter (the test extra installs it there)."""
    found = shutil.which("uv")
    if found:
        return str(Path(found).parent)
    beside = Path(sys.executable).parent / "uv"
    return str(beside.parent) if beside.exists() else None


def npm_package(root: Path) -> Path:
    """``vendor/tinynode-1.0.0.tgz``, packed with the real npm."""
    src = root / "tinynode-src"
    src.mkdir(parents=True, exist_ok=True)
    (src / "package.json").write_text(json.dumps({"name": "tinynode", "version": "1.0.0", "main": "index.js"}))
    (src / "index.js").write_text("module.exports = (who) => 'hi ' + who;\n")
    out = root / "vendor"
    out.mkdir(exist_ok=True)
    subprocess.run(["npm", "pack", "--silent", "--pack-destination", str(out)], cwd=src, check=True,
                   capture_output=True, text=True, timeout=120)
    return out / "tinynode-1.0.0.tgz"


def node_files(tarball_rel: str) -> Dict[str, str]:
    return {
        ".gitignore": "node_modules/\n",
        "package.json": json.dumps({"name": "nodeapp", "version": "1.0.0", "private": True,
                                    "scripts": {"test": "node test.js"},
                                    "dependencies": {"tinynode": f"file:{tarball_rel}"}}, indent=2) + "\n",
        "test.js": "const t = require('tinynode');\nif (t('x') !== 'hi x') { process.exit(1); }\nconsole.log('ok');\n",
    }


def pnpm_bin() -> str:
    """pnpm from PATH, else installed with npm into the test cache once; skip when neither works."""
    found = shutil.which("pnpm")
    if found:
        return found
    prefix = CACHE / "pnpm"
    binary = prefix / "node_modules" / ".bin" / "pnpm"
    if not binary.exists():
        prefix.mkdir(parents=True, exist_ok=True)
        proc = subprocess.run(["npm", "install", "--no-audit", "--no-fund", "--prefix", str(prefix), "pnpm@9"],
                              capture_output=True, text=True, timeout=300)
        if proc.returncode != 0 or not binary.exists():
            pytest.skip(f"pnpm is not installed and npm could not install it: {proc.stderr.strip()[-300:]}")
    return str(binary)


def lock_node_project(repo: Path, tool: str, env: Dict[str, str]) -> None:
    """Write the lockfile (package-lock.json or pnpm-lock.yaml) with the real tool, offline."""
    cmd = [tool, "install", "--lockfile-only"] if tool.endswith("pnpm") else \
        ["npm", "install", "--package-lock-only", "--no-audit", "--no-fund"]
    subprocess.run(cmd, cwd=repo, check=True, capture_output=True, text=True, timeout=300,
                   env={**os.environ, **env})

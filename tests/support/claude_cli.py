"""Run the real Claude Code CLI offline against tests.support.messages_api.MessagesAPIServer.

Binary lookup: env CLAUDE_BIN (./run-tests sets it), else the pinned version where ./run-tests
installs it, outside the plugin folder: ``$CACHE/claude-code/<version>/node_modules/@anthropic-ai/
claude-code-linux-<arch>/claude`` with ``$CACHE`` = ``${PARALLEL_DEV_CACHE:-${XDG_CACHE_HOME:-~/.cache}/
parallel-setup-dev}`` (npm 11 skips the postinstall, so node_modules/.bin/claude is only a
placeholder), else `claude` on PATH. Missing binary: pytest.skip locally, pytest.fail when env
CI is set (CI installs it).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Iterable, Mapping

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]


def pinned_version() -> str:
    """The pinned CLI version: ``CLAUDE_CODE_VERSION=`` in ./run-tests (its one definition)."""
    for line in (REPO_ROOT / "run-tests").read_text(encoding="utf-8").splitlines():
        if line.startswith("CLAUDE_CODE_VERSION="):
            return line.split("=", 1)[1].split()[0]
    raise AssertionError("run-tests defines no CLAUDE_CODE_VERSION")


def dev_cache() -> Path:
    """Where ./run-tests keeps its venv and the CLI versions (never inside the plugin folder)."""
    if os.environ.get("PARALLEL_DEV_CACHE"):
        return Path(os.environ["PARALLEL_DEV_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "parallel-setup-dev"


def cached_binaries(version: str) -> list:
    """The native CLI binaries ./run-tests installed for ``version`` (one per platform package)."""
    return sorted((dev_cache() / "claude-code" / version / "node_modules" / "@anthropic-ai").glob(
        "claude-code-linux-*/claude"))
DEFAULT_TIMEOUT = 120


def _works(path: str) -> bool:
    try:
        r = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return r.returncode == 0 and "Claude Code" in r.stdout


_cached: str | None = None


def find_claude() -> str | None:
    """Path of a working claude binary, or None."""
    global _cached
    if _cached:
        return _cached
    candidates = []
    if os.environ.get("CLAUDE_BIN"):
        candidates.append(os.environ["CLAUDE_BIN"])
    candidates.extend(str(p) for p in cached_binaries(pinned_version()))
    on_path = shutil.which("claude")
    if on_path:
        candidates.append(on_path)
    for c in candidates:
        if Path(c).is_file() and os.access(c, os.X_OK) and _works(c):
            _cached = c
            return c
    return None


def claude_bin() -> str:
    """Path of the claude binary; skips the test (fails it under CI) when none is found."""
    path = find_claude()
    if path:
        return path
    msg = (
        f"Claude Code CLI not found: set CLAUDE_BIN, or run ./run-tests (it installs {pinned_version()} into "
        f"{dev_cache() / 'claude-code' / pinned_version()}), or put `claude` on PATH"
    )
    if os.environ.get("CI"):
        pytest.fail(msg + " [CI is set, so this is a failure, not a skip]", pytrace=False)
    pytest.skip(msg)
    raise AssertionError("unreachable")


def claude_env(*, api_url: str, home: os.PathLike | str, extra_env: Mapping[str, str] | None = None) -> dict:
    env = {
        k: v
        for k, v in os.environ.items()
        # never let a developer's real credentials / config leak into a test run
        if not k.startswith(("ANTHROPIC_", "CLAUDE_", "CLAUDECODE")) and k not in ("HOME",)
    }
    env.update(
        {
            "ANTHROPIC_BASE_URL": api_url,
            "ANTHROPIC_API_KEY": "test",
            "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
            "DISABLE_AUTOUPDATER": "1",
            "HOME": str(home),
            "IS_SANDBOX": "1",  # bypassPermissions refuses to run as root otherwise
        }
    )
    if extra_env:
        env.update(extra_env)
    return env


def run_claude(
    prompt: str,
    *,
    cwd: os.PathLike | str,
    plugin_dir: os.PathLike | str | None,
    api_url: str,
    home: os.PathLike | str,
    extra_env: Mapping[str, str] | None = None,
    timeout: float = DEFAULT_TIMEOUT,
    output_format: str = "text",
    args: Iterable[str] = (),
    check: bool = False,
    permission_mode: str = "bypassPermissions",
) -> subprocess.CompletedProcess:
    """``claude -p PROMPT [--plugin-dir DIR] --permission-mode MODE --output-format F``.

    ``plugin_dir=None`` runs the plugins installed in ``home`` (see :func:`install_plugin`).

    Returns the CompletedProcess (text mode). With output_format="json" the parsed result is in
    ``proc.json`` (None if stdout is not JSON); with "stream-json" ``proc.events`` is the list of
    parsed lines (stream-json needs --verbose, which is added).
    """
    Path(home).mkdir(parents=True, exist_ok=True)
    cmd = [claude_bin(), "-p", prompt]
    if plugin_dir is not None:
        cmd += ["--plugin-dir", str(plugin_dir)]
    cmd += ["--permission-mode", permission_mode, "--output-format", output_format]
    if output_format == "stream-json":
        cmd.append("--verbose")
    cmd += list(args)
    proc = subprocess.run(
        cmd,
        cwd=str(cwd),
        env=claude_env(api_url=api_url, home=home, extra_env=extra_env),
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )
    proc.json = None  # type: ignore[attr-defined]
    proc.events = []  # type: ignore[attr-defined]
    if output_format == "json":
        try:
            proc.json = json.loads(proc.stdout)  # type: ignore[attr-defined]
        except ValueError:
            pass
    elif output_format == "stream-json":
        for line in proc.stdout.splitlines():
            try:
                proc.events.append(json.loads(line))  # type: ignore[attr-defined]
            except ValueError:
                pass
    if check and proc.returncode != 0:
        raise AssertionError(f"claude exited {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}")
    return proc


def plugin_validate(
    plugin_dir: os.PathLike | str,
    *,
    home: os.PathLike | str | None = None,
    strict: bool = True,
    profile: str | None = "directory",
    as_json: bool = False,
    timeout: float = 120,
) -> subprocess.CompletedProcess:
    """``claude plugin validate [--strict] [--profile directory] [--json] DIR``.

    With strict=True and profile="directory", exit 0 means no errors, no warnings and nothing the
    plugin directory would refuse. ``proc.json`` holds the report when as_json=True.
    """
    cmd = [claude_bin(), "plugin", "validate"]
    if strict:
        cmd.append("--strict")
    if profile:
        cmd += ["--profile", profile]
    if as_json:
        cmd.append("--json")
    cmd.append(str(plugin_dir))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ANTHROPIC_", "CLAUDE_"))}
    if home is not None:
        Path(home).mkdir(parents=True, exist_ok=True)
        env["HOME"] = str(home)
    env["CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC"] = "1"
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
    proc.json = None  # type: ignore[attr-defined]
    if as_json:
        try:
            proc.json = json.loads(proc.stdout)  # type: ignore[attr-defined]
        except ValueError:
            pass
    return proc


def install_plugin(plugin_dir: os.PathLike | str, home: os.PathLike | str, *, timeout: float = 120) -> str:
    """Install the plugin as a user does: ``claude plugin marketplace add DIR`` then ``claude plugin
    install NAME@MARKETPLACE`` (from DIR's ``.claude-plugin/marketplace.json``), into ``home``.

    Returns ``NAME@MARKETPLACE``. Raises AssertionError with the CLI's output when a step fails.
    """
    Path(home).mkdir(parents=True, exist_ok=True)
    market = json.loads((Path(plugin_dir) / ".claude-plugin" / "marketplace.json").read_text(encoding="utf-8"))
    ref = f"{market['plugins'][0]['name']}@{market['name']}"
    env = claude_env(api_url="http://127.0.0.1:9", home=home)
    for step in (["plugin", "marketplace", "add", str(plugin_dir)], ["plugin", "install", ref]):
        proc = subprocess.run([claude_bin(), *step], env=env, capture_output=True, text=True, timeout=timeout,
                              stdin=subprocess.DEVNULL, cwd=str(home))
        if proc.returncode != 0:
            raise AssertionError(f"claude {' '.join(step)} exited {proc.returncode}\n{proc.stdout}\n{proc.stderr}")
    return ref


def as_a_user(plugin_dir: os.PathLike | str, project: os.PathLike | str, home: os.PathLike | str, *,
              opt_in: bool) -> list:
    """A user's setup for an end-to-end run: ``parallel-setup permissions on`` in ``project`` when
    ``opt_in``, and the plugin installed from its marketplace into ``home``. Returns the CLI
    command (``python3 <plugin>/scripts/parallel-setup -C <project>``) for the test's own calls."""
    import sys
    cli = [sys.executable, str(Path(plugin_dir) / "scripts" / "parallel-setup"), "-C", str(project)]
    if opt_in:
        on = subprocess.run(cli + ["permissions", "on"], capture_output=True, text=True)
        assert on.returncode == 0, on.stderr
    install_plugin(plugin_dir, home)
    return cli

"""What the permission hook trusts, recorded outside the project.

In Claude Code's acceptEdits mode a model may write files inside the project without a
prompt (``printf ... > file`` included, observed on 2.1.328). So what the hook relies on is
also recorded under ``$XDG_STATE_HOME/parallel-setup/`` (default ``~/.local/state``), where
such a write needs the user's approval:

* ``setup-digests/<sha256>``: one per setup script ``execute`` rendered, named by the digest
  of the script and the plan's setup command beside it (``env-setup.sh``, which it runs),
  holding the script's real path. A script changed after execute wrote it is not approved.
  Cleanup forgets the records whose script is gone or changed (``prune_setups``).
* ``opt-in/<sha256 of the project's real path>``: written by ``parallel-setup permissions
  on``, removed by ``off``. ``.parallel/permissions.json`` alone (written by anyone) does
  not turn the opt-in on.

Standard library only (the hook imports this).
"""

from __future__ import annotations

import hashlib
import os

SCRIPTS = ("setup.sh", "env-setup.sh")


def state_dir(kind: str) -> str:
    base = os.environ.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local", "state")
    return os.path.join(base, "parallel-setup", kind)


def digest(task_dir: str) -> str | None:
    """sha256 over the task folder's scripts (None when setup.sh cannot be read)."""
    h = hashlib.sha256()
    for name in SCRIPTS:
        try:
            with open(os.path.join(task_dir, name), "rb") as f:
                content = f.read()
        except FileNotFoundError:
            if name == "setup.sh":
                return None
            content = b""
        except OSError:
            return None
        h.update(name.encode() + b"\0" + str(len(content)).encode() + b"\0" + content)
    return h.hexdigest()


def record_setup(task_dir) -> None:
    """Remember the scripts execute just rendered in ``task_dir``."""
    task_dir = os.fspath(task_dir)
    value = digest(task_dir)
    if value is None:
        return
    _write(os.path.join(state_dir("setup-digests"), value), os.path.realpath(os.path.join(task_dir, "setup.sh")))


def setup_is_recorded(setup_path: str) -> bool:
    """True when ``setup_path`` and its env-setup.sh are what execute rendered for that path."""
    value = digest(os.path.dirname(setup_path))
    if value is None:
        return False
    return _holds(os.path.join(state_dir("setup-digests"), value), os.path.realpath(setup_path))


def prune_setups() -> int:
    """Forget the records whose script is gone or changed (a run purged or deleted by hand), and
    temporary files a killed writer left: a record lives as long as the script it names. The
    number of records removed. Cleanup calls it."""
    folder = state_dir("setup-digests")
    try:
        names = os.listdir(folder)
    except OSError:
        return 0
    removed = 0
    for name in names:
        path = os.path.join(folder, name)
        if name.endswith(".tmp"):
            _unlink_if_old(path)
            continue
        try:
            with open(path, encoding="utf-8") as f:
                script = f.read().strip()
        except (OSError, UnicodeDecodeError):
            continue
        if digest(os.path.dirname(script)) != name and _unlink(path):
            removed += 1
    return removed


def _unlink(path: str) -> bool:
    try:
        os.unlink(path)
        return True
    except OSError:
        return False


def _unlink_if_old(path: str, seconds: float = 3600) -> None:
    import time
    try:
        if os.stat(path).st_mtime < time.time() - seconds:
            os.unlink(path)
    except OSError:
        pass


def _opt_in_path(project) -> tuple[str, str]:
    real = os.path.realpath(os.fspath(project))
    return os.path.join(state_dir("opt-in"), hashlib.sha256(real.encode()).hexdigest()), real


def record_opt_in(project, on: bool) -> None:
    path, real = _opt_in_path(project)
    if on:
        _write(path, real)
    else:
        _unlink(path)


def opt_in_recorded(project) -> bool:
    path, real = _opt_in_path(project)
    return _holds(path, real)


def _write(path: str, text: str) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text + "\n")
    os.replace(tmp, path)


def _holds(path: str, text: str) -> bool:
    try:
        with open(path, encoding="utf-8") as f:
            return f.read().strip() == text
    except (OSError, UnicodeDecodeError):
        return False

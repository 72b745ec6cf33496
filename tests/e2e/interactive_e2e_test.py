"""An interactive session, as a user has one: the real CLI in a terminal (tmux), default mode.

The plugin installed from its marketplace; the user types ``/parallel:execute e2e`` at the
prompt. The scripted model of permissions_e2e_test.py plays the main agent and the two
background subagents; the real ``gh`` against the fake GitHub.

Observed (2.1.328): unlike ``-p``, an interactive session shows a background subagent's
permission requests to the user, one dialog at a time ("Create file · from the
parallel:parallel-task-… agent", "1 of 2"). So without the opt-in the user answers a dialog
for each edit, test, commit, push and comment of every subagent, but never for its setup;
with the opt-in there is no dialog at all.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from parallel_setup.fake_github import FakeGitHub
from tests.e2e.permissions_e2e_test import TASKS, Model, e2e_project
from tests.support.claude_cli import as_a_user, claude_bin, claude_env
from tests.support.github import requires_gh
from tests.support.messages_api import MessagesAPIServer

TMUX = shutil.which("tmux")
pytestmark = pytest.mark.skipif(TMUX is None and not os.environ.get("CI"),
                                reason="tmux is not installed (CI installs it)")
DIALOG = "Do you want"


class Terminal:
    """``claude`` in a detached tmux session of 200 x 50; ``screen()`` is what the user sees."""

    def __init__(self, name: str, command: str):
        self.name = name
        subprocess.run(["tmux", "new-session", "-d", "-s", name, "-x", "200", "-y", "50", command], check=True)

    def screen(self) -> str:
        return subprocess.run(["tmux", "capture-pane", "-p", "-t", self.name], capture_output=True,
                              text=True).stdout

    def type(self, keys: str, enter: bool = True) -> None:
        subprocess.run(["tmux", "send-keys", "-t", self.name, "-l", keys], check=True)
        if enter:
            time.sleep(0.3)
            subprocess.run(["tmux", "send-keys", "-t", self.name, "Enter"], check=True)

    def close(self) -> None:
        subprocess.run(["tmux", "kill-session", "-t", self.name], capture_output=True)


def interactive_run(tmp_path: Path, plugin_copy: Path, *, opt_in: bool, answer_dialogs: bool):
    """Type /parallel:execute e2e; with ``answer_dialogs`` answer each dialog "1. Yes". Returns
    (every dialog seen, the task states, the last screen)."""
    project = e2e_project(tmp_path)
    home = tmp_path / "home"
    cli = as_a_user(plugin_copy, project, home, opt_in=opt_in)
    config = home / ".claude.json"  # a user past onboarding who trusts this folder and the API key
    data = json.loads(config.read_text()) if config.exists() else {}
    data.update(hasCompletedOnboarding=True, theme="dark", customApiKeyResponses={"approved": ["test"], "rejected": []})
    data.setdefault("projects", {})[str(project)] = {"hasTrustDialogAccepted": True, "allowedTools": []}
    config.write_text(json.dumps(data))
    dialogs, states, shown, answered = [], {}, "", 0.0
    with FakeGitHub() as gh, MessagesAPIServer(Model(outside=False)) as api:
        env = claude_env(api_url=api.url, home=home, extra_env=gh.gh_variables(config_dir=str(tmp_path / "gh")))
        env.update(NO_PROXY="127.0.0.1", no_proxy="127.0.0.1", TERM="xterm-256color")
        env.update({k: v for k, v in os.environ.items() if k.startswith("GIT_")})
        env_file = tmp_path / "env.sh"
        env_file.write_text("".join(f"export {k}={shlex.quote(v)}\n" for k, v in env.items()))
        term = Terminal(f"parallel-{os.getpid()}-{time.monotonic_ns()}",
                        f"bash -c '. {env_file}; cd {project}; {claude_bin()} --permission-mode default; sleep 600'")
        try:
            deadline = time.monotonic() + 20
            while "❯" not in term.screen() and time.monotonic() < deadline:
                time.sleep(0.5)
            term.type("/parallel:execute e2e")
            deadline = time.monotonic() + 240
            while time.monotonic() < deadline:
                time.sleep(0.5)
                shown = term.screen()
                if DIALOG in shown:
                    lines = [line.strip() for line in shown.splitlines() if line.strip()]
                    at = max(i for i, line in enumerate(lines) if DIALOG in line)
                    dialog = "\n".join(lines[max(0, at - 8):at + 1])
                    if dialogs and dialog == dialogs[-1] and time.monotonic() < answered + 5:
                        continue  # the one just answered, still on the screen
                    dialogs.append(dialog)
                    if not answer_dialogs:
                        break
                    term.type("1", enter=False)  # "1. Yes": the digit picks it
                    answered = time.monotonic()
                    continue
                st = subprocess.run(cli + ["status", "--json"], capture_output=True, text=True)
                if st.returncode == 0:
                    states = {t["id"]: t["state"] for t in json.loads(st.stdout)["tasks"]}
                    if states and all(s not in ("pending", "running") for s in states.values()):
                        break
        finally:
            term.close()
        assert not api.errors, api.errors
    print("\n\n".join(dialogs[:3]), "\n", shown)
    return dialogs, states, shown


@requires_gh
def test_with_the_opt_in_an_interactive_run_asks_nothing_and_ends_done(tmp_path, plugin_copy):
    dialogs, states, shown = interactive_run(tmp_path, plugin_copy, opt_in=True, answer_dialogs=False)
    assert dialogs == []
    assert states == {t: "done" for t in TASKS}, shown


@requires_gh
def test_without_it_the_user_is_asked_for_each_subagents_work_but_never_its_setup(tmp_path, plugin_copy):
    dialogs, states, shown = interactive_run(tmp_path, plugin_copy, opt_in=False, answer_dialogs=True)
    assert states == {t: "done" for t in TASKS}, shown  # every dialog answered yes
    # each subagent: the Write of its file, the test, the commit, the push, rev-parse, the comment
    assert len(dialogs) >= 2 * 5, dialogs
    assert any("from the parallel:parallel-task-" in d for d in dialogs), dialogs
    assert not any("setup.sh" in d for d in dialogs), [d for d in dialogs if "setup.sh" in d]

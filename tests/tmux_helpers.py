"""Driving a full-screen program in a detached tmux session (the menu tests on Linux and under Wine)."""
from __future__ import annotations

import subprocess
import time


class Tmux:
    """A detached 80x25 tmux session running one command; ``wait_for`` polls the screen (bounded, not timed)."""

    def __init__(self, name: str, cmd: list[str], env: dict) -> None:
        self.name = name
        envs = [f"{k}={v}" for k, v in env.items()]
        line = " ".join(map(_shq, ["env", *envs, *cmd])) + "; echo MENU-EXITED $?; sleep 600"
        subprocess.run(["tmux", "new-session", "-d", "-s", name, "-x", "80", "-y", "25", line], check=True)

    def screen(self) -> str:
        return subprocess.run(["tmux", "capture-pane", "-p", "-t", self.name], capture_output=True,
                              text=True).stdout

    def keys(self, *keys: str) -> None:
        subprocess.run(["tmux", "send-keys", "-t", self.name, *keys], check=True)

    def wait_for(self, text: str, *also: str, seconds: float = 120) -> str:
        """The screen once it shows ``text`` and ``also`` (a picker: its key help line, drawn last)."""
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            s = self.screen()
            if all(x in s for x in (text, *also)):
                return s
            time.sleep(0.2)
        raise AssertionError(f"{text!r} never appeared; screen:\n{self.screen()}")

    def kill(self) -> None:
        subprocess.run(["tmux", "kill-session", "-t", self.name], capture_output=True)


def _shq(s: str) -> str:
    return "'" + s.replace("'", "'\\''") + "'"

"""Keys from a console, a terminal, a serial line or a pipe, as names: ``up`` ``down`` ``pgup`` ``pgdn``
``home`` ``end`` ``enter`` ``esc`` ``backspace`` or the character typed.

Windows console: ``msvcrt.getwch`` (arrow keys arrive as a 0x00/0xE0 prefix and a scan code). POSIX terminal
(also ttyS0): cbreak mode and the ANSI/VT100 sequences (``ESC [ A`` and ``ESC O A``); a lone Esc is told apart from
a sequence by a short wait. Not a terminal (a pipe: tests, Wine under a harness): the characters as they come,
so ``2<newline>`` picks entry 2 exactly as typing it does.
"""
from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager

_WIN_SCAN = {"H": "up", "P": "down", "I": "pgup", "Q": "pgdn", "G": "home", "O": "end", "K": "left", "M": "right"}
_VT = {"A": "up", "B": "down", "C": "right", "D": "left", "H": "home", "F": "end",
       "5~": "pgup", "6~": "pgdn", "1~": "home", "4~": "end", "7~": "home", "8~": "end"}
ESC_WAIT = 0.15  # seconds: a serial line at 9600 baud delivers "ESC [ A" well within this


def _plain(ch: str) -> str:
    if ch in ("\r", "\n"):
        return "enter"
    if ch in ("\x08", "\x7f"):
        return "backspace"
    if ch == "\x1b":
        return "esc"
    if ch == "\x03":
        raise KeyboardInterrupt
    return ch


class Keys:
    """``read()`` -> the next key name; ``None`` at end of input (a closed pipe or console)."""

    def __init__(self, stream=None) -> None:
        self.stream = stream if stream is not None else sys.stdin
        try:
            self.tty = self.stream.isatty()
        except (AttributeError, ValueError):
            self.tty = False
        self._pending = ""

    @contextmanager
    def active(self) -> Iterator[None]:
        """cbreak mode on a POSIX terminal for the duration (restored on any exit)."""
        if not self.tty or sys.platform == "win32":
            yield
            return
        import termios
        import tty

        fd = self.stream.fileno()
        old = termios.tcgetattr(fd)
        try:
            tty.setcbreak(fd)
            yield
        finally:
            termios.tcsetattr(fd, termios.TCSADRAIN, old)

    def _getch(self, timeout: float | None = None) -> str | None:
        if self._pending:
            ch, self._pending = self._pending[0], self._pending[1:]
            return ch
        if self.tty and sys.platform == "win32":
            import msvcrt

            return msvcrt.getwch()
        if self.tty:
            import select

            fd = self.stream.fileno()
            if timeout is not None and not select.select([fd], [], [], timeout)[0]:
                return None
            data = os.read(fd, 1)
            if not data:
                return ""
            # a UTF-8 character: read its continuation bytes
            need = 1 if data[0] >= 0xC0 else 0
            need += 1 if data[0] >= 0xE0 else 0
            need += 1 if data[0] >= 0xF0 else 0
            if need:
                data += os.read(fd, need)
            return data.decode("utf-8", "replace")
        if timeout is not None:
            return None  # a pipe has no "lone Esc": an Esc is an Esc
        return self.stream.read(1)

    def read(self) -> str | None:
        ch = self._getch()
        if ch in ("", None):
            return None
        if self.tty and sys.platform == "win32" and ch in ("\x00", "\xe0"):
            return _WIN_SCAN.get(self._getch() or "", "unknown")
        if ch == "\x1b" and self.tty:
            nxt = self._getch(ESC_WAIT)
            if nxt not in ("[", "O"):
                if nxt:
                    self._pending = nxt + self._pending
                return "esc"
            seq = ""
            while True:
                c = self._getch(ESC_WAIT)
                if not c:
                    break
                seq += c
                if c.isalpha() or c == "~":
                    break
            return _VT.get(seq, "unknown")
        return _plain(ch)

    def poll(self, timeout: float) -> str | None:
        """A key pressed within ``timeout`` seconds, else None (terminals only; a pipe waits and gives None)."""
        if self.tty and sys.platform == "win32":
            import msvcrt
            import time

            end = time.monotonic() + timeout
            while time.monotonic() < end:
                if msvcrt.kbhit():
                    return self.read()
                time.sleep(0.05)
            return None
        if self.tty:
            import select

            if select.select([self.stream.fileno()], [], [], timeout)[0]:
                return self.read()
            return None
        import time

        time.sleep(timeout)
        return None

    def read_line(self, *, echo: Callable[[str], None] | None = None, secret: bool = False) -> str | None:
        """A line typed key by key (Backspace edits); None when Esc is pressed or input ends."""
        text = ""
        while True:
            k = self.read()
            if k is None or k == "esc":
                return None
            if k == "enter":
                return text
            if k == "backspace":
                if text:
                    text = text[:-1]
                    if echo and self.tty:
                        echo("\b \b")
                continue
            if len(k) == 1 and k.isprintable():
                text += k
                if echo and self.tty:
                    echo("*" if secret else k)

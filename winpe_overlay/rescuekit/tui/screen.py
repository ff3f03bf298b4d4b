"""Full-screen pages drawn with rich over ``Keys``: pickers, questions, typed confirmations, messages.

Every page fits 80x25 (WinPE's conhost): a title line, a few lines of context, a window of the list around the
cursor, and a key help line. On a terminal a page replaces the previous one (clear); on a pipe pages are printed
one after another as plain text (tests read them).
"""
from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import dataclass

from rich.console import Console
from rich.markup import escape

from rescuekit.tui.keys import Keys

HELP = "Up/Down or number, Enter: choose   Esc or 0: back"


@dataclass
class Item:
    """One row of a picker; ``why`` says why a row that is shown cannot be chosen."""

    label: str
    detail: str = ""
    enabled: bool = True
    why: str = ""
    value: object = None


class UI:
    def __init__(self, keys: Keys | None = None, console: Console | None = None, title: str = "rescuekit") -> None:
        self.keys = keys or Keys()
        self.console = console or Console(highlight=False, emoji=False)
        self.title = title
        self.note = ""  # one line shown under the title on the next page (e.g. why a row was refused)

    # -- drawing ---------------------------------------------------------------------------------------
    def _page(self, heading: str, lines: Sequence[str] = ()) -> None:
        c = self.console
        if c.is_terminal:
            self._clear()
        else:
            c.print()
        c.print(f"[reverse] {escape(self.title)} [/reverse] [bold]{escape(heading)}[/bold]")
        if self.note:
            c.print(f"[yellow]{escape(self.note)}[/yellow]")
            self.note = ""
        for ln in lines:
            c.print(escape(ln))

    def _clear(self) -> None:
        c = self.console
        if sys.platform == "win32" and c.legacy_windows:  # rich only homes the cursor there (tui/wincon.py)
            from rescuekit.tui import wincon

            c.file.flush()
            if wincon.clear_screen():
                return
        c.clear()

    def write(self, text: str) -> None:
        self.console.file.write(text)
        self.console.file.flush()

    def _rows(self) -> int:
        return max(5, (self.console.height if self.console.is_terminal else 25) - 9)

    # -- pages -----------------------------------------------------------------------------------------
    def pick(self, heading: str, items: Sequence[Item], lines: Sequence[str] = (), *, back: str = "back") -> int | None:
        """The index of the chosen row, or None for Esc/0/end of input. Rows that cannot be chosen say why."""
        cursor = next((i for i, it in enumerate(items) if it.enabled), 0)
        typed = ""
        redraw = True
        with self.keys.active():
            while True:
                if redraw or self.console.is_terminal:  # a pipe gets a page per change, not per key
                    self._draw_pick(heading, items, lines, cursor, typed, back)
                redraw = True
                k = self.keys.read()
                if k is None or k == "esc":
                    return None
                if k.isdigit() and len(k) == 1:
                    typed = (typed + k)[-3:]
                    n = int(typed)
                    if 1 <= n <= len(items):
                        cursor = n - 1
                    redraw = False
                    continue
                if k == "backspace":
                    typed = typed[:-1]
                    continue
                if k in ("up", "down", "pgup", "pgdn", "home", "end"):
                    typed = ""
                    step = {"up": -1, "down": 1, "pgup": -self._rows(), "pgdn": self._rows(),
                            "home": -len(items), "end": len(items)}[k]
                    cursor = min(max(cursor + step, 0), max(len(items) - 1, 0))
                    continue
                if k == "enter":
                    if typed:
                        n, typed = int(typed), ""
                        if n == 0:
                            return None
                        if not 1 <= n <= len(items):
                            self.note = f"there is no entry {n}"
                            continue
                        cursor = n - 1
                    if not items:
                        return None
                    it = items[cursor]
                    if not it.enabled:
                        self.note = f"{cursor + 1} cannot be chosen: {it.why or 'unavailable'}"
                        continue
                    return cursor
                if k == "q":
                    return None

    def _draw_pick(self, heading: str, items: Sequence[Item], lines: Sequence[str], cursor: int, typed: str,
                   back: str) -> None:
        self._page(heading, lines)
        rows = self._rows()
        top = min(max(cursor - rows // 2, 0), max(len(items) - rows, 0))
        c = self.console
        if top:
            c.print(f"   ... {top} more above")
        for i in range(top, min(top + rows, len(items))):
            it = items[i]
            mark = ">" if i == cursor and c.is_terminal else " "
            text = f"{mark}{i + 1:>2}  {it.label}"
            if not it.enabled:
                text += f"  ({it.why or 'unavailable'})"
            style = "reverse" if i == cursor and c.is_terminal else ("dim" if not it.enabled else "")
            c.print(f"[{style}]{escape(text)}[/{style}]" if style else escape(text), overflow="ellipsis",
                    no_wrap=True)
            if it.detail:
                c.print(escape("      " + it.detail), overflow="ellipsis", no_wrap=True, style="dim" if not it.enabled else "")
        if top + rows < len(items):
            c.print(f"   ... {len(items) - top - rows} more below")
        c.print(f"[dim]{escape(HELP.replace('back', back))}[/dim]" + (f"   typed: {typed}" if typed else ""))

    def ask(self, heading: str, lines: Sequence[str], prompt: str, default: str | None = None, *,
            secret: bool = False) -> str | None:
        """A typed answer (the default for an empty line), or None for Esc / end of input."""
        self._page(heading, lines)
        shown = f" [{default}]" if default else ""
        self.console.print(f"{escape(prompt)}{escape(shown)}: ", end="")
        with self.keys.active():
            ans = self.keys.read_line(echo=self.write, secret=secret)
        self.console.print()
        if ans is None:
            return None
        ans = ans.strip()
        return ans if ans else default

    def confirm_word(self, heading: str, lines: Sequence[str], word: str) -> bool:
        """True only when exactly ``word`` is typed (case-insensitive); anything else cancels."""
        ans = self.ask(heading, [*lines, "", f"Type {word} and Enter to go on; anything else or Esc cancels."],
                       f"Type {word}")
        return ans is not None and ans.strip().lower() == word.lower()

    def message(self, heading: str, lines: Sequence[str], *, wait: bool = True) -> None:
        """A page of text; with ``wait`` until Enter or Esc."""
        self._page(heading, lines)
        if not wait:
            return
        self.console.print("[dim]Enter or Esc: continue[/dim]")
        with self.keys.active():
            while True:
                k = self.keys.read()
                if k in (None, "enter", "esc"):
                    return

"""The menu's logs: a session log (what was chosen, commands run, results, errors) written where the rescue
system can always write (X:\\ on WinPE, /run/rescuekit on Linux, else the temp folder) and copied to
``REPO/logs/`` at the end; and ``REPO/logs/machines.log``, one line per unattended restore (docs/menu.md)."""
from __future__ import annotations

import os
import shutil
import sys
import time
from pathlib import Path

MACHINES_LOG = "machines.log"


def hostname() -> str:
    """This machine's name (os.uname where there is one: importing socket costs start-up time under TCG)."""
    if hasattr(os, "uname"):
        return os.uname().nodename
    import socket

    return socket.gethostname()


def default_dir() -> Path:
    if sys.platform == "win32" and os.path.isdir("X:\\Windows\\System32") and os.environ.get("SystemDrive") == "X:":
        return Path("X:\\")
    if sys.platform != "win32" and os.access("/run", os.W_OK):
        return Path("/run/rescuekit")
    import tempfile  # not at the top: start-up time on the Linux disc under TCG

    return Path(tempfile.gettempdir())


class SessionLog:
    def __init__(self, where: str | os.PathLike | None = None) -> None:
        d = Path(where) if where else default_dir()
        stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
        self.path: Path | None = d / f"rescuekit-{hostname()}-{stamp}-{os.getpid()}.log"
        try:
            d.mkdir(parents=True, exist_ok=True)
            self.path.touch()
        except OSError:
            self.path = None  # nowhere to write (read-only medium): the session goes on without a log

    def write(self, text: str) -> None:
        if self.path is None:
            return
        try:
            with open(self.path, "a", encoding="utf-8", errors="backslashreplace") as f:
                f.write(f"{time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())} {text}\n")
        except OSError:
            pass

    def copy_to(self, folder: Path) -> Path | None:
        """Copy the log into ``folder`` (e.g. REPO/logs); None when that cannot be written."""
        if self.path is None or not Path(folder).parent.is_dir():
            return None
        try:
            folder.mkdir(exist_ok=True)
            return Path(shutil.copyfile(self.path, folder / self.path.name))
        except OSError:
            return None

    def append_machine(self, folder: Path, line: str) -> None:
        try:
            folder.mkdir(parents=True, exist_ok=True)
            with open(folder / MACHINES_LOG, "a", encoding="utf-8") as f:
                f.write(line + "\n")
        except OSError as exc:
            self.write(f"cannot append to {folder / MACHINES_LOG}: {exc}")


def machine_line(host: str, target: str, serial: str | None, image: dict | None, result: str) -> str:
    """``time<TAB>host<TAB>disk<TAB>serial<TAB>image id<TAB>image name<TAB>result`` (tabs and newlines in
    values become spaces)."""
    vals = [time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), host, target, serial or "-",
            (image or {}).get("id") or "-", str((image or {}).get("name") or "-"), result]
    return "\t".join(" ".join(str(v).split()) or "-" for v in vals)

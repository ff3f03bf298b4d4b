"""Repository locks: ``locks/<random>.json`` holding pid, host, time, command and whether it is exclusive.

Writers (capture, forget, prune) take an exclusive lock: no other lock may exist. Readers (restore, verify)
take a shared lock: no exclusive lock may exist. After writing our lock we list again, so two processes
racing each see the other and back off. A holder refreshes its lock's time every REFRESH seconds. A lock is
stale (and removed) when it is from this host and its process is gone, or when it has not been refreshed for
STALE_AFTER seconds (e.g. left by a machine that was switched off - WinPE gets a new host name every boot);
any other conflicting lock stops us with a message naming it (``--force-unlock`` removes it).
"""
from __future__ import annotations

import errno
import json
import os
import secrets
import socket
import sys
import threading
from datetime import datetime, timezone
from pathlib import Path

from rescuekit.errors import RescueError
from rescuekit.repo.config import utc_now
from rescuekit.repo.fsutil import atomic_write

REFRESH = 300
STALE_AFTER = 1800


def _age(stamp: object) -> float | None:
    """Seconds since a lock's UTC ``time`` (None if unparsable)."""
    if not isinstance(stamp, str):
        return None
    for fmt in ("%Y-%m-%dT%H:%M:%S.%fZ", "%Y-%m-%dT%H:%M:%SZ"):
        try:
            t = datetime.strptime(stamp, fmt).replace(tzinfo=timezone.utc)
        except ValueError:
            continue
        return (datetime.now(timezone.utc) - t).total_seconds()
    return None


def _pid_alive(pid: int) -> bool:
    if sys.platform == "win32":
        import ctypes

        kernel32 = ctypes.windll.kernel32  # type: ignore[attr-defined]
        handle = kernel32.OpenProcess(0x1000, False, pid)  # PROCESS_QUERY_LIMITED_INFORMATION
        if not handle:
            return False
        code = ctypes.c_ulong()
        kernel32.GetExitCodeProcess(handle, ctypes.byref(code))
        kernel32.CloseHandle(handle)
        return code.value == 259  # STILL_ACTIVE
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _describe(doc: dict) -> str:
    kind = "exclusive" if doc.get("exclusive") else "shared"
    return (f"{kind} lock by {doc.get('command', '?')} (pid {doc.get('pid')} on {doc.get('host')}, "
            f"since {doc.get('time')})")


class RepoLock:
    def __init__(self, root: Path, *, exclusive: bool, command: str, force_unlock: bool = False) -> None:
        self.root = root
        self.exclusive = exclusive
        self.command = command
        self.force_unlock = force_unlock
        self.path: Path | None = None
        self._doc: dict = {}
        self._stop = threading.Event()
        self._refresher: threading.Thread | None = None

    def _others(self) -> list[tuple[Path, dict]]:
        out = []
        for p in (self.root / "locks").glob("*.json"):
            if p.name.startswith(".") or p == self.path:
                continue
            try:
                doc = json.loads(p.read_bytes())
            except FileNotFoundError:
                continue
            except (OSError, ValueError):
                doc = None
            if not isinstance(doc, dict):
                doc = {"exclusive": True, "command": "unreadable lock file"}
            out.append((p, doc))
        return out

    def _conflicts(self) -> list[tuple[Path, dict]]:
        host = socket.gethostname()
        bad = []
        for p, doc in self._others():
            if not (self.exclusive or doc.get("exclusive")):
                continue
            age = _age(doc.get("time"))
            stale = (doc.get("host") == host and isinstance(doc.get("pid"), int) and not _pid_alive(doc["pid"])) \
                or (age is not None and age > STALE_AFTER)
            if stale or self.force_unlock:
                try:
                    p.unlink()
                except FileNotFoundError:
                    pass
                continue
            bad.append((p, doc))
        return bad

    def _refuse(self, bad: list[tuple[Path, dict]]) -> None:
        p, doc = bad[0]
        raise RescueError(f"repository {self.root} is locked: {_describe(doc)} ({p.name}); if no such process "
                          "is running, rerun with --force-unlock")

    def acquire(self) -> "RepoLock":
        bad = self._conflicts()
        if bad:
            self._refuse(bad)
        doc = {"exclusive": self.exclusive, "pid": os.getpid(), "host": socket.gethostname(), "time": utc_now(),
               "command": self.command}
        path = self.root / "locks" / f"{secrets.token_hex(8)}.json"
        try:
            atomic_write(path, json.dumps(doc).encode())
        except OSError as exc:
            if self.exclusive or exc.errno not in (errno.EROFS, errno.EACCES, errno.EPERM):
                raise
            return self  # read-only medium: a reader cannot lock, and nobody can write there anyway
        self.path = path
        self._doc = doc
        bad = self._conflicts()  # someone raced us: back off
        if bad:
            self.release()
            self._refuse(bad)
        self._refresher = threading.Thread(target=self._refresh_loop, name="lock-refresh", daemon=True)
        self._refresher.start()
        return self

    def _refresh_loop(self) -> None:
        while not self._stop.wait(REFRESH):
            path = self.path
            if path is None:
                return
            try:
                atomic_write(path, json.dumps({**self._doc, "time": utc_now()}).encode())
            except OSError:
                pass  # a full or flaky medium: the operation itself will report it

    def release(self) -> None:
        self._stop.set()
        if self._refresher is not None:
            self._refresher.join()
            self._refresher = None
        if self.path is not None:
            try:
                self.path.unlink()
            except FileNotFoundError:
                pass
            self.path = None

    def __enter__(self) -> "RepoLock":
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()

"""Repository locks: ``locks/<random>.json`` holding kind, pid, host, boot id, time, command and a refresh counter.

Writers (capture, forget, prune) take an exclusive lock: no other lock may exist. Readers (restore, verify)
take a shared lock: no exclusive lock may exist. After writing our lock we list again; two processes that
raced back off for a random moment and try again (a few times).

Whether a conflicting lock is stale never depends on clocks (machines sharing a repository disagree about
the time, and WinPE does not sync its clock):

* a lock of this host and boot is stale when its process is gone, and live while it runs;
* any other lock (another machine, an earlier boot, or an unreadable file) is watched: its holder rewrites it
  every REFRESH seconds with a bumped counter, so a lock whose bytes stay the same for WATCH seconds of
  this process's monotonic clock is stale; one that changes is live.

A holder rewrites its lock in place (same size, no new space needed) and never re-creates it: a lock that
someone removed stays removed, and ``check_held`` lets the holder see that before it commits anything.
Every lock file is LOCK_SIZE bytes (JSON padded with spaces). ``locks/.reserve`` is a spare one: on a full
medium an exclusive locker renames it into place and fills it in, so prune and forget (which free space)
work on a full disk; releasing a lock turns it back into the spare when none is left. Readers on a
read-only or full medium proceed without a lock file.
"""
from __future__ import annotations

import errno
import json
import os
import random
import secrets
import socket
import sys
import threading
import time
from pathlib import Path

from rescuekit.errors import RescueError
from rescuekit.repo.config import utc_now
from rescuekit.repo.fsutil import atomic_write, fsync_dir

REFRESH = 10.0  # seconds between two rewrites of a held lock
WATCH = 60.0  # seconds a lock of another host must stay unchanged to be stale
LEGACY_REFRESH = 300.0  # format-1 rescuekit rewrote its lock every 5 minutes and wrote no counter
LOCK_SIZE = 1024
RESERVE = ".reserve"
RACE_TRIES = 4
_NO_LOCK_FILE = (errno.EROFS, errno.EACCES, errno.EPERM, errno.ENOSPC, errno.EDQUOT)  # readers go on unlocked
_FULL = (errno.ENOSPC, errno.EDQUOT)


def timing() -> tuple[float, float, float]:
    """(refresh, watch, legacy refresh) in seconds; RESCUEKIT_TEST_LOCK_TIMING="refresh,watch" shortens them
    for tests (the legacy interval in proportion)."""
    env = os.environ.get("RESCUEKIT_TEST_LOCK_TIMING")
    if env:
        refresh, watch = (float(x) for x in env.split(","))
        return refresh, watch, LEGACY_REFRESH * refresh / REFRESH
    return REFRESH, WATCH, LEGACY_REFRESH


def boot_id() -> str | None:
    """This boot's id (Linux); None where there is none (Windows: WinPE gets a new host name every boot)."""
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip() or None
    except OSError:
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


def _describe(doc: dict | None) -> str:
    if doc is None:
        return "unreadable lock file"
    kind = "exclusive" if doc.get("exclusive") else "shared"
    return (f"{kind} lock by {doc.get('command', '?')} (pid {doc.get('pid')} on {doc.get('host')}, "
            f"since {doc.get('time')})")


def _parse(raw: bytes) -> dict | None:
    try:
        doc = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        return None
    return doc if isinstance(doc, dict) else None


def _watch_for(doc: dict | None, watch: float, legacy: float) -> float:
    """How long ``doc`` must stay unchanged to be stale: long enough for its holder to refresh it a few times."""
    if doc is None:
        return watch  # nothing readable refreshes it
    every = doc.get("refresh") if "count" in doc else legacy
    if not isinstance(every, (int, float)) or not 0 < every <= 3600:
        every = legacy
    return max(watch, 3 * float(every))


def _encode(doc: dict) -> bytes:
    data = json.dumps(doc).encode()
    if len(data) >= LOCK_SIZE:
        raise RescueError(f"lock record too long ({len(data)} bytes): host name {doc.get('host')!r}")
    return data + b" " * (LOCK_SIZE - 1 - len(data)) + b"\n"


def _write_in_place(path: Path, data: bytes) -> None:
    """Overwrite an existing file's bytes (never creates it, never needs new space)."""
    fd = os.open(str(path), os.O_WRONLY | getattr(os, "O_BINARY", 0))
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
    finally:
        os.close(fd)


class RepoLock:
    def __init__(self, root: Path, *, exclusive: bool, command: str, force_unlock: bool = False) -> None:
        self.root = root
        self.exclusive = exclusive
        self.command = command
        self.force_unlock = force_unlock
        self.path: Path | None = None
        self.lost = False
        self._doc: dict = {}
        self._data = b""
        self._mutex = threading.Lock()
        self._stop = threading.Event()
        self._refresher: threading.Thread | None = None
        self._host, self._boot = socket.gethostname(), boot_id()
        self._refresh, self._watch, self._legacy = timing()

    @property
    def _dir(self) -> Path:
        return self.root / "locks"

    # -- other processes' locks ---------------------------------------------------------------------
    def _others(self) -> list[tuple[Path, bytes, dict | None]]:
        out = []
        for p in sorted(self._dir.glob("*.json")):
            if p.name.startswith(".") or p == self.path:
                continue
            raw, doc = self._read(p)
            if raw is not None:
                out.append((p, raw, doc))
        return out

    @staticmethod
    def _read(p: Path) -> tuple[bytes | None, dict | None]:
        """(bytes, record) of a lock file; (None, None) if it is gone. A holder rewrites its lock in place, so a
        read can catch it half-written: a garbled one is read again before it counts as garbled."""
        for attempt in range(3):
            try:
                raw = p.read_bytes()
            except FileNotFoundError:
                return None, None
            except OSError:
                return b"", None  # unreadable (e.g. no permission): watched like a garbled one
            doc = _parse(raw)
            if doc is not None or attempt == 2:
                return raw, doc
            time.sleep(0.01)
        return raw, doc

    def _conflicting(self, doc: dict | None) -> bool:
        return self.exclusive or doc is None or bool(doc.get("exclusive"))

    def _local_state(self, doc: dict | None) -> str | None:
        """'live'/'stale' for a lock of this host and boot (its pid can be checked), else None."""
        if doc is None or doc.get("host") != self._host:
            return None
        boot = doc.get("boot")  # absent in format-1 locks and None on Windows: the host name must do
        if boot is not None and self._boot is not None and boot != self._boot:
            return None  # an earlier boot of this machine (or another one of the same name): watch it
        pid = doc.get("pid")
        if type(pid) is not int or pid <= 0:
            return None
        return "live" if _pid_alive(pid) else "stale"

    def _remove(self, path: Path) -> None:
        try:
            path.unlink()
        except FileNotFoundError:
            pass
        except OSError as exc:
            if not self.exclusive and exc.errno in _NO_LOCK_FILE:
                return  # a reader on a read-only medium: nobody can write there, reading is safe
            raise RescueError(f"cannot remove the stale lock file {path}: {exc.strerror}") from None

    def _clear_conflicts(self) -> None:
        """Remove stale conflicting locks; refuse (RescueError) if a live one is found."""
        watched = []
        for p, raw, doc in self._others():
            if not self._conflicting(doc):
                continue
            if self.force_unlock:
                self._remove(p)
                continue
            state = self._local_state(doc)
            if state == "live":
                self._refuse(p, doc, "that process is still running")
            if state == "stale":
                self._remove(p)
            else:
                watched.append((p, raw, doc))
        if watched:
            self._watch_locks(watched)

    def _watch_locks(self, watched: list[tuple[Path, bytes, dict | None]]) -> None:
        limit = max(_watch_for(doc, self._watch, self._legacy) for _, _, doc in watched)
        if sys.stderr.isatty():
            p, _, doc = watched[0]
            print(f"rescuekit: {_describe(doc)} ({p.name}) in {self.root}: waiting up to {limit:.0f} s to see "
                  "whether it is still in use", file=sys.stderr, flush=True)
        start = time.monotonic()
        pending = {p: (raw, doc, _watch_for(doc, self._watch, self._legacy)) for p, raw, doc in watched}
        while pending:
            elapsed = time.monotonic() - start
            for p, (raw, doc, need) in list(pending.items()):
                now, new = self._read(p)
                if now is None:
                    del pending[p]  # released meanwhile
                    continue
                if now != raw:
                    if new is not None and not self._conflicting(new):
                        del pending[p]  # it was caught half-written: a shared lock, no conflict for a reader
                        continue
                    self._refuse(p, new if new is not None else doc, "it was refreshed while we watched it")
                if elapsed >= need:
                    self._remove(p)  # unchanged for longer than its holder's refresh interval allows
                    del pending[p]
            if pending:
                time.sleep(min(1.0, self._refresh / 2))

    def _raced(self) -> list[tuple[Path, dict | None]]:
        """Conflicting locks that appeared while we wrote ours (stale local ones are removed)."""
        bad = []
        for p, _raw, doc in self._others():
            if not self._conflicting(doc):
                continue
            if self._local_state(doc) == "stale":
                self._remove(p)
            else:
                bad.append((p, doc))
        return bad

    def _refuse(self, path: Path, doc: dict | None, why: str) -> None:
        raise RescueError(f"repository {self.root} is locked: {_describe(doc)} ({path.name}): {why}; if no such "
                          "process is running, rerun with --force-unlock")

    # -- our lock -----------------------------------------------------------------------------------
    def _new_doc(self) -> dict:
        return {"exclusive": self.exclusive, "pid": os.getpid(), "host": self._host, "boot": self._boot,
                "time": utc_now(), "command": self.command, "refresh": self._refresh, "count": 0}

    def _write(self) -> bool:
        """Write our lock file; False when a reader cannot (read-only or full medium)."""
        doc = self._new_doc()
        data = _encode(doc)
        path = self._dir / f"{secrets.token_hex(8)}.json"
        try:
            atomic_write(path, data)
        except OSError as exc:
            if not self.exclusive and exc.errno in _NO_LOCK_FILE:
                return False  # nobody can write there (or nothing fits): reading is still safe
            if exc.errno not in _FULL or not self._take_reserve(path, data):
                what = "no space left on device" if exc.errno in _FULL else (exc.strerror or str(exc))
                extra = f" (and no spare lock file {self._dir / RESERVE})" if exc.errno in _FULL else ""
                raise RescueError(f"cannot lock repository {self.root}: {what} writing {path}{extra}") from None
        self.path, self._doc, self._data = path, doc, data
        return True

    def _take_reserve(self, path: Path, data: bytes) -> bool:
        """Claim the spare lock file by renaming it (only one claimer wins), then fill it in place."""
        spare = self._dir / RESERVE
        try:
            if spare.stat().st_size != LOCK_SIZE:
                return False
            os.replace(spare, path)
        except OSError:
            return False
        try:
            _write_in_place(path, data)
        except OSError:
            path.unlink(missing_ok=True)
            return False
        fsync_dir(self._dir)
        return True

    def _ensure_reserve(self) -> None:
        spare = self._dir / RESERVE
        if not spare.exists():
            try:
                atomic_write(spare, b" " * (LOCK_SIZE - 1) + b"\n")
            except OSError:
                pass  # best effort: the next writer with space creates it

    def acquire(self) -> "RepoLock":
        try:
            self._dir.mkdir(parents=True, exist_ok=True)  # a repository copied without its empty folders
        except OSError:
            pass  # read-only/full medium: the lock write below says what is wrong
        for attempt in range(RACE_TRIES):
            self._clear_conflicts()
            if not self._write():
                return self  # a reader without a lock file
            bad = self._raced()
            if not bad:
                break
            self._drop_file()  # someone raced us: back off for a random moment, then look again
            if attempt == RACE_TRIES - 1:
                p, doc = bad[0]
                self._refuse(p, doc, "it was taken at the same time as ours")
            time.sleep(random.uniform(0.05, 0.3) * (attempt + 1))
        if self.exclusive:
            self._ensure_reserve()
        self._refresher = threading.Thread(target=self._refresh_loop, name="lock-refresh", daemon=True)
        self._refresher.start()
        return self

    def refresh(self) -> None:
        """Rewrite our lock in place with a bumped counter (the refresher thread calls this)."""
        with self._mutex:
            if self.path is None or self.lost:
                return
            doc = {**self._doc, "time": utc_now(), "count": self._doc["count"] + 1}
            data = _encode(doc)
            try:
                _write_in_place(self.path, data)
            except FileNotFoundError:
                self.lost = True  # removed by someone who took it for stale: never re-create it
                return
            except OSError:
                return  # a flaky medium: the operation itself will report it
            self._doc, self._data = doc, data

    def _refresh_loop(self) -> None:
        while not self._stop.wait(self._refresh):
            self.refresh()

    def check_held(self) -> None:
        """Raise unless our lock file is still there as we last wrote it (call before committing changes)."""
        if self.path is None:
            return
        with self._mutex:
            try:
                current = self.path.read_bytes()
            except OSError:
                current = None
            if current != self._data:
                self.lost = True
        if self.lost:
            raise RescueError(f"{self.command} stopped: its lock {self.path.name} in {self.root} was removed by "
                              "another process meanwhile (it took it for stale); nothing more was changed; run "
                              f"{self.command} again")

    def _drop_file(self) -> None:
        path, self.path = self.path, None
        if path is None:
            return
        spare = self._dir / RESERVE
        try:
            if not self.lost and not spare.exists():
                # keep its space as the spare lock file: blank it first so nobody reads it as a lock
                _write_in_place(path, b" " * (LOCK_SIZE - 1) + b"\n")
                os.replace(path, spare)
                return
        except OSError:
            pass
        try:
            path.unlink()
        except OSError:
            pass  # gone already, or held open by a reader on Windows: then it is stale once we exit

    def release(self) -> None:
        self._stop.set()
        if self._refresher is not None:
            self._refresher.join()
            self._refresher = None
        with self._mutex:
            self._drop_file()

    def __enter__(self) -> "RepoLock":
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()

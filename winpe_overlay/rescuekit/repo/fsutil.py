"""Small file helpers for the repository: atomic writes, directory fsync, positional reads."""
from __future__ import annotations

import os
import secrets
import threading
from pathlib import Path

_SEEK_LOCK = threading.Lock()


def fsync_dir(path: Path) -> None:
    """Make a rename/unlink in ``path`` durable (no-op where directories can't be opened, e.g. Windows)."""
    try:
        fd = os.open(str(path), os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def temp_name(final: Path) -> Path:
    """A temp file next to ``final`` (same directory, so the rename is atomic); prune removes leftovers."""
    return final.with_name(f".{final.name}.{secrets.token_hex(4)}.tmp")


def atomic_write(final: Path, data: bytes) -> None:
    """Write ``data`` to ``final`` via temp file + fsync + rename; nothing half-written is left on error.

    An OSError names ``final`` (a failed write() or fsync() names no file, e.g. "no space left on device")."""
    tmp = temp_name(final)
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, final)
    except BaseException as exc:
        try:
            tmp.unlink()
        except OSError:
            pass
        if isinstance(exc, OSError) and exc.errno is not None:
            raise OSError(exc.errno, exc.strerror or os.strerror(exc.errno), str(final)) from None
        raise
    fsync_dir(final.parent)


def pread(fd: int, n: int, offset: int) -> bytes:
    """Read exactly ``n`` bytes at ``offset`` (thread-safe; Windows has no os.pread)."""
    if hasattr(os, "pread"):
        out = os.pread(fd, n, offset)
        if len(out) == n:
            return out
        parts = [out]
        got = len(out)
        while got < n:
            more = os.pread(fd, n - got, offset + got)
            if not more:
                break
            parts.append(more)
            got += len(more)
        return b"".join(parts)
    with _SEEK_LOCK:
        os.lseek(fd, offset, os.SEEK_SET)
        parts, got = [], 0
        while got < n:
            more = os.read(fd, n - got)
            if not more:
                break
            parts.append(more)
            got += len(more)
        return b"".join(parts)

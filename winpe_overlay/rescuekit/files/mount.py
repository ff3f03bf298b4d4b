"""``rescuekit mount``: a volume inside SOURCE as a read-only FUSE file system (Linux), through the same
trees and readers as ``files``/``extract`` (``files.tree``), with mfusepy (ctypes bindings for libfuse 2/3).

Names are shown as ``safe_name`` makes them for this system (``/`` and NUL become ``_``, ``.``/``..`` are
renamed), NTFS alternate data streams and reparse points are not shown as files, and EFS-encrypted files
read as an I/O error. Reads at any offset: each open file keeps its reader at the position of the last read
and a read elsewhere restarts it there (``Tree.read(start=...)``: only the allocation structures are walked).
"""
from __future__ import annotations

import errno
import os
import stat
import threading
from collections import OrderedDict

from rescuekit.errors import RescueError
from rescuekit.files.extract import safe_name
from rescuekit.files.tree import Node, Tree


def load_fuse():
    """The mfusepy module, or a RescueError saying what is missing."""
    try:
        import mfusepy
    except ImportError:
        raise RescueError("rescuekit mount needs the Python package mfusepy (pip install mfusepy)") from None
    except OSError as exc:  # mfusepy loads libfuse when imported
        raise RescueError(f"rescuekit mount needs libfuse (apt-get install fuse3): {exc}") from None
    return mfusepy


class _Open:
    """One open file: its reader, the offset it has reached, and the unread rest of its last piece."""

    def __init__(self, node: Node) -> None:
        self.node = node
        self.pieces = None
        self.pos = 0
        self.rest = memoryview(b"")

    def close(self) -> None:
        if self.pieces is not None:
            self.pieces.close()  # ends its read-ahead plan
            self.pieces = None


class VolumeFS:
    """The FUSE operations (mfusepy's ``Operations`` protocol) over a ``Tree``; one request at a time."""

    use_ns = True  # times as integer nanoseconds
    DIRS = 256  # directory listings kept

    def __init__(self, tree: Tree, fuse) -> None:
        self.tree, self.fuse = tree, fuse
        self._dirs: OrderedDict[str, dict[str, Node]] = OrderedDict()
        self._files: dict[int, _Open] = {}
        self._next = 1
        self._lock = threading.Lock()
        self._uid, self._gid = os.getuid(), os.getgid()

    def _error(self, code: int):
        return self.fuse.FuseOSError(code)

    def _listing(self, path: str, node: Node) -> dict[str, Node]:
        got = self._dirs.get(path)
        if got is not None:
            self._dirs.move_to_end(path)
            return got
        try:
            kids = self.tree.listdir(node)
        except RescueError:
            raise self._error(errno.EIO) from None
        got = {}
        for k in kids:
            if not k.reparse:
                got.setdefault(safe_name(k.name, windows=False), k)
        self._dirs[path] = got
        if len(self._dirs) > self.DIRS:
            self._dirs.popitem(last=False)
        return got

    def _node(self, path: str) -> Node:
        node, at = self.tree.root(), ""
        for part in (p for p in path.split("/") if p):
            if not node.is_dir:
                raise self._error(errno.ENOTDIR)
            node = self._listing(at, node).get(part)
            if node is None:
                raise self._error(errno.ENOENT)
            at = f"{at}/{part}"
        return node

    # -- operations -------------------------------------------------------------------------------------
    def getattr(self, path: str, fh: int | None = None) -> dict:
        with self._lock:
            node = self._node(path)
        ns = (lambda t: int((t or 0) * 1e9))
        mode = (stat.S_IFDIR | 0o555) if node.is_dir else (stat.S_IFREG | 0o444)
        return {"st_mode": mode, "st_nlink": 2 if node.is_dir else max(1, node.links), "st_size": node.size,
                "st_mtime": ns(node.mtime), "st_ctime": ns(node.ctime), "st_atime": ns(node.mtime),
                "st_blocks": -(-node.size // 512), "st_uid": self._uid, "st_gid": self._gid}

    def readdir(self, path: str, fh: int) -> list[str]:
        with self._lock:
            node = self._node(path)
            if not node.is_dir:
                raise self._error(errno.ENOTDIR)
            return [".", "..", *self._listing(path.rstrip("/"), node)]

    def open(self, path: str, flags: int) -> int:
        if flags & (os.O_WRONLY | os.O_RDWR | os.O_APPEND | os.O_TRUNC):
            raise self._error(errno.EROFS)
        with self._lock:
            node = self._node(path)
            if node.is_dir:
                raise self._error(errno.EISDIR)
            fh, self._next = self._next, self._next + 1
            self._files[fh] = _Open(node)
            return fh

    def read(self, path: str, size: int, offset: int, fh: int) -> bytes:
        with self._lock:
            f = self._files.get(fh)
            if f is None:
                raise self._error(errno.EBADF)
            if f.node.encrypted or f.node.error:
                raise self._error(errno.EIO)
            if f.pieces is None or offset != f.pos:
                f.close()
                f.pieces, f.pos, f.rest = self.tree.read(f.node, "", offset), offset, memoryview(b"")
            out = []
            want = min(size, max(0, f.node.size - offset))
            try:
                while want > 0:
                    if not f.rest:
                        piece = next(f.pieces, None)
                        if piece is None:
                            break
                        f.rest = memoryview(piece)
                    take = f.rest[:want]
                    out.append(bytes(take))
                    f.rest = f.rest[len(take):]
                    want -= len(take)
            except RescueError:
                f.close()
                raise self._error(errno.EIO) from None
            data = b"".join(out)
            f.pos += len(data)
            return data

    def release(self, path: str, fh: int) -> int:
        with self._lock:
            f = self._files.pop(fh, None)
            if f is not None:
                f.close()
        return 0

    def statfs(self, path: str) -> dict:
        return {"f_bsize": 4096, "f_frsize": 4096, "f_blocks": 0, "f_bfree": 0, "f_bavail": 0,
                "f_namemax": 255}

    def destroy(self, path: str) -> None:
        with self._lock:
            for f in self._files.values():
                f.close()
            self._files.clear()


def mount(tree: Tree, mountpoint: str, fsname: str) -> None:
    """Serve ``tree`` at ``mountpoint`` read-only until it is unmounted (``fusermount -u``)."""
    fuse = load_fuse()
    if not os.path.isdir(mountpoint):
        raise RescueError(f"mount point {mountpoint} is not a folder")
    ops = type("VolumeFS", (VolumeFS, fuse.Operations), {})(tree, fuse)  # mfusepy's defaults for the rest
    try:
        fuse.FUSE(ops, mountpoint, foreground=True, nothreads=True, ro=True, fsname=fsname.replace(",", "_"))
    except RuntimeError as exc:
        raise RescueError(f"cannot mount at {mountpoint} (libfuse gave up: {exc}; is it in use, or is "
                          "/dev/fuse missing?)") from None

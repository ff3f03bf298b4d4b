"""Block devices: disk image files, Linux block devices and Windows raw disks behind one interface."""
from __future__ import annotations

import errno
import os
import stat
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, runtime_checkable

from rescuekit.errors import RescueError, UsageError

# Linux ioctls (asm-generic): _IOR(0x12, 114, size_t), _IO(0x12, 104), _IO(0x12, 95)
BLKGETSIZE64 = 0x80081272
BLKSSZGET = 0x1268
BLKRRPART = 0x125F
BLKROGET = 0x125E  # _IO(0x12, 94): 1 when the device is read-only (write-protected card, losetup -r)


@dataclass
class DiskInfo:
    """What is known about a disk (or an image file standing in for one)."""

    path: str
    size: int = 0
    sector_size: int = 512
    kind: str = "file"  # "file" | "disk" | "partition"
    model: str | None = None
    vendor: str | None = None
    serial: str | None = None
    bus: str | None = None
    removable: bool = False
    is_system: bool = False
    # Mount points (Linux) / drive letters (Windows) of volumes on this disk.
    mounts: list[str] = field(default_factory=list)


@runtime_checkable
class BlockDevice(Protocol):
    """Random-access byte device; offsets and lengths are in bytes (any alignment)."""

    path: str
    size: int
    sector_size: int
    info: DiskInfo
    writable: bool

    def readinto(self, offset: int, buf: memoryview) -> int: ...
    def read(self, offset: int, n: int) -> bytes: ...
    def write(self, offset: int, data: bytes | bytearray | memoryview) -> None: ...
    def flush(self) -> None: ...
    def close(self) -> None: ...
    def __enter__(self) -> "BlockDevice": ...
    def __exit__(self, *exc: object) -> None: ...


class FileDevice:
    """A regular file or a Linux block device opened with os.open (pread/pwrite, thread-safe)."""

    def __init__(self, path: str, fd: int, size: int, *, sector_size: int = 512, writable: bool = False,
                 info: DiskInfo | None = None, reread_on_close: bool = False) -> None:
        self.path = path
        self._fd = fd
        self.size = size
        self.sector_size = sector_size
        self.writable = writable
        self.info = info or DiskInfo(path=path, size=size, sector_size=sector_size)
        self._reread = reread_on_close
        # Windows has no os.pread: fall back to seek+read under a lock.
        self._lock = None if hasattr(os, "preadv") else threading.Lock()

    def _check(self, offset: int, n: int) -> None:
        if offset < 0 or offset + n > self.size:
            raise RescueError(f"read/write of {n} bytes at offset {offset} is past the end "
                              f"({self.size} bytes) of {self.path}")

    def readinto(self, offset: int, buf: memoryview) -> int:
        buf = memoryview(buf).cast("B")
        n = len(buf)
        self._check(offset, n)
        done = 0
        while done < n:
            try:
                if self._lock is None:
                    got = os.preadv(self._fd, [buf[done:]], offset + done)
                else:
                    with self._lock:
                        os.lseek(self._fd, offset + done, os.SEEK_SET)
                        data = os.read(self._fd, n - done)
                    got = len(data)
                    buf[done:done + got] = data
            except OSError as exc:
                raise RescueError(f"read error at offset {offset + done} of {self.path}: {exc.strerror}") from exc
            if got <= 0:
                raise RescueError(f"short read at offset {offset + done} of {self.path}")
            done += got
        return n

    def read(self, offset: int, n: int) -> bytes:
        if self._lock is None:
            self._check(offset, n)
            try:
                data = os.pread(self._fd, n, offset)  # one copy; fall back for a short read
            except OSError as exc:
                raise RescueError(f"read error at offset {offset} of {self.path}: {exc.strerror}") from exc
            if len(data) == n:
                return data
        buf = bytearray(n)
        self.readinto(offset, memoryview(buf))
        return bytes(buf)

    def write(self, offset: int, data: bytes | bytearray | memoryview) -> None:
        if not self.writable:
            raise RescueError(f"{self.path} is open read-only")
        mv = memoryview(data).cast("B")
        self._check(offset, len(mv))
        done = 0
        while done < len(mv):
            try:
                if self._lock is None:
                    got = os.pwritev(self._fd, [mv[done:]], offset + done)
                else:
                    with self._lock:
                        os.lseek(self._fd, offset + done, os.SEEK_SET)
                        got = os.write(self._fd, mv[done:])
            except OSError as exc:
                what = "no space left on device" if exc.errno == errno.ENOSPC else exc.strerror
                raise RescueError(f"write error at offset {offset + done} of {self.path}: {what}") from exc
            if got <= 0:
                raise RescueError(f"short write at offset {offset + done} of {self.path}")
            done += got

    def current_size(self) -> int:
        """The size now (``size`` is the size at open): a file still being written, a re-probed disk."""
        try:
            st = os.fstat(self._fd)
            return _linux_block_geometry(self._fd)[0] if stat.S_ISBLK(st.st_mode) else st.st_size
        except OSError as exc:
            raise RescueError(f"cannot get the size of {self.path}: {exc.strerror}") from exc

    def flush(self) -> None:
        if self.writable:
            try:
                os.fsync(self._fd)
            except OSError as exc:
                raise RescueError(f"cannot flush {self.path}: {exc.strerror}") from exc

    def close(self) -> None:
        if self._fd < 0:
            return
        fd, self._fd = self._fd, -1
        try:
            if self.writable:
                os.fsync(fd)
            if self._reread:
                _reread_partitions(fd)
        finally:
            os.close(fd)

    def __enter__(self) -> "FileDevice":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"FileDevice({self.path!r}, size={self.size})"


def _reread_partitions(fd: int) -> None:
    """Ask the Linux kernel to re-read the partition table (best effort: busy disks refuse)."""
    try:
        import fcntl

        fcntl.ioctl(fd, BLKRRPART)
    except OSError:
        pass


def _block_read_only(fd: int) -> bool:
    import fcntl
    import struct

    try:
        return struct.unpack("i", fcntl.ioctl(fd, BLKROGET, b"\0" * 4))[0] != 0
    except OSError:
        return False


def _linux_block_geometry(fd: int) -> tuple[int, int]:
    import fcntl
    import struct

    size = struct.unpack("Q", fcntl.ioctl(fd, BLKGETSIZE64, b"\0" * 8))[0]
    try:
        ssz = struct.unpack("i", fcntl.ioctl(fd, BLKSSZGET, b"\0" * 4))[0]
    except OSError:
        ssz = 512
    return size, ssz


def is_windows_device(path: str) -> bool:
    return path.startswith(("\\\\.\\", "\\\\?\\", "//./"))


def _open(path: str | Path, writable: bool, create_size: int | None) -> BlockDevice:
    spath = str(path)
    if is_windows_device(spath):
        if sys.platform != "win32":
            raise UsageError(f"{spath} is a Windows device path; this is not Windows")
        from rescuekit.disk import windows

        return windows.open_device(spath, writable=writable)
    flags = (os.O_RDWR if writable else os.O_RDONLY) | getattr(os, "O_BINARY", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        st = os.stat(spath)
    except FileNotFoundError:
        if not writable or create_size is None:
            raise RescueError(f"no such disk, partition or image file: {spath}") from None
        return _create_file(spath, create_size)
    except PermissionError as exc:  # a folder on the way cannot be searched
        raise RescueError(_denied(spath, writable, exc)) from None
    if stat.S_ISDIR(st.st_mode):
        raise UsageError(f"{spath} is a directory, not a disk, partition or image file")
    if not (stat.S_ISREG(st.st_mode) or stat.S_ISBLK(st.st_mode)):  # before open: a FIFO's open blocks
        raise UsageError(f"{spath} is neither a regular file nor a block device")
    if writable and stat.S_ISBLK(st.st_mode):
        # Exclusive open: Linux refuses it (EBUSY) while the device or one of its partitions is mounted.
        flags |= os.O_EXCL
    try:
        fd = os.open(spath, flags)
    except OSError as exc:
        if exc.errno == errno.EBUSY:
            raise RescueError(f"{spath} is in use (mounted or held by another program); unmount it first") from None
        if exc.errno in (errno.EACCES, errno.EPERM):
            raise RescueError(_denied(spath, writable, exc)) from None
        raise RescueError(f"cannot open {spath}: {exc.strerror}") from None
    try:
        if stat.S_ISBLK(st.st_mode):
            if writable and _block_read_only(fd):  # Linux opens it read-write anyway; every write would fail
                raise RescueError(f"{spath} is read-only (a write-protected medium?); nothing was written")
            size, ssz = _linux_block_geometry(fd)
            from rescuekit.disk import linux

            info = linux.block_info(spath, size=size, sector_size=ssz)
            return FileDevice(spath, fd, size, sector_size=ssz, writable=writable, info=info,
                              reread_on_close=writable and info.kind == "disk")
        return FileDevice(spath, fd, st.st_size, writable=writable)
    except BaseException:
        os.close(fd)
        raise


def _denied(path: str, writable: bool, exc: OSError) -> str:
    """Why an open was refused: "run as root" helps only when we are not root already."""
    how = "read-write" if writable else "read"
    if os.geteuid() != 0:
        return f"permission denied opening {path} ({how}); run as root/administrator"
    # Root and still refused: a container's device policy (cgroup), a security module, or an immutable file.
    return (f"{exc.strerror.lower()} opening {path} ({how}) although running as root: the system does not let "
            "this process open it (container device policy, security module or immutable file)")


def _create_file(path: str, size: int) -> FileDevice:
    """A new sparse image file of ``size`` bytes."""
    if size < 0:
        raise UsageError(f"negative size {size} for new image file {path}")
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o644)
    except OSError as exc:
        raise RescueError(f"cannot create {path}: {exc.strerror}") from None
    try:
        os.ftruncate(fd, size)
    except OSError as exc:
        os.close(fd)
        os.unlink(path)
        raise RescueError(f"cannot size {path} to {size} bytes: {exc.strerror}") from None
    return FileDevice(path, fd, size, writable=True)


def open_source(path: str | Path) -> BlockDevice:
    """Open a disk, partition or image file read-only."""
    return _open(path, False, None)


def open_target(path: str | Path, *, create_size: int | None = None) -> BlockDevice:
    """Open a disk, partition or image file for writing.

    A file that does not exist is created sparse with ``create_size`` bytes (an existing file keeps its
    size). Windows disks get their volumes locked and dismounted; Linux disks get BLKRRPART on close.
    """
    return _open(path, True, create_size)

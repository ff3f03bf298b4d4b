"""A FUSE file system of one read-only file, ``disk.img``, that serves a backing file but fails reads
touching chosen byte ranges with EIO: a disk with bad sectors, at the system-call layer (device-mapper's
"error" target is not available in the test environment).

    python faultfs.py BACKING MOUNTPOINT START:LENGTH[,START:LENGTH...]

Runs in the foreground until unmounted (``umount MOUNTPOINT`` or ``fusermount -u``). Tests use
``faulty_file(...)``, a context manager that mounts it and always unmounts.
"""
from __future__ import annotations

import contextlib
import errno
import os
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from fuse import FUSE, FuseOSError, Operations  # fusepy (test extra), ctypes over libfuse2

NAME = "disk.img"


@contextlib.contextmanager
def faulty_file(backing: Path, bad: list[tuple[int, int]], workdir: Path) -> Iterator[Path]:
    """Mount the fault file system over ``backing`` under ``workdir``; yields the path of the faulty file.
    ``workdir/faultfs.log`` gets one line "offset length" per read that failed."""
    mnt = workdir / "faultfs"
    mnt.mkdir()
    spec = ",".join(f"{s}:{n}" for s, n in bad)
    proc = subprocess.Popen([sys.executable, __file__, str(backing), str(mnt), spec], stderr=subprocess.PIPE,
                            env={**os.environ, "FAULTFS_LOG": str(workdir / "faultfs.log")})
    try:
        for _ in range(600):  # a start-up wait (hang guard), not a timed assertion
            if os.path.ismount(mnt):
                break
            if proc.poll() is not None:
                raise RuntimeError(f"faultfs did not mount: {proc.stderr.read().decode(errors='replace')}")
            time.sleep(0.05)
        else:
            raise RuntimeError("faultfs did not mount within 30 s")
        yield mnt / NAME
    finally:
        if os.path.ismount(mnt):
            subprocess.run(["umount", str(mnt)], check=False)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        proc.stderr.close()


class FaultFS(Operations):
    def __init__(self, backing: str, bad: list[tuple[int, int]]) -> None:
        self.fd = os.open(backing, os.O_RDONLY)
        self.size = os.fstat(self.fd).st_size
        self.bad = bad
        self.log = os.environ.get("FAULTFS_LOG")  # one line per failed read (offset, length)

    def getattr(self, path, fh=None):
        if path == "/":
            return {"st_mode": stat.S_IFDIR | 0o755, "st_nlink": 2}
        if path == "/" + NAME:
            return {"st_mode": stat.S_IFREG | 0o444, "st_nlink": 1, "st_size": self.size}
        raise FuseOSError(errno.ENOENT)

    def readdir(self, path, fh):
        return [".", "..", NAME]

    def read(self, path, size, offset, fh):
        for start, length in self.bad:
            if offset < start + length and offset + size > start:
                if self.log:
                    with open(self.log, "a") as f:
                        f.write(f"{offset} {size}\n")
                raise FuseOSError(errno.EIO)
        return os.pread(self.fd, size, offset)


def main() -> None:
    backing, mnt, spec = sys.argv[1:4]
    bad = [tuple(map(int, r.split(":"))) for r in spec.split(",") if r]
    # direct_io: every read reaches us (no page cache hiding a bad range behind an earlier good read)
    FUSE(FaultFS(backing, bad), mnt, foreground=True, ro=True, direct_io=True, nothreads=False)


if __name__ == "__main__":
    main()

"""Virtual disks (VHDX, VHD) as read-only block devices, and slices of a device (one partition of it)."""
from __future__ import annotations

from pathlib import Path

from rescuekit.disk.device import BlockDevice, DiskInfo, open_source
from rescuekit.errors import RescueError, UsageError


class ReadOnlyDevice:
    """Base for read-only devices built on another one: ``_read_into(offset, view)`` does the work."""

    path: str
    size: int
    sector_size: int = 512
    writable = False
    info: DiskInfo

    def _read_into(self, offset: int, view: memoryview) -> None:
        raise NotImplementedError

    def readinto(self, offset: int, buf: memoryview) -> int:
        view = memoryview(buf).cast("B")
        if offset < 0 or offset + len(view) > self.size:
            raise RescueError(f"read of {len(view)} bytes at offset {offset} is past the end "
                              f"({self.size} bytes) of {self.path}")
        self._read_into(offset, view)
        return len(view)

    def read(self, offset: int, n: int) -> bytes:
        buf = bytearray(n)
        self.readinto(offset, memoryview(buf))
        return bytes(buf)

    def write(self, offset: int, data: bytes | bytearray | memoryview) -> None:
        raise RescueError(f"{self.path} is open read-only")

    def flush(self) -> None:
        pass

    def close(self) -> None:
        pass

    def __enter__(self) -> "ReadOnlyDevice":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.path} {self.size} bytes>"


class BlockMappedDevice(ReadOnlyDevice):
    """Base for virtual disks stored as ``blocks`` blocks of ``block_size`` bytes, each either in the file or
    reading as zeros (VHD dynamic, VHDX): one walk over the blocks for reads and for the allocated ranges."""

    block_size: int
    blocks: int

    def _block_present(self, block: int) -> bool:
        raise NotImplementedError

    def _read_block(self, block: int, inner: int, view: memoryview) -> bool:
        """Fill ``view`` from ``inner`` bytes into ``block``; False when the block is not stored (reads as zeros)."""
        raise NotImplementedError

    def allocated_ranges(self) -> list[tuple[int, int]]:
        """Virtual byte ranges whose blocks are stored in the file (the rest reads as zeros)."""
        out: list[tuple[int, int]] = []
        for b in range(self.blocks):
            if self._block_present(b):
                s = b * self.block_size
                n = min(self.block_size, self.size - s)
                if out and out[-1][0] + out[-1][1] == s:
                    out[-1] = (out[-1][0], out[-1][1] + n)
                else:
                    out.append((s, n))
        return out

    def _read_into(self, offset: int, view: memoryview) -> None:
        done, n, bs = 0, len(view), self.block_size
        while done < n:
            block, inner = divmod(offset + done, bs)
            take = min(bs - inner, n - done)
            part = view[done:done + take]
            if not self._read_block(block, inner, part):
                part[:] = bytes(take)
            done += take


class SliceDevice(ReadOnlyDevice):
    """``size`` bytes at ``offset`` of ``dev`` (e.g. the partition inside a virtual disk), read-only."""

    def __init__(self, dev: BlockDevice, offset: int, size: int, path: str | None = None) -> None:
        if offset < 0 or size < 0 or offset + size > dev.size:
            raise RescueError(f"range {offset}+{size} lies outside {dev.path} ({dev.size} bytes)")
        self._dev, self._off = dev, offset
        self.size, self.sector_size = size, dev.sector_size
        self.path = path or f"{dev.path}@{offset}"
        self.info = DiskInfo(path=self.path, size=size, sector_size=self.sector_size, kind="partition")

    def _read_into(self, offset: int, view: memoryview) -> None:
        self._dev.readinto(self._off + offset, view)


class FileView:
    """A file-like (read/seek/tell) view of a block device, for code that wants a stream."""

    def __init__(self, dev: BlockDevice) -> None:
        self._dev, self._pos = dev, 0

    def seek(self, pos: int, whence: int = 0) -> int:
        self._pos = max(0, pos if whence == 0 else self._pos + pos if whence == 1 else self._dev.size + pos)
        return self._pos

    def tell(self) -> int:
        return self._pos

    def read(self, n: int = -1) -> bytes:
        n = self._dev.size - self._pos if n < 0 else min(n, max(0, self._dev.size - self._pos))
        data = self._dev.read(self._pos, n) if n > 0 else b""
        self._pos += len(data)
        return data


def open_vdisk(path: str | Path) -> ReadOnlyDevice:
    """Open a .vhdx or .vhd file (by its signature, not its name) as a read-only virtual disk."""
    from rescuekit.vdisk import vhd, vhdx

    f = open_source(path)
    try:
        head = f.read(0, 8) if f.size >= 8 else b""
        if head == vhdx.FILE_SIGNATURE:
            return vhdx.VhdxDisk(f)
        if f.size >= 512 and (f.read(f.size - 512, 8) == vhd.COOKIE or head == vhd.COOKIE):
            return vhd.VhdDisk(f)
        raise UsageError(f"{f.path} is neither a VHDX nor a VHD file (no vhdxfile/conectix signature)")
    except BaseException:
        f.close()
        raise

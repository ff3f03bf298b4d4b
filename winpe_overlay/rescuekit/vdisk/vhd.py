"""VHD reader (fixed and dynamic), written from Microsoft's "Virtual Hard Disk Image Format Specification"
(version 1.0, 2006).

All fields are big-endian. Every VHD ends with a 512-byte footer ("conectix"; checksum = one's complement of
the byte sum with the checksum field zeroed); dynamic disks copy it at offset 0 and point (DataOffset) to a
1024-byte dynamic header ("cxsparse", same checksum rule) that locates the BAT: one 32-bit sector number per
block, 0xFFFFFFFF = not allocated (reads as zeros). An allocated block is a sector bitmap (one bit per sector,
MSB first, padded to 512 bytes) followed by the block's data; a sector whose bit is clear reads as zeros.
Differencing disks (type 4) are refused. The virtual size is the footer's Current Size.
"""
from __future__ import annotations

import struct
import threading

from rescuekit.disk.device import BlockDevice, DiskInfo
from rescuekit.errors import RescueError
from rescuekit.vdisk import BlockMappedDevice

COOKIE = b"conectix"
DYN_COOKIE = b"cxsparse"
TYPE_FIXED, TYPE_DYNAMIC, TYPE_DIFFERENCING = 2, 3, 4
UNUSED = 0xFFFFFFFF
SECTOR = 512
BAT_CACHE = 8192  # BAT entries per cached page (32 KiB)


def _checksum_ok(buf: bytes, at: int) -> bool:
    stored = struct.unpack_from(">I", buf, at)[0]
    s = sum(buf) - sum(buf[at:at + 4])
    return (~s) & 0xFFFFFFFF == stored


class VhdDisk(BlockMappedDevice):
    """A VHD file as a read-only block device of its footer's current size."""

    def __init__(self, f: BlockDevice) -> None:
        self._f = f
        self.path = f.path
        where = f"VHD {f.path}"
        footer = f.read(f.size - SECTOR, SECTOR) if f.size >= SECTOR else b""
        if footer[:8] == COOKIE and not _checksum_ok(footer, 64):
            raise RescueError(f"{where} is corrupt: its footer fails its checksum")
        if footer[:8] != COOKIE:
            # A truncated dynamic disk loses its footer; the copy at offset 0 says what it was.
            if f.size >= SECTOR and f.read(0, 8) == COOKIE:
                raise RescueError(f"{where} is truncated or corrupt: no footer at its end (file {f.size} bytes)")
            raise RescueError(f"{where} is not a VHD: no footer")
        version, data_offset = struct.unpack_from(">IQ", footer, 12)
        self.size = struct.unpack_from(">Q", footer, 48)[0]
        self.disk_type = struct.unpack_from(">I", footer, 60)[0]
        self.creator = footer[28:32].decode("latin-1")
        if version >> 16 != 1:
            raise RescueError(f"{where} has file format version {version >> 16}.{version & 0xFFFF}, only 1.x is known")
        self.sector_size = SECTOR
        self._lock = threading.Lock()
        self._bat_pages: dict[int, tuple[int, ...]] = {}
        self._bitmaps: dict[int, bytes] = {}
        if self.disk_type == TYPE_DIFFERENCING:
            raise RescueError(f"{where} is a differencing disk (it has a parent); only fixed and dynamic VHD "
                              "files can be read: merge it into its parent first")
        if self.disk_type == TYPE_FIXED:
            if self.size + SECTOR > f.size:
                raise RescueError(f"{where} is truncated: {f.size} bytes hold less than its {self.size}-byte disk")
            self.block_size = 0
        elif self.disk_type == TYPE_DYNAMIC:
            if data_offset + 1024 > f.size:
                raise RescueError(f"{where} is truncated or corrupt: dynamic header at {data_offset} lies outside it")
            dh = f.read(data_offset, 1024)
            if dh[:8] != DYN_COOKIE or not _checksum_ok(dh, 36):
                raise RescueError(f"{where} is corrupt: dynamic disk header at {data_offset} "
                                  f"{'fails its checksum' if dh[:8] == DYN_COOKIE else 'is missing'}")
            self._bat_off, hv, self.max_entries, self.block_size = struct.unpack_from(">QIII", dh, 16)
            bs = self.block_size
            if bs < SECTOR or bs & (bs - 1) or bs > 256 << 20:
                raise RescueError(f"{where} has an implausible block size {bs}")
            self.blocks = -(-self.size // bs)
            if self.max_entries < self.blocks or self._bat_off + 4 * self.max_entries > f.size:
                raise RescueError(f"{where} is truncated or corrupt: its BAT ({self.max_entries} entries at "
                                  f"{self._bat_off}) does not cover {self.blocks} blocks inside the file")
            self._bitmap_bytes = -(-(bs // SECTOR // 8) // SECTOR) * SECTOR
        else:
            raise RescueError(f"{where} has unknown disk type {self.disk_type}")
        if self.size <= 0 or self.size % SECTOR:
            raise RescueError(f"{where} has an implausible size {self.size}")
        self.info = DiskInfo(path=self.path, size=self.size, sector_size=SECTOR, kind="file",
                             model="VHD virtual disk")

    def _bat_entry(self, block: int) -> int:
        page = block // BAT_CACHE
        entries = self._bat_pages.get(page)
        if entries is None:
            first = page * BAT_CACHE
            n = min(BAT_CACHE, self.max_entries - first)
            entries = struct.unpack(f">{n}I", self._f.read(self._bat_off + 4 * first, 4 * n))
            with self._lock:
                if len(self._bat_pages) > 64:
                    self._bat_pages.clear()
                self._bat_pages[page] = entries
        return entries[block - page * BAT_CACHE]

    def block_location(self, block: int) -> tuple[int, bytes] | None:
        """(file offset of the block's data, its sector bitmap), or None when it is not allocated."""
        sec = self._bat_entry(block)
        if sec == UNUSED:
            return None
        bm = self._bitmaps.get(block)
        start = sec * SECTOR
        if bm is None:
            if start + self._bitmap_bytes + self.block_size > self._f.size - SECTOR:
                raise RescueError(f"VHD {self.path} is truncated or corrupt: block {block} at file offset {start} "
                                  f"lies outside the file ({self._f.size} bytes)")
            bm = self._f.read(start, self._bitmap_bytes)
            with self._lock:
                if len(self._bitmaps) > 256:
                    self._bitmaps.clear()
                self._bitmaps[block] = bm
        return start + self._bitmap_bytes, bm

    def allocated_ranges(self) -> list[tuple[int, int]]:
        """Virtual byte ranges whose blocks are stored (fixed: everything)."""
        if self.disk_type == TYPE_FIXED:
            return [(0, self.size)]
        return super().allocated_ranges()

    def _block_present(self, block: int) -> bool:
        return self._bat_entry(block) != UNUSED

    def _read_into(self, offset: int, view: memoryview) -> None:
        if self.disk_type == TYPE_FIXED:
            self._f.readinto(offset, view)
        else:
            super()._read_into(offset, view)

    def _read_block(self, block: int, inner: int, part: memoryview) -> bool:
        loc = self.block_location(block)
        if loc is None:
            return False
        data_at, bm = loc
        take = len(part)
        self._f.readinto(data_at + inner, part)
        first, last = inner // SECTOR, (inner + take - 1) // SECTOR
        span = bm[first >> 3:(last >> 3) + 1]
        if span.count(0xFF) != len(span):  # some sector of the bytes covering the range is not present
            for s in range(first, last + 1):  # sectors never written read as zeros
                if not bm[s >> 3] & (0x80 >> (s & 7)):
                    a = max(s * SECTOR, inner) - inner
                    b = min((s + 1) * SECTOR, inner + take) - inner
                    part[a:b] = bytes(b - a)
        return True

    def close(self) -> None:
        self._f.close()

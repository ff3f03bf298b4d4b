"""VHDX reader (fixed and dynamic), written from Microsoft's [MS-VHDX] v20160714 specification.

Layout (MS-VHDX 2.1-2.6): file type identifier "vhdxfile" at 0; two 4 KiB headers at 64 KiB and 128 KiB
(CRC-32C, the valid one with the higher sequence number is current); two 64 KiB region tables at 192 KiB and
256 KiB (CRC-32C) locating the BAT and the metadata region; metadata items give block size, virtual size,
logical/physical sector size and whether the disk has a parent. BAT entries: state in bits 0-2, file offset
in MiB in bits 20-63; one sector-bitmap entry follows every ``chunk ratio`` payload entries.
A differencing disk (HasParent) and a non-empty log (LogGuid not zero: the log must be replayed before the
metadata/BAT can be trusted) are refused; replay is not implemented.
"""
from __future__ import annotations

import struct
import threading
import uuid

from rescuekit.disk.device import BlockDevice, DiskInfo
from rescuekit.errors import RescueError
from rescuekit.vdisk import BlockMappedDevice
from rescuekit.vdisk.crc32c import crc32c

FILE_SIGNATURE = b"vhdxfile"
KiB, MiB = 1 << 10, 1 << 20
HEADER_OFFSETS = (64 * KiB, 128 * KiB)
REGION_OFFSETS = (192 * KiB, 256 * KiB)
REGION_SIZE = 64 * KiB
BAT_GUID = uuid.UUID("2DC27766-F623-4200-9D64-115E9BFD4A08")
METADATA_GUID = uuid.UUID("8B7CA206-4790-4B9A-B8FE-575F050F886E")
FILE_PARAMETERS = uuid.UUID("CAA16737-FA36-4D43-B3B6-33F0AA44E76B")
VIRTUAL_DISK_SIZE = uuid.UUID("2FA54224-CD1B-4876-B211-5DBED83BF4B8")
VIRTUAL_DISK_ID = uuid.UUID("BECA12AB-B2E6-4523-93EF-C309E000C746")
LOGICAL_SECTOR_SIZE = uuid.UUID("8141BF1D-A96F-4709-BA47-F233A8FAAB5F")
PHYSICAL_SECTOR_SIZE = uuid.UUID("CDA348C7-445D-4471-9CC9-E9885251C556")
PARENT_LOCATOR = uuid.UUID("A8D35F2D-B30B-454D-ABF7-D3D84834AB0C")
KNOWN_METADATA = {FILE_PARAMETERS, VIRTUAL_DISK_SIZE, VIRTUAL_DISK_ID, LOGICAL_SECTOR_SIZE, PHYSICAL_SECTOR_SIZE,
                  PARENT_LOCATOR}
# Payload block states (MS-VHDX 2.5.1.1)
PAYLOAD_NOT_PRESENT, PAYLOAD_UNDEFINED, PAYLOAD_ZERO, PAYLOAD_UNMAPPED = 0, 1, 2, 3
PAYLOAD_FULLY_PRESENT, PAYLOAD_PARTIALLY_PRESENT = 6, 7
ZERO_STATES = {PAYLOAD_NOT_PRESENT, PAYLOAD_UNDEFINED, PAYLOAD_ZERO, PAYLOAD_UNMAPPED}
BAT_CACHE = 4096  # BAT entries read per page (32 KiB)


def _crc_ok(buf: bytes, crc_at: int) -> bool:
    stored = struct.unpack_from("<I", buf, crc_at)[0]
    body = bytearray(buf)
    body[crc_at:crc_at + 4] = b"\0\0\0\0"
    return crc32c(body) == stored


class VhdxDisk(BlockMappedDevice):
    """A VHDX file as a read-only block device of its virtual size (never loads more than a BAT page)."""

    def __init__(self, f: BlockDevice) -> None:
        self._f = f
        self.path = f.path
        where = f"VHDX {f.path}"
        if f.size < REGION_OFFSETS[1] + REGION_SIZE or f.read(0, 8) != FILE_SIGNATURE:
            raise RescueError(f"{where} is truncated or not a VHDX file ({f.size} bytes)")
        hdr = self._current_header(where)
        log_guid = uuid.UUID(bytes_le=hdr[48:64])
        if log_guid.int:
            raise RescueError(f"{where} has a non-empty log (LogGuid {log_guid}): it was not closed cleanly and "
                              "its log would have to be replayed; open it once in Windows (or `qemu-img check -r "
                              "all` on a copy) and try again")
        if struct.unpack_from("<H", hdr, 66)[0] != 1:
            raise RescueError(f"{where} has header version {struct.unpack_from('<H', hdr, 66)[0]}, only 1 is known")
        regions = self._regions(where)
        if BAT_GUID not in regions or METADATA_GUID not in regions:
            raise RescueError(f"{where}: the region table lacks the {'BAT' if BAT_GUID not in regions else 'metadata'}"
                              " region")
        meta = self._metadata(regions[METADATA_GUID], where)
        params = meta.get(FILE_PARAMETERS)
        vsize = meta.get(VIRTUAL_DISK_SIZE)
        lss = meta.get(LOGICAL_SECTOR_SIZE)
        if params is None or len(params) < 8 or vsize is None or len(vsize) < 8 or lss is None or len(lss) < 4:
            raise RescueError(f"{where}: required metadata (file parameters, virtual disk size, logical sector "
                              "size) is missing")
        self.block_size, flags = struct.unpack_from("<II", params)
        if flags & 2:
            raise RescueError(f"{where} is a differencing disk (it has a parent); only fixed and dynamic VHDX "
                              "files can be read: merge it into its parent first")
        self.size = struct.unpack_from("<Q", vsize)[0]
        self.sector_size = struct.unpack_from("<I", lss)[0]
        pss = meta.get(PHYSICAL_SECTOR_SIZE)
        self.physical_sector_size = struct.unpack_from("<I", pss)[0] if pss and len(pss) >= 4 else self.sector_size
        bs = self.block_size
        if not (MiB <= bs <= 256 * MiB and bs & (bs - 1) == 0) or self.sector_size not in (512, 4096) or \
                self.size % self.sector_size or self.size <= 0 or self.size > 64 << 40:
            raise RescueError(f"{where}: implausible geometry (block size {bs}, logical sector size "
                              f"{self.sector_size}, virtual size {self.size})")
        self.chunk_ratio = (1 << 23) * self.sector_size // bs
        self.blocks = -(-self.size // bs)
        n_entries = self.blocks + (self.blocks - 1) // self.chunk_ratio
        bat_off, bat_len = regions[BAT_GUID]
        if n_entries * 8 > bat_len:
            raise RescueError(f"{where}: the BAT region ({bat_len} bytes) is too small for {self.blocks} blocks")
        self._bat_off = bat_off
        self._bat_pages: dict[int, tuple[int, ...]] = {}
        self._lock = threading.Lock()
        self.info = DiskInfo(path=self.path, size=self.size, sector_size=self.sector_size, kind="file",
                             model="VHDX virtual disk")

    # ------------------------------------------------------------ structure
    def _current_header(self, where: str) -> bytes:
        best, best_seq, why = None, -1, []
        for off in HEADER_OFFSETS:
            h = self._f.read(off, 4 * KiB)
            if h[:4] != b"head":
                why.append(f"no header signature at {off}")
            elif not _crc_ok(h, 4):
                why.append(f"header at {off} fails its CRC-32C")
            else:
                seq = struct.unpack_from("<Q", h, 8)[0]
                if seq > best_seq:
                    best, best_seq = h, seq
        if best is None:
            raise RescueError(f"{where} is corrupt: {'; '.join(why)}")
        return best

    def _regions(self, where: str) -> dict[uuid.UUID, tuple[int, int]]:
        why = []
        for off in REGION_OFFSETS:
            t = self._f.read(off, REGION_SIZE)
            if t[:4] != b"regi":
                why.append(f"no region table signature at {off}")
                continue
            if not _crc_ok(t, 4):
                why.append(f"region table at {off} fails its CRC-32C")
                continue
            count = struct.unpack_from("<I", t, 8)[0]
            if count > 2047:
                why.append(f"region table at {off} claims {count} entries")
                continue
            out = {}
            for i in range(count):
                guid_b, foff, length, req = struct.unpack_from("<16sQII", t, 16 + 32 * i)
                guid = uuid.UUID(bytes_le=guid_b)
                if req & 1 and guid not in (BAT_GUID, METADATA_GUID):
                    raise RescueError(f"{where} needs region {guid}, which this reader does not know")
                if foff % MiB or foff + length > self._f.size:
                    raise RescueError(f"{where} is truncated or corrupt: region {guid} at {foff}+{length} lies "
                                      f"outside the file ({self._f.size} bytes)")
                out[guid] = (foff, length)
            return out
        raise RescueError(f"{where} is corrupt: {'; '.join(why)}")

    def _metadata(self, region: tuple[int, int], where: str) -> dict[uuid.UUID, bytes]:
        off, length = region
        head = self._f.read(off, min(length, 64 * KiB))
        if head[:8] != b"metadata":
            raise RescueError(f"{where}: no metadata table signature at {off}")
        count = struct.unpack_from("<H", head, 10)[0]
        if count > 2047 or 32 + 32 * count > len(head):
            raise RescueError(f"{where}: metadata table claims {count} entries")
        out = {}
        for i in range(count):
            guid_b, ioff, ilen, flags = struct.unpack_from("<16sIII", head, 32 + 32 * i)
            guid = uuid.UUID(bytes_le=guid_b)
            if flags & 4 and guid not in KNOWN_METADATA:
                raise RescueError(f"{where} needs metadata item {guid}, which this reader does not know")
            if ilen == 0:
                continue
            if ioff < 64 * KiB or ioff + ilen > length:
                raise RescueError(f"{where}: metadata item {guid} lies outside the metadata region")
            out[guid] = self._f.read(off + ioff, ilen)
        return out

    def _bat_entry(self, block: int) -> int:
        idx = block + block // self.chunk_ratio  # a sector-bitmap entry after every chunk_ratio payload entries
        page = idx // BAT_CACHE
        entries = self._bat_pages.get(page)
        if entries is None:
            first = page * BAT_CACHE
            total = self.blocks + (self.blocks - 1) // self.chunk_ratio
            n = min(BAT_CACHE, total - first)
            entries = struct.unpack(f"<{n}Q", self._f.read(self._bat_off + first * 8, n * 8))
            with self._lock:
                if len(self._bat_pages) > 64:
                    self._bat_pages.clear()
                self._bat_pages[page] = entries
        return entries[idx - page * BAT_CACHE]

    def block_location(self, block: int) -> int | None:
        """File offset of payload block ``block``, or None when it reads as zeros."""
        e = self._bat_entry(block)
        state, off = e & 7, (e >> 20) * MiB
        if state in ZERO_STATES:
            return None
        if state == PAYLOAD_FULLY_PRESENT:
            if off < 1 * MiB or off + min(self.block_size, self.size - block * self.block_size) > self._f.size:
                raise RescueError(f"VHDX {self.path} is truncated or corrupt: block {block} at file offset {off} "
                                  f"lies outside the file ({self._f.size} bytes)")
            return off
        raise RescueError(f"VHDX {self.path}: block {block} has state {state} (partially present needs a parent, "
                          "other values are invalid)")

    def _block_present(self, block: int) -> bool:
        return self.block_location(block) is not None

    def _read_block(self, block: int, inner: int, part: memoryview) -> bool:
        loc = self.block_location(block)
        if loc is None:
            return False
        self._f.readinto(loc + inner, part)
        return True

    def close(self) -> None:
        self._f.close()

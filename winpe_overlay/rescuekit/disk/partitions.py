"""Partition tables: GPT (with CRC checks and backup) and MBR (with extended/logical partitions)."""
from __future__ import annotations

import struct
import uuid
import zlib
from dataclasses import dataclass, field, replace

from rescuekit.disk.device import BlockDevice
from rescuekit.disk.ranges import merge
from rescuekit.errors import RescueError

GPT_SIGNATURE = b"EFI PART"
GPT_HEADER = struct.Struct("<8sIIIIQQQQ16sQIII")  # 92 bytes, UEFI spec 2.x table 5.20
GPT_ENTRY = struct.Struct("<16s16sQQQ72s")  # 128 bytes
MBR_ENTRY = struct.Struct("<B3sB3sII")
EXTENDED_TYPES = {0x05, 0x0F, 0x85}
MAX_GPT_ENTRIES_BYTES = 1 << 20  # sanity limit for the entry array (normally 16 KiB)
MAX_LOGICAL = 128

GPT_TYPES = {
    "C12A7328-F81F-11D2-BA4B-00A0C93EC93B": "EFI System",
    "E3C9E316-0B5C-4DB8-817D-F92DF00215AE": "Microsoft reserved",
    "EBD0A0A2-B9E5-4433-87C0-68B6B72699C7": "Basic data",
    "DE94BBA4-06D1-4D40-A16A-BFD50179D6AC": "Windows recovery",
    "5808C8AA-7E8F-42E0-85D2-E1E90434CFB3": "LDM metadata",
    "AF9B60A0-1431-4F62-BC68-3311714A69AD": "LDM data",
    "E75CAF8F-F680-4CEE-AFA3-B001E56EFC2D": "Storage Spaces",
    "21686148-6449-6E6F-744E-656564454649": "BIOS boot",
    "0FC63DAF-8483-4772-8E79-3D69D8477DE4": "Linux filesystem",
    "0657FD6D-A4AB-43C4-84E5-0933C84B4F4F": "Linux swap",
    "E6D6D379-F507-44C2-A23C-238F2A3DF928": "Linux LVM",
    "A19D880F-05FC-4D3B-A006-743F0F84911E": "Linux RAID",
    "4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709": "Linux root (x86-64)",
    "BC13C2FF-59E6-4262-A352-B275FD6F7172": "Linux extended boot",
    "48465300-0000-11AA-AA11-00306543ECAC": "Apple HFS+",
    "7C3457EF-0000-11AA-AA11-00306543ECAC": "Apple APFS",
}
MBR_TYPES = {
    0x01: "FAT12", 0x04: "FAT16 <32M", 0x05: "Extended", 0x06: "FAT16", 0x07: "NTFS/exFAT",
    0x0B: "FAT32", 0x0C: "FAT32 (LBA)", 0x0E: "FAT16 (LBA)", 0x0F: "Extended (LBA)",
    0x11: "Hidden FAT12", 0x12: "Diagnostics", 0x14: "Hidden FAT16 <32M", 0x16: "Hidden FAT16",
    0x17: "Hidden NTFS", 0x1B: "Hidden FAT32", 0x1C: "Hidden FAT32 (LBA)", 0x1E: "Hidden FAT16 (LBA)",
    0x27: "Windows recovery", 0x42: "Windows LDM", 0x82: "Linux swap", 0x83: "Linux", 0x85: "Linux extended",
    0x8E: "Linux LVM", 0xA5: "FreeBSD", 0xAF: "Apple HFS+", 0xEE: "GPT protective", 0xEF: "EFI System",
    0xFD: "Linux RAID",
}


@dataclass
class Partition:
    number: int  # 1-based like Linux (logical MBR partitions start at 5)
    start: int  # bytes from the start of the disk
    size: int  # bytes
    type: str | int  # GPT type GUID (upper-case str) or MBR type byte
    type_name: str
    name: str = ""  # GPT partition name
    guid: str | None = None  # GPT unique partition GUID
    bootable: bool = False  # MBR active flag
    attributes: int = 0  # GPT attribute bits
    logical: bool = False  # MBR logical partition inside an extended one
    # MBR extended container: listed for display, but it holds no file system - its contents are the
    # logical partitions and the EBRs (in header_regions), so capture/restore skip it.
    extended: bool = False

    @property
    def end(self) -> int:
        return self.start + self.size


@dataclass
class PartitionTable:
    kind: str  # "gpt" | "mbr" | "none"
    partitions: list[Partition] = field(default_factory=list)
    # Sorted byte ranges (start, length) holding the table: MBR, GPT headers + entries, EBRs.
    header_regions: list[tuple[int, int]] = field(default_factory=list)
    sector_size: int = 512
    disk_guid: str | None = None  # GPT disk GUID
    disk_signature: int | None = None  # MBR disk signature
    first_usable: int | None = None  # bytes (GPT)
    last_usable: int | None = None  # bytes (GPT): end of the usable area (last usable byte + 1)
    hybrid_mbr: bool = False  # GPT with an MBR that lists real partitions besides 0xEE
    warnings: list[str] = field(default_factory=list)

    @property
    def data_partitions(self) -> list[Partition]:
        """Partitions that hold data (extended MBR containers left out)."""
        return [p for p in self.partitions if not p.extended]


def _guid(raw: bytes) -> str:
    return str(uuid.UUID(bytes_le=raw)).upper()


def gpt_type_name(type_guid: str) -> str:
    return GPT_TYPES.get(type_guid.upper(), "unknown")


def mbr_type_name(t: int) -> str:
    return f"{MBR_TYPES.get(t, 'unknown')} (0x{t:02X})"


# ---------------------------------------------------------------- GPT

@dataclass
class _GptHeader:
    raw: bytes  # header_size bytes as on disk
    header_size: int
    my_lba: int
    alternate_lba: int
    first_usable: int
    last_usable: int
    disk_guid: bytes
    entries_lba: int
    num_entries: int
    entry_size: int
    entries_crc: int

    def entries_bytes(self) -> int:
        return self.num_entries * self.entry_size

    def entries_sectors(self, ss: int) -> int:
        return -(-self.entries_bytes() // ss)


def _parse_gpt_header(sector: bytes, lba: int, ss: int) -> tuple[_GptHeader | None, str]:
    """Parse and CRC-check a GPT header; (None, why) when it is not valid."""
    if sector[:8] != GPT_SIGNATURE:
        return None, "no GPT signature"
    (_sig, _rev, hsize, hcrc, _res, my_lba, alt, first, last, dguid, elba, nent, esize,
     ecrc) = GPT_HEADER.unpack_from(sector)
    if not 92 <= hsize <= ss:
        return None, f"bad header size {hsize}"
    body = bytearray(sector[:hsize])
    body[16:20] = b"\0\0\0\0"
    if zlib.crc32(body) != hcrc:
        return None, "header CRC32 mismatch"
    if my_lba != lba:
        return None, f"header says it is at LBA {my_lba}, found at LBA {lba}"
    if esize < 128 or esize % 128 or nent * esize > MAX_GPT_ENTRIES_BYTES or first > last + 1:
        return None, "implausible header fields"
    return _GptHeader(bytes(sector[:hsize]), hsize, my_lba, alt, first, last, dguid, elba, nent, esize, ecrc), ""


def _read_gpt_at(dev: BlockDevice, lba: int, ss: int) -> tuple[_GptHeader | None, bytes, str]:
    if lba <= 0 or (lba + 1) * ss > dev.size:
        return None, b"", f"LBA {lba} is outside the disk"
    hdr, why = _parse_gpt_header(dev.read(lba * ss, ss), lba, ss)
    if hdr is None:
        return None, b"", why
    ebytes = hdr.entries_bytes()
    if hdr.entries_lba * ss + ebytes > dev.size:
        return None, b"", "partition entries lie past the end of the disk"
    entries = dev.read(hdr.entries_lba * ss, ebytes)
    if zlib.crc32(entries) != hdr.entries_crc:
        return None, b"", "partition entries CRC32 mismatch"
    return hdr, entries, ""


def _gpt_partitions(hdr: _GptHeader, entries: bytes, ss: int, dev_size: int,
                    warnings: list[str]) -> list[Partition]:
    parts = []
    for i in range(hdr.num_entries):
        tguid, pguid, first, last, attrs, name = GPT_ENTRY.unpack_from(entries, i * hdr.entry_size)
        if tguid == b"\0" * 16:
            continue
        if last < first:
            raise RescueError(f"GPT entry {i + 1} has an invalid range (LBA {first}-{last})")
        if first < hdr.first_usable or last > hdr.last_usable:
            warnings.append(f"GPT partition {i + 1} lies outside the usable area (LBA {first}-{last})")
        if (last + 1) * ss > dev_size:
            warnings.append(f"GPT partition {i + 1} ends past the end of the disk ({dev_size} bytes)")
        tg = _guid(tguid)
        parts.append(Partition(
            number=i + 1, start=first * ss, size=(last - first + 1) * ss, type=tg,
            type_name=gpt_type_name(tg), name=name.decode("utf-16-le", "replace").split("\0", 1)[0],
            guid=_guid(pguid), attributes=attrs))
    return parts


def _find_gpt_sector_size(dev: BlockDevice) -> int | None:
    for ss in dict.fromkeys((dev.sector_size, 512, 4096)):
        if 2 * ss <= dev.size and dev.read(ss, 8) == GPT_SIGNATURE:
            return ss
    return None


@dataclass
class _GptCopies:
    prim: _GptHeader | None
    pentries: bytes
    pwhy: str
    back: _GptHeader | None
    bentries: bytes
    bwhy: str
    alt_lba: int  # where the backup was looked for first
    last_lba: int

    @property
    def valid(self) -> tuple[_GptHeader, bytes]:
        """The copy to use: the primary if valid, else the backup."""
        return (self.prim, self.pentries) if self.prim is not None else (self.back, self.bentries)


def _gpt_copies(dev: BlockDevice, ss: int) -> _GptCopies:
    """Both GPT copies of ``dev`` (either may be None); RescueError when neither is valid."""
    last_lba = dev.size // ss - 1
    prim, pentries, pwhy = _read_gpt_at(dev, 1, ss)
    alt_lba = prim.alternate_lba if prim else last_lba
    back, bentries, bwhy = _read_gpt_at(dev, alt_lba, ss)
    if back is None and prim is not None and alt_lba != last_lba:
        back2, bentries2, _ = _read_gpt_at(dev, last_lba, ss)
        if back2 is not None:
            back, bentries = back2, bentries2
    if prim is None and back is None:
        raise RescueError(f"GPT on {dev.path} is damaged: primary {pwhy}; backup {bwhy}")
    return _GptCopies(prim, pentries, pwhy, back, bentries, bwhy, alt_lba, last_lba)


def _read_gpt(dev: BlockDevice, mbr: bytes, ss: int, table: PartitionTable) -> None:
    c = _gpt_copies(dev, ss)
    prim, back, last_lba = c.prim, c.back, c.last_lba
    if prim is None:
        table.warnings.append(f"primary GPT is damaged ({c.pwhy}); using the backup GPT at LBA {back.my_lba}")
    elif back is None:
        table.warnings.append(f"backup GPT at LBA {c.alt_lba} is damaged or missing ({c.bwhy})")
    elif back.my_lba != last_lba:
        table.warnings.append(f"backup GPT is at LBA {back.my_lba}, not at the end of the disk (LBA {last_lba})")
    use, uentries = c.valid
    table.kind = "gpt"
    table.sector_size = ss
    table.disk_guid = _guid(use.disk_guid)
    table.first_usable = use.first_usable * ss
    table.last_usable = (use.last_usable + 1) * ss
    table.partitions = _gpt_partitions(use, uentries, ss, dev.size, table.warnings)
    regions = [(0, ss)]
    for h in (prim, back):
        if h is not None:
            regions.append((h.my_lba * ss, ss))
            regions.append((h.entries_lba * ss, h.entries_sectors(ss) * ss))
    if back is None:
        # Where the damaged backup copy lies (entries just before its header, as formatters place them): kept
        # in an image too, so that it holds the disk's table area as it was, not zeros.
        esec = prim.entries_sectors(ss)
        if 0 < c.alt_lba <= last_lba:
            lo = max(prim.entries_lba + esec, c.alt_lba - esec)
            regions.append((lo * ss, (c.alt_lba + 1 - lo) * ss))
    table.header_regions = merge(regions)
    mbr_types = [MBR_ENTRY.unpack_from(mbr, 446 + 16 * i)[2] for i in range(4)] if mbr[510:512] == b"\x55\xaa" else []
    if 0xEE in mbr_types and any(t not in (0, 0xEE) for t in mbr_types):
        table.hybrid_mbr = True
        table.warnings.append("hybrid MBR: the MBR also lists partitions; the GPT is used")
    elif 0xEE not in mbr_types:  # e.g. LBA 0 overwritten: firmware and OSes then ignore the GPT
        table.warnings.append("no protective MBR in front of the GPT (Windows and Linux need one to read it)")


# ---------------------------------------------------------------- MBR

def _looks_like_vbr(sector: bytes) -> bool:
    """A file-system boot sector (partitionless 'superfloppy' volume), not an MBR."""
    if sector[3:11] in (b"NTFS    ", b"EXFAT   ", b"-FVE-FS-", b"MSWIN4.1") or sector[3:8] == b"MSDOS":
        return True
    return sector[54:59] in (b"FAT12", b"FAT16") or sector[82:87] == b"FAT32"


def _mbr_entries(sector: bytes) -> list[tuple[int, int, int, int]]:
    """(slot, status, type, lba_start, lba_count) tuples for non-empty slots."""
    out = []
    for i in range(4):
        status, _c1, ptype, _c2, start, count = MBR_ENTRY.unpack_from(sector, 446 + 16 * i)
        if ptype == 0 or count == 0:
            continue
        out.append((i, status, ptype, start, count))
    return out


def _read_mbr(dev: BlockDevice, mbr: bytes, ss: int, table: PartitionTable) -> None:
    total = dev.size // ss
    table.kind = "mbr"
    table.sector_size = ss
    table.disk_signature = struct.unpack_from("<I", mbr, 440)[0]
    regions = [(0, ss)]
    parts: list[Partition] = []
    for i in range(4):  # half-empty slots: damage (tools clear a deleted slot whole), so the plan keeps more
        ptype, (start, count) = mbr[446 + 16 * i + 4], struct.unpack_from("<II", mbr, 446 + 16 * i + 8)
        if bool(ptype) != bool(count) or not ptype and start:
            table.warnings.append(f"MBR slot {i + 1} is half empty (type 0x{ptype:02X}, start {start}, "
                                  f"{count} sectors); ignored")
    for slot, status, ptype, start, count in _mbr_entries(mbr):
        if status not in (0, 0x80) or start == 0:
            raise RescueError(f"MBR of {dev.path} is garbage (slot {slot + 1}: status 0x{status:02X}, start {start})")
        if start + count > total:
            table.warnings.append(f"MBR partition {slot + 1} ends past the end of the disk")
        ext = ptype in EXTENDED_TYPES
        parts.append(Partition(number=slot + 1, start=start * ss, size=count * ss, type=ptype,
                               type_name=mbr_type_name(ptype), bootable=status == 0x80, extended=ext))
        if ext:  # logical numbers continue across extended partitions (as Linux numbers them)
            parts.extend(_read_logicals(dev, start, count, ss, regions, table,
                                        first_number=max([4] + [p.number for p in parts if p.logical]) + 1))
    table.partitions = parts
    table.header_regions = merge(regions)
    spans = sorted((p.start, p.end, p.number) for p in parts if not p.logical)
    for (s1, e1, n1), (s2, _e2, n2) in zip(spans, spans[1:]):
        if s2 < e1:
            table.warnings.append(f"MBR partitions {n1} and {n2} overlap")


def _read_logicals(dev: BlockDevice, ext_start: int, ext_count: int, ss: int,
                   regions: list[tuple[int, int]], table: PartitionTable, first_number: int = 5) -> list[Partition]:
    """Follow the EBR chain of an extended partition (entry 1: logical, entry 2: link to next EBR)."""
    out: list[Partition] = []
    ebr_lba, seen, number = ext_start, set(), first_number
    while True:
        if ebr_lba in seen:
            table.warnings.append("EBR chain loops; stopped following it")
            break
        if len(seen) >= MAX_LOGICAL:
            table.warnings.append(f"EBR chain longer than {MAX_LOGICAL}; stopped following it")
            break
        if (ebr_lba + 1) * ss > dev.size or not ext_start <= ebr_lba < ext_start + ext_count:
            table.warnings.append(f"EBR at LBA {ebr_lba} lies outside the extended partition")
            break
        seen.add(ebr_lba)
        ebr = dev.read(ebr_lba * ss, ss)
        if ebr[510:512] != b"\x55\xaa":
            if ebr_lba != ext_start:
                table.warnings.append(f"EBR at LBA {ebr_lba} has no 55AA signature")
            break
        regions.append((ebr_lba * ss, ss))
        nxt = None
        for slot, status, ptype, start, count in _mbr_entries(ebr):
            if slot == 0 and ptype not in EXTENDED_TYPES:
                if ebr_lba + start + count > min(ext_start + ext_count, dev.size // ss):
                    table.warnings.append(f"MBR logical partition {number} (LBA {ebr_lba + start}+{count}) ends "
                                          "past the end of its extended partition or of the disk")
                out.append(Partition(number=number, start=(ebr_lba + start) * ss, size=count * ss, type=ptype,
                                     type_name=mbr_type_name(ptype), bootable=status == 0x80, logical=True))
                number += 1
            elif slot == 1 and ptype in EXTENDED_TYPES:
                nxt = ext_start + start
        if nxt is None:
            break
        ebr_lba = nxt
    return out




def backup_gpt_at_end(dev: BlockDevice) -> int | None:
    """The LBA of a valid GPT header (with valid entries) in the last sector of ``dev``, or None.

    ``read_table`` does not use such a backup when the protective MBR and the primary are gone (neither do
    Windows and Linux: the disk may have been reformatted whole); it still means a table was there."""
    for ss in dict.fromkeys((dev.sector_size, 512, 4096)):
        last = dev.size // ss - 1
        if last > 1 and _read_gpt_at(dev, last, ss)[0] is not None:
            return last
    return None


def read_table(dev: BlockDevice, *, strict: bool = True) -> PartitionTable:
    """Read the partition table of ``dev``; RescueError if it is present but garbage.

    A GPT (found by its header at LBA 1, 512- or 4096-byte sectors) wins over the MBR; a bad primary GPT
    falls back to the backup with a warning. No 55AA signature, or a file-system boot sector at LBA 0,
    means kind "none". With ``strict=False`` garbage gives kind "none" plus a warning instead (so a disk
    whose table is destroyed can still be imaged raw).
    """
    try:
        return _read_table(dev)
    except RescueError as exc:
        if strict:
            raise
        return PartitionTable(kind="none", sector_size=dev.sector_size,
                              warnings=[f"{exc}; treating the disk as unpartitioned"])


def _read_table(dev: BlockDevice) -> PartitionTable:
    table = PartitionTable(kind="none", sector_size=dev.sector_size)
    if dev.size < 512:
        return table
    mbr = dev.read(0, 512)
    gpt_ss = _find_gpt_sector_size(dev)
    mbr_entries = _mbr_entries(mbr) if mbr[510:512] == b"\x55\xaa" and not _looks_like_vbr(mbr) else []
    has_pmbr = any(t == 0xEE for _s, _st, t, _a, _b in mbr_entries)
    if gpt_ss is not None and mbr_entries and not has_pmbr:
        # A GPT header beside an MBR without the protective 0xEE entry: a GPT left behind when the disk
        # was repartitioned as MBR. Windows and Linux (kernel, libfdisk, blkid) use the MBR; so do we.
        try:
            _read_mbr(dev, mbr, dev.sector_size, table)
        except RescueError:
            table = PartitionTable(kind="none", sector_size=dev.sector_size)  # garbage MBR: the GPT it is
        else:
            table.warnings.append("a stale GPT header without a protective MBR is ignored; the MBR is used")
            return table
    if gpt_ss is not None or has_pmbr:
        _read_gpt(dev, mbr, gpt_ss or dev.sector_size, table)
        return table
    if mbr[510:512] != b"\x55\xaa" or _looks_like_vbr(mbr):
        return table
    _read_mbr(dev, mbr, dev.sector_size, table)
    return table


# ---------------------------------------------------------------- GPT relocation

def _header_bytes(hdr: _GptHeader, *, my_lba: int, alt_lba: int, last_usable: int, entries_lba: int) -> bytes:
    raw = bytearray(hdr.raw)
    struct.pack_into("<QQ", raw, 24, my_lba, alt_lba)
    struct.pack_into("<Q", raw, 48, last_usable)
    struct.pack_into("<Q", raw, 72, entries_lba)
    raw[16:20] = b"\0\0\0\0"
    struct.pack_into("<I", raw, 16, zlib.crc32(raw))
    return bytes(raw)


def _protective_mbr(mbr: bytes, last_lba: int) -> bytes | None:
    """The MBR a GPT disk of ``last_lba`` + 1 sectors needs: a pure protective MBR resized, a hybrid MBR kept
    (None), anything else (zeroed, garbage) replaced by a protective MBR that keeps the boot code."""
    count = min(0xFFFFFFFF, last_lba)
    ents = _mbr_entries(mbr) if mbr[510:512] == b"\x55\xaa" else []
    out = bytearray(mbr[:512])
    if len(ents) == 1 and ents[0][2] == 0xEE:
        struct.pack_into("<I", out, 446 + 16 * ents[0][0] + 12, count)
        return bytes(out)
    if any(e[2] == 0xEE for e in ents):
        return None  # hybrid: its other entries are the user's
    out[446:512] = bytes(66)
    out[446:462] = MBR_ENTRY.pack(0, b"\x00\x02\x00", 0xEE, b"\xff\xff\xff", 1, count)
    out[510:512] = b"\x55\xaa"
    return bytes(out)


def _with_ends(hdr: _GptHeader, entries: bytes, ends: dict[int, int],
               starts: dict[int, int] | None = None) -> tuple[_GptHeader, bytes]:
    """Entries with partition ``number``'s last LBA set to ``ends[number]`` (and first LBA to ``starts[number]``),
    and the header's entries CRC."""
    out = bytearray(entries)
    for number, last in ends.items():
        struct.pack_into("<Q", out, (number - 1) * hdr.entry_size + 40, last)
    for number, first in (starts or {}).items():
        struct.pack_into("<Q", out, (number - 1) * hdr.entry_size + 32, first)
    crc = zlib.crc32(bytes(out[:hdr.entries_bytes()]))
    raw = bytearray(hdr.raw)
    struct.pack_into("<I", raw, 88, crc)
    return replace(hdr, raw=bytes(raw), entries_crc=crc), bytes(out)


def gpt_rebuild(src: BlockDevice, new_size: int, ends: dict[int, int] | None = None,
                starts: dict[int, int] | None = None) -> list[tuple[int, bytes]]:
    """The writes that give a disk of ``new_size`` bytes holding ``src``'s GPT layout a valid GPT.

    ``src`` is the disk as captured (e.g. an image in the repository): the valid copy (primary, else the
    backup - a capture accepts a damaged primary) is rebuilt into a primary header + entries at LBA 1 and a
    backup entries + header at the end of the new size (last usable LBA moved), stale backup headers left in
    the middle are zeroed, and a protective MBR is resized (or written when it was destroyed). Computed before
    anything is written: RescueError when there is no valid copy or the partitions do not fit. ``ends``: new
    last LBA per partition number (partitions shrunk by the restore, or moved with ``starts``: new first LBAs).
    """
    ss = _find_gpt_sector_size(src) or src.sector_size
    c = _gpt_copies(src, ss)
    use, entries = c.valid
    if ends:  # shrunk partitions (a restore onto a smaller disk): their new last LBAs
        use, entries = _with_ends(use, entries, ends, starts)
    last_lba = new_size // ss - 1
    esec = use.entries_sectors(ss)
    back_entries_lba = last_lba - esec
    new_last_usable = back_entries_lba - 1
    # Primary entries where the primary had them, else in the standard place right after the header.
    prim_entries_lba = c.prim.entries_lba if c.prim is not None else 2
    if c.prim is None and prim_entries_lba + esec > use.first_usable:
        raise RescueError(f"cannot rebuild the primary GPT of {src.path}: its entries do not fit before the first "
                          f"usable LBA {use.first_usable}")
    parts = _gpt_partitions(use, entries, ss, new_size, [])
    end_lba = max((p.end // ss - 1 for p in parts), default=0)
    if end_lba > new_last_usable or use.first_usable > new_last_usable:
        raise RescueError(f"{new_size} bytes is too small for the GPT of {src.path}: a partition ends at LBA "
                          f"{end_lba}, the last usable LBA would be {new_last_usable}")
    padded = entries + b"\0" * (esec * ss - len(entries))
    writes: list[tuple[int, bytes]] = []
    # Stale backup headers (the old end of the disk) inside the new usable area, outside partitions: zeroed
    # so that no tool finds a second, older backup.
    stale = {c.last_lba, c.alt_lba} | ({c.back.my_lba} if c.back else set())
    for lba in sorted(stale):
        if use.first_usable <= lba <= new_last_usable and not any(p.start <= lba * ss < p.end for p in parts):
            writes.append((lba * ss, bytes(ss)))
    writes.append((back_entries_lba * ss, padded))
    writes.append((last_lba * ss, _header_bytes(use, my_lba=last_lba, alt_lba=1, last_usable=new_last_usable,
                                                entries_lba=back_entries_lba)))
    writes.append((prim_entries_lba * ss, padded))
    writes.append((ss, _header_bytes(use, my_lba=1, alt_lba=last_lba, last_usable=new_last_usable,
                                     entries_lba=prim_entries_lba)))
    mbr = _protective_mbr(src.read(0, 512), last_lba)
    if mbr is not None:
        writes.append((0, mbr))
    return writes


def fix_gpt_after_restore(dev: BlockDevice) -> None:
    """Make ``dev``'s own GPT valid for its size (backup at the end, CRCs, protective MBR); idempotent.

    A restore plans the writes from the image instead (``gpt_rebuild(image, target size)``): on a larger disk
    whose primary GPT is damaged, the backup is no longer where this function looks for it.
    """
    for off, data in gpt_rebuild(dev, dev.size):
        dev.write(off, data)
    dev.flush()


# ---------------------------------------------------------------- building new tables

@dataclass
class NewPartition:
    """A partition to write into a new table (byte offsets; sector-aligned)."""

    start: int
    size: int
    mbr_type: int = 0x07
    gpt_type: str = "EBD0A0A2-B9E5-4433-87C0-68B6B72699C7"
    name: str = ""
    bootable: bool = False
    guid: str | None = None  # GPT unique partition GUID (random when None)
    attributes: int = 0


def _mbr_slot(status: int, ptype: int, lba: int, count: int) -> bytes:
    # CHS fields set to the "use LBA" marker FE FF FF, as Windows does for partitions past 8 GB
    return MBR_ENTRY.pack(status, b"\xfe\xff\xff", ptype, b"\xfe\xff\xff", lba, count)


def build_mbr(parts: list[NewPartition], disk_signature: int, *, boot_code: bytes = b"", ss: int = 512) -> bytes:
    """A 512-byte MBR with up to four primary partitions (``boot_code``: up to 440 bytes of loader)."""
    if len(parts) > 4:
        raise RescueError(f"an MBR holds at most 4 primary partitions, {len(parts)} were asked for")
    mbr = bytearray(512)
    mbr[:len(boot_code[:440])] = boot_code[:440]
    struct.pack_into("<I", mbr, 440, disk_signature & 0xFFFFFFFF)
    for i, p in enumerate(parts):
        if p.start % ss or p.size % ss or (p.start + p.size) // ss > 0xFFFFFFFF:
            raise RescueError(f"partition {i + 1} ({p.start}+{p.size}) does not fit an MBR")
        mbr[446 + 16 * i:462 + 16 * i] = _mbr_slot(0x80 if p.bootable else 0, p.mbr_type, p.start // ss, p.size // ss)
    mbr[510:512] = b"\x55\xaa"
    return bytes(mbr)


def build_gpt(disk_size: int, parts: list[NewPartition], *, disk_guid: str | None = None,
              ss: int = 512) -> list[tuple[int, bytes]]:
    """Protective MBR, primary and backup GPT (128 entries) for a disk of ``disk_size`` bytes, as
    [(byte offset, bytes)]; RescueError when a partition lies outside the usable area."""
    entries_sectors = 128 * 128 // ss
    last_lba = disk_size // ss - 1
    first_usable, last_usable = 2 + entries_sectors, last_lba - 1 - entries_sectors
    entries = bytearray(128 * 128)
    for i, p in enumerate(parts):
        first, last = p.start // ss, (p.start + p.size) // ss - 1
        if p.start % ss or p.size % ss or first < first_usable or last > last_usable:
            raise RescueError(f"GPT partition {i + 1} (LBA {first}-{last}) lies outside the usable area "
                              f"(LBA {first_usable}-{last_usable})")
        GPT_ENTRY.pack_into(entries, 128 * i, uuid.UUID(p.gpt_type).bytes_le,
                            uuid.UUID(p.guid or str(uuid.uuid4())).bytes_le, first, last, p.attributes,
                            p.name.encode("utf-16-le")[:72].ljust(72, b"\0"))
    dguid = uuid.UUID(disk_guid or str(uuid.uuid4())).bytes_le
    ecrc = zlib.crc32(entries)
    raw = GPT_HEADER.pack(GPT_SIGNATURE, 0x00010000, 92, 0, 0, 1, last_lba, first_usable, last_usable, dguid, 2,
                          128, 128, ecrc)
    hdr = _GptHeader(raw, 92, 1, last_lba, first_usable, last_usable, dguid, 2, 128, 128, ecrc)
    back_lba = last_lba - entries_sectors

    def header(my: int, alt: int, elba: int) -> bytes:
        return _header_bytes(hdr, my_lba=my, alt_lba=alt, last_usable=last_usable, entries_lba=elba).ljust(ss, b"\0")

    pmbr = _protective_mbr(bytes(512), last_lba) or b""
    return [(0, pmbr.ljust(ss, b"\0")), (ss, header(1, last_lba, 2)), (2 * ss, bytes(entries)),
            (back_lba * ss, bytes(entries)), (last_lba * ss, header(last_lba, 1, back_lba))]

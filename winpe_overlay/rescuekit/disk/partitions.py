"""Partition tables: GPT (with CRC checks and backup) and MBR (with extended/logical partitions)."""
from __future__ import annotations

import struct
import uuid
import zlib
from dataclasses import dataclass, field

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


def _read_gpt(dev: BlockDevice, mbr: bytes, ss: int, table: PartitionTable) -> None:
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
    if prim is None:
        table.warnings.append(f"primary GPT is damaged ({pwhy}); using the backup GPT at LBA {back.my_lba}")
        use, uentries = back, bentries
    else:
        use, uentries = prim, pentries
        if back is None:
            table.warnings.append(f"backup GPT at LBA {alt_lba} is damaged or missing ({bwhy})")
        elif back.my_lba != last_lba:
            table.warnings.append(f"backup GPT is at LBA {back.my_lba}, not at the end of the disk (LBA {last_lba})")
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
        if 0 < alt_lba <= last_lba:
            lo = max(prim.entries_lba + esec, alt_lba - esec)
            regions.append((lo * ss, (alt_lba + 1 - lo) * ss))
    table.header_regions = merge(regions)
    mbr_types = [MBR_ENTRY.unpack_from(mbr, 446 + 16 * i)[2] for i in range(4)] if mbr[510:512] == b"\x55\xaa" else []
    if 0xEE in mbr_types and any(t not in (0, 0xEE) for t in mbr_types):
        table.hybrid_mbr = True
        table.warnings.append("hybrid MBR: the MBR also lists partitions; the GPT is used")


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


def fix_gpt_after_restore(dev: BlockDevice) -> None:
    """After restoring a GPT disk onto a larger target: write the backup GPT at the new end of the disk.

    Reads the primary header + entries at LBA 1, rewrites the primary header (alternate LBA, last usable
    LBA, CRCs), writes the backup entries + header at the end, zeroes the stale backup header left in the
    middle of the disk, and updates the protective MBR's size. Safe to run on a disk of the original size.
    """
    ss = _find_gpt_sector_size(dev) or dev.sector_size
    prim, entries, why = _read_gpt_at(dev, 1, ss)
    if prim is None:
        raise RescueError(f"cannot fix the GPT on {dev.path}: primary GPT {why}")
    last_lba = dev.size // ss - 1
    esec = prim.entries_sectors(ss)
    back_entries_lba = last_lba - esec
    new_last_usable = back_entries_lba - 1
    hdr = prim
    parts = _gpt_partitions(prim, entries, ss, dev.size, [])
    end_lba = max((p.end // ss - 1 for p in parts), default=0)
    if end_lba > new_last_usable or prim.first_usable > new_last_usable:
        raise RescueError(f"{dev.path} is too small for its GPT: a partition ends at LBA {end_lba}, the last "
                          f"usable LBA would be {new_last_usable}")
    old_alt = prim.alternate_lba
    # Stale backup header inside the now-usable area (not inside a partition): zero it so no tool finds it.
    if old_alt != last_lba and prim.last_usable < old_alt < last_lba and \
            not any(p.start <= old_alt * ss < p.end for p in parts):
        dev.write(old_alt * ss, b"\0" * ss)
    dev.write(back_entries_lba * ss, entries + b"\0" * (esec * ss - len(entries)))
    dev.write(last_lba * ss, _header_bytes(hdr, my_lba=last_lba, alt_lba=1, last_usable=new_last_usable,
                                           entries_lba=back_entries_lba))
    dev.write(ss, _header_bytes(hdr, my_lba=1, alt_lba=last_lba, last_usable=new_last_usable,
                                entries_lba=prim.entries_lba))
    mbr = bytearray(dev.read(0, 512))
    ents = _mbr_entries(mbr)
    if mbr[510:512] == b"\x55\xaa" and len(ents) == 1 and ents[0][2] == 0xEE:
        # Protective MBR: one 0xEE entry covering the disk from LBA 1 (capped at 2^32-1 sectors).
        slot = ents[0][0]
        struct.pack_into("<I", mbr, 446 + 16 * slot + 12, min(0xFFFFFFFF, last_lba))
        dev.write(0, bytes(mbr))
    dev.flush()

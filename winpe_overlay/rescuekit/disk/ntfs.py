"""NTFS: boot sector, MFT records (with update-sequence fixups), $Bitmap -> used byte ranges.

Layout per ntfs-3g include/ntfs-3g/layout.h (NTFS_BOOT_SECTOR, MFT_RECORD, ATTR_RECORD, mapping pairs).
"""
from __future__ import annotations

import struct
from dataclasses import dataclass

from rescuekit.disk.device import BlockDevice
from rescuekit.disk.ranges import RangeBuilder, covered
from rescuekit.errors import RescueError

NTFS_OEM = b"NTFS    "
FILE_BITMAP = 6  # MFT record of $Bitmap
FILE_VOLUME = 3  # MFT record of $Volume
AT_ATTRIBUTE_LIST = 0x20
AT_VOLUME_NAME = 0x60
AT_VOLUME_INFORMATION = 0x70
VOLUME_IS_DIRTY = 0x0001
AT_DATA = 0x80
AT_END = 0xFFFFFFFF
READ_CHUNK = 8 << 20
MAX_ATTRIBUTE_LIST = 1 << 20  # an $ATTRIBUTE_LIST value is at most 256 KiB in practice


@dataclass
class NtfsBoot:
    bytes_per_sector: int
    cluster_size: int
    total_sectors: int
    mft_lcn: int
    mft_record_size: int
    serial: int
    mftmirr_lcn: int = 0  # $MFTMirr (copy of the first MFT records)

    @property
    def nr_clusters(self) -> int:
        return self.total_sectors * self.bytes_per_sector // self.cluster_size


def parse_boot(sector: bytes) -> NtfsBoot | None:
    """The NTFS boot sector's geometry, or None if ``sector`` is not a sane NTFS boot sector."""
    if len(sector) < 512 or sector[3:11] != NTFS_OEM:
        return None
    bps = struct.unpack_from("<H", sector, 0x0B)[0]
    spc = sector[0x0D]
    if bps not in (256, 512, 1024, 2048, 4096):
        return None
    # Cluster sizes above 64 KiB: sectors_per_cluster holds a negative shift (256 - n) (ntfs-3g bootsect.c).
    if spc > 0x80:
        spc = 1 << (256 - spc)
    if spc == 0 or spc & (spc - 1):
        return None
    cs = bps * spc
    total = struct.unpack_from("<q", sector, 0x28)[0]
    mft_lcn = struct.unpack_from("<q", sector, 0x30)[0]
    cpmr = struct.unpack_from("<b", sector, 0x40)[0]
    # clusters_per_mft_record: > 0 counts clusters, < 0 means 2^-n bytes.
    rec = cpmr * cs if cpmr > 0 else 1 << -cpmr if cpmr < 0 else 0
    if total <= 0 or mft_lcn <= 0 or not 256 <= rec <= 65536 or rec & (rec - 1):
        return None
    if mft_lcn * cs >= total * bps:
        return None
    serial = struct.unpack_from("<Q", sector, 0x48)[0]
    mftmirr_lcn = struct.unpack_from("<q", sector, 0x38)[0]
    return NtfsBoot(bps, cs, total, mft_lcn, rec, serial, mftmirr_lcn)


def apply_fixups(rec: bytearray, where: str) -> None:
    """Undo the update sequence array of a multi-sector record (strides of 512 bytes)."""
    usa_ofs, usa_count = struct.unpack_from("<HH", rec, 4)
    if usa_count == 0 or usa_ofs + 2 * usa_count > len(rec) or (usa_count - 1) * 512 > len(rec):
        raise RescueError(f"bad update sequence array in {where}")
    usn = rec[usa_ofs:usa_ofs + 2]
    for i in range(1, usa_count):
        pos = i * 512 - 2
        if rec[pos:pos + 2] != usn:
            raise RescueError(f"update sequence mismatch (torn write) in {where}")
        rec[pos:pos + 2] = rec[usa_ofs + 2 * i:usa_ofs + 2 * i + 2]


def read_mft_record(dev: BlockDevice, offset: int, boot: NtfsBoot, number: int) -> bytearray:
    """MFT record ``number`` (only records 0-15 are reliably in the first $MFT extent)."""
    pos = offset + boot.mft_lcn * boot.cluster_size + number * boot.mft_record_size
    where = f"NTFS MFT record {number} at byte {pos} of {dev.path}"
    rec = bytearray(dev.read(pos, boot.mft_record_size))
    if rec[:4] != b"FILE":
        raise RescueError(f"no FILE signature in {where}")
    apply_fixups(rec, where)
    return rec


def iter_attributes(rec: bytes):
    """Yield (type, offset) of each attribute in an MFT record; stops at the end marker or at an attribute
    too short for its header (resident 24 bytes, non-resident 64) or running past the record."""
    pos = struct.unpack_from("<H", rec, 20)[0]
    used = min(struct.unpack_from("<I", rec, 24)[0], len(rec))
    while pos + 16 <= used:
        atype, alen = struct.unpack_from("<II", rec, pos)
        if atype == AT_END or alen < (64 if rec[pos + 8] else 24) or pos + alen > used:
            return
        yield atype, pos
        pos += alen


def decode_runs(buf: bytes, pos: int, end: int) -> list[tuple[int | None, int]]:
    """Mapping pairs -> [(lcn or None for sparse, length in clusters)]; lengths > 0, LCNs >= 0."""
    runs: list[tuple[int | None, int]] = []
    lcn = 0
    while pos < end and buf[pos]:
        hdr = buf[pos]
        lsz, osz = hdr & 0x0F, hdr >> 4
        pos += 1
        if lsz == 0 or pos + lsz + osz > end:
            raise RescueError("corrupt NTFS data runs")
        length = int.from_bytes(buf[pos:pos + lsz], "little", signed=True)
        pos += lsz
        if length <= 0:
            raise RescueError(f"corrupt NTFS data runs (run length {length})")
        if osz:
            lcn += int.from_bytes(buf[pos:pos + osz], "little", signed=True)
            if lcn < 0:
                raise RescueError(f"corrupt NTFS data runs (negative LCN {lcn})")
            runs.append((lcn, length))
        else:
            runs.append((None, length))
        pos += osz
    return runs


def _unnamed(rec: bytes, apos: int) -> bool:
    return rec[apos + 9] == 0


def _resident_value(rec: bytes, apos: int) -> bytes:
    """The value of a resident attribute; RescueError if it runs past the attribute."""
    alen = struct.unpack_from("<I", rec, apos + 4)[0]
    vlen, voff = struct.unpack_from("<IH", rec, apos + 16)
    if voff + vlen > alen:
        raise RescueError(f"NTFS resident attribute 0x{rec[apos]:02X} value runs past its attribute")
    return bytes(rec[apos + voff:apos + voff + vlen])


def volume_state(dev: BlockDevice, offset: int, boot: NtfsBoot) -> tuple[str | None, bool | None]:
    """(label, dirty flag) from $Volume's $VOLUME_NAME and $VOLUME_INFORMATION; None when unreadable."""
    try:
        rec = read_mft_record(dev, offset, boot, FILE_VOLUME)
    except RescueError:
        return None, None
    label, dirty = None, None
    for atype, apos in iter_attributes(rec):
        if rec[apos + 8] != 0 or atype not in (AT_VOLUME_NAME, AT_VOLUME_INFORMATION):  # both are resident
            continue
        try:
            value = _resident_value(rec, apos)
        except RescueError:
            continue
        if atype == AT_VOLUME_NAME:
            label = value.decode("utf-16-le", "replace")
        elif atype == AT_VOLUME_INFORMATION and len(value) >= 12:
            # VOLUME_INFORMATION: reserved (8), major (1), minor (1), flags (2)
            dirty = bool(struct.unpack_from("<H", value, 10)[0] & VOLUME_IS_DIRTY)
    return label, dirty


def read_stream(dev: BlockDevice, offset: int, runs: list[tuple[int | None, int]], cs: int, pos: int,
                n: int) -> bytes:
    """``n`` bytes at byte ``pos`` of a non-resident stream described by ``runs`` (sparse runs read as zeros)."""
    if n <= 0:
        return b""
    out = bytearray()
    vcn0 = 0
    for lcn, length in runs:
        run_start, run_end = vcn0 * cs, (vcn0 + length) * cs
        vcn0 += length
        if run_end <= pos:
            continue
        take = min(run_end, pos + n) - pos
        if lcn is None:
            out += bytes(take)
        else:
            out += dev.read(offset + lcn * cs + (pos - run_start), take)
        pos += take
        n -= take
        if n == 0:
            return bytes(out)
    raise RescueError(f"NTFS stream on {dev.path} at {offset} is shorter than needed")


def _find_unnamed(rec: bytes, atype: int, lowest_vcn: int | None = None) -> int | None:
    for t, apos in iter_attributes(rec):
        if t == atype and _unnamed(rec, apos):
            if lowest_vcn is None or rec[apos + 8] == 0 or struct.unpack_from("<q", rec, apos + 16)[0] == lowest_vcn:
                return apos
    return None


def _mapping_pairs(rec: bytes, apos: int) -> list[tuple[int | None, int]]:
    alen = struct.unpack_from("<I", rec, apos + 4)[0]
    mp_off = struct.unpack_from("<H", rec, apos + 32)[0]
    return decode_runs(rec, apos + mp_off, apos + alen)


def _attr_value(dev: BlockDevice, offset: int, boot: NtfsBoot, rec: bytes, apos: int) -> bytes:
    """An $ATTRIBUTE_LIST value (resident, or non-resident and at most MAX_ATTRIBUTE_LIST bytes)."""
    if rec[apos + 8] == 0:
        return _resident_value(rec, apos)
    size = struct.unpack_from("<q", rec, apos + 48)[0]
    if not 0 <= size <= MAX_ATTRIBUTE_LIST:
        raise RescueError(f"NTFS attribute list of {size} bytes on {dev.path} at {offset}")
    return read_stream(dev, offset, _mapping_pairs(rec, apos), boot.cluster_size, 0, size)


def read_mft_record_any(dev: BlockDevice, offset: int, boot: NtfsBoot, number: int) -> bytearray:
    """Any MFT record, located through $MFT's own data runs (record 0)."""
    if number < 16:
        return read_mft_record(dev, offset, boot, number)
    mft = read_mft_record(dev, offset, boot, 0)
    apos = _find_unnamed(mft, AT_DATA, 0)
    if apos is None or mft[apos + 8] == 0:
        raise RescueError(f"NTFS $MFT on {dev.path} at {offset} has no usable $DATA")
    where = f"NTFS MFT record {number} of {dev.path} at {offset}"
    rec = bytearray(read_stream(dev, offset, _mapping_pairs(mft, apos), boot.cluster_size,
                                number * boot.mft_record_size, boot.mft_record_size))
    if rec[:4] != b"FILE":
        raise RescueError(f"no FILE signature in {where}")
    apply_fixups(rec, where)
    return rec


def attr_name(rec: bytes, apos: int) -> str:
    """The attribute's name ("" when unnamed), e.g. "$I30" for directory indexes."""
    n, off = rec[apos + 9], struct.unpack_from("<H", rec, apos + 10)[0]
    return bytes(rec[apos + off:apos + off + 2 * n]).decode("utf-16-le", "replace")


def _find_attr(rec: bytes, atype: int, name: str, lowest_vcn: int | None = None) -> int | None:
    for t, apos in iter_attributes(rec):
        if t == atype and attr_name(rec, apos) == name:
            if lowest_vcn is None or rec[apos + 8] == 0 or struct.unpack_from("<q", rec, apos + 16)[0] == lowest_vcn:
                return apos
    return None


def attribute_records(dev: BlockDevice, offset: int, boot: NtfsBoot, number: int, atype: int,
                      name: str = "") -> list[tuple[bytes, int]]:
    """The records and offsets of attribute (``atype``, ``name``) of file ``number``, in VCN order, following
    an $ATTRIBUTE_LIST into extension records when the base record has one; [] when absent."""
    return [(rec, apos) for _num, rec, apos in attribute_extents(dev, offset, boot, number, atype, name)]


def attribute_extents(dev: BlockDevice, offset: int, boot: NtfsBoot, number: int, atype: int,
                      name: str = "") -> list[tuple[int, bytes, int]]:
    """``attribute_records`` with the MFT record number holding each extent: (record number, record, offset)."""
    rec = read_mft_record_any(dev, offset, boot, number)
    alist = _find_unnamed(rec, AT_ATTRIBUTE_LIST)
    if alist is None:
        apos = _find_attr(rec, atype, name)
        return [] if apos is None else [(number, bytes(rec), apos)]
    value = _attr_value(dev, offset, boot, rec, alist)
    refs: list[tuple[int, int]] = []
    pos = 0
    while pos + 26 <= len(value):
        t, rlen, name_len, name_off = struct.unpack_from("<IHBB", value, pos)
        if rlen < 26:
            break
        ename = value[pos + name_off:pos + name_off + 2 * name_len].decode("utf-16-le", "replace")
        if t == atype and ename == name:
            lowest_vcn, mref = struct.unpack_from("<qQ", value, pos + 8)
            refs.append((lowest_vcn, mref & 0xFFFFFFFFFFFF))
        pos += rlen
    out = []
    for lowest_vcn, num in sorted(refs):
        r = rec if num == number else read_mft_record_any(dev, offset, boot, num)
        apos = _find_attr(r, atype, name, lowest_vcn)
        if apos is None:
            raise RescueError(f"NTFS attribute list of record {number} on {dev.path} at {offset} points to "
                              f"record {num} without the attribute 0x{atype:X} extent")
        out.append((num, bytes(r), apos))
    return out


def _data_extents(dev: BlockDevice, offset: int, boot: NtfsBoot, number: int) -> list[tuple[bytes, int]]:
    """The unnamed $DATA attribute records of file ``number``, in VCN order."""
    return attribute_records(dev, offset, boot, number, AT_DATA)


def extents_runs(extents: list[tuple[bytes, int]], where: str) -> tuple[list[tuple[int | None, int]], int]:
    """(data runs, data size) of a non-resident attribute split over ``extents`` (VCNs must continue)."""
    runs: list[tuple[int | None, int]] = []
    vcn = 0
    for erec, epos in extents:
        if erec[epos + 8] == 0 or struct.unpack_from("<q", erec, epos + 16)[0] != vcn:
            raise RescueError(f"NTFS attribute {where}: extents do not continue at VCN {vcn}")
        for lcn, length in _mapping_pairs(erec, epos):
            runs.append((lcn, length))
            vcn += length
    rec, apos = extents[0]
    return runs, struct.unpack_from("<q", rec, apos + 48)[0]


def attribute_value(dev: BlockDevice, offset: int, boot: NtfsBoot, number: int, atype: int, name: str = "",
                    limit: int = 64 << 20) -> bytes | None:
    """The whole value of attribute (``atype``, ``name``) of file ``number`` (at most ``limit`` bytes, a
    RescueError beyond); None when the file has no such attribute."""
    extents = attribute_records(dev, offset, boot, number, atype, name)
    if not extents:
        return None
    rec, apos = extents[0]
    if rec[apos + 8] == 0:
        return _resident_value(rec, apos)
    where = f"0x{atype:X} of MFT record {number} on {dev.path} at {offset}"
    runs, size = extents_runs(extents, where)
    if not 0 <= size <= limit:
        raise RescueError(f"NTFS attribute {where} is {size} bytes (limit {limit})")
    return read_stream(dev, offset, runs, boot.cluster_size, 0, size)


def used_ranges(dev: BlockDevice, offset: int, size: int, boot: NtfsBoot) -> tuple[list[tuple[int, int]], int]:
    """(ranges relative to the partition start, number of used clusters) from $Bitmap.

    Adds the boot sector and everything after the last cluster (backup boot sector, tail). A $Bitmap that
    cannot describe every cluster (too short, sparse, runs outside the partition, VCN gaps between extents)
    or that leaves its own clusters, $MFT's first records, $MFTMirr or the boot cluster free is a RescueError: a
    wrong map would silently leave data out of an image.
    """
    cs = boot.cluster_size
    nr = boot.nr_clusters
    where = f"on {dev.path} at {offset}"
    if boot.mft_lcn * cs + 16 * boot.mft_record_size > size:
        raise RescueError(f"NTFS $MFT (LCN {boot.mft_lcn}) lies past the end of the partition {where}")
    extents = _data_extents(dev, offset, boot, FILE_BITMAP)
    if not extents:
        raise RescueError(f"NTFS $Bitmap {where} has no $DATA attribute")
    need = (nr + 7) // 8
    rb = RangeBuilder()
    rb.add(0, boot.bytes_per_sector)
    used = 0
    # (first cluster, clusters) the file system itself always allocates: the boot sector, $MFT's first
    # 16 records (always contiguous at mft_lcn) and $MFTMirr.
    must_be_used = [(0, 1), (boot.mft_lcn, -(-16 * boot.mft_record_size // cs)), (boot.mftmirr_lcn, 1)]
    rec, data = extents[0]
    if rec[data + 8] == 0:  # resident
        value = _resident_value(rec, data)
        if len(value) < need:
            raise RescueError(f"NTFS $Bitmap {where} is {len(value)} bytes, {nr} clusters need {need}")
        used = rb.add_bitmap(value[:need], 0, cs, 0, nr)
    else:
        data_size = struct.unpack_from("<q", rec, data + 48)[0]
        if data_size < need:
            raise RescueError(f"NTFS $Bitmap {where} is {data_size} bytes, {nr} clusters need {need}")
        runs, _size = extents_runs(extents, f"$Bitmap {where}")
        part_clusters = size // cs
        byte_pos = 0  # position in the bitmap stream
        for lcn, length in runs:
            if byte_pos >= need:
                break
            if lcn is None:
                raise RescueError(f"NTFS $Bitmap {where} has a sparse run")
            if lcn + length > min(nr, part_clusters):
                raise RescueError(f"NTFS $Bitmap run (LCN {lcn}, {length} clusters) beyond the volume {where}")
            must_be_used.append((lcn, length))
            nbytes = min(length * cs, need - byte_pos)
            done = 0
            while done < nbytes:
                n = min(READ_CHUNK, nbytes - done)
                chunk = dev.read(offset + lcn * cs + done, n)
                used += rb.add_bitmap(chunk, (byte_pos + done) * 8, cs, 0, nr)
                done += n
            byte_pos += nbytes
        if byte_pos < need:
            raise RescueError(f"NTFS $Bitmap {where}: data runs cover {byte_pos} of its {need} bytes")
    ranges = rb.result()
    for lcn, length in must_be_used:
        if 0 <= lcn < nr and not covered(ranges, lcn * cs, min(length, nr - lcn) * cs):
            raise RescueError(f"NTFS $Bitmap {where} marks clusters {lcn}-{lcn + length - 1} (in use by the "
                              f"file system itself) free: it is not this volume's allocation map")
    rb.add(nr * cs, size - nr * cs)  # backup boot sector + any tail the clusters don't cover
    return rb.result(clip=size), used


# ---------------------------------------------------------------- directories (B+ tree indexes "$I30")
# Layout per ntfs-3g layout.h: INDEX_ROOT (type, collation rule, index block size, clusters per block) +
# INDEX_HEADER; INDEX_BLOCK ("INDX", fixups, VCN) + INDEX_HEADER at 0x18; INDEX_ENTRY (file reference,
# length, key length, flags NODE=1/END=2, key = FILE_NAME, sub-node VCN in the last 8 bytes when NODE).

FILE_ROOT = 5  # MFT record of the root directory
FILE_UPCASE = 10  # MFT record of $UpCase
AT_FILE_NAME = 0x30
AT_INDEX_ROOT = 0x90
AT_INDEX_ALLOCATION = 0xA0
INDEX_ENTRY_NODE, INDEX_ENTRY_END = 1, 2
FILE_NAME_DOS = 2  # namespace of an 8.3 alias (listed beside the long name)
MAX_INDEX_DEPTH = 32


@dataclass
class DirEntry:
    name: str
    record: int  # MFT record number (low 48 bits of the file reference)
    namespace: int  # 0 POSIX, 1 Win32, 2 DOS, 3 Win32+DOS
    is_dir: bool
    size: int  # data size as the index copy of FILE_NAME has it (may lag behind the file's own)


def _entries(buf: bytes, start: int, end: int, where: str):
    """Yield (flags, file reference, key bytes, sub-node VCN or None) of the index entries in buf[start:end]."""
    pos = start
    while pos + 16 <= end:
        mref, elen, klen, flags = struct.unpack_from("<QHHH", buf, pos)
        if elen < 16 or pos + elen > end or 16 + klen > elen:
            raise RescueError(f"corrupt NTFS index entry at {pos} in {where}")
        sub = struct.unpack_from("<q", buf, pos + elen - 8)[0] if flags & INDEX_ENTRY_NODE else None
        yield flags, mref, bytes(buf[pos + 16:pos + 16 + klen]), sub
        if flags & INDEX_ENTRY_END:
            return
        pos += elen
    raise RescueError(f"NTFS index in {where} has no end entry")


def _key_name(key: bytes) -> tuple[str, int]:
    n = key[0x40]
    return key[0x42:0x42 + 2 * n].decode("utf-16-le", "replace"), key[0x41]


class NtfsVolume:
    """Read access to one NTFS volume at ``offset`` of ``dev``: records, attributes, directory lookups."""

    def __init__(self, dev: BlockDevice, offset: int = 0, boot: NtfsBoot | None = None) -> None:
        self.dev, self.offset = dev, offset
        nb = boot or parse_boot(dev.read(offset, 512))
        if nb is None:
            raise RescueError(f"no NTFS boot sector on {dev.path} at {offset}")
        self.boot = nb
        self._upcase: list[int] | None = None

    def record(self, number: int) -> bytearray:
        return read_mft_record_any(self.dev, self.offset, self.boot, number)

    def value(self, number: int, atype: int, name: str = "", limit: int = 64 << 20) -> bytes | None:
        return attribute_value(self.dev, self.offset, self.boot, number, atype, name, limit)

    def label(self) -> str | None:
        return volume_state(self.dev, self.offset, self.boot)[0]

    def upcase(self, name: str) -> list[int]:
        """UTF-16 code units of ``name`` upper-cased with the volume's $UpCase table (str.upper per unit when
        the table cannot be read): the order NTFS file-name collation sorts directories by."""
        if self._upcase is None:
            try:
                raw = self.value(FILE_UPCASE, AT_DATA, limit=1 << 17) or b""
            except RescueError:
                raw = b""
            self._upcase = list(struct.unpack(f"<{len(raw) // 2}H", raw)) if len(raw) == 1 << 17 else []
        units = struct.unpack(f"<{len(name.encode('utf-16-le')) // 2}H", name.encode("utf-16-le"))
        if self._upcase:
            return [self._upcase[u] for u in units]
        return [ord(chr(u).upper()) if len(chr(u).upper()) == 1 and ord(chr(u).upper()) < 0x10000 else u
                for u in units]

    def _index(self, number: int):
        """(root value, $INDEX_ALLOCATION runs, index block size) of directory ``number``."""
        root = self.value(number, AT_INDEX_ROOT, "$I30", limit=1 << 16)
        if root is None or len(root) < 32:
            raise RescueError(f"MFT record {number} on {self.dev.path} at {self.offset} is not a directory")
        block_size = struct.unpack_from("<I", root, 8)[0]
        ext = attribute_records(self.dev, self.offset, self.boot, number, AT_INDEX_ALLOCATION, "$I30")
        runs = extents_runs(ext, f"$INDEX_ALLOCATION of record {number}")[0] if ext else []
        return root, runs, block_size

    def _block(self, runs, block_size: int, vcn: int, number: int) -> tuple[bytes, int, int, str]:
        cs = self.boot.cluster_size
        pos = vcn * (cs if block_size >= cs else 512)  # VCNs count 512-byte units when blocks < a cluster
        where = f"index block VCN {vcn} of directory record {number} on {self.dev.path} at {self.offset}"
        if not 512 <= block_size <= 65536:
            raise RescueError(f"implausible index block size {block_size} in {where}")
        buf = bytearray(read_stream(self.dev, self.offset, runs, cs, pos, block_size))
        if buf[:4] != b"INDX":
            raise RescueError(f"no INDX signature in {where}")
        apply_fixups(buf, where)
        eo, il = struct.unpack_from("<II", buf, 0x18)
        return bytes(buf), 0x18 + eo, min(0x18 + il, block_size), where

    def _node(self, ctx, vcn: int, depth: int) -> tuple[bytes, int, int, str]:
        runs, bsize, number, seen = ctx
        if depth > MAX_INDEX_DEPTH or vcn in seen:
            raise RescueError(f"NTFS index of directory record {number} on {self.dev.path} at {self.offset} "
                              f"loops or is deeper than {MAX_INDEX_DEPTH} levels")
        seen.add(vcn)
        if not runs:
            raise RescueError(f"directory record {number} on {self.dev.path} at {self.offset} has index "
                              "sub-nodes but no $INDEX_ALLOCATION")
        return self._block(runs, bsize, vcn, number)

    def _root(self, number: int):
        root, runs, bsize = self._index(number)
        eo, il = struct.unpack_from("<II", root, 16)
        return (runs, bsize, number, set()), (root, 16 + eo, min(16 + il, len(root)), f"$INDEX_ROOT of record {number}")

    def _all(self, ctx, node, depth: int = 0):
        for flags, mref, key, sub in _entries(*node):
            if sub is not None:  # a sub-node holds the names sorting before this entry
                yield from self._all(ctx, self._node(ctx, sub, depth + 1), depth + 1)
            if not flags & INDEX_ENTRY_END:
                yield mref, key

    def _search(self, ctx, node, target: list[int], depth: int = 0):
        for flags, mref, key, sub in _entries(*node):
            if not flags & INDEX_ENTRY_END:
                k = self.upcase(_key_name(key)[0])
                if k == target:
                    return mref, key
                if k < target:
                    continue
            # target sorts before this entry (or this is the end entry): only its sub-node can hold it
            return None if sub is None else self._search(ctx, self._node(ctx, sub, depth + 1), target, depth + 1)
        return None

    def listdir(self, number: int = FILE_ROOT) -> list[DirEntry]:
        """Every entry of directory ``number`` (DOS 8.3 aliases left out), in index order."""
        out = []
        ctx, node = self._root(number)
        for mref, key in self._all(ctx, node):
            name, ns = _key_name(key)
            if ns == FILE_NAME_DOS:
                continue
            flags = struct.unpack_from("<I", key, 0x38)[0]
            out.append(DirEntry(name, mref & 0xFFFFFFFFFFFF, ns, bool(flags & 0x10000000),
                                struct.unpack_from("<q", key, 0x30)[0]))
        return out

    def find(self, number: int, name: str) -> DirEntry | None:
        """The entry called ``name`` (case-insensitive, NTFS collation) in directory ``number``, or None."""
        ctx, node = self._root(number)
        hit = self._search(ctx, node, self.upcase(name))
        if hit is None:
            return None
        mref, key = hit
        n, ns = _key_name(key)
        flags = struct.unpack_from("<I", key, 0x38)[0]
        return DirEntry(n, mref & 0xFFFFFFFFFFFF, ns, bool(flags & 0x10000000), struct.unpack_from("<q", key, 0x30)[0])

    def lookup(self, path: str) -> DirEntry | None:
        """The entry at ``path`` (``\\`` or ``/`` separated, from the root, case-insensitive), or None."""
        parts = [p for p in path.replace("\\", "/").split("/") if p]
        entry = DirEntry("", FILE_ROOT, 1, True, 0)
        for part in parts:
            if not entry.is_dir:
                return None
            found = self.find(entry.record, part)
            if found is None:
                return None
            entry = found
        return entry


# ---------------------------------------------------------------- file contents (for browsing/extracting)
AT_STANDARD_INFORMATION = 0x10
AT_REPARSE_POINT = 0xC0
AT_LOGGED_UTILITY_STREAM = 0x100
ATTR_COMPRESSED, ATTR_ENCRYPTED, ATTR_SPARSE = 0x0001, 0x4000, 0x8000
STREAM_PIECE = 1 << 20  # bytes a stream yields at a time: files are copied in pieces, never read whole


def attribute_list(dev: BlockDevice, offset: int, boot: NtfsBoot, number: int) -> tuple[bytearray, list[tuple[int, str]]]:
    """(base record, every (type, name) file ``number`` has), from the base record and its $ATTRIBUTE_LIST."""
    rec = read_mft_record_any(dev, offset, boot, number)
    seen: list[tuple[int, str]] = []
    alist = _find_unnamed(rec, AT_ATTRIBUTE_LIST)
    if alist is None:
        for t, apos in iter_attributes(rec):
            if (t, attr_name(rec, apos)) not in seen:
                seen.append((t, attr_name(rec, apos)))
        return rec, seen
    value = _attr_value(dev, offset, boot, rec, alist)
    pos = 0
    while pos + 26 <= len(value):
        t, rlen, name_len, name_off = struct.unpack_from("<IHBB", value, pos)
        if rlen < 26:
            break
        key = (t, value[pos + name_off:pos + name_off + 2 * name_len].decode("utf-16-le", "replace"))
        if key not in seen:
            seen.append(key)
        pos += rlen
    return rec, seen


@dataclass
class NtfsStream:
    """Where one data stream's bytes are: resident bytes, or runs (+ sizes, compression unit in clusters)."""
    size: int
    resident: bytes | None
    runs: list[tuple[int | None, int]]
    initialized: int
    flags: int  # ATTR_COMPRESSED | ATTR_ENCRYPTED | ATTR_SPARSE
    unit: int  # compression unit in clusters (0: not compressed)


def data_stream(vol: NtfsVolume, number: int, name: str = "") -> NtfsStream | None:
    """The $DATA stream ``name`` ("" the main one) of file ``number``, or None when it has none."""
    extents = attribute_records(vol.dev, vol.offset, vol.boot, number, AT_DATA, name)
    if not extents:
        return None
    rec, apos = extents[0]
    flags = struct.unpack_from("<H", rec, apos + 12)[0]
    if rec[apos + 8] == 0:
        value = _resident_value(rec, apos)
        return NtfsStream(len(value), value, [], len(value), flags, 0)
    where = f"$DATA {name!r} of MFT record {number} on {vol.dev.path} at {vol.offset}"
    runs, size = extents_runs(extents, where)
    init = struct.unpack_from("<q", rec, apos + 56)[0]
    unit = 1 << rec[apos + 34] if flags & ATTR_COMPRESSED and rec[apos + 34] else 0
    if size < 0 or not 0 <= init <= size + vol.boot.cluster_size:
        raise RescueError(f"NTFS {where}: implausible sizes (data {size}, initialized {init})")
    return NtfsStream(size, None, runs, min(init, size), flags, unit)


def _runs_slice(runs: list[tuple[int | None, int]], vcn: int, count: int) -> list[tuple[int | None, int]]:
    """The runs covering clusters [vcn, vcn + count) (a missing tail reads as sparse)."""
    out, pos = [], 0
    for lcn, length in runs:
        a, b = max(pos, vcn), min(pos + length, vcn + count)
        if a < b:
            out.append((None if lcn is None else lcn + a - pos, b - a))
        pos += length
        if pos >= vcn + count:
            break
    got = sum(n for _l, n in out)
    if got < count:
        out.append((None, count - got))
    return out


def iter_stream(vol: NtfsVolume, st: NtfsStream, where: str):
    """Yield the stream's bytes in pieces of at most ~STREAM_PIECE: sparse runs and the part past the
    initialized size as zeros, LZNT1 compression units decoded."""
    from rescuekit.disk import lznt1

    if st.resident is not None:
        yield st.resident
        return
    cs = vol.boot.cluster_size
    if st.flags & ATTR_ENCRYPTED:
        raise RescueError(f"{where} is EFS-encrypted")
    done = 0
    if st.unit:
        ubytes = st.unit * cs
        for vcn in range(0, -(-st.size // cs), st.unit):
            want = min(ubytes, st.size - done)
            pieces = _runs_slice(st.runs, vcn, st.unit)
            real = [(lcn, n) for lcn, n in pieces if lcn is not None]
            nreal = sum(n for _l, n in real)
            if nreal == 0:
                data = bytes(want)
            else:
                raw = b"".join(vol.dev.read(vol.offset + lcn * cs, n * cs) for lcn, n in real)
                data = raw[:want] if nreal >= st.unit else lznt1.decompress(raw, want, where)
            if done + len(data) > st.initialized:
                keep = max(0, st.initialized - done)
                data = data[:keep] + bytes(len(data) - keep)
            yield data
            done += len(data)
        return
    vcn = 0
    for lcn, length in st.runs:
        run_end = min((vcn + length) * cs, st.size)
        pos = vcn * cs
        vcn += length
        while pos < run_end:
            n = min(STREAM_PIECE, run_end - pos)
            if lcn is None or pos >= st.initialized:
                data = bytes(n)
            else:
                data = bytearray(n)  # read in place: a piece is copied once, into the caller's file
                vol.dev.readinto(vol.offset + lcn * cs + (pos - (vcn - length) * cs), memoryview(data))
                if pos + n > st.initialized:
                    data[st.initialized - pos:] = bytes(pos + n - st.initialized)
            yield data
            done += n
            pos += n
        if run_end >= st.size:
            break
    if done < st.size:
        raise RescueError(f"{where}: data runs cover {done} of its {st.size} bytes")

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


def _data_extents(dev: BlockDevice, offset: int, boot: NtfsBoot, number: int) -> list[tuple[bytes, int]]:
    """The unnamed $DATA attribute records of file ``number``, in VCN order, following an $ATTRIBUTE_LIST
    into extension records when the base record has one."""
    rec = read_mft_record(dev, offset, boot, number)
    alist = _find_unnamed(rec, AT_ATTRIBUTE_LIST)
    if alist is None:
        apos = _find_unnamed(rec, AT_DATA)
        return [] if apos is None else [(bytes(rec), apos)]
    value = _attr_value(dev, offset, boot, rec, alist)
    refs: list[tuple[int, int]] = []
    pos = 0
    while pos + 26 <= len(value):
        atype, rlen, name_len = struct.unpack_from("<IHB", value, pos)
        if rlen < 26:
            break
        if atype == AT_DATA and name_len == 0:
            lowest_vcn, mref = struct.unpack_from("<qQ", value, pos + 8)
            refs.append((lowest_vcn, mref & 0xFFFFFFFFFFFF))
        pos += rlen
    out = []
    for lowest_vcn, num in sorted(refs):
        r = rec if num == number else read_mft_record_any(dev, offset, boot, num)
        apos = _find_unnamed(r, AT_DATA, lowest_vcn)
        if apos is None:
            raise RescueError(f"NTFS attribute list of record {number} on {dev.path} at {offset} points to "
                              f"record {num} without the $DATA extent")
        out.append((bytes(r), apos))
    return out


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
        runs: list[tuple[int | None, int]] = []
        vcn = 0
        for erec, epos in extents:
            if erec[epos + 8] == 0 or struct.unpack_from("<q", erec, epos + 16)[0] != vcn:
                raise RescueError(f"NTFS $Bitmap {where}: $DATA extents do not continue at VCN {vcn}")
            for lcn, length in _mapping_pairs(erec, epos):
                runs.append((lcn, length))
                vcn += length
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

"""Shrink an NTFS volume whose used clusters all lie below the new end (no cluster moves), as ntfsresize does it.

Everything is computed from a read-only source (the image, through ``ImageView``) before anything is written:
the result is a list of (byte offset relative to the partition, bytes) to write after the volume's clusters
below the new end, namely

* the boot sector with the new total sector count, and its backup in the new last sector;
* $Bitmap's MFT record (6): data and initialized size for the new cluster count (its clusters stay allocated);
* $BadClus's MFT record (8): the ``$Bad`` stream's sizes and its one sparse run cut to the new cluster count.

Refused (RescueError naming the size needed or the reason): used clusters at or past the new end (that needs
cluster relocation, not implemented), bad clusters recorded in $BadClus, $Bitmap/$BadClus split over extension
records, a journal that is not clean (``rescuekit.disk.winstate``). ``check`` re-reads the written volume.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass, field

from rescuekit.disk import ntfs, winstate
from rescuekit.disk.device import BlockDevice
from rescuekit.errors import RescueError

FILE_BADCLUS = 8


@dataclass
class Shrink:
    old_size: int
    new_size: int
    cluster_size: int
    sector_size: int
    new_clusters: int
    used_clusters: int
    min_size: int  # smallest partition size this volume can be shrunk to without moving clusters
    writes: list[tuple[int, bytes]] = field(default_factory=list)  # relative to the partition start


def protect_fixups(rec: bytearray) -> None:
    """Apply the update sequence array to a record (inverse of ``ntfs.apply_fixups``; the USN is incremented)."""
    usa_ofs, usa_count = struct.unpack_from("<HH", rec, 4)
    usn = (struct.unpack_from("<H", rec, usa_ofs)[0] + 1) & 0xFFFF or 1
    struct.pack_into("<H", rec, usa_ofs, usn)
    for i in range(1, usa_count):
        pos = i * 512 - 2
        rec[usa_ofs + 2 * i:usa_ofs + 2 * i + 2] = rec[pos:pos + 2]
        struct.pack_into("<H", rec, pos, usn)


def min_size(dev: BlockDevice, offset: int, size: int, boot: ntfs.NtfsBoot) -> tuple[int, int]:
    """(smallest partition size holding every used cluster + the backup boot sector, used clusters)."""
    ranges, used = ntfs.used_ranges(dev, offset, size, boot)
    area = boot.nr_clusters * boot.cluster_size
    last = max((s + n for s, n in ranges if s < area), default=boot.cluster_size)
    clusters = -(-min(last, area) // boot.cluster_size)
    return clusters * boot.cluster_size + boot.bytes_per_sector, used


def _record(dev: BlockDevice, offset: int, boot: ntfs.NtfsBoot, number: int) -> tuple[int, bytearray]:
    pos = boot.mft_lcn * boot.cluster_size + number * boot.mft_record_size
    return pos, ntfs.read_mft_record(dev, offset, boot, number)


def _attr(rec: bytes, atype: int, name: str, what: str) -> int:
    if ntfs._find_unnamed(rec, ntfs.AT_ATTRIBUTE_LIST) is not None:
        raise RescueError(f"{what} has an attribute list (split over several MFT records): not shrunk")
    for t, apos in ntfs.iter_attributes(rec):
        if t == atype and ntfs.attr_name(rec, apos) == name:
            if rec[apos + 8] == 0:
                raise RescueError(f"{what}: resident attribute, not expected")
            return apos
    raise RescueError(f"{what} has no {name or 'unnamed'} attribute 0x{atype:X}")


def plan(dev: BlockDevice, offset: int, size: int, new_size: int) -> Shrink:
    """The writes that make the NTFS volume at ``offset`` (``size`` bytes) of ``dev`` a ``new_size`` volume."""
    where = f"NTFS volume at byte {offset} of {dev.path}"
    boot = ntfs.parse_boot(dev.read(offset, 512))
    if boot is None:
        raise RescueError(f"no NTFS boot sector: {where}")
    bps, cs = boot.bytes_per_sector, boot.cluster_size
    need, used = min_size(dev, offset, size, boot)
    if new_size < need:
        raise RescueError(f"the {where} needs at least {need} bytes without moving clusters (its last used "
                          f"cluster is {(need - bps) // cs - 1}); relocating clusters is not implemented")
    st = winstate.probe(dev, offset, boot)
    if st.hiberfil is not None:
        raise RescueError(f"the {where} holds a hibernated Windows session: it cannot be resized (boot Windows, "
                          "shut it down fully, then capture again)")
    if st.journal_clean is not True:
        raise RescueError(f"the {where} has a journal ($LogFile) that is not clean: it cannot be resized "
                          "(boot Windows and shut it down fully, then capture again)")
    total = new_size // bps - 1  # the last sector holds the backup boot sector (as mkntfs lays it out)
    nr = total * bps // cs
    sh = Shrink(size, new_size, cs, bps, nr, used, need)
    bs = bytearray(dev.read(offset, bps))
    struct.pack_into("<q", bs, 0x28, total)
    sh.writes += [(0, bytes(bs)), (total * bps, bytes(bs))]
    # $Bitmap: one bit per cluster, size rounded up to 8 bytes (ntfsresize); its clusters stay allocated.
    pos, rec = _record(dev, offset, boot, ntfs.FILE_BITMAP)
    apos = _attr(rec, ntfs.AT_DATA, "", f"$Bitmap of the {where}")
    bm = ((nr + 7) // 8 + 7) & ~7
    alloc = struct.unpack_from("<q", rec, apos + 40)[0]
    if bm > alloc:
        raise RescueError(f"$Bitmap of the {where} is smaller than the shrunk volume needs")
    struct.pack_into("<qq", rec, apos + 48, bm, bm)
    # Bits for the clusters past the new end, up to the bitmap's (8-byte) end, are set: "in use", as mkntfs
    # and Windows leave them (ntfsresize --info counts a clear one as an accounting error).
    runs = ntfs._mapping_pairs(rec, apos)
    first = nr // 8
    tail = bytearray(ntfs.read_stream(dev, offset, runs, cs, first, bm - first))
    for bit in range(nr, bm * 8):
        tail[bit // 8 - first] |= 1 << (bit % 8)
    vcn0 = 0
    for lcn, length in runs:  # the tail's bytes, mapped to where they are on the volume
        a, b = max(first, vcn0 * cs), min(bm, (vcn0 + length) * cs)
        if a < b and lcn is not None:
            sh.writes.append((lcn * cs + a - vcn0 * cs, bytes(tail[a - first:b - first])))
        vcn0 += length
    protect_fixups(rec)
    sh.writes.append((pos, bytes(rec)))
    # $BadClus:$Bad is sparse over the whole volume; any real run is a recorded bad cluster.
    pos, rec = _record(dev, offset, boot, FILE_BADCLUS)
    apos = _attr(rec, ntfs.AT_DATA, "$Bad", f"$BadClus of the {where}")
    runs = ntfs._mapping_pairs(rec, apos)
    if any(lcn is not None for lcn, _n in runs) or struct.unpack_from("<q", rec, apos + 16)[0] != 0:
        raise RescueError(f"the {where} has bad clusters recorded in $BadClus: not shrunk (run chkdsk /b first)")
    mp = apos + struct.unpack_from("<H", rec, apos + 32)[0]
    lsz = rec[mp] & 0x0F
    if len(runs) != 1 or rec[mp] >> 4 != 0 or nr >= 1 << (8 * lsz - 1):
        raise RescueError(f"$BadClus of the {where} has an unexpected run list: not shrunk")
    rec[mp + 1:mp + 1 + lsz] = nr.to_bytes(lsz, "little")
    struct.pack_into("<q", rec, apos + 24, nr - 1)  # highest VCN
    struct.pack_into("<qq", rec, apos + 40, nr * cs, nr * cs)  # allocated, data size (initialized stays)
    protect_fixups(rec)
    sh.writes.append((pos, bytes(rec)))
    return sh


def check(dev: BlockDevice, offset: int, sh: Shrink) -> None:
    """Re-read the shrunk volume: geometry, backup boot sector, $Bitmap covering exactly the used clusters."""
    where = f"the shrunk NTFS volume at byte {offset} of {dev.path}"
    bs = dev.read(offset, sh.sector_size)
    boot = ntfs.parse_boot(bs)
    if boot is None or boot.nr_clusters != sh.new_clusters:
        raise RescueError(f"{where}: boot sector reads back wrong")
    if dev.read(offset + boot.total_sectors * boot.bytes_per_sector, sh.sector_size) != bs:
        raise RescueError(f"{where}: backup boot sector reads back wrong")
    _ranges, used = ntfs.used_ranges(dev, offset, sh.new_size, boot)
    if used != sh.used_clusters:
        raise RescueError(f"{where}: {used} used clusters after the shrink, {sh.used_clusters} before")

"""Restore onto a smaller target: the shrunk layout, computed from the image before anything is written.

The volume is shrunk by ``rescuekit.disk.ntfs_resize`` (NTFS: clusters past the new end moved) or
``rescuekit.disk.fat_resize`` (FAT12/16/32: truncated, or laid out again with its clusters renumbered): one volume
(``restore --partition N``, or a volume image) onto a smaller partition or file; a whole GPT disk (the NTFS
partition with the most free space shrinks: partitions before it keep their place, the ones after it move down,
``gpt_tail_layout``; the backup GPT goes to the new end); a whole MBR disk whose last partition (primary or logical)
is that volume (it ends at the new last sector, an extended partition around it too; ``plan_mbr_shrink``). Not
implemented (refused with the sizes): moving partitions of an MBR disk.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass, field

from rescuekit.disk import fat_resize, ntfs_resize
from rescuekit.disk.partitions import EXTENDED_TYPES, _mbr_entries, read_table
from rescuekit.errors import RescueError
from rescuekit.imaging.imageview import ImageView
from rescuekit.imaging.units import human


FAT_KINDS = ("fat12", "fat16", "fat32")


@dataclass
class VolumeShrink:
    lo: int  # the volume's offset in the image
    shrink: ntfs_resize.Shrink | fat_resize.FatShrink | None  # None: an MBR disk whose partitions all fit
    number: int | None = None  # whole-disk GPT: the partition whose entry ends earlier
    end_lba: int | None = None  # ... and its new last LBA
    disk_size: int = 0  # the size planned for (the target's, or --shrink-to)
    whole_disk: bool = False
    table: str = "none"  # "gpt": rebuilt by the restore (``ends``); "mbr": ``table_writes``
    table_writes: list[tuple[int, bytes]] = field(default_factory=list)  # disk offsets (MBR, EBRs)
    moved_parts: list[tuple[int, int, int, int]] = field(default_factory=list)  # GPT: (number, old, new, size) bytes

    @property
    def new_size(self) -> int:
        """The volume's new size (an MBR disk whose partitions all fit: the disk's)."""
        return self.shrink.new_size if self.shrink is not None else self.disk_size

    @property
    def fs_kind(self) -> str | None:
        """"NTFS", "FAT32"... (None: no file system shrinks)."""
        s = self.shrink
        return None if s is None else s.kind.upper() if isinstance(s, fat_resize.FatShrink) else "NTFS"

    @property
    def identity(self) -> int:
        """Image bytes [lo, lo + identity) are written where they are."""
        s = self.shrink
        return self.disk_size if s is None else s.identity if isinstance(s, fat_resize.FatShrink) else s.new_size

    @property
    def writes(self) -> list[tuple[int, bytes]]:
        """Written last, relative to the volume."""
        return self.shrink.writes if self.shrink is not None else []

    def byte_moves(self) -> list[tuple[int, int, int]]:
        """(old byte, bytes, new byte) relative to the volume: data copied from the image to a new place."""
        s = self.shrink
        if s is None:
            return []
        if isinstance(s, fat_resize.FatShrink):
            return list(s.moves)
        cs = s.cluster_size
        return [(old * cs, k * cs, new * cs) for old, new, k in s.moves]

    def check(self, dev, at: int) -> None:
        """Re-read the shrunk volume's structures from the target (at byte ``at``)."""
        if isinstance(self.shrink, fat_resize.FatShrink):
            fat_resize.check(dev, at, self.shrink)
        elif self.shrink is not None:
            ntfs_resize.check(dev, at, self.shrink)

    def describe(self) -> str:
        s = self.shrink
        if self.table == "mbr":
            where = (f"partition {self.number} (kept at its offset, the partitions before it untouched, it ends at "
                     "the new last sector): " if s is not None else
                     "every partition fits: the MBR's entries that reach past the new end are cut to it")
            if s is None:
                return where
        else:
            where = f"partition {self.number} (kept at its offset, the partitions before it untouched, the backup " \
                    f"GPT at the new end): " if self.number else ""
        if isinstance(s, fat_resize.FatShrink):
            return where + s.describe() + describe_moved_parts(self)
        return (f"{where}the NTFS volume shrinks from {human(s.old_size)} to {human(s.new_size)} ({s.new_size} bytes; "
                f"{human(s.used_clusters * s.cluster_size)} used; " + (
                    f"{human(sum(k for _o, _n, k in s.moves) * s.cluster_size)} of clusters past the new end move "
                    "into free space below it, their run lists rewritten" if s.moves else "no cluster moves")
                + "; boot sector, backup boot sector, $Bitmap and $BadClus rewritten)" + describe_moved_parts(self))


def describe_moved_parts(vs: VolumeShrink) -> str:
    """The partitions after the shrunk one that move down (whole GPT disk), for the prompt."""
    return "".join(f"; partition {n} moves down from byte {old} to {new} ({human(old - new)} earlier, same size "
                   f"{human(size)}, type, GUID and name)" for n, old, new, size in vs.moved_parts)


def moved_boot_sector_writes(doc: dict, index, reader, moved: list[tuple[int, int, int, int]],
                             ss: int) -> list[tuple[int, bytes]]:
    """The boot sectors of moved NTFS/FAT partitions with "hidden sectors" (the partition's first LBA, which the
    boot code reads) set to the new start, and their backups (NTFS: the volume's last sector; FAT32: the BPB's
    backup boot sector); only where the field held the old start (disk offsets, written after the data)."""
    out: list[tuple[int, bytes]] = []
    view = ImageView(doc, index, reader)
    try:
        for number, old, new, size in moved:
            fs = next((p.get("fs") for p in doc["partitions"] if p["number"] == number), None)
            if fs != "ntfs" and not (fs or "").startswith("fat"):
                continue
            boot = view.read(old, 512)
            if struct.unpack_from("<I", boot, 0x1C)[0] != old // ss:
                continue
            copies = [0]
            if fs == "ntfs":
                bps, total = struct.unpack_from("<H", boot, 0x0B)[0], struct.unpack_from("<q", boot, 0x28)[0]
                if 0 < total * bps <= size - 512:
                    copies.append(total * bps)
            elif fs == "fat32" and 0 < struct.unpack_from("<H", boot, 0x32)[0] < 32:
                copies.append(struct.unpack_from("<H", boot, 0x32)[0] * struct.unpack_from("<H", boot, 0x0B)[0])
            for at in copies:
                sector = bytearray(view.read(old + at, 512))
                if struct.unpack_from("<I", sector, 0x1C)[0] == old // ss:
                    struct.pack_into("<I", sector, 0x1C, new // ss)
                    out.append((new + at, bytes(sector)))
    finally:
        view.close()
    return out


def gpt_tail_layout(doc: dict, last_usable: int, ss: int) -> tuple[dict, int, list[tuple[int, int, int, int]]]:
    """Whole GPT disk onto a smaller one whose last usable LBA is ``last_usable``: (the partition to shrink, its
    new last LBA, the partitions after it that move down as (number, old start, new start, size) in bytes).

    The shrunk one is the NTFS partition with the most free space (C:; Windows' own layout puts an NTFS recovery
    partition after it). The partitions after it move down together by a whole number of MiB
    (so their alignment and the gaps between them stay), as little as fits them before the new end; the gap
    between the shrunk partition and the first of them stays too."""
    parts = sorted(doc["partitions"], key=lambda p: p["start"])
    ntfs = [p for p in parts if p.get("fs") == "ntfs"]
    shrunk = max(ntfs, key=lambda p: p["size"] - (p.get("used_bytes") or 0)) if ntfs else parts[-1]
    tail = [p for p in parts if p["start"] > shrunk["start"]]
    if not tail:
        return shrunk, last_usable, []
    align = max(1, (1 << 20) // ss)
    tail_end = max(p["start"] + p["size"] for p in tail) // ss  # first LBA past the tail
    delta = max(align, -(-(tail_end - (last_usable + 1)) // align) * align)
    first = min(p["start"] for p in tail) // ss
    gap = max(0, first - (shrunk["start"] + shrunk["size"]) // ss)
    moved = [(p["number"], p["start"], p["start"] - delta * ss, p["size"]) for p in tail]
    return shrunk, first - delta - gap - 1, moved


def _image_part(doc: dict, lo: int) -> dict | None:
    return next((p for p in doc["partitions"] if p["start"] == lo), None)


def plan_shrink(doc: dict, index, reader, partition: int | None, lo: int, hi: int, new_size: int,
                where: str, what: str) -> VolumeShrink:
    """The shrink of the image's volume [lo, hi) to ``new_size`` bytes, or the refusal (naming the size needed)."""
    disk_size = new_size
    too_small = (f"{where} is too small: {new_size} bytes, the {what} needs {hi - lo} bytes ({human(hi - lo)})")
    number = end_lba = None
    moved: list[tuple[int, int, int, int]] = []
    if partition is None and doc["table"]["kind"] == "mbr":
        return plan_mbr_shrink(doc, index, reader, new_size, too_small)
    if partition is None and doc["table"]["kind"] != "none":
        # Whole GPT disk: an NTFS partition shrinks, the partitions after it move down before the new end.
        ss = doc["table"]["sector_size"] or 512
        last = max(doc["partitions"], key=lambda p: p["start"])
        view = ImageView(doc, index, reader)
        hdr = view.read(ss, 92)
        view.close()
        n_ent, ent_size = struct.unpack_from("<II", hdr, 80) if hdr[:8] == b"EFI PART" else (128, 128)
        entries_sectors = -(-n_ent * ent_size // ss)  # the backup entries before the backup header
        end_lba = new_size // ss - 1 - entries_sectors - 1
        last, end_lba, moved = gpt_tail_layout(doc, end_lba, ss)
        number, lo = last["number"], last["start"]
        new_size = (end_lba + 1) * ss - lo
        if new_size >= last["size"] or new_size <= 0:
            raise RescueError(f"{too_small}; partition {last['number']} ends too close to the new end to be shrunk"
                              + (" with the partitions after it moved down" if moved else "")
                              + "; nothing was written")
        hi = lo + last["size"]
        too_small += f" (partition {number} would have to shrink to {new_size} bytes)"
    sh = _plan_volume(doc, index, reader, lo, hi, new_size, too_small)
    return VolumeShrink(lo, sh, number, end_lba, disk_size, whole_disk=number is not None,
                        table="gpt" if number is not None else "none", moved_parts=moved if number is not None else [])


def _plan_volume(doc: dict, index, reader, lo: int, hi: int, new_size: int,
                 too_small: str) -> ntfs_resize.Shrink | fat_resize.FatShrink:
    """The file system's shrink plan (NTFS or FAT), or the refusal."""
    part = _image_part(doc, lo)
    fs = part.get("fs") if part else None
    if fs != "ntfs" and fs not in FAT_KINDS:
        raise RescueError(f"{too_small}; only NTFS and FAT volumes can be shrunk during a restore (this one is "
                          f"{fs or 'not a file system'}); nothing was written")
    view = ImageView(doc, index, reader)
    try:
        return (ntfs_resize.plan if fs == "ntfs" else fat_resize.plan)(view, lo, hi - lo, new_size)
    except RescueError as exc:
        raise RescueError(f"{too_small} as it is and cannot be shrunk to fit: {exc}; nothing was written") from None
    finally:
        view.close()


def plan_mbr_shrink(doc: dict, index, reader, new_size: int, too_small: str) -> VolumeShrink:
    """A whole MBR disk onto ``new_size`` bytes: the partitions before the last keep their place; the last one
    (primary or logical) ends at the new last sector and its file system shrinks (unless it fits already); every
    table entry (MBR, EBRs: the extended partition, EBR links) that reaches past the new end is cut to it."""
    view = ImageView(doc, index, reader)
    try:
        table = read_table(view)
        ss = table.sector_size
        end = new_size // ss  # sectors on the new disk
        if table.warnings:
            raise RescueError(f"{too_small}; its MBR shows damage ({table.warnings[0]}), so it is not laid out "
                              "anew; nothing was written")
        parts = table.data_partitions
        if not parts:
            raise RescueError(f"{too_small}; its MBR has no partitions; nothing was written")
        last = max(parts, key=lambda p: p.start)
        for p in parts:
            if p is not last and p.end > end * ss:
                raise RescueError(f"{too_small}; partition {p.number} (before the last one) ends past the new end, "
                                  "and moving partitions is not implemented; nothing was written")
        sh = None
        if last.end > end * ss:
            vol_size = end * ss - last.start
            if vol_size <= 0:
                raise RescueError(f"{too_small}; partition {last.number} starts past the new end; nothing was "
                                  "written")
            sh = _plan_volume(doc, index, reader, last.start, last.end, vol_size,
                              too_small + f" (partition {last.number} would have to shrink to {vol_size} bytes)")
        writes = _mbr_cut(view, table, end, last)
    finally:
        view.close()
    if sh is None:
        return VolumeShrink(0, None, None, None, new_size, whole_disk=True, table="mbr", table_writes=writes)
    return VolumeShrink(last.start, sh, last.number, None, new_size, whole_disk=True, table="mbr",
                        table_writes=writes)


def _mbr_cut(view: ImageView, table, end: int, last) -> list[tuple[int, bytes]]:
    """The MBR and EBR sectors with every entry that ends past sector ``end`` ending there (the last partition,
    the extended partition around it, the EBR link to it)."""
    ss = table.sector_size
    ext = next((p for p in table.partitions if p.extended), None)
    ebrs = [a // ss + i for a, n in table.header_regions for i in range(n // ss) if a + i * ss > 0]
    out = []
    for lba in [0] + ebrs:
        sector = bytearray(view.read(lba * ss, ss))
        changed = False
        for slot, _status, ptype, start, count in _mbr_entries(bytes(sector)):  # the table's own slot parser
            at = 446 + 16 * slot
            base = 0 if lba == 0 else ext.start // ss if ptype in EXTENDED_TYPES else lba
            if base + start + count <= end:
                continue
            if not (ptype in EXTENDED_TYPES or (base + start) * ss == last.start) or base + start >= end:
                raise RescueError(f"MBR entry at sector {lba} slot {slot + 1} ends past the new end")
            struct.pack_into("<I", sector, at + 12, end - base - start)
            changed = True
        if changed:
            out.append((lba * ss, bytes(sector)))
    return out


class ShrunkView:
    """``src`` with the volume at byte ``at`` as ``vs`` shrinks it (read-only ``BlockDevice``): [at, at + identity)
    from ``src``, the moved ranges from their old places, the writes on top; outside the volume ``src`` as is.
    ``winbackup restore`` writes a shrunk volume through it; tests apply plans with it."""

    writable = False

    def __init__(self, src, at: int, vs: VolumeShrink, size: int | None = None) -> None:
        self.src, self.at, self.vs = src, at, vs
        self.path, self.sector_size = f"{src.path} (shrunk)", src.sector_size
        self.size = src.size if size is None else size
        self.info = getattr(src, "info", None)
        self.vol_end = at + vs.new_size
        # (new start, length, source offset) of the moved ranges (disjoint), over the identity part; the rest zeros
        self.segs = segs = sorted((at + new, n, at + old) for old, n, new in vs.byte_moves())
        self.starts = [a for a, _n, _s in segs]
        self.patches = sorted((at + off, data) for off, data in vs.writes)

    def read(self, offset: int, n: int) -> bytes:
        from bisect import bisect_right

        if offset < 0 or offset + n > self.size:
            raise RescueError(f"read of {n} bytes at offset {offset} is past the end ({self.size} bytes) of {self.path}")
        out = bytearray(n)
        end = offset + n
        if offset < self.at:
            m = min(end, self.at) - offset
            out[:m] = self.src.read(offset, m)
        if end > self.vol_end and self.vol_end < self.src.size:
            a = max(offset, self.vol_end)
            b = min(end, self.src.size)
            if a < b:
                out[a - offset:b - offset] = self.src.read(a, b - a)
        lo, hi = max(offset, self.at), min(end, self.vol_end)
        if lo < hi:
            a, b = lo, min(hi, self.at + self.vs.identity)
            if a < b:
                out[a - offset:b - offset] = self.src.read(a, b - a)
            i = max(0, bisect_right(self.starts, lo) - 1)
            while i < len(self.segs) and self.segs[i][0] < hi:
                s, m, src = self.segs[i]
                a, b = max(lo, s), min(hi, s + m)
                if a < b:
                    out[a - offset:b - offset] = self.src.read(src + a - s, b - a)
                i += 1
            for pos, data in self.patches:
                a, b = max(lo, pos), min(hi, pos + len(data))
                if a < b:
                    out[a - offset:b - offset] = data[a - pos:b - pos]
        return bytes(out)

    def readinto(self, offset: int, buf) -> int:
        view = memoryview(buf).cast("B")
        view[:] = self.read(offset, len(view))
        return len(view)

    def close(self) -> None:
        pass

"""Restore onto a smaller target: the shrunk layout, computed from the image before anything is written.

The NTFS volume is shrunk by ``rescuekit.disk.ntfs_resize`` (clusters past the new end moved): one NTFS volume (``restore --partition N``, or a volume image) onto a smaller partition or file; a whole GPT disk
(the NTFS partition with the most free space shrinks: partitions before it keep their place, the ones after it
move down, ``gpt_tail_layout``; the backup GPT goes to the new end). Not implemented (refused with the sizes): MBR
disks.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass, field

from rescuekit.disk import ntfs_resize
from rescuekit.errors import RescueError
from rescuekit.imaging.imageview import ImageView
from rescuekit.imaging.units import human


@dataclass
class VolumeShrink:
    lo: int  # the volume's offset in the image
    shrink: ntfs_resize.Shrink
    number: int | None = None  # whole-disk GPT: the partition whose entry ends earlier
    end_lba: int | None = None  # ... and its new last LBA
    disk_size: int = 0  # the size planned for (the target's, or --shrink-to)
    moved_parts: list[tuple[int, int, int, int]] = field(default_factory=list)  # GPT: (number, old, new, size) bytes

    def describe(self) -> str:
        s = self.shrink
        where = f"partition {self.number} (kept at its offset, the partitions before it untouched, the backup GPT " \
                f"at the new end): " if self.number else ""
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
    if partition is None and doc["table"]["kind"] != "none":
        # Whole GPT disk: an NTFS partition shrinks, the partitions after it move down before the new end.
        if doc["table"]["kind"] != "gpt":
            raise RescueError(f"{too_small}; shrinking an MBR disk is not implemented (restore its partitions one by "
                              "one with --partition into a smaller layout); nothing was written")
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
    part = _image_part(doc, lo)
    if part is None or part.get("fs") != "ntfs":
        raise RescueError(f"{too_small}; only NTFS volumes can be shrunk during a restore; nothing was written")
    view = ImageView(doc, index, reader)
    try:
        sh = ntfs_resize.plan(view, lo, hi - lo, new_size)
    except RescueError as exc:
        raise RescueError(f"{too_small} as it is and cannot be shrunk to fit: {exc}; nothing was written") from None
    finally:
        view.close()
    return VolumeShrink(lo, sh, number, end_lba, disk_size, moved if number is not None else [])

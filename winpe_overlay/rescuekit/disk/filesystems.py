"""File-system detection and used byte ranges (NTFS, FAT12/16/32, exFAT; BitLocker and others opaque)."""
from __future__ import annotations

import uuid
from dataclasses import dataclass, field

from rescuekit.disk import fat, ntfs
from rescuekit.disk.device import BlockDevice
from rescuekit.errors import RescueError

ZERO_PROBE = 1 << 20  # "zero" = the first MiB is all zero
# BitLocker information GUIDs (libbde / dislocker volume header): at 0xA0 (Vista/7+ "-FVE-FS-")
# or 0x1A8 (BitLocker To Go, OEM "MSWIN4.1" on a FAT-looking boot sector).
BITLOCKER_GUIDS = {
    uuid.UUID("4967D63B-2E29-4AD8-8399-F6A339E3D001").bytes_le,
    uuid.UUID("92A84D3B-DD80-4D0E-9E4E-B1E3284EAED8").bytes_le,  # used-space-only encryption
}
FS_KINDS = ("ntfs", "fat12", "fat16", "fat32", "exfat", "bitlocker", "unknown", "zero")


@dataclass
class FsInfo:
    kind: str  # "ntfs" | "fat12" | "fat16" | "fat32" | "exfat" | "bitlocker" | "unknown" | "zero"
    label: str | None = None
    cluster_size: int | None = None
    total_bytes: int = 0  # the partition/volume size examined
    used_bytes: int | None = None  # bytes in used clusters (None when unknown)
    serial: str | None = None
    dirty: bool | None = None  # NTFS: marked dirty (unclean shutdown / chkdsk pending); None if unknown
    # Problems found while reading the allocation map (then the whole partition is stored).
    warnings: list[str] = field(default_factory=list)
    _ranges: list[tuple[int, int]] | None = field(default=None, repr=False, compare=False)
    _key: tuple | None = field(default=None, repr=False, compare=False)


def is_bitlocker(boot: bytes) -> bool:
    if boot[3:11] == b"-FVE-FS-":
        return True
    # BitLocker To Go: a FAT-looking sector whose OEM id is MSWIN4.1 and that carries the BitLocker GUID.
    return boot[3:11] == b"MSWIN4.1" and boot[0x1A8:0x1B8] in BITLOCKER_GUIDS


def _is_zero(dev: BlockDevice, offset: int, size: int) -> bool:
    n = min(size, ZERO_PROBE)
    data = dev.read(offset, n)
    return data.count(0) == n


def _scan(dev: BlockDevice, offset: int, size: int, info: FsInfo, boot: bytes) -> None:
    """Fill in used_bytes and the cached ranges; an unreadable map makes it whole-partition + warning."""
    try:
        if info.kind == "ntfs":
            nb = ntfs.parse_boot(boot)
            ranges, used = ntfs.used_ranges(dev, offset, size, nb)
        elif info.kind == "exfat":
            eb = fat.parse_exfat_boot(boot)
            ranges, used = fat.exfat_used_ranges(dev, offset, size, eb)
        else:
            fb = fat.parse_fat_boot(boot)
            ranges, used = fat.fat_used_ranges(dev, offset, size, fb)
        info.used_bytes = used * info.cluster_size
        info._ranges = ranges
    except RescueError as exc:
        info.warnings.append(f"{exc}; the whole partition will be stored")
        info._ranges = [(0, size)]
    info._key = (dev.path, offset, size)


def detect(dev: BlockDevice, offset: int, size: int) -> FsInfo:
    """Identify the file system of the ``size`` bytes at ``offset`` of ``dev`` (and measure its used space)."""
    if size <= 0 or offset < 0 or offset + size > dev.size:
        raise RescueError(f"partition range {offset}+{size} lies outside {dev.path} ({dev.size} bytes)")
    if size < 512:
        return FsInfo("unknown", total_bytes=size)
    boot = dev.read(offset, 512)
    info: FsInfo
    if is_bitlocker(boot):
        return FsInfo("bitlocker", total_bytes=size)
    if (nb := ntfs.parse_boot(boot)) is not None:
        label, dirty = ntfs.volume_state(dev, offset, nb) if nb.mft_lcn * nb.cluster_size < size else (None, None)
        info = FsInfo("ntfs", cluster_size=nb.cluster_size, total_bytes=size, serial=f"{nb.serial:016X}",
                      label=label, dirty=dirty)
    elif (eb := fat.parse_exfat_boot(boot)) is not None:
        label = None
        try:
            label, _bm = fat.exfat_info(dev, offset, eb)
        except RescueError:
            pass
        info = FsInfo("exfat", label=label, cluster_size=eb.cluster_size, total_bytes=size,
                      serial=f"{eb.serial >> 16:04X}-{eb.serial & 0xFFFF:04X}")
    elif (fb := fat.parse_fat_boot(boot)) is not None:
        info = FsInfo(fb.kind, label=fat.fat_label(dev, offset, fb), cluster_size=fb.cluster_size,
                      total_bytes=size, serial=f"{fb.serial >> 16:04X}-{fb.serial & 0xFFFF:04X}")
    elif _is_zero(dev, offset, size):
        return FsInfo("zero", total_bytes=size, used_bytes=0)
    else:
        return FsInfo("unknown", total_bytes=size)
    _scan(dev, offset, size, info, boot)
    return info


def used_ranges(dev: BlockDevice, offset: int, size: int, fs: FsInfo) -> list[tuple[int, int]]:
    """Sorted, merged (start, length) byte ranges RELATIVE to ``offset`` that a capture must store.

    NTFS: $Bitmap clusters + everything outside the cluster area (boot sector, backup boot sector, tail).
    FAT: reserved + FATs + root dir + clusters in use. exFAT: boot regions + FAT + bitmap clusters.
    bitlocker/unknown/zero: the whole partition (the caller elides all-zero chunks).
    If the allocation map cannot be read, the whole partition (and a warning in ``fs.warnings``).
    """
    if fs.kind in ("bitlocker", "unknown", "zero"):
        return [(0, size)]
    if fs._ranges is None or fs._key != (dev.path, offset, size):
        _scan(dev, offset, size, fs, dev.read(offset, 512))
    return list(fs._ranges or [(0, size)])

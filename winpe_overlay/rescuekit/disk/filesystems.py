"""File-system detection and used byte ranges (NTFS, FAT12/16/32, exFAT; BitLocker and others opaque)."""
from __future__ import annotations

from dataclasses import dataclass

from rescuekit.disk.device import BlockDevice


@dataclass
class FsInfo:
    kind: str  # "ntfs" | "fat12" | "fat16" | "fat32" | "exfat" | "bitlocker" | "unknown" | "zero"
    label: str | None = None
    cluster_size: int | None = None
    total_bytes: int = 0  # the partition/volume size examined
    used_bytes: int | None = None  # bytes in used clusters (None when unknown)
    serial: str | None = None


def detect(dev: BlockDevice, offset: int, size: int) -> FsInfo:
    """Identify the file system of the ``size`` bytes at ``offset`` of ``dev``."""
    raise NotImplementedError


def used_ranges(dev: BlockDevice, offset: int, size: int, fs: FsInfo) -> list[tuple[int, int]]:
    """Sorted, merged (start, length) byte ranges RELATIVE to ``offset`` that a capture must store.

    NTFS: $Bitmap clusters + everything outside the cluster area (boot sector, backup boot sector, tail).
    FAT: reserved + FATs + root dir + clusters in use. exFAT: boot regions + FAT + bitmap clusters.
    bitlocker/unknown/zero: the whole partition (the caller elides all-zero chunks).
    """
    raise NotImplementedError

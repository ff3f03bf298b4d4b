"""Refusals that protect the user: never write onto the disk holding the repository or the running system."""
from __future__ import annotations

import os
import re
import stat
from pathlib import Path

from rescuekit.disk import inventory


def _is_device(path: str) -> bool:
    if path.startswith(("\\\\.\\", "//./")):
        return True
    try:
        return stat.S_ISBLK(os.stat(path).st_mode)
    except OSError:
        return False


def _disk_of(path: str) -> str:
    """The whole-disk path of a disk or partition device path (``/dev/sda1`` -> ``/dev/sda``)."""
    if path.startswith(("\\\\.\\", "//./")):
        if re.fullmatch(r"(\\\\\.\\|//\./)[A-Za-z]:", path):
            return inventory.disk_holding(path[-2:] + "\\") or path
        return path
    real = os.path.realpath(path)
    name = os.path.basename(real)
    part = Path("/sys/class/block") / name / "partition"
    if part.exists():  # a partition: its parent directory in sysfs is the disk
        return "/dev/" + (Path("/sys/class/block") / name).resolve().parent.name
    return real


def same_disk(device: str, folder: str | Path) -> bool:
    """Is ``device`` (a disk or partition; image files never are) on the disk that holds ``folder``?"""
    if not _is_device(device):
        return False
    try:
        holder = inventory.disk_holding(folder)
    except NotImplementedError:  # disk layer without an inventory (e.g. trimmed build): cannot tell
        return False
    return holder is not None and inventory.same_disk(holder, _disk_of(device))


def is_system_disk(device: str) -> bool:
    if not _is_device(device):
        return False
    try:
        systems = inventory.system_disk_paths()
    except NotImplementedError:
        return False
    disk = _disk_of(device)
    return any(inventory.same_disk(disk, s) for s in systems)

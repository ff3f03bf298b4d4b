"""Refusals that protect the user: never write onto (or capture) what holds the repository or the running system.

On Linux "holds" follows loop devices both ways (``rescuekit.disk.linux.holders``/``overwritten``): a repository
on a loop-mounted image file is held by the loop device, by that image file and by the disk under the file;
writing an image file also writes every loop device backed by it. On Windows: the disk holding the folder.
"""
from __future__ import annotations

import os
import re
import stat
import sys
from pathlib import Path

from rescuekit.disk import inventory

SYSTEM_PATHS = ("/", "/boot", "/boot/efi", "/usr")  # Linux: what the running system lives on


def _is_device(path: str) -> bool:
    if path.startswith(("\\\\.\\", "//./")):
        return True
    try:
        return stat.S_ISBLK(os.stat(path).st_mode)
    except OSError:
        return False


def _windows_path(path: str) -> bool:
    return sys.platform == "win32" or path.startswith(("\\\\.\\", "//./"))


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


def _via(target: str, nodes: dict) -> str:
    names = sorted(set(nodes.values()) - {target, os.path.realpath(target)})
    return f" (through {', '.join(names)})" if names else ""


def holds(target: str, folder: str | Path) -> str | None:
    """None if writing ``target`` (disk, partition, loop device or image file) leaves ``folder`` alone; else
    what links them (e.g. `` (through /dev/loop0)``, possibly empty)."""
    if _windows_path(target):
        if not _is_device(target):
            return None
        try:
            holder = inventory.disk_holding(folder)
        except NotImplementedError:  # disk layer without an inventory (e.g. trimmed build): cannot tell
            return None
        return "" if holder is not None and inventory.same_disk(holder, _disk_of(target)) else None
    from rescuekit.disk import linux

    common = {n: d for n, d in linux.overwritten(target).items() if n in linux.holders(folder)}
    return _via(target, common) if common else None


def system_holder(target: str) -> str | None:
    """The system path (``/``, ``/boot``...; Windows: the system disk) that writing ``target`` would destroy."""
    if _windows_path(target):
        if not _is_device(target):
            return None
        try:
            systems = inventory.system_disk_paths()
        except NotImplementedError:
            return None
        disk = _disk_of(target)
        return next((s for s in systems if inventory.same_disk(disk, s)), None)
    for mp in SYSTEM_PATHS:
        if os.path.exists(mp) and holds(target, mp) is not None:
            return mp
    return None


def same_disk(device: str, folder: str | Path) -> bool:
    """Would writing ``device`` (or an image file) destroy ``folder``?"""
    return holds(device, folder) is not None


def is_system_disk(device: str) -> bool:
    return system_holder(device) is not None

r"""A repository given by volume label and folder, ``LABEL:\folder`` (e.g. ``RKREPO:\images``).

The label names a volume among the attached disks; the runtime finds it by reading each partition's file system
label itself (rescuekit.disk.filesystems: NTFS, FAT, exFAT).  On Linux it is mounted under
``/run/rescuekit/<LABEL>`` (read-write only for a capture; exFAT and vfat by the kernel, NTFS by ntfs-3g).
A one-letter "label" is a drive letter (``D:\images``), so labels have at least two characters.
(On WinPE the label would be looked up among the drive letters: not done yet, see docs/linux-base.md.)
"""
from __future__ import annotations

import os
import re
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from rescuekit.errors import RescueError

LABEL_PATH = re.compile(r"^([A-Za-z0-9_-][A-Za-z0-9 _-]{0,30}[A-Za-z0-9_-]):[\\/](.*)$")
MOUNT_ROOT = Path("/run/rescuekit")
_MOUNT_FS = {"exfat": ["mount", "-t", "exfat"], "fat12": ["mount", "-t", "vfat"], "fat16": ["mount", "-t", "vfat"],
             "fat32": ["mount", "-t", "vfat"], "ntfs": ["ntfs-3g"]}


@dataclass(frozen=True)
class Volume:
    label: str
    device: str  # /dev/vdb1 (or the whole disk for a partitionless volume)
    disk: str  # /dev/vdb
    fs: str


def parse(spec: str) -> tuple[str, str] | None:
    r"""``RKREPO:\images`` -> ("RKREPO", "images"); None for anything else (a path)."""
    m = LABEL_PATH.match(spec)
    if not m:
        return None
    return m.group(1), "/".join(p for p in re.split(r"[\\/]", m.group(2)) if p)


def _partition_device(disk: str, number: int) -> str:
    name = Path(disk).name
    for part in sorted(Path("/sys/block", name).glob(f"{name}*")):
        try:
            if int((part / "partition").read_text()) == number:
                return f"/dev/{part.name}"
        except (OSError, ValueError):
            continue
    raise RescueError(f"no device node for partition {number} of {disk}")


def find_volumes(label: str) -> list[Volume]:
    """Volumes whose file system label is ``label`` (compared ignoring case, as Windows does)."""
    from rescuekit.disk import device, inventory

    found = []
    for info in inventory.list_disks():
        try:
            with device.open_source(info.path) as dev:
                dev.info = info
                desc = inventory.describe(dev)
        except RescueError:
            continue
        vols = [(p["number"], p) for p in desc["partitions"]]
        if desc.get("volume"):
            vols.append((0, desc["volume"]))
        for number, v in vols:
            if (v.get("label") or "").strip().lower() == label.lower() and v.get("fs") in _MOUNT_FS:
                dev_path = info.path if number == 0 else _partition_device(info.path, number)
                found.append(Volume(label, dev_path, info.path, v["fs"]))
    return found


def find_volume(label: str, wait: float = 10.0) -> Volume:
    """The one volume labelled ``label``; waits up to ``wait`` s for slow disks (USB) to appear."""
    deadline = time.monotonic() + wait
    while True:
        vols = find_volumes(label)
        if len(vols) == 1:
            return vols[0]
        if len(vols) > 1:
            raise RescueError(f"volume label {label} is on {len(vols)} volumes ({', '.join(v.device for v in vols)}): "
                              "give the repository as a path instead")
        if time.monotonic() >= deadline:
            raise RescueError(f"no volume labelled {label} (NTFS, FAT or exFAT) on the attached disks")
        time.sleep(1)


def mount(vol: Volume, writable: bool) -> Path:
    """Mount ``vol`` under /run/rescuekit/<label> (read-only unless ``writable``); returns the mount point."""
    point = MOUNT_ROOT / re.sub(r"[^A-Za-z0-9_-]", "_", vol.label)
    point.mkdir(parents=True, exist_ok=True)
    if os.path.ismount(point):
        return point
    cmd = [*_MOUNT_FS[vol.fs], "-o", "rw" if writable else "ro", vol.device, str(point)]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        why = (proc.stderr or proc.stdout).strip().splitlines()
        raise RescueError(f"cannot mount {vol.device} ({vol.fs}, label {vol.label}) on {point}: "
                          f"{why[-1] if why else proc.returncode}")
    return point


def unmount(point: Path) -> None:
    os.sync()
    subprocess.run(["umount", str(point)], capture_output=True, check=False)


def resolve(spec: str, writable: bool) -> tuple[str, Volume | None, Path | None]:
    r"""(repository path, volume, mount point) for a ``LABEL:\folder`` spec (mounted); other specs unchanged."""
    parsed = parse(spec)
    if parsed is None:
        return spec, None, None
    label, folder = parsed
    vol = find_volume(label)
    point = mount(vol, writable)
    return str(point / folder) if folder else str(point), vol, point

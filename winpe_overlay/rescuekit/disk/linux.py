"""Linux specifics: sysfs disk information, mounts, which disk holds a path."""
from __future__ import annotations

import os
from pathlib import Path

from rescuekit.disk.device import DiskInfo

SYS_BLOCK = Path("/sys/block")
SYS_CLASS_BLOCK = Path("/sys/class/block")
SKIP_PREFIXES = ("ram", "zram", "loop", "sr", "fd", "md", "dm-", "nbd")


def _read(p: Path) -> str | None:
    try:
        return p.read_text(errors="replace").strip() or None
    except OSError:
        return None


def _bus(devdir: Path) -> str | None:
    try:
        real = str(devdir.resolve())
    except OSError:
        return None
    for key, bus in (("/usb", "usb"), ("/nvme", "nvme"), ("/virtio", "virtio"), ("/mmc", "mmc"),
                     ("/ata", "sata"), ("/host", "scsi")):
        if key in real:
            return bus
    return None


def whole_disk_name(name: str) -> str:
    """``sda1`` -> ``sda``; a whole disk maps to itself (via /sys/class/block/NAME/partition)."""
    node = SYS_CLASS_BLOCK / name
    if (node / "partition").exists():
        return node.resolve().parent.name
    return name


def disk_info(name: str, *, mounts: dict[str, list[str]] | None = None) -> DiskInfo:
    """DiskInfo for whole disk ``name`` (e.g. ``sda``) from sysfs."""
    base = SYS_BLOCK / name
    ssz = int(_read(base / "queue/logical_block_size") or 512)
    size = int(_read(base / "size") or 0) * 512  # sysfs size is always in 512-byte units
    dev = base / "device"
    serial = _read(dev / "serial") or _read(dev / "wwid")
    info = DiskInfo(path=f"/dev/{name}", size=size, sector_size=ssz, kind="disk",
                    model=_read(dev / "model"), vendor=_read(dev / "vendor"), serial=serial,
                    bus=_bus(dev), removable=_read(base / "removable") == "1")
    if mounts is not None:
        info.mounts = mounts.get(name, [])
    return info


def mounts_by_disk() -> dict[str, list[str]]:
    """{whole disk name: [mount points of it or its partitions]} from /proc/mounts."""
    out: dict[str, list[str]] = {}
    try:
        lines = Path("/proc/mounts").read_text().splitlines()
    except OSError:
        return out
    for line in lines:
        parts = line.split()
        if len(parts) < 2 or not parts[0].startswith("/dev/"):
            continue
        try:
            name = Path(parts[0]).resolve().name
        except OSError:
            continue
        if (SYS_CLASS_BLOCK / name).exists():
            mp = parts[1].replace("\\040", " ")
            out.setdefault(whole_disk_name(name), []).append(mp)
    return out


def list_disks() -> list[DiskInfo]:
    mounts = mounts_by_disk()
    system = system_disk_paths()
    out = []
    try:
        names = sorted(os.listdir(SYS_BLOCK))
    except OSError:
        return out
    for name in names:
        if name.startswith(SKIP_PREFIXES):
            continue
        info = disk_info(name, mounts=mounts)
        if info.size == 0:
            continue
        info.is_system = info.path in system
        out.append(info)
    return out


def block_info(path: str, *, size: int, sector_size: int) -> DiskInfo:
    """DiskInfo of an opened block device (a whole disk or a partition)."""
    name = Path(path).resolve().name
    disk = whole_disk_name(name)
    if (SYS_BLOCK / disk).exists():
        info = disk_info(disk)
        info.is_system = info.path in system_disk_paths()
    else:
        info = DiskInfo(path=path)
    info.path, info.size, info.sector_size = path, size, sector_size
    info.kind = "disk" if disk == name else "partition"
    return info


def disk_of_dev(st_dev: int) -> list[str]:
    """Whole-disk device paths behind a device number (device-mapper/md: their underlying disks)."""
    node = Path(f"/sys/dev/block/{os.major(st_dev)}:{os.minor(st_dev)}")
    if not node.exists():
        return []
    name = whole_disk_name(node.resolve().name)
    backing = _read(SYS_BLOCK / name / "loop/backing_file")
    if backing and os.path.exists(backing):  # a loop device (live media): the disk under its backing file
        held = disk_holding(backing)
        return [held] if held else []
    slaves = SYS_BLOCK / name / "slaves"
    if slaves.is_dir() and any(slaves.iterdir()):
        out: list[str] = []
        for s in sorted(slaves.iterdir()):
            out += [p for p in disk_of_dev(os.makedev(*map(int, (_read(s / "dev") or "0:0").split(":"))))
                    if p not in out]
        return out
    return [f"/dev/{name}"]


def disk_holding(path: str | Path) -> str | None:
    try:
        st = os.stat(path)
    except OSError:
        p = Path(path).absolute()
        while not p.exists():
            p = p.parent
        st = os.stat(p)
    disks = disk_of_dev(st.st_dev)
    return disks[0] if disks else None


def system_disk_paths() -> set[str]:
    out: set[str] = set()
    for mp in ("/", "/boot", "/boot/efi", "/usr"):
        if os.path.exists(mp):
            out.update(disk_of_dev(os.stat(mp).st_dev))
    return out

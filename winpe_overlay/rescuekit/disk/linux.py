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



# ---------------------------------------------------------------- what holds what (loop devices, image files)
# A node is a whole disk ("blk", name) or a regular file ("file", st_dev, st_ino); the maps below give each
# node a name to show (/dev/loop0, the image file's path). Loop devices make files and disks hold each other:
# a repository on a loop-mounted image lives in that image file, which lives on the disk below it. The safety
# checks compare what a write would overwrite with what holds the repository or the running system.

Node = tuple


def _sysfs_name(st_dev: int) -> str | None:
    node = Path(f"/sys/dev/block/{os.major(st_dev)}:{os.minor(st_dev)}")
    try:
        return whole_disk_name(node.resolve(strict=True).name)
    except OSError:
        return None


def _file_node(path: str) -> Node | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return ("file", st.st_dev, st.st_ino)


def loop_backing(name: str) -> str | None:
    """The backing file of loop device ``name`` (``loop0``), or None (not a loop device, or detached)."""
    return _read(SYS_BLOCK / name / "loop/backing_file")


def loops_of_file(path: str | Path) -> list[str]:
    """Loop devices (``loop0``...) whose backing file is ``path`` (compared by device and inode)."""
    want = _file_node(str(path))
    if want is None:
        return []
    try:
        names = sorted(n for n in os.listdir(SYS_BLOCK) if n.startswith("loop"))
    except OSError:
        return []
    return [n for n in names if (b := loop_backing(n)) and _file_node(b) == want]


def _holders_of_dev(st_dev: int, out: dict[Node, str]) -> None:
    """Every node whose content includes block device ``st_dev``: its whole disk, a loop device's backing
    file and what holds that file, device-mapper/md slaves."""
    name = _sysfs_name(st_dev)
    if name is None or ("blk", name) in out:
        return
    out[("blk", name)] = f"/dev/{name}"
    backing = loop_backing(name)
    f = _file_node(backing) if backing else None
    if f is not None and f not in out:
        out[f] = backing
        _holders_of_dev(f[1], out)
    slaves = SYS_BLOCK / name / "slaves"
    if slaves.is_dir():
        for s in sorted(slaves.iterdir()):
            dev = _read(s / "dev")
            if dev and ":" in dev:
                _holders_of_dev(os.makedev(*map(int, dev.split(":"))), out)


def holders(path: str | Path) -> dict[Node, str]:
    """Nodes (disks, image files) whose content includes the file or folder ``path`` (for a path that does
    not exist yet: its nearest existing parent). Overwriting any of them destroys ``path``."""
    p = Path(path).absolute()
    while not p.exists() and p != p.parent:
        p = p.parent
    out: dict[Node, str] = {}
    try:
        st = os.stat(p)
    except OSError:
        return out
    if os.path.isfile(p):
        out[("file", st.st_dev, st.st_ino)] = str(p)
    _holders_of_dev(st.st_dev, out)
    return out


def overwritten(path: str | Path) -> dict[Node, str]:
    """Nodes whose content a write to ``path`` changes: a block device's whole disk and, for a loop device,
    its backing file (and the other loop devices on it); a regular file and the loop devices it backs."""
    import stat as _stat

    try:
        st = os.stat(path)
    except OSError:
        return {}
    out: dict[Node, str] = {}
    backing: str | None = None
    if _stat.S_ISBLK(st.st_mode):
        name = _sysfs_name(st.st_rdev)
        if name is None:
            return out
        out[("blk", name)] = f"/dev/{name}"
        backing = loop_backing(name)
    elif _stat.S_ISREG(st.st_mode):
        backing = str(path)
    f = _file_node(backing) if backing else None
    if f is not None:
        out[f] = backing
        out.update({("blk", n): f"/dev/{n}" for n in loops_of_file(backing)})
    return out

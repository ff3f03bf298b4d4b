"""Which disks are there, which one runs the system, which one holds a given file."""
from __future__ import annotations

import sys
from pathlib import Path

from rescuekit.disk.device import DiskInfo


def list_disks() -> list[DiskInfo]:
    """Whole disks of this machine (Linux: /sys/block; Windows: PhysicalDrive0..N), system disks marked."""
    if sys.platform == "win32":
        from rescuekit.disk import windows

        return windows.list_disks()
    from rescuekit.disk import linux

    return linux.list_disks()


def system_disk_paths() -> set[str]:
    """Device paths of the disk(s) holding the running system (Linux: /, /boot, /usr; WinPE: the system
    drive and the boot medium)."""
    if sys.platform == "win32":
        from rescuekit.disk import windows

        return windows.system_disk_paths()
    from rescuekit.disk import linux

    return linux.system_disk_paths()


def disk_holding(path: str | Path) -> str | None:
    """The whole-disk device path holding ``path`` (a file or folder, existing or not yet), or None
    (RAM disk, network share, overlay)."""
    if sys.platform == "win32":
        from rescuekit.disk import windows

        return windows.disk_holding(str(path))
    from rescuekit.disk import linux

    return linux.disk_holding(path)


def same_disk(a: str, b: str) -> bool:
    """Whether two device paths name the same disk (case-insensitive on Windows, symlinks resolved on Linux)."""
    if sys.platform == "win32":
        return a.replace("/", "\\").lower() == b.replace("/", "\\").lower()
    return Path(a).resolve() == Path(b).resolve()


def describe(dev, *, with_fs: bool = True) -> dict:
    """A JSON-able summary of an open disk/image: its info, partition table, and per partition the
    file system, label and used bytes. Errors reading the table become ``error`` (not an exception)."""
    from dataclasses import asdict

    from rescuekit.disk import filesystems, partitions
    from rescuekit.errors import RescueError

    info = asdict(dev.info)
    info.update(path=dev.path, size=dev.size, sector_size=dev.sector_size)
    out: dict = {**info, "table": None, "partitions": [], "warnings": []}
    try:
        table = partitions.read_table(dev)
    except RescueError as exc:
        out["error"] = str(exc)
        return out
    out["table"] = table.kind
    out["disk_guid"] = table.disk_guid
    out["disk_signature"] = f"{table.disk_signature:08X}" if table.disk_signature is not None else None
    out["warnings"] = list(table.warnings)

    def fs_of(start: int, size: int) -> dict:
        if not with_fs:
            return {}
        try:
            fs = filesystems.detect(dev, start, size)
        except RescueError as exc:
            return {"fs": "error", "fs_error": str(exc)}
        out["warnings"].extend(fs.warnings)
        return {"fs": fs.kind, "label": fs.label, "cluster_size": fs.cluster_size, "used_bytes": fs.used_bytes,
                "dirty": fs.dirty}

    for p in table.partitions:
        entry = {"number": p.number, "start": p.start, "size": p.size,
                 "type": p.type if isinstance(p.type, str) else f"0x{p.type:02X}", "type_name": p.type_name,
                 "name": p.name, "guid": p.guid, "bootable": p.bootable, "logical": p.logical,
                 "extended": p.extended}
        entry.update({"fs": None} if p.extended else fs_of(p.start, p.size))
        out["partitions"].append(entry)
    if table.kind == "none" and dev.size:
        out["volume"] = fs_of(0, dev.size)  # a partition image / partitionless volume
    return out

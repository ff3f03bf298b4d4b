"""The volumes of a backup set: each virtual disk opened, the partition holding the volume found, its file
system measured (the same detect/used-range code as capture) and searched for Windows and the boot manager."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from rescuekit.disk import fat, ntfs
from rescuekit.disk.filesystems import FsInfo, detect
from rescuekit.disk.partitions import Partition, read_table
from rescuekit.errors import RescueError
from rescuekit.vdisk import ReadOnlyDevice, SliceDevice, open_vdisk
from rescuekit.winbackup.specs import BackupSet, SpecVolume

WINDOWS_DIR = "Windows/System32"
BIOS_BCD = "Boot/BCD"
UEFI_BCD = "EFI/Microsoft/Boot/BCD"
VOLUME_KINDS = ("ntfs", "fat12", "fat16", "fat32", "exfat", "bitlocker")


@dataclass
class Volume:
    spec: SpecVolume
    file: Path
    disk: ReadOnlyDevice  # the virtual disk
    partition: int | None  # number inside the virtual disk (None: no partition table)
    offset: int  # byte offset of the volume inside the virtual disk
    size: int  # the partition's size
    fs: FsInfo
    windows: bool  # holds \Windows\System32
    boot: str | None  # "bios" (\Boot\BCD), "uefi" (\EFI\Microsoft\Boot\BCD) or None

    @property
    def device(self) -> SliceDevice:
        return SliceDevice(self.disk, self.offset, self.size, f"{self.file}:partition{self.partition or 0}")

    @property
    def letter(self) -> str:
        return self.spec.access_path

    def doc(self) -> dict:
        return {"guid": self.spec.guid, "drive_letter": self.spec.access_path or None, "file": self.file.name,
                "format": "vhdx" if self.file.suffix.lower() == ".vhdx" else "vhd", "partition": self.partition,
                "offset": self.offset, "size": self.size, "used_bytes": self.fs.used_bytes, "fs": self.fs.kind,
                "label": self.fs.label, "cluster_size": self.fs.cluster_size, "windows": self.windows,
                "boot_manager": self.boot, "warnings": list(self.fs.warnings)}


def _pick(disk: ReadOnlyDevice, where: str) -> tuple[int | None, int, int, FsInfo]:
    table = read_table(disk)
    if table.kind == "none":
        return None, 0, disk.size, detect(disk, 0, disk.size)
    found: list[tuple[Partition, FsInfo]] = []
    for p in table.data_partitions:
        size = min(p.size, disk.size - p.start)
        if size <= 0:
            continue
        fs = detect(disk, p.start, size)
        if fs.kind in VOLUME_KINDS:
            found.append((p, fs))
    if not found:
        raise RescueError(f"{where}: no partition of its {table.kind.upper()} table holds a file system")
    # Windows 8+ puts the volume in partition 2 after a small reserved one; any table works: the largest wins
    p, fs = max(found, key=lambda pf: pf[0].size)
    return p.number, p.start, min(p.size, disk.size - p.start), fs


def _has(dev: ReadOnlyDevice, offset: int, fs: FsInfo, path: str, want_dir: bool) -> bool:
    """Does ``path`` exist (as a directory or file) on the volume? False when the file system is unreadable."""
    try:
        if fs.kind == "ntfs":
            e = ntfs.NtfsVolume(dev, offset).lookup(path)
        elif fs.kind in ("fat12", "fat16", "fat32"):
            b = fat.parse_fat_boot(dev.read(offset, 512))
            e = fat.fat_lookup(dev, offset, b, path) if b else None
        else:
            return False
    except RescueError:
        return False
    return e is not None and e.is_dir == want_dir


def open_volume(bset: BackupSet, spec: SpecVolume) -> Volume:
    path = bset.disk_file(spec)
    disk = open_vdisk(path)
    try:
        number, offset, size, fs = _pick(disk, str(path))
        windows = _has(disk, offset, fs, WINDOWS_DIR, True)
        boot = "uefi" if _has(disk, offset, fs, UEFI_BCD, False) else \
            "bios" if _has(disk, offset, fs, BIOS_BCD, False) else None
    except BaseException:
        disk.close()
        raise
    return Volume(spec, path, disk, number, offset, size, fs, windows, boot)


def open_volumes(bset: BackupSet) -> list[Volume]:
    """Every volume of the set (all virtual disks are checked before any is used)."""
    out: list[Volume] = []
    try:
        for spec in bset.specs.volumes:
            out.append(open_volume(bset, spec))
    except BaseException:
        for v in out:
            v.disk.close()
        raise
    return out

"""Writing a built stick image onto a real device: refusals, the question, the copy, sync and partition re-read.

Devices are opened through the runtime's disk layer (:mod:`rescuekit.disk.device`): Linux block devices with
``O_EXCL`` (the kernel refuses it while a partition is mounted) and ``BLKRRPART`` on close; ``\\\\.\\PhysicalDriveN``
on Windows through the ctypes layer, which locks and dismounts the disk's volumes first.
"""
from __future__ import annotations

import os
import stat
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import click

from rescuekit.disk import inventory
from rescuekit.disk.device import DiskInfo, is_windows_device, open_source, open_target
from rescuekit.errors import RescueError, UsageError
from rescuekit.imaging import safety
from rescuekit.imaging.units import human
from rescuekit.progress import byte_progress

from builder.usb import MIB, UsbLayout

_PIECE = 4 * MIB


@dataclass
class DeviceView:
    """What the user is shown before the device is overwritten."""

    info: DiskInfo
    summary: dict  # inventory.describe(): partition table, file systems

    def lines(self) -> list[str]:
        i = self.info
        model = " ".join(x for x in (i.vendor, i.model) if x) or "unknown model"
        head = (f"{i.path}: {model}, {human(i.size)} ({i.size} bytes), bus {i.bus or '?'}, "
                f"{'removable' if i.removable else 'not removable'}{', SYSTEM DISK' if i.is_system else ''}")
        out = [head]
        for p in self.summary.get("partitions", []):
            fs = p.get("fs") or "?"
            label = f" '{p['label']}'" if p.get("label") else ""
            out.append(f"  partition {p['number']}: {human(p['size'])} {p.get('type_name') or p.get('type')} "
                       f"{fs}{label}")
        if not self.summary.get("partitions"):
            out.append(f"  partition table: {self.summary.get('table') or 'none'}")
        for m in i.mounts:
            out.append(f"  mounted: {m}")
        return out


def _linux_disk_name(path: str) -> str:
    from rescuekit.disk import linux

    return linux.whole_disk_name(Path(os.path.realpath(path)).name)


def _direct_disks(path: Path) -> set[str]:
    """Whole-disk names directly under ``path``'s file system (a loop device itself, not only its backing disk)."""
    from rescuekit.disk import linux

    p = Path(path).absolute()
    while not p.exists() and p != p.parent:
        p = p.parent
    st = os.stat(p)
    names = {Path(d).name for d in linux.disk_of_dev(st.st_dev)}
    node = Path(f"/sys/dev/block/{os.major(st.st_dev)}:{os.minor(st.st_dev)}")
    if node.exists():
        names.add(linux.whole_disk_name(node.resolve().name))
    return names


def holds(device: str, path: Path) -> bool:
    """Does ``device`` hold ``path`` (a file or folder of the source, the output, the scratch space)?"""
    if sys.platform == "win32" or is_windows_device(device):
        return safety.same_disk(device, path)
    return _linux_disk_name(device) in _direct_disks(path) or safety.same_disk(device, path)


def inspect_device(device: str) -> DeviceView:
    """Open read-only: size by ioctl, model/removable/bus from sysfs (Windows: IOCTLs), the partitions."""
    if not is_windows_device(device):
        try:
            st = os.stat(device)
        except FileNotFoundError:
            raise UsageError(f"--device {device}: no such device") from None
        if not stat.S_ISBLK(st.st_mode):
            raise UsageError(f"--device {device} is not a block device (for an image file use --image FILE --size SIZE)")
    with open_source(device) as dev:
        info = dev.info
        summary = inventory.describe(dev)
    if not is_windows_device(device):
        from rescuekit.disk import linux

        info.mounts = linux.mounts_by_disk().get(_linux_disk_name(device), [])
    info.is_system = info.is_system or safety.is_system_disk(device)
    return DeviceView(info, summary)


def check_device(view: DeviceView, *, force: bool, protect: Iterable[tuple[str, Path]]) -> None:
    """Refusals before anything is built: a partition, the disk holding an input or the scratch space, a mounted
    disk; a system or non-removable disk unless ``force``."""
    info = view.info
    if info.kind == "partition":
        raise UsageError(f"--device {info.path} is a partition: give the whole disk")
    for what, path in protect:
        if path is not None and holds(info.path, Path(path)):
            raise RescueError(f"{info.path} holds the {what} {path}: refusing to overwrite it")
    if info.mounts:
        raise RescueError(f"{info.path} is mounted ({', '.join(info.mounts)}): unmount it first")
    if info.is_system and not force:
        raise RescueError(f"{info.path} holds the running system: refusing (--force overrides)")
    if not (info.removable or info.bus == "usb") and not force:
        raise RescueError(f"{info.path} is not a removable or USB disk: refusing (--force if you mean it)")


def confirm(what: str, lines: list[str], *, yes: bool) -> None:
    """Show what gets destroyed and ask; without --yes a run with no terminal to ask on is refused."""
    for line in lines:
        click.echo(line, err=True)
    if yes:
        return
    if not sys.stdin.isatty():
        raise UsageError(f"refusing to overwrite {what} without --yes (no terminal to ask on)")
    if not click.confirm(f"Everything on {what} will be destroyed. Continue?", default=False, err=True):
        raise RescueError(f"{what}: not written (answered no)")


def _ranges(image: Path, lay: UsbLayout) -> list[tuple[int, int]]:
    """What to write: every written extent of the image, plus zeros over the first MiB of the disk and of each
    partition and the last MiB (old MBR/GPT, backup GPT, boot sectors and file system signatures must go)."""
    size = lay.size
    want = [(0, MIB), (lay.boot_start, MIB), (max(0, size - MIB), min(MIB, size))]
    if lay.data_fs:
        want.append((lay.data_start, MIB))
    with open(image, "rb") as f:
        fd, pos = f.fileno(), 0
        if not hasattr(os, "SEEK_DATA"):  # no hole query (Windows): write it all
            return [(0, size)]
        while pos < size:
            try:
                pos = os.lseek(fd, pos, os.SEEK_DATA)
            except OSError:
                break
            end = os.lseek(fd, pos, os.SEEK_HOLE)
            want.append((pos, end - pos))
            pos = end
    merged: list[list[int]] = []
    for start, n in sorted(want):
        if merged and start <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], start + n)
        else:
            merged.append([start, start + n])
    return [(a, min(b, size) - a) for a, b in merged if a < size]


def write_device(image: Path, device: str, lay: UsbLayout, *, progress: bool | None = None) -> int:
    """Copy the image onto ``device`` (its written parts), flush, and re-read the partition table on close."""
    ranges = _ranges(image, lay)
    total = sum(n for _s, n in ranges)
    with open_target(device) as dev, open(image, "rb") as f:
        if dev.size < lay.size:
            raise RescueError(f"{device} shrank to {dev.size} bytes, the image is {lay.size}")
        with byte_progress(f"writing {device}", total, enabled=progress) as advance:
            for start, n in ranges:
                pos = start
                while pos < start + n:
                    k = min(_PIECE, start + n - pos)
                    dev.write(pos, os.pread(f.fileno(), k, pos))
                    advance(k)
                    pos += k
        dev.flush()  # fsync / FlushFileBuffers; close re-reads the partition table (BLKRRPART)
    if hasattr(os, "sync"):
        os.sync()
    if sys.platform.startswith("linux"):
        add_missing_partitions(device, lay)
    return total


BLKPG = 0x1269
BLKPG_ADD_PARTITION = 1


def _kernel_partitions(device: str) -> list[str]:
    name = Path(os.path.realpath(device)).name
    node = Path("/sys/block") / name
    return sorted(p.name for p in node.iterdir() if (p / "partition").exists()) if node.is_dir() else []


def add_missing_partitions(device: str, lay: UsbLayout) -> list[str]:
    """After BLKRRPART: a kernel built without the MBR partition parser (like this project's CI VM) shows no
    partitions; tell it about ours with BLKPG_ADD_PARTITION, as ``partx -a`` does.  Returns the kernel's list."""
    if _kernel_partitions(device):
        return _kernel_partitions(device)
    import ctypes
    import fcntl

    class BlkpgPartition(ctypes.Structure):
        _fields_ = [("start", ctypes.c_longlong), ("length", ctypes.c_longlong), ("pno", ctypes.c_int),
                    ("devname", ctypes.c_char * 64), ("volname", ctypes.c_char * 64)]

    class BlkpgIoctlArg(ctypes.Structure):
        _fields_ = [("op", ctypes.c_int), ("flags", ctypes.c_int), ("datalen", ctypes.c_int),
                    ("data", ctypes.c_void_p)]

    parts = [(1, lay.boot_start, lay.boot_size)] + ([(2, lay.data_start, lay.data_size)] if lay.data_fs else [])
    fd = os.open(device, os.O_RDONLY)
    try:
        for pno, start, length in parts:
            part = BlkpgPartition(start, length, pno, b"", b"")
            arg = BlkpgIoctlArg(BLKPG_ADD_PARTITION, 0, ctypes.sizeof(part), ctypes.cast(ctypes.pointer(part),
                                                                                        ctypes.c_void_p))
            try:
                fcntl.ioctl(fd, BLKPG, arg)
            except OSError as exc:
                raise RescueError(f"{device}: written, but the kernel did not take partition {pno} "
                                  f"({exc.strerror}); unplug and replug the stick") from None
    finally:
        os.close(fd)
    return _kernel_partitions(device)

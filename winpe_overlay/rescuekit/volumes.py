r"""A repository given by volume label and folder, ``LABEL:\folder`` (e.g. ``RKREPO:\images``).

One resolver for both bases; only the enumeration of volumes is platform-specific:

- Linux: each partition's file system label read by the runtime itself (rescuekit.disk.filesystems: NTFS, FAT,
  exFAT); the volume is mounted under ``/run/rescuekit/<LABEL>`` (read-write only for a capture; exFAT and vfat by
  the kernel, NTFS by ntfs-3g).
- Windows/WinPE: the drive letters' volume labels (GetLogicalDriveStringsW, GetDriveTypeW, GetVolumeInformationW in
  rescuekit.disk.windows); the repository is ``<drive>:\folder``, nothing is mounted.

The rules (``choose``): labels compare ignoring case (as Windows does); a label on two volumes is refused; a
volume on the boot medium is never a repository; a label not found is looked for again for ``WAIT`` seconds
(slow USB disks). A one-letter "label" is a drive letter (``D:\images``), so labels have at least two characters.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from rescuekit.errors import RescueError

LABEL_PATH = re.compile(r"^([A-Za-z0-9_-][A-Za-z0-9 _-]{0,30}[A-Za-z0-9_-]):[\\/](.*)$")
MOUNT_ROOT = Path("/run/rescuekit")
LOG_FOLDER = "rescuekit-logs"  # on the repository's volume: the logs of unattended runs
WAIT = 10.0  # seconds a missing label is looked for again
_MOUNT_FS = {"exfat": ["mount", "-t", "exfat"], "fat12": ["mount", "-t", "vfat"], "fat16": ["mount", "-t", "vfat"],
             "fat32": ["mount", "-t", "vfat"], "ntfs": ["ntfs-3g"]}


@dataclass(frozen=True)
class Volume:
    label: str
    device: str  # /dev/vdb1 (or the whole disk for a partitionless volume); on Windows the drive root, R:\
    disk: str | None  # /dev/vdb; None on Windows (imaging.safety finds the disk of a path itself)
    fs: str
    medium: bool = False  # on the boot medium: never a repository


def parse(spec: str) -> tuple[str, str] | None:
    r"""``RKREPO:\images`` -> ("RKREPO", "images"); None for anything else (a path)."""
    m = LABEL_PATH.match(spec)
    if not m:
        return None
    return m.group(1), "/".join(p for p in re.split(r"[\\/]", m.group(2)) if p)


def choose(label: str, vols: Iterable[Volume]) -> Volume | None:
    """The one volume labelled ``label`` among ``vols`` (None: not there yet); refuses a label on two volumes
    and a label found only on the boot medium."""
    same = [v for v in vols if v.label.strip().casefold() == label.casefold()]
    usable = [v for v in same if not v.medium]
    if len(usable) > 1:
        raise RescueError(f"volume label {label} is on {len(usable)} volumes ({', '.join(v.device for v in usable)}): "
                          "give the repository as a path instead")
    if usable:
        return usable[0]
    if same:
        raise RescueError(f"volume label {label} is only on the boot medium ({', '.join(v.device for v in same)}), "
                          "which is never used as a repository")
    return None


def find_volume(label: str, wait: float = WAIT, volumes_of: Callable[[], list[Volume]] | None = None) -> Volume:
    """The one volume labelled ``label``; looks again for up to ``wait`` s (slow disks, USB, appear late)."""
    volumes_of = volumes_of or platform_volumes
    deadline = time.monotonic() + wait
    while True:
        vol = choose(label, volumes_of())
        if vol is not None:
            return vol
        if time.monotonic() >= deadline:
            kinds = "on the drive letters" if sys.platform == "win32" else "(NTFS, FAT or exFAT) on the attached disks"
            raise RescueError(f"no volume labelled {label} {kinds}")
        time.sleep(1)


def platform_volumes(medium: Iterable[str] = ()) -> list[Volume]:
    """Every labelled volume this system can see (Linux: ``medium`` = the boot medium's disks)."""
    if sys.platform == "win32":
        return windows_volumes()
    return linux_volumes(set(medium))


def windows_volumes() -> list[Volume]:
    """Drive letters with a label; the boot medium is the drive holding this medium's marker
    (``\\rescuekit\\build.json`` next to ``\\sources\\boot.wim``)."""
    from rescuekit.disk import windows

    return [Volume(label, root, None, fs.lower(), medium=windows.is_rescue_medium(root))
            for root, label, fs in windows.labelled_drives()]


def _partition_device(disk: str, number: int) -> str:
    name = Path(disk).name
    for part in sorted(Path("/sys/block", name).glob(f"{name}*")):
        try:
            if int((part / "partition").read_text()) == number:
                return f"/dev/{part.name}"
        except (OSError, ValueError):
            continue
    raise RescueError(f"no device node for partition {number} of {disk}")


def linux_volumes(medium: set[str] = frozenset()) -> list[Volume]:  # type: ignore[assignment]
    """Labelled NTFS/FAT/exFAT volumes of the attached disks (``medium``: disks of the boot medium)."""
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
            label = (v.get("label") or "").strip()
            if label and v.get("fs") in _MOUNT_FS:
                dev_path = info.path if number == 0 else _partition_device(info.path, number)
                found.append(Volume(label, dev_path, info.path, v["fs"], medium=info.path in medium))
    return found


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
    if sys.platform == "win32":
        return  # a drive letter: nothing was mounted
    os.sync()
    subprocess.run(["umount", str(point)], capture_output=True, check=False)


def remount_writable(vol: Volume, point: Path) -> Path:
    """Mount ``vol`` read-write again (after a read-only restore, for its log): unmount + mount, which works the
    same for the kernel's vfat/exFAT and for ntfs-3g (FUSE has no remount)."""
    unmount(point)
    if os.path.ismount(point):
        raise RescueError(f"cannot unmount {point} to mount it read-write")
    return mount(vol, writable=True)


def resolve(spec: str, writable: bool, medium: Iterable[str] = (),
            wait: float = WAIT) -> tuple[str, Volume | None, Path | None]:
    r"""(repository path, volume, volume root) for a ``LABEL:\folder`` spec; other specs unchanged.

    Linux: the volume is mounted (read-write only when ``writable``) and the root is its mount point; Windows: the
    root is the drive (``R:\``)."""
    parsed = parse(spec)
    if parsed is None:
        return spec, None, None
    label, folder = parsed
    vol = find_volume(label, wait, lambda: platform_volumes(medium))
    if sys.platform == "win32":
        root = vol.device
        return (root + folder.replace("/", "\\") if folder else root), vol, Path(root)
    point = mount(vol, writable)
    return str(point / folder) if folder else str(point), vol, point


def copy_log(log: Path, root: Path, name: str | None = None) -> str | None:
    """Copy ``log`` to ``<root>/rescuekit-logs/`` (the repository's volume); the warning text when that fails."""
    dest = Path(root) / LOG_FOLDER
    try:
        dest.mkdir(exist_ok=True)
        shutil.copyfile(log, dest / (name or log.name))
    except OSError as exc:
        return f"cannot copy the log {log} to {dest}: {exc.strerror or exc}"
    return None



@contextmanager
def windows_label_repository(spec: str, command: str, writable: bool) -> Iterator[tuple[str, Callable[[str], None]]]:
    r"""``with windows_label_repository(repo, "capture", True) as (repo, note):`` on Windows turns ``LABEL:older``
    into ``R:older`` and keeps a session log of the run (X:\ on WinPE; ``note(line)`` adds to it) that is
    copied to ``R:escuekit-logs\`` at the end, also after a failure; a failed copy is one warning line and never
    changes the run's result. Any other spec, and any other platform (the Linux base's boot resolves and mounts
    labels itself), pass through unchanged."""
    if sys.platform != "win32" or parse(spec) is None:
        yield spec, lambda line: None
        return
    from rescuekit.sessionlog import SessionLog

    repo, vol, root = resolve(spec, writable)
    assert vol is not None and root is not None
    log = SessionLog()
    log.write(f"rescuekit {command}: repository {spec} is {repo} (volume {vol.label}, {vol.fs})")
    print(f"rescuekit: repository {spec} is {repo}", file=sys.stderr, flush=True)
    try:
        yield repo, log.write
        log.write(f"{command} finished")
    except BaseException as exc:
        from rescuekit.cli import _one_line

        log.write(f"{command} failed: {_one_line(exc)}")
        raise
    finally:
        why = copy_log(log.path, root) if log.path is not None else "no session log could be written"
        if why:
            print(f"rescuekit: warning: {why}", file=sys.stderr, flush=True)
        else:
            print(f"rescuekit: log copied to {root / LOG_FOLDER / log.path.name}", file=sys.stderr, flush=True)

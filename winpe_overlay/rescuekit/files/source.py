"""SOURCE -> the block device of one volume: a repository image (read through its chunks with a small LRU
cache), a WindowsImageBackup folder, one of its VHD/VHDX files, or a raw disk or partition image."""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from rescuekit.disk import fat, ntfs
from rescuekit.disk.device import BlockDevice
from rescuekit.errors import RescueError, UsageError
from rescuekit.vdisk import SliceDevice

BROWSABLE = ("ntfs", "fat12", "fat16", "fat32", "exfat")


@dataclass
class Choice:
    number: int
    start: int
    size: int
    fs: str
    label: str | None = None
    what: str = ""  # e.g. "C:" for a backup's volume


@dataclass
class OpenSource:
    """The picked volume (``device`` spans exactly the volume) and what must be closed afterwards."""
    device: BlockDevice
    fs: str
    choice: Choice
    where: str
    closers: list = field(default_factory=list)
    view: object | None = None  # the ReadAheadView of a repository image (counts chunk reads)
    readahead: object | None = None  # Tree.readahead for the volume (repository images)

    def close(self) -> None:
        for c in reversed(self.closers):
            try:
                c()
            except Exception:  # noqa: BLE001 - closing must not hide the real error
                pass
        self.closers.clear()

    def tree(self):
        """The volume's directory tree (``files.tree``), reading ahead where the source benefits."""
        from rescuekit.files.tree import open_tree

        return open_tree(self.device, self.fs, self.readahead)

    def __enter__(self) -> "OpenSource":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def probe(dev: BlockDevice, offset: int, size: int) -> str:
    """The file system kind from the first sector alone (cheap: no allocation map is read)."""
    if size < 512:
        return "unknown"
    boot = dev.read(offset, 512)
    if ntfs.parse_boot(boot) is not None:
        return "ntfs"
    if fat.parse_exfat_boot(boot) is not None:
        return "exfat"
    fb = fat.parse_fat_boot(boot)
    return fb.kind if fb is not None else "unknown"


def _disk_choices(dev: BlockDevice) -> list[Choice]:
    from rescuekit.disk.partitions import read_table

    table = read_table(dev, strict=False)
    if table.kind == "none":
        return [Choice(1, 0, dev.size, probe(dev, 0, dev.size), what="whole volume")]
    out = []
    for p in table.data_partitions:
        size = min(p.size, dev.size - p.start)
        if size > 0:
            out.append(Choice(p.number, p.start, size, probe(dev, p.start, size)))
    return out


def pick(choices: list[Choice], partition: int | None, where: str) -> Choice:
    """The partition asked for, or the only one holding a file system we can read."""
    listing = ", ".join(f"{c.number} ({c.what + ' ' if c.what else ''}{c.fs}"
                        f"{', ' + repr(c.label) if c.label else ''})" for c in choices) or "none"
    if partition is not None:
        for c in choices:
            if c.number == partition:
                if c.fs not in BROWSABLE:
                    raise RescueError(f"partition {partition} of {where} holds {c.fs}, not NTFS, FAT or exFAT")
                return c
        raise UsageError(f"{where} has no partition {partition} (partitions: {listing})")
    ok = [c for c in choices if c.fs in BROWSABLE]
    if len(ok) == 1:
        return ok[0]
    if not ok:
        raise RescueError(f"{where} holds no NTFS, FAT or exFAT volume (partitions: {listing})")
    raise UsageError(f"{where} has {len(ok)} file systems: choose one with --partition N (partitions: {listing})")


def _open_repo(path: Path, image: str | None, partition: int | None) -> OpenSource:
    from rescuekit.files.readahead import ReadAheadView
    from rescuekit.repo.packs import PackReader
    from rescuekit.repo.repository import Repository

    repo = Repository.open(path)
    doc = repo.find_image(image)
    where = f"image {doc['id'][:12]} ({doc.get('name')}) in {path}"
    choices = [Choice(p["number"], p["start"], p["size"], p.get("fs") or "unknown", p.get("label"))
               for p in doc.get("partitions", [])]
    c = pick(choices, partition, where)
    reader = PackReader(repo.root)
    view = ReadAheadView(doc, repo.load_index(), reader)
    dev = SliceDevice(view, c.start, min(c.size, view.size - c.start), f"{where}, partition {c.number}")

    def readahead(ranges: list[tuple[int, int]]):
        return view.plan([(c.start + a, n) for a, n in ranges])  # volume offsets -> image offsets

    # RESCUEKIT_NO_READAHEAD=1: read as before read-ahead (scripts/bench_files.py compares both)
    off = os.environ.get("RESCUEKIT_NO_READAHEAD", "") not in ("", "0")
    return OpenSource(dev, c.fs, c, where, [reader.close, view.close], view, None if off else readahead)


def _open_backup(path: Path, partition: int | None) -> OpenSource:
    from rescuekit.winbackup.specs import one_set
    from rescuekit.winbackup.volumes import open_volumes

    bset = one_set(path)
    vols = open_volumes(bset)
    closers = [v.disk.close for v in vols]
    try:
        choices = [Choice(i, v.offset, v.size, v.fs.kind, v.fs.label, v.letter or v.file.name)
                   for i, v in enumerate(vols, 1)]
        c = pick(choices, partition, f"backup {bset.path}")
        v = vols[c.number - 1]
        return OpenSource(v.device, c.fs, c, f"{v.file}", closers)
    except BaseException:
        for cl in closers:
            cl()
        raise


def open_source(source: str, *, image: str | None = None, partition: int | None = None) -> OpenSource:
    """Open SOURCE and pick its volume (see the module docstring)."""
    from rescuekit.disk.device import open_source as open_dev
    from rescuekit.vdisk import open_vdisk, vhd, vhdx

    p = Path(source)
    if not p.exists():
        raise UsageError(f"no such file or folder: {source}")
    if p.is_dir():
        if image is not None and not (p / "config").exists():
            raise UsageError(f"--image needs a repository; {source} is not one (no config file)")
        if (p / "config").exists():
            return _open_repo(p, image, partition)
        return _open_backup(p, partition)
    if image is not None:
        raise UsageError(f"--image needs a repository folder; {source} is a file")
    dev = open_dev(p)
    try:
        head = dev.read(0, 8) if dev.size >= 8 else b""
        is_vdisk = head == vhdx.FILE_SIGNATURE or (dev.size >= 512 and dev.read(dev.size - 512, 8) == vhd.COOKIE)
    except BaseException:
        dev.close()
        raise
    if is_vdisk:
        dev.close()
        dev = open_vdisk(p)
    try:
        c = pick(_disk_choices(dev), partition, str(source))
        vol = SliceDevice(dev, c.start, c.size, f"{source}, partition {c.number}") if c.what != "whole volume" \
            else dev
        return OpenSource(vol, c.fs, c, str(source), [dev.close])
    except BaseException:
        dev.close()
        raise

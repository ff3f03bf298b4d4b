"""``winbackup restore``: write a backup's volumes onto a disk (or image file) in a bootable layout, and
``winbackup import``: store that disk as an image in a repository.

Only what capture would store is written: the first MiB, the new table, and each volume's used ranges
(filesystems.used_ranges through imaging.plan.make_plan on the assembled disk). Order as in ``restore``:
every check and the confirmation before any write; then the first and last MiB of the target are zeroed,
the body is written, the first/last MiB last, so an interrupted restore leaves no valid table.
"""
from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

import blake3

from rescuekit.disk.device import open_source, open_target
from rescuekit.errors import RescueError
from rescuekit.imaging.plan import make_plan
from rescuekit.imaging.restore import _refuse_odd_target, describe_target
from rescuekit.imaging.safety import holds, system_holder
from rescuekit.imaging.units import human
from rescuekit.progress import byte_progress
from rescuekit.disk.ranges import merge
from rescuekit.imaging.restore import _target_base
from rescuekit.winbackup.layout import (AssembledDisk, Layout, PlacedVolume, grow_last, plan_layout, select,
                                       shrink_last, shrink_volume)
from rescuekit.winbackup.specs import BackupSet, one_set
from rescuekit.winbackup.volumes import Volume, open_volumes

HEAD = 1 << 20
STEP = 4 << 20  # bytes per read/write


def _prepare(path: str | Path, volumes: tuple[str, ...], layout_kind: str) -> tuple[BackupSet, list[Volume],
                                                                                        list[Volume], Layout]:
    bset = one_set(path)
    vols = open_volumes(bset)
    try:
        chosen = select(vols, volumes)
        return bset, vols, chosen, plan_layout(chosen, layout_kind)
    except BaseException:
        for v in vols:
            v.disk.close()
        raise


def check_states(vols: list[Volume], allow_hibernated: bool) -> None:
    """Refuse (exit 3, as ``capture``) when Windows left a selected NTFS volume hibernated or with an unclean
    journal, unless ``allow_hibernated``; a dirty volume is only warned about (``make_plan``'s warning)."""
    from rescuekit.disk import winstate
    from rescuekit.errors import WindowsStateError

    if allow_hibernated:
        return
    refused = []
    for v in vols:
        if v.fs.kind == "ntfs" and (st := winstate.probe(v.device, 0)).hibernated:
            refused.append(winstate.message(f"volume {v.letter or v.spec.guid}", st, "restore anyway with "
                                            "--allow-hibernated, the restored disk then holds the hibernated "
                                            "session"))
    if refused:
        raise WindowsStateError(refused[0] + (f" (and {len(refused) - 1} more volume(s))" if len(refused) > 1
                                              else "") + "; nothing was written")


def _refuse_unsafe(target: str, bset: BackupSet) -> bool:
    """The refusals of ``restore`` (disk holding the backup, running system, inside the backup folder, a
    mistyped /dev name); returns whether the target exists."""
    via = holds(target, bset.path)
    if via is not None:
        raise RescueError(f"refusing to restore onto {target}: it holds the backup {bset.path}{via}")
    sys_path = system_holder(target)
    if sys_path is not None:
        raise RescueError(f"refusing to restore onto {target}: it is the running system's disk (it holds {sys_path})")
    exists = os.path.exists(target) or target.startswith(("\\\\.\\", "//./"))
    _refuse_odd_target(target, bset.path, exists)
    return exists


def _pieces(ranges: list[tuple[int, int]], size: int):
    for s, n in ranges:
        end = min(s + n, size)
        while s < end:
            m = min(STEP, end - s)
            yield s, m
            s += m


def restore_backup(path: str | Path, target: str, *, volumes: tuple[str, ...] = (), layout: str = "auto",
                   verify: bool = False, grow: bool = False, confirm: Callable[[str], bool] | None = None,
                   progress: bool | None = None, allow_hibernated: bool = False) -> dict:
    """Restore the backup onto ``target``; a target smaller than the layout shrinks the last volume's file
    system (``shrink_last``) when its used data allows it."""
    t0 = time.monotonic()
    bset, vols, chosen, lay = _prepare(path, volumes, layout)
    try:
        check_states(chosen, allow_hibernated)
        exists = _refuse_unsafe(target, bset)
        what = (f"the backup of {bset.machine} ({bset.when or bset.path.name}), {len(chosen)} volume(s), "
                f"{lay.kind.upper()} layout")
        size = lay.min_size
        grown = None  # --grow on a new image file: it is created at the smallest size, nothing to grow
        shrunk = None  # (slot, VolumeShrink): the last volume shrunk onto a smaller target
        if exists:
            with open_source(target) as ro:
                size = ro.size
                if ro.sector_size != 512:
                    raise RescueError(f"{target} has {ro.sector_size}-byte sectors; the layout is built for 512-byte "
                                      "sectors (the backup's file systems use them): nothing was written")
                if size < lay.min_size:
                    too_small = (f"{target} is too small: {size} bytes ({human(size)}), the {what} needs "
                                 f"{lay.min_size} bytes ({human(lay.min_size)})")
                    if grow:
                        raise RescueError(f"{too_small} (--grow cannot help); nothing was written")
                    try:
                        shrunk = shrink_last(lay, size)
                    except RescueError as exc:
                        raise RescueError(f"{too_small} as it is, and its last volume cannot be shrunk to fit: "
                                          f"{exc}; nothing was written") from None
                grown = grow_last(lay, size) if grow else None
                text = (f"Restoring {what}:\n" + "\n".join(lay.describe())
                        + (f"\nLayout: partition {len(lay.slots)} (kept at its offset, the partitions before it "
                           f"untouched): {shrunk[1].describe()}" if shrunk else "")
                        + f"\nwill overwrite {ro.path}:\n" + describe_target(ro, whole_disk=True))
            if confirm is not None and not confirm(text):
                raise RescueError("restore cancelled; nothing was written")
        if shrunk is not None and shrunk[1].byte_moves():
            verify = True  # moved clusters are always read back and compared
        disk = AssembledDisk(lay, size, name=f"{bset.path}")
        plan = make_plan(disk, 1 << 20)
        ranges = plan.used
        if grown is not None and grown.volume is not None and grown.part.size > grown.volume.size:
            # past the file system the grown partition reads as zeros: not written (it may be terabytes)
            # (but the last 4 KiB: the NTFS backup boot sector for the grown partition, layout.AssembledDisk)
            cut_a, cut_b = grown.part.start + grown.volume.size, grown.part.start + grown.part.size - 4096
            ranges = merge([r for s0, n0 in ranges for r in ((s0, max(0, min(s0 + n0, cut_a) - s0)),
                                                              (max(s0, cut_b), max(0, s0 + n0 - max(s0, cut_b))))
                            if r[1] > 0])
        edge = min(HEAD, size)
        protect = [(0, edge), (size - edge, size)]
        fresh = not exists
        try:
            with open_target(target, create_size=size) as dev:
                if not fresh:
                    for a, b in protect:
                        dev.write(a, bytes(b - a))
                    dev.flush()
                total = _write(dev, disk, ranges, 0, protect, f"restore {bset.machine}", progress)
                bad = []
                if verify:
                    for s, n in _pieces(ranges, size):
                        if blake3.blake3(dev.read(s, n)).digest() != blake3.blake3(disk.read(s, n)).digest():
                            bad.append((s, n))
        except BaseException:
            if fresh:
                Path(target).unlink(missing_ok=True)
            raise
        if bad:
            raise RescueError(f"verification of {target} failed: {len(bad)} range(s) differ, first at byte "
                              f"{bad[0][0]}; the disk may be failing")
        shrunk_to = None
        if exists and shrunk is not None:
            with open_source(target) as ro:  # the shrunk file system re-read from the target
                shrunk[1].check(ro, shrunk[0].part.start)
            shrunk_to = shrunk[0].part.size
        return {"backup": str(bset.path), "machine": bset.machine, "target": target, "layout": lay.kind,
                "shrunk_to": shrunk_to,
                "disk_bytes": size, "needed_bytes": lay.min_size, "bytes_written": total, "verified": verify,
                "partitions": [{"number": i, "start": s.part.start, "size": s.part.size, "role": s.role,
                                "guid": s.volume.spec.guid if s.volume else None,
                                "drive_letter": (s.volume.letter or None) if s.volume else None}
                               for i, s in enumerate(lay.slots, 1)],
                "warnings": lay.warnings + plan.warnings, "seconds": round(time.monotonic() - t0, 3)}
    finally:
        for v in vols:
            v.disk.close()


def _partition_start(target: str) -> int | None:
    """Byte offset of a Linux partition device on its disk (sysfs), else None (not known)."""
    name = os.path.basename(os.path.realpath(target))
    try:
        return int(Path(f"/sys/class/block/{name}/start").read_text()) * 512
    except (OSError, ValueError):
        return None


def _write(dev, src, ranges: list[tuple[int, int]], base: int, protect: list[tuple[int, int]], label: str,
           progress: bool | None) -> int:
    """Write ``ranges`` of ``src`` at ``base`` + offset; ranges touching ``protect`` (target offsets) last."""
    total = sum(n for _s, n in ranges)
    with byte_progress(label, total, enabled=progress) as adv:
        for last in (False, True):
            for s, n in _pieces(ranges, src.size):
                if any(base + s < b and base + s + n > a for a, b in protect) == last:
                    dev.write(base + s, src.read(s, n))
                    adv(n)
            dev.flush()
    return total


def restore_volume(path: str | Path, target: str, *, volume: str, partition: int | None, verify: bool = False,
                   confirm: Callable[[str], bool] | None = None, progress: bool | None = None,
                   allow_hibernated: bool = False) -> dict:
    """Restore one volume onto partition ``partition`` of TARGET (a disk or disk image with a table), or onto
    TARGET itself when it has no table (a partition device or a volume image file; created when missing)."""
    t0 = time.monotonic()
    bset = one_set(path)
    vols = open_volumes(bset)
    try:
        (v,) = select(vols, (volume,))
        check_states([v], allow_hibernated)
        exists = _refuse_unsafe(target, bset)
        what = f"volume {v.letter or v.spec.guid} ({v.fs.kind}, {human(v.size)}) of {bset.machine}'s backup"
        base, hidden, warnings = 0, None, []
        shrunk = None
        if exists:
            with open_source(target) as ro:
                if partition is not None:
                    base, avail, where, _ss = _target_base(ro, partition, target, bset.path)
                else:
                    avail, where = ro.size, ro.path
                if avail < v.size:  # its file system shrinks to the partition, when its used data allows it
                    try:
                        v, shrunk = shrink_volume(v, avail // 512 * 512)
                    except RescueError as exc:
                        raise RescueError(f"{where} is too small: {avail} bytes, the {what} needs {v.size} bytes "
                                          f"as it is and cannot be shrunk to fit: {exc}; nothing was written"
                                          ) from None
                    verify = verify or bool(shrunk.byte_moves())
                hidden = base if base else _partition_start(target)
                text = (f"Restoring {what} will overwrite {where}:\n" + describe_target(ro)
                        + (f"\nLayout: {shrunk.describe()}" if shrunk else ""))
            if confirm is not None and not confirm(text):
                raise RescueError("restore cancelled; nothing was written")
        if hidden is None:
            warnings.append("where the target lies on its disk is unknown: the boot sector's hidden-sectors field "
                            "keeps the backup's value")
        src = PlacedVolume(v, hidden)
        plan = make_plan(src, 1 << 20)
        edge = min(HEAD, v.size)
        protect = [(base, base + edge), (base + v.size - edge, base + v.size)]
        fresh = not exists
        try:
            with open_target(target, create_size=v.size) as dev:
                if not fresh:
                    for a, b in protect:
                        dev.write(a, bytes(b - a))
                    dev.flush()
                total = _write(dev, src, plan.used, base, protect, f"restore {v.letter or v.spec.guid}", progress)
                bad = [s for s, n in _pieces(plan.used, v.size) if verify and dev.read(base + s, n) != src.read(s, n)]
        except BaseException:
            if fresh:
                Path(target).unlink(missing_ok=True)
            raise
        if bad:
            raise RescueError(f"verification of {target} failed at byte {base + bad[0]}; the disk may be failing")
        if shrunk is not None:
            with open_source(target) as ro:  # the shrunk file system re-read from the target
                shrunk.check(ro, base)
        return {"shrunk_to": v.size if shrunk else None, "backup": str(bset.path), "machine": bset.machine, "target": target, "partition": partition,
                "offset": base, "guid": v.spec.guid, "bytes_written": total, "verified": verify,
                "warnings": warnings + plan.warnings, "seconds": round(time.monotonic() - t0, 3)}
    finally:
        for x in vols:
            x.disk.close()


def import_backup(path: str | Path, repo: str | Path, *, volumes: tuple[str, ...] = (), layout: str = "auto",
                  name: str | None = None, progress: bool | None = None, allow_hibernated: bool = False) -> dict:
    """Capture the disk restore would build (of the smallest size) into the repository ``repo``."""
    from rescuekit.imaging.capture import capture

    bset, vols, chosen, lay = _prepare(path, volumes, layout)
    try:
        disk = AssembledDisk(lay, lay.min_size, name=str(bset.path))
        doc = capture(str(bset.path), repo, name=name or f"{bset.machine} {bset.when or bset.path.name}",
                      progress=progress, device=disk, allow_hibernated=allow_hibernated)
        doc.setdefault("warnings", []).extend(lay.warnings)
        return doc
    finally:
        for v in vols:
            v.disk.close()

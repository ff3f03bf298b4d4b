"""What a capture stores: the first MiB, the partition table regions, the space between partitions and each
partition's file-system used ranges, rounded out to the chunk grid (which is aligned to disk offset 0).

Unallocated space after the last partition is not stored (only the table regions there, e.g. the backup GPT):
like Macrium's and Clonezilla's images, and because a small system partition on a large disk must not make
the capture read the whole disk."""
from __future__ import annotations

from dataclasses import dataclass, field

from rescuekit.disk import ntfs, winstate
from rescuekit.disk.device import BlockDevice
from rescuekit.disk.filesystems import FsInfo, detect, used_ranges
from rescuekit.disk.partitions import PartitionTable, read_table
from rescuekit.disk.ranges import merge, subtract
from rescuekit.errors import RescueError

FIRST_REGION = 1 << 20  # MBR/GPT, boot code and the gap before the first partition
KEEP_HEAD = 64 << 10  # of pagefile/swapfile/hiberfil: always stored (see _windows)


@dataclass
class Plan:
    disk_size: int
    sector_size: int
    table: PartitionTable
    partitions: list[dict] = field(default_factory=list)
    extents: list[tuple[int, int]] = field(default_factory=list)  # (offset, length), chunk-aligned
    # The exact byte ranges to keep; parts of an extent's chunks outside them are stored as zeros
    # (stale free space then costs nothing and does not break dedup).
    used: list[tuple[int, int]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def stored_bytes(self) -> int:
        return sum(n for _, n in self.extents)




def align(ranges: list[tuple[int, int]], grid: int, limit: int) -> list[tuple[int, int]]:
    """Round each range out to ``grid`` (clipped to ``limit``) and merge."""
    out = []
    for s, n in ranges:
        a = s // grid * grid
        b = min(limit, -(-(s + n) // grid) * grid)
        if b > a:
            out.append((a, b - a))
    return merge(out)


def _fs_of(dev: BlockDevice, start: int, size: int, warnings: list[str], what: str
           ) -> tuple[FsInfo, list[tuple[int, int]]]:
    """File system and used ranges; a damaged file system is stored whole (a rescue must not refuse it)."""
    try:
        fs = detect(dev, start, size)
    except RescueError as exc:
        warnings.append(f"{what}: {exc}; stored whole")
        return FsInfo(kind="unknown", total_bytes=size), [(start, size)]
    try:
        ranges = [(start + s, n) for s, n in used_ranges(dev, start, size, fs)]
    except RescueError as exc:
        warnings.append(f"{what}: {fs.kind} allocation unreadable ({exc}); stored whole")
        return fs, [(start, size)]
    warnings.extend(f"{what}: {w}" for w in getattr(fs, "warnings", None) or [])
    return fs, ranges


def _part_doc(number: int, start: int, size: int, fs: FsInfo, stored: int, **extra: object) -> dict:
    return {"number": number, "start": start, "size": size, "fs": fs.kind, "label": fs.label,
            "cluster_size": fs.cluster_size, "used_bytes": fs.used_bytes, "stored_bytes": stored, **extra}


def _in(ranges: list[tuple[int, int]], start: int, end: int) -> int:
    return sum(max(0, min(s + n, end) - max(s, start)) for s, n in ranges)


def _windows(dev: BlockDevice, start: int, fs: FsInfo, what: str, plan: Plan, keep_pagefile: bool
             ) -> tuple[dict, list[tuple[int, int]]]:
    """An NTFS partition's Windows state (``windows_state``, ``excluded`` manifest fields, warnings) and the
    byte ranges of pagefile/swapfile/hiberfil data to store as zeros. A hibernated volume keeps them: the
    saved session needs its page file."""
    if fs.kind != "ntfs":
        return {}, []
    st = winstate.probe(dev, start)
    plan.warnings.extend(f"{what}: {p}" for p in st.problems)
    flags = st.flags()
    if "dirty" in flags:
        plan.warnings.append(f"{what}: the NTFS volume is marked dirty (Windows was not shut down cleanly or a "
                             "chkdsk is pending); captured as it is, run chkdsk on it after a restore")
    if st.hibernated:
        plan.warnings.append(winstate.message(what, st).split(": boot it")[0] + "; captured with the "
                             "hibernated session (--allow-hibernated)")
    doc: dict = {"windows_state": flags, "excluded": {}}
    cut: list[tuple[int, int]] = []
    if not keep_pagefile and not st.hibernated:
        cs = fs.cluster_size or 1
        for name, runs in st.system_files.items():
            # The first 64 KiB stay: their headers (hibernation signature, crash dump) are read at boot, and
            # an existing target's stale clusters there must not say "resume" or "dump".
            rr, skip = [], KEEP_HEAD
            for lcn, n in runs:
                a, m = start + lcn * cs, n * cs
                drop = min(skip, m)
                skip -= drop
                if m > drop:
                    rr.append((a + drop, m - drop))
            if rr:
                doc["excluded"][name] = sum(n for _s, n in rr)
                cut += rr
    return doc, cut


def windows_refusals(dev: BlockDevice) -> list[str]:
    """One message per NTFS partition (or volume) that Windows left hibernated or with an unclean journal."""
    table = read_table(dev, strict=False)
    parts = ([(0, dev.size, "volume")] if table.kind == "none" else
             [(p.start, min(p.size, dev.size - p.start), f"partition {p.number}") for p in table.partitions
              if not p.extended and p.start < dev.size])
    out = []
    for start, size, what in parts:
        if size < 512:
            continue
        boot = ntfs.parse_boot(dev.read(start, 512))  # the boot sector only: the capture scans $Bitmap later
        if boot is not None and (st := winstate.probe(dev, start, boot)).hibernated:
            out.append(winstate.message(what, st))
    return out


def make_plan(dev: BlockDevice, chunk_size: int, *, keep_pagefile: bool = False) -> Plan:
    """``keep_pagefile``: store pagefile/swapfile/hiberfil data too (by default their clusters are zeros)."""
    size = dev.size
    table = read_table(dev, strict=False)  # a destroyed table: image the disk raw (with a warning), not refuse
    plan = Plan(disk_size=size, sector_size=dev.sector_size, table=table, warnings=list(table.warnings))
    if table.kind == "none":
        # A partition/volume image (or an unpartitioned disk): one "partition" covering all of it.
        fs, used = _fs_of(dev, 0, size, plan.warnings, "volume")
        extra, cut = _windows(dev, 0, fs, "volume", plan, keep_pagefile)
        plan.used = subtract(merge(used), cut)
        plan.extents = align(plan.used, chunk_size, size)
        plan.partitions = [_part_doc(1, 0, size, fs, plan.stored_bytes, type=None, type_name="whole volume",
                                     **extra)]
        return plan
    ranges: list[tuple[int, int]] = [(0, min(FIRST_REGION, size))] + list(table.header_regions)
    data_parts = [p for p in table.partitions if not p.extended]
    # The gaps before and between data partitions are stored whole (EBRs, boot loaders, hidden data), and so
    # is the inside of an extended partition: logical partitions are only found through the EBR chain, and
    # one damaged EBR hides all that follow it. An MBR with damage found (warnings) keeps even the tail:
    # it has no backup copy, and the partition it lost may lie there.
    bounds = [(p.start, p.end) for p in data_parts]
    bounds += [(e, e) for p in table.partitions if p.extended for e in (p.start, p.end)]
    if table.kind == "mbr" and table.warnings:
        bounds.append((size, size))
    pos = 0
    for start, end in sorted(bounds):
        if start > pos:  # clipped: a damaged entry may place a partition past the disk's end
            ranges.append((pos, min(start, size) - pos))
        pos = max(pos, end)
    per_part = []
    cut: list[tuple[int, int]] = []
    for p in data_parts:
        if p.start >= size:
            continue
        psize = min(p.size, size - p.start)
        fs, used = _fs_of(dev, p.start, psize, plan.warnings, f"partition {p.number}")
        extra, pcut = _windows(dev, p.start, fs, f"partition {p.number}", plan, keep_pagefile)
        ranges += used
        cut += pcut
        per_part.append((p, psize, fs, extra))
    plan.used = subtract(merge(ranges), cut)
    plan.extents = align(plan.used, chunk_size, size)
    for p, psize, fs, extra in per_part:
        plan.partitions.append(_part_doc(
            p.number, p.start, psize, fs, _in(plan.extents, p.start, p.start + psize),
            type=p.type if isinstance(p.type, (str, int)) else str(p.type), type_name=p.type_name, name=p.name,
            guid=p.guid, bootable=p.bootable, logical=p.logical, **extra))
    return plan


def holes(plan: Plan, chunk_size: int):
    """Yield (extent index, chunk offset, chunk length, [(hole offset in chunk, hole length)]) in disk order."""
    used = plan.used
    j = 0
    for ei, (off, n) in enumerate(plan.extents):
        end = off + n
        while off < end:
            m = min(chunk_size, end - off)
            cend = off + m
            while j < len(used) and used[j][0] + used[j][1] <= off:
                j += 1
            gaps, pos, k = [], off, j
            while k < len(used) and used[k][0] < cend:
                us, ue = used[k][0], used[k][0] + used[k][1]
                if us > pos:
                    gaps.append((pos - off, us - pos))
                pos = max(pos, min(ue, cend))
                if ue > cend:
                    break
                k += 1
            if pos < cend:
                gaps.append((pos - off, cend - pos))
            yield ei, off, m, gaps
            off = cend

"""Shrink a FAT12/16/32 volume (docs/imaging.md "Restore onto a smaller target"), computed from a read-only source.

Two ways, chosen per volume:

* **truncate**: every allocated cluster lies below the new end and the smaller cluster count is still a valid
  count for the volume's FAT type: only the total sector count (boot sector, FAT32 backup boot sector) and the
  FSInfo free count change. The FATs keep their size (a FAT may be larger than its clusters need), so the data
  region does not move and no cluster is rewritten.
* **compact**: otherwise the volume is laid out again at the new size: a FAT sized for the new cluster count
  (so the data region moves), every allocated cluster given a new number in the same order, packed from
  cluster 2, chains re-linked, every directory entry's first-cluster field (and "."/"..", the FAT32 root cluster)
  renumbered. Directory entries are otherwise kept byte for byte: short and long names, NT case bits,
  attributes, all timestamps, deleted entries, the volume label, the boot code and serial number. When the
  cluster count would fall below the FAT type's minimum (FAT32: 65525, FAT16: 4085, as Windows decides the type
  by the count) the clusters are split (each old cluster becomes 2, 4... consecutive smaller ones), which keeps
  every chain expressible.

The result is ``writes`` (byte offset in the volume, bytes) to apply after ``moves`` ((old byte offset, bytes,
new byte offset): cluster data copied from the source) and after the source's bytes [0, ``identity``) copied in
place. Refused (RescueError naming the size needed): a target below the smallest size, a FAT whose chains point
at free clusters or directories whose entries do (the volume needs chkdsk first).
"""
from __future__ import annotations

import struct
from array import array
from dataclasses import dataclass, field

from rescuekit.disk import fat
from rescuekit.disk.device import BlockDevice
from rescuekit.errors import RescueError
from rescuekit.imaging.units import human

ENTRY_BITS = {"fat12": 12, "fat16": 16, "fat32": 32}
BAD = {"fat12": 0xFF7, "fat16": 0xFFF7, "fat32": 0x0FFFFFF7}
MIN_COUNT = {"fat12": 1, "fat16": 4085, "fat32": 65525}  # below: Windows reads the volume as another type
MAX_COUNT = {"fat12": 4084, "fat16": 65524, "fat32": 0x0FFFFFF5}
FSINFO_LEAD, FSINFO_STRUCT = 0x41615252, 0x61417272


@dataclass
class FatShrink:
    kind: str
    old_size: int
    new_size: int
    cluster_size: int  # the source's
    new_cluster_size: int
    new_count: int
    used_clusters: int  # allocated clusters of the source
    min_size: int
    identity: int  # source bytes [0, identity) are copied where they are
    method: str  # "truncate" | "compact"
    new_used: int = 0  # allocated clusters after the shrink
    writes: list[tuple[int, bytes]] = field(default_factory=list)
    moves: list[tuple[int, int, int]] = field(default_factory=list)  # (old byte, bytes, new byte), in the volume

    def describe(self) -> str:
        how = ("every used cluster lies below the new end: only the size fields change" if self.method == "truncate"
               else "laid out again: a smaller FAT, clusters renumbered in order and packed, chains and directory "
                    "entries rewritten (names, attributes and timestamps kept)"
               + (f", clusters split from {self.cluster_size} to {self.new_cluster_size} bytes (the "
                  f"{self.kind.upper()} cluster-count minimum)" if self.new_cluster_size != self.cluster_size
                  else ""))
        return (f"the {self.kind.upper()} volume shrinks from {human(self.old_size)} to {human(self.new_size)} "
                f"({self.new_size} bytes; {human(self.used_clusters * self.cluster_size)} used; {how})")


def _geometry(b: fat.FatBoot, total: int, split: int) -> tuple[int, int] | None:
    """(FAT sectors, cluster count) of the volume laid out again on ``total`` sectors with clusters ``split``
    times smaller; None when it does not fit."""
    bps, spc = b.bytes_per_sector, b.cluster_size // b.bytes_per_sector // split
    fixed = b.reserved + b.root_dir_sectors
    fatsz = 1
    for _ in range(64):  # fixed point: the FAT sized for the clusters left after it
        count = (total - fixed - b.num_fats * fatsz) // spc
        if count <= 0:
            return None
        need = -(-((count + 2) * ENTRY_BITS[b.kind]) // (8 * bps))
        if need <= fatsz:
            return fatsz, count
        fatsz = need
    return None


def _count_ok(b: fat.FatBoot, count: int) -> bool:
    return min(MIN_COUNT[b.kind], b.count) <= count <= MAX_COUNT[b.kind]


def _layouts(b: fat.FatBoot, total: int, used: int):
    """(split, FAT sectors, count) of every compact layout that holds ``used`` clusters on ``total`` sectors."""
    split = 1
    while b.cluster_size // split >= b.bytes_per_sector:
        g = _geometry(b, total, split)
        if g is not None and g[1] >= used * split and _count_ok(b, g[1]):
            yield split, g[0], g[1]
        split *= 2


def _smallest(b: fat.FatBoot, used: int, hi: int) -> int | None:
    """The fewest sectors a compact layout needs (binary search; feasibility grows with the size)."""
    lo = b.reserved + b.root_dir_sectors + 1
    if next(_layouts(b, hi, used), None) is None:
        return None
    while lo < hi:
        mid = (lo + hi) // 2
        if next(_layouts(b, mid, used), None) is not None:
            hi = mid
        else:
            lo = mid + 1
    return hi


def _encode(kind: str, ents: array, nbytes: int) -> bytes:
    if kind == "fat32":
        a = array("I", ents)
    elif kind == "fat16":
        a = array("H", ents)
    else:
        out = bytearray(nbytes)
        for n in range(0, len(ents), 2):
            lo, hi = ents[n], ents[n + 1] if n + 1 < len(ents) else 0
            out[n * 3 // 2:n * 3 // 2 + 3] = (lo | hi << 12).to_bytes(3, "little")
        return bytes(out[:nbytes])
    import sys

    if sys.byteorder == "big":
        a.byteswap()
    return a.tobytes().ljust(nbytes, b"\0")[:nbytes]


def _boot(src: bytes, b: fat.FatBoot, total: int, fatsz: int, spc: int, root: int) -> bytes:
    s = bytearray(src)
    s[13] = spc
    if b.kind == "fat32":
        struct.pack_into("<H", s, 19, 0)
        struct.pack_into("<I", s, 32, total)
        struct.pack_into("<I", s, 36, fatsz)
        struct.pack_into("<I", s, 44, root)
    else:
        struct.pack_into("<H", s, 22, fatsz)
        tot16 = struct.unpack_from("<H", src, 19)[0]
        if tot16 and total < 0x10000:
            struct.pack_into("<H", s, 19, total)
            struct.pack_into("<I", s, 32, 0)
        else:
            struct.pack_into("<H", s, 19, 0)
            struct.pack_into("<I", s, 32, total)
    return bytes(s)


def _fsinfo(dev: BlockDevice, offset: int, b: fat.FatBoot, free: int, nxt: int) -> list[tuple[int, bytes]]:
    """The FSInfo sector (and its copy after the backup boot sector) with the new free count and hint."""
    if b.kind != "fat32":
        return []
    bps = b.bytes_per_sector
    boot = dev.read(offset, 512)
    info, bk = struct.unpack_from("<HH", boot, 0x30)
    out = []
    for sec in {info, bk + info if 0 < bk < b.reserved else info}:
        if not 0 < sec < b.reserved:
            continue
        s = bytearray(dev.read(offset + sec * bps, bps))
        if struct.unpack_from("<I", s, 0)[0] != FSINFO_LEAD or struct.unpack_from("<I", s, 484)[0] != FSINFO_STRUCT:
            continue
        struct.pack_into("<II", s, 488, free, nxt)
        out.append((sec * bps, bytes(s)))
    return out


def _backup_boot(dev: BlockDevice, offset: int, b: fat.FatBoot, sector: bytes) -> list[tuple[int, bytes]]:
    out = [(0, sector)]
    if b.kind == "fat32":
        bk = struct.unpack_from("<H", sector, 0x32)[0]
        if 0 < bk < b.reserved and fat.parse_fat_boot(dev.read(offset + bk * b.bytes_per_sector, 512)):
            out.append((bk * b.bytes_per_sector, sector))
    return out


def plan(dev: BlockDevice, offset: int, size: int, new_size: int) -> FatShrink:
    """The writes and moves that make the FAT volume at ``offset`` (``size`` bytes) of ``dev`` ``new_size`` bytes."""
    where = f"FAT volume at byte {offset} of {dev.path}"
    bs = dev.read(offset, 512)
    b = fat.parse_fat_boot(bs)
    if b is None:
        raise RescueError(f"no FAT boot sector: {where}")
    bps, cs = b.bytes_per_sector, b.cluster_size
    fat.fat_used_ranges(dev, offset, size, b)  # the same geometry checks as capture (media byte, layout)
    ents = fat._fat_entries(b, fat._read_fat(dev, offset, b))
    mask = 0x0FFFFFFF if b.kind == "fat32" else 0xFFFFFFFF
    bad = BAD[b.kind]
    alloc = [c for c in range(2, b.count + 2) if ents[c] & mask and ents[c] & mask != bad]
    used = len(alloc)
    total = new_size // bps
    data_secs = b.data_start // bps
    # truncate: the data region stays, the FAT keeps its size
    top = alloc[-1] if alloc else 1
    t_count = min(b.count, (total - data_secs) // (cs // bps)) if total > data_secs else 0
    smallest = _smallest(b, used, b.total_sectors)
    t_min = (data_secs + (top - 1) * (cs // bps)) * bps
    least = min(smallest * bps if smallest else size, t_min if _count_ok(b, top - 1) else size)
    truncate = t_count >= top - 1 and _count_ok(b, t_count)
    if not truncate and next(_layouts(b, total, used), None) is None:
        raise RescueError(f"the {where} needs at least {least} bytes ({used} used clusters of {cs} bytes)")
    if truncate:
        sh = FatShrink(b.kind, size, new_size, cs, cs, t_count, used, least, new_size, "truncate", used)
        sector = _boot(bs, b, total, b.fat_sectors, cs // bps, b.root_cluster)
        sh.writes += _backup_boot(dev, offset, b, sector)
        free = sum(1 for c in range(2, t_count + 2) if not ents[c] & mask)
        nxt = next((c for c in range(2, t_count + 2) if not ents[c] & mask), 0xFFFFFFFF)
        sh.writes += _fsinfo(dev, offset, b, free, nxt)
        return sh
    split, fatsz, count = next(_layouts(b, total, used))
    ncs = cs // split
    new_of = array("I", bytes(4 * (b.count + 2)))  # old cluster -> new first cluster (0: not allocated)
    for i, c in enumerate(alloc):
        new_of[c] = 2 + i * split
    out = array("I", bytes(4 * (count + 2)))
    out[0], out[1] = ents[0], ents[1]
    eoc = {"fat12": 0xFF8, "fat16": 0xFFF8, "fat32": 0x0FFFFFF8}[b.kind]
    for c in alloc:
        n = new_of[c]
        for i in range(split - 1):
            out[n + i] = n + i + 1
        v = ents[c] & mask
        if v >= eoc:
            out[n + split - 1] = ents[c]
        elif 2 <= v < len(new_of) and new_of[v]:
            out[n + split - 1] = (ents[c] & ~mask & 0xFFFFFFFF) | new_of[v]
        else:
            raise RescueError(f"the {where} is inconsistent (cluster {c}'s chain goes on at free or bad cluster "
                              f"{v}): not shrunk (run chkdsk on it first)")
    new_data = (b.reserved + b.num_fats * fatsz + b.root_dir_sectors) * bps
    sh = FatShrink(b.kind, size, new_size, cs, ncs, count, used, least, b.reserved * bps, "compact")
    # cluster data, in runs of consecutive clusters (they stay consecutive)
    run: list[int] | None = None
    for c in alloc:
        if run and run[0] + run[1] == c:
            run[1] += 1
            continue
        if run:
            sh.moves.append((b.data_start + (run[0] - 2) * cs, run[1] * cs, new_data + (new_of[run[0]] - 2) * ncs))
        run = [c, 1]
    if run:
        sh.moves.append((b.data_start + (run[0] - 2) * cs, run[1] * cs, new_data + (new_of[run[0]] - 2) * ncs))
    root = new_of[b.root_cluster] if b.kind == "fat32" and 2 <= b.root_cluster < len(new_of) else 0
    if b.kind == "fat32" and not root:
        raise RescueError(f"the {where}: its root directory cluster {b.root_cluster} is not allocated")
    files: list[tuple[int, int]] = []  # (old first cluster, size) of every file
    dirs = _directories(dev, offset, b, ents, mask, new_of, new_data, ncs, where,
                        (b.reserved + b.num_fats * fatsz) * bps, files)
    new_used = used * split
    if split > 1:  # a file's last cluster split: the pieces past its size are free (the chain ends earlier)
        for first, fsize in files:
            chain = _chain(ents, mask, b, first, where)
            need = min(split, max(1, -(-(fsize - (len(chain) - 1) * cs) // ncs)))
            n = new_of[chain[-1]]
            out[n + need - 1] = out[n + split - 1]
            for j in range(need, split):
                out[n + j] = 0
            new_used -= split - need
    sh.new_used = new_used
    sector = _boot(bs, b, total, fatsz, ncs // bps, root)
    sh.writes += _backup_boot(dev, offset, b, sector)
    nxt = next((c for c in range(2, count + 2) if not out[c]), 0xFFFFFFFF)
    sh.writes += _fsinfo(dev, offset, b, count - new_used, nxt)
    fat_bytes = _encode(b.kind, out, fatsz * bps)
    for i in range(b.num_fats):
        sh.writes.append(((b.reserved + i * fatsz) * bps, fat_bytes))
    sh.writes += dirs
    return sh


def _renumber(data: bytearray, b: fat.FatBoot, new_of: array, where: str,
              files: list[tuple[int, int]]) -> list[int]:
    """Rewrite the first-cluster fields of a directory's entries; the subdirectories' first (old) clusters (and
    each file's (old first cluster, size) appended to ``files``)."""
    subdirs = []
    for i in range(0, len(data) - 31, 32):
        first = data[i]
        if first == 0:
            break
        attr = data[i + 11]
        if first == 0xE5 or attr & 0x3F == 0x0F:  # deleted, long-name part: no cluster
            continue
        c = fat._first_cluster(bytes(data[i:i + 32]), b)
        if c == 0:
            continue
        if not (2 <= c < len(new_of) and new_of[c]):
            if attr & 0x08:  # a volume label has no clusters; a stray value in it is left alone
                continue
            name = bytes(data[i:i + 11]).decode("latin-1").rstrip()
            raise RescueError(f"the {where} is inconsistent (entry {name!r} starts at free cluster {c}): not "
                              "shrunk (run chkdsk on it first)")
        n = new_of[c]
        struct.pack_into("<H", data, i + 26, n & 0xFFFF)
        if b.kind == "fat32":
            struct.pack_into("<H", data, i + 20, n >> 16)
        if attr & 0x10 and not attr & 0x08 and bytes(data[i:i + 11]) not in (fat._DOT, fat._DOTDOT):
            subdirs.append(c)
        elif not attr & 0x18:
            files.append((c, struct.unpack_from("<I", data, i + 28)[0]))
    return subdirs


def _chain(ents: array, mask: int, b: fat.FatBoot, first: int, where: str) -> list[int]:
    out, c, seen = [], first, set()
    eoc = {"fat12": 0xFF8, "fat16": 0xFFF8, "fat32": 0x0FFFFFF8}[b.kind]
    while True:
        if not 2 <= c < b.count + 2 or c in seen:
            raise RescueError(f"the {where} is inconsistent (a directory's cluster chain loops or leaves the "
                              "volume): not shrunk (run chkdsk on it first)")
        seen.add(c)
        out.append(c)
        v = ents[c] & mask
        if v >= eoc:
            return out
        c = v


def _directories(dev: BlockDevice, offset: int, b: fat.FatBoot, ents: array, mask: int, new_of: array,
                 new_data: int, ncs: int, where: str, new_root_pos: int,
                 files: list[tuple[int, int]]) -> list[tuple[int, bytes]]:
    """Every directory renumbered and placed where its clusters go (FAT12/16: the root region too)."""
    bps, cs = b.bytes_per_sector, b.cluster_size
    writes: list[tuple[int, bytes]] = []
    todo: list[int] = []
    if b.kind == "fat32":
        todo.append(b.root_cluster)
    else:
        pos = (b.reserved + b.num_fats * b.fat_sectors) * bps
        root = bytearray(dev.read(offset + pos, b.root_dir_sectors * bps))
        todo += _renumber(root, b, new_of, where, files)
        writes.append((new_root_pos, bytes(root)))
    done: set[int] = set()
    while todo:
        first = todo.pop()
        if first in done:
            continue
        done.add(first)
        chain = _chain(ents, mask, b, first, where)
        data = bytearray(b"".join(dev.read(offset + b.data_start + (c - 2) * cs, cs) for c in chain))
        todo += _renumber(data, b, new_of, where, files)
        for i, c in enumerate(chain):
            writes.append((new_data + (new_of[c] - 2) * ncs, bytes(data[i * cs:(i + 1) * cs])))
    return writes


def check(dev: BlockDevice, offset: int, sh: FatShrink) -> None:
    """Re-read the shrunk volume: geometry, backup boot sector, the same number of allocated clusters."""
    where = f"the shrunk {sh.kind.upper()} volume at byte {offset} of {dev.path}"
    bs = dev.read(offset, 512)
    b = fat.parse_fat_boot(bs)
    if b is None or b.kind != sh.kind or b.count != sh.new_count or b.cluster_size != sh.new_cluster_size:
        raise RescueError(f"{where}: boot sector reads back wrong")
    _r, used = fat.fat_used_ranges(dev, offset, sh.new_size, b)
    want = sh.new_used
    if used != want:
        raise RescueError(f"{where}: {used} used clusters after the shrink, {want} expected")

"""FAT12/16/32 (Microsoft FAT specification: BPB, FAT type by cluster count) and exFAT used ranges."""
from __future__ import annotations

import struct
import sys
from array import array
from dataclasses import dataclass

from rescuekit.disk.device import BlockDevice
from rescuekit.disk.ranges import RangeBuilder, covered
from rescuekit.errors import RescueError

READ_CHUNK = 8 << 20


def _le_array(code: str, data: bytes) -> array:
    a = array(code)
    a.frombytes(data)
    if sys.byteorder == "big":
        a.byteswap()
    return a


# ---------------------------------------------------------------- FAT12/16/32

@dataclass
class FatBoot:
    kind: str  # fat12 | fat16 | fat32
    bytes_per_sector: int
    cluster_size: int
    reserved: int  # sectors
    num_fats: int
    fat_sectors: int
    root_entries: int
    total_sectors: int
    root_cluster: int  # FAT32
    count: int  # data clusters (numbered 2..count+1)
    bpb_label: str | None
    serial: int
    media: int = 0xF8  # BPB media descriptor; FAT entry 0 repeats it in its low byte
    type_label: str | None = None  # extended BPB file-system type string ("FAT16   ": informational)

    @property
    def root_dir_sectors(self) -> int:
        return (self.root_entries * 32 + self.bytes_per_sector - 1) // self.bytes_per_sector

    @property
    def data_start(self) -> int:
        """Byte offset of cluster 2."""
        return (self.reserved + self.num_fats * self.fat_sectors + self.root_dir_sectors) * self.bytes_per_sector


def parse_fat_boot(s: bytes) -> FatBoot | None:
    """BPB geometry, or None if ``s`` is not a sane FAT boot sector."""
    if len(s) < 512 or s[510:512] != b"\x55\xaa" or s[0] not in (0xEB, 0xE9):
        return None
    bps, spc, rsvd, nfats, root_ent, tot16, media, fat16 = struct.unpack_from("<HBHBHHBH", s, 11)
    tot32 = struct.unpack_from("<I", s, 32)[0]
    if bps not in (512, 1024, 2048, 4096) or spc == 0 or spc & (spc - 1) or rsvd == 0 or nfats == 0:
        return None
    fatsz = fat16 or struct.unpack_from("<I", s, 36)[0]
    total = tot16 or tot32
    if fatsz == 0 or total == 0:
        return None
    root_secs = (root_ent * 32 + bps - 1) // bps
    data_secs = total - (rsvd + nfats * fatsz + root_secs)
    if data_secs <= 0:
        return None
    count = data_secs // spc
    # The spec decides by cluster count alone; Linux (mkfs.fat -F 32, the kernel, fsck.fat) also calls a
    # volume FAT32 when the 16-bit FAT size is 0, whatever its count. Follow the BPB layout: it is what
    # the FAT entries were written as.
    if fat16 == 0:
        kind = "fat32"
        if root_ent != 0:
            return None
    else:
        kind = "fat12" if count < 4085 else "fat16" if count < 65525 else "fat32"
        if kind == "fat32":
            return None  # a FAT32 cluster count needs the FAT32 BPB
    # Extended BPB: FAT32 at 0x40, FAT12/16 at 0x24; signature byte 0x29 means serial + label are valid.
    ebpb = 0x40 if kind == "fat32" else 0x24
    label, serial = None, 0
    type_label = s[ebpb + 0x12:ebpb + 0x1A].decode("latin-1").strip() if s[ebpb + 2] in (0x28, 0x29) else None
    if s[ebpb + 2] == 0x29:
        serial = struct.unpack_from("<I", s, ebpb + 3)[0]
        label = s[ebpb + 7:ebpb + 18].decode("latin-1").rstrip() or None
        if label == "NO NAME":
            label = None
    root_cluster = struct.unpack_from("<I", s, 44)[0] if kind == "fat32" else 0
    # A FAT must be able to address every cluster; otherwise the BPB is garbage.
    entry_bits = {"fat12": 12, "fat16": 16, "fat32": 32}[kind]
    if fatsz * bps * 8 // entry_bits < count + 2:
        return None
    return FatBoot(kind, bps, bps * spc, rsvd, nfats, fatsz, root_ent, total, root_cluster, count, label, serial,
                   media, type_label)


def _read_fat(dev: BlockDevice, offset: int, b: FatBoot) -> bytes:
    nbytes = {"fat12": (b.count + 2) * 3 // 2 + 1, "fat16": (b.count + 2) * 2, "fat32": (b.count + 2) * 4}[b.kind]
    nbytes = min(nbytes, b.fat_sectors * b.bytes_per_sector)
    return dev.read(offset + b.reserved * b.bytes_per_sector, nbytes)


def _fat_entries(b: FatBoot, fat: bytes) -> array:
    """FAT entries for clusters 0..count+1 as an array of ints."""
    if b.kind == "fat12":
        out = array("I", bytes(4 * (b.count + 2)))
        for n in range(b.count + 2):
            v = int.from_bytes(fat[n * 3 // 2:n * 3 // 2 + 2], "little")
            out[n] = v >> 4 if n & 1 else v & 0xFFF
        return out
    if b.kind == "fat16":
        return _le_array("H", fat[: 2 * (b.count + 2)])
    a = _le_array("I", fat[: 4 * (b.count + 2)])
    return a


def _root_dir(dev: BlockDevice, offset: int, b: FatBoot) -> bytes:
    """The start of the root directory (FAT12/16: its fixed region; FAT32: its first cluster), at most
    64 KiB; empty when a FAT32 root cluster lies outside the volume."""
    if b.kind == "fat32":
        if not 2 <= b.root_cluster < b.count + 2:
            return b""
        pos, n = b.data_start + (b.root_cluster - 2) * b.cluster_size, b.cluster_size
    else:
        bps = b.bytes_per_sector
        pos, n = (b.reserved + b.num_fats * b.fat_sectors) * bps, b.root_dir_sectors * bps
    return dev.read(offset + pos, min(n, 64 << 10))


def _dir_entries(data: bytes):
    """The in-use 32-byte directory entries of ``data`` (deleted ones skipped, stops at the end mark)."""
    for i in range(0, len(data) - 31, 32):
        e = data[i:i + 32]
        if e[0] == 0:
            return
        if e[0] != 0xE5:
            yield e


def fat_label(dev: BlockDevice, offset: int, b: FatBoot) -> str | None:
    """The volume label from the root directory's label entry (what Windows shows), else the BPB's."""
    for e in _dir_entries(_root_dir(dev, offset, b)):
        if e[11] & 0x0F == 0x08 and e[11] != 0x0F:
            return e[:11].decode("latin-1").rstrip() or None
    return b.bpb_label


MAX_DIR_BYTES = 8 << 20  # a FAT directory holds at most 65536 entries of 32 bytes (2 MiB); room for slack


@dataclass
class FatEntry:
    name: str  # the long name when there is one, else the 8.3 name
    short_name: str
    attributes: int
    cluster: int  # first cluster (0: empty file / the root)
    size: int

    @property
    def is_dir(self) -> bool:
        return bool(self.attributes & 0x10)


def fat_next(dev: BlockDevice, offset: int, b: FatBoot, cluster: int) -> int | None:
    """The cluster after ``cluster`` in its chain (first FAT), or None at the end of the chain."""
    base = offset + b.reserved * b.bytes_per_sector
    if b.kind == "fat12":
        v = int.from_bytes(dev.read(base + cluster * 3 // 2, 2), "little")
        v = v >> 4 if cluster & 1 else v & 0xFFF
        end = 0xFF7
    elif b.kind == "fat16":
        v, end = int.from_bytes(dev.read(base + 2 * cluster, 2), "little"), 0xFFF7
    else:
        v, end = int.from_bytes(dev.read(base + 4 * cluster, 4), "little") & 0x0FFFFFFF, 0x0FFFFFF7
    return v if 2 <= v < min(end, b.count + 2) else None


def fat_chain_read(dev: BlockDevice, offset: int, b: FatBoot, first: int, limit: int) -> bytes:
    """The clusters of the chain starting at ``first`` (at most ``limit`` bytes; a loop ends it)."""
    out = bytearray()
    c: int | None = first
    seen: set[int] = set()
    while c is not None and 2 <= c < b.count + 2 and c not in seen and len(out) < limit:
        seen.add(c)
        out += dev.read(offset + b.data_start + (c - 2) * b.cluster_size, b.cluster_size)
        c = fat_next(dev, offset, b, c)
    return bytes(out[:limit])


def _short_name(e: bytes) -> str:
    base, ext = e[:8].decode("latin-1").rstrip(), e[8:11].decode("latin-1").rstrip()
    if e[12] & 0x08:  # NT case flags: base / extension stored upper but shown lower
        base = base.lower()
    if e[12] & 0x10:
        ext = ext.lower()
    if base[:1] == "\x05":
        base = "\xe5" + base[1:]
    return f"{base}.{ext}" if ext else base


def parse_dir(data: bytes) -> list[FatEntry]:
    """Entries of a FAT directory (volume label, deleted and "."/".." entries left out; long names joined)."""
    out: list[FatEntry] = []
    lfn: dict[int, str] = {}
    for i in range(0, len(data) - 31, 32):
        e = data[i:i + 32]
        if e[0] == 0:
            break
        if e[0] == 0xE5:
            lfn = {}
            continue
        if e[11] & 0x3F == 0x0F:  # long-name part: 13 UTF-16 units in three pieces
            part = (e[1:11] + e[14:26] + e[28:32]).decode("utf-16-le", "replace")
            lfn[e[0] & 0x1F] = part.split("\0", 1)[0]
            continue
        if e[11] & 0x08:  # volume label
            lfn = {}
            continue
        short = _short_name(e)
        name = "".join(lfn[k] for k in sorted(lfn)) if lfn else short
        lfn = {}
        if short in (".", ".."):
            continue
        cluster = struct.unpack_from("<H", e, 26)[0] | struct.unpack_from("<H", e, 20)[0] << 16
        out.append(FatEntry(name, short, e[11], cluster, struct.unpack_from("<I", e, 28)[0]))
    return out


def fat_listdir(dev: BlockDevice, offset: int, b: FatBoot, entry: FatEntry | None = None) -> list[FatEntry]:
    """Entries of directory ``entry`` (None: the root directory)."""
    cluster = entry.cluster if entry is not None else 0
    if cluster == 0 and b.kind != "fat32":
        pos = (b.reserved + b.num_fats * b.fat_sectors) * b.bytes_per_sector
        return parse_dir(dev.read(offset + pos, b.root_dir_sectors * b.bytes_per_sector))
    return parse_dir(fat_chain_read(dev, offset, b, cluster or b.root_cluster, MAX_DIR_BYTES))


def fat_lookup(dev: BlockDevice, offset: int, b: FatBoot, path: str) -> FatEntry | None:
    """The entry at ``path`` (``\\`` or ``/`` separated, case-insensitive, long or 8.3 name), or None."""
    entry: FatEntry | None = None
    for part in (p for p in path.replace("\\", "/").split("/") if p):
        if entry is not None and not entry.is_dir:
            return None
        want = part.casefold()
        entry = next((e for e in fat_listdir(dev, offset, b, entry)
                      if e.name.casefold() == want or e.short_name.casefold() == want), None)
        if entry is None:
            return None
    return entry


_DOT, _DOTDOT = b".          ", b"..         "


def _first_cluster(e: bytes, b: FatBoot) -> int:
    """A directory entry's first cluster (the high word only exists on FAT32)."""
    c = int.from_bytes(e[26:28], "little")
    return c | int.from_bytes(e[20:22], "little") << 16 if b.kind == "fat32" else c


MAX_FOLDER_CHECKS = 8


def _check_layout(dev: BlockDevice, offset: int, size: int, b: FatBoot, where: str) -> None:
    """RescueError unless the boot sector's layout fields (reserved sectors, FAT count and size, root entries,
    cluster size) match what is on disk. One wrong field shifts every cluster: the FAT still decodes, but
    its map then points at the wrong bytes and leaves used data out (found by tests/fuzz)."""
    bps = b.bytes_per_sector
    fat_bytes = b.fat_sectors * bps
    if b.kind != "fat32" and (b.root_entries == 0 or b.root_entries * 32 % bps):
        # FAT12/16 keep the root directory in a fixed region after the FATs; 0 entries is a FAT32 value
        raise RescueError(f"{where}: {b.root_entries} root directory entries (FAT12/16 need a count that fills "
                          f"whole sectors)")
    # every FAT copy starts with the media entry; no further copy follows the last one
    for i in range(1, b.num_fats):
        pos = b.reserved * bps + i * fat_bytes
        e0 = int.from_bytes(dev.read(offset + pos, 2), "little") if pos + 2 <= size else 0
        if e0 & 0xFF != b.media or e0 & 0xF00 != 0xF00:
            raise RescueError(f"{where}: FAT copy {i + 1} (byte {pos}) does not start with the media byte: "
                              f"the FAT size or count in the boot sector is wrong")
    head_len = {"fat12": 3, "fat16": 4, "fat32": 8}[b.kind]
    after = b.reserved * bps + b.num_fats * fat_bytes
    if after + head_len <= size and \
            dev.read(offset + after, head_len) == dev.read(offset + b.reserved * bps, head_len):
        raise RescueError(f"{where}: a FAT copy follows the {b.num_fats} the boot sector counts (byte {after})")
    # every folder begins with its "." and ".." entries: check where the layout puts the root's subfolders
    checked = 0
    for e in _dir_entries(_root_dir(dev, offset, b)):
        if e[11] == 0x0F or e[11] & 0x08 or not e[11] & 0x10 or e[:11] in (_DOT, _DOTDOT):
            continue
        c = _first_cluster(e, b)
        pos = b.data_start + (c - 2) * b.cluster_size
        if not 2 <= c < b.count + 2 or pos + 64 > size:
            continue
        d = dev.read(offset + pos, 64)
        # "." names the folder's own first cluster, ".." the root's (0; some FAT32 writers use the root cluster):
        # a neighbouring folder's cluster, one cluster off, passes the name test but not this one
        if d[:11] != _DOT or d[32:43] != _DOTDOT or not d[11] & 0x10 or _first_cluster(d[:32], b) != c or \
                _first_cluster(d[32:64], b) not in (0, b.root_cluster if b.kind == "fat32" else 0):
            name = e[:11].decode("latin-1").rstrip()
            raise RescueError(f"{where}: folder {name!r} (cluster {c}, byte {pos}) does not begin with '.' and "
                              f"'..' entries: the boot sector's layout does not match the data area")
        checked += 1
        if checked == MAX_FOLDER_CHECKS:
            break


_MASK_LOW_NIBBLE = bytes(v & 0x0F for v in range(256))
FAT_CHUNK_ENTRIES = 1 << 20


def _used_flags(raw: bytes, kind: str, n: int) -> bytes:
    """One byte per FAT16/32 entry, non-zero when the entry is (OR of the entry's bytes, done on whole
    byte planes as big integers: linear and in C, no Python loop per entry)."""
    if kind == "fat16":
        planes = [raw[0::2], raw[1::2]]
    else:  # FAT32 entries are 28 bits: the top nibble is reserved
        planes = [raw[0::4], raw[1::4], raw[2::4], raw[3::4].translate(_MASK_LOW_NIBBLE)]
    acc = 0
    for p in planes:
        acc |= int.from_bytes(p, "little")
    return acc.to_bytes(n, "little")


def _drop_bad(raw: bytes, kind: str, flags: bytes) -> bytes:
    """Clear the flags of bad-cluster marks (0xFFF7 / 0x?FFFFFF7): never stored, often unreadable."""
    esz, pat = (2, b"\xf7\xff") if kind == "fat16" else (4, b"\xf7\xff\xff")
    if raw.find(pat) < 0:
        return flags
    out = bytearray(flags)
    pos = raw.find(pat)
    while pos >= 0:
        if pos % esz == 0 and (esz == 2 or raw[pos + 3] & 0x0F == 0x0F):
            out[pos // esz] = 0
        pos = raw.find(pat, pos + 1)
    return bytes(out)


def fat_used_ranges(dev: BlockDevice, offset: int, size: int, b: FatBoot) -> tuple[list[tuple[int, int]], int]:
    """(ranges relative to the partition, used clusters): reserved + FATs + root dir, clusters with a
    non-zero FAT entry (bad-cluster marks left out), and everything after the last cluster.

    FAT16/32 are streamed in chunks of 1 Mi entries (a 2 TB FAT32 has a 256 MiB FAT). Clusters past the
    partition's end are not looked up (a BPB claiming more than the partition must not make us read the
    disk beyond it). A FAT whose entry 0 lacks the BPB's media byte, or a FAT32 root directory marked
    free, is a RescueError: the BPB geometry does not match the FAT, and its map would leave data out."""
    where = f"{b.kind.upper()} on {dev.path} at {offset}"
    if b.data_start > size:
        raise RescueError(f"{where}: the FATs and root directory end at byte {b.data_start}, past the "
                          f"partition's end ({size} bytes)")
    if b.type_label in ("FAT12", "FAT16", "FAT32") and b.type_label.lower() != b.kind:
        # Formatters write the type they laid the FAT out as; the cluster count says otherwise, so a size
        # field is wrong and the FAT would be decoded with the wrong entry width.
        raise RescueError(f"{where}: the boot sector says {b.type_label}, but its cluster count ({b.count}) "
                          f"makes it {b.kind.upper()}")
    fat_pos = offset + b.reserved * b.bytes_per_sector
    fat0 = int.from_bytes(dev.read(fat_pos, 2), "little")
    if fat0 & 0xFF != b.media or fat0 & 0xF00 != 0xF00:
        raise RescueError(f"{where}: FAT entry 0 (0x{fat0:04X}) does not carry the boot sector's media byte "
                          f"0x{b.media:02X}: the boot sector does not describe this FAT")
    _check_layout(dev, offset, size, b, where)
    count = min(b.count, -(-(size - b.data_start) // b.cluster_size))
    rb = RangeBuilder()
    rb.add(0, b.data_start)
    used = 0
    if b.kind == "fat12":
        ents = _fat_entries(b, _read_fat(dev, offset, b))[2:count + 2]
        flags = bytes(1 if v and v != 0xFF7 else 0 for v in ents)
        used = rb.add_flags(flags, 0, b.cluster_size, b.data_start)
    else:
        esz = 2 if b.kind == "fat16" else 4
        if b.kind == "fat32" and 2 <= b.root_cluster < count + 2 and \
                not int.from_bytes(dev.read(fat_pos + 4 * b.root_cluster, 4), "little") & 0x0FFFFFFF:
            raise RescueError(f"{where}: the FAT marks the root directory's cluster {b.root_cluster} free")
        for first in range(2, count + 2, FAT_CHUNK_ENTRIES):
            n = min(FAT_CHUNK_ENTRIES, count + 2 - first)
            raw = dev.read(fat_pos + first * esz, n * esz)
            flags = _drop_bad(raw, b.kind, _used_flags(raw, b.kind, n))
            used += rb.add_flags(flags, first - 2, b.cluster_size, b.data_start)
    end = b.data_start + b.count * b.cluster_size
    rb.add(end, size - end)
    return rb.result(clip=size), used


# ---------------------------------------------------------------- exFAT

@dataclass
class ExfatBoot:
    bytes_per_sector: int
    cluster_size: int
    volume_sectors: int
    fat_offset: int  # sectors
    fat_length: int  # sectors
    heap_offset: int  # sectors
    count: int
    root_cluster: int
    serial: int

    def cluster_pos(self, c: int) -> int:
        return self.heap_offset * self.bytes_per_sector + (c - 2) * self.cluster_size


def parse_exfat_boot(s: bytes) -> ExfatBoot | None:
    """exFAT main boot sector fields (exFAT specification 3.1), or None."""
    if len(s) < 512 or s[3:11] != b"EXFAT   " or s[510:512] != b"\x55\xaa":
        return None
    vol_len, fat_off, fat_len, heap_off, count, root, serial = struct.unpack_from("<QIIIIII", s, 0x48)
    bps_shift, spc_shift, nfats = s[0x6C], s[0x6D], s[0x6E]
    if not 9 <= bps_shift <= 12 or bps_shift + spc_shift > 25 or nfats not in (1, 2):
        return None
    if not (24 <= fat_off and heap_off >= fat_off + fat_len * nfats and 2 <= root < count + 2):
        return None
    bps = 1 << bps_shift
    return ExfatBoot(bps, bps << spc_shift, vol_len, fat_off, fat_len, heap_off, count, root, serial)


class _ExfatFat:
    """exFAT FAT entries read on demand, 64 KiB at a time: only a few chains are followed, and a large
    volume's FAT (up to 16 GiB) must not be read whole."""

    PAGE = 64 << 10

    def __init__(self, dev: BlockDevice, offset: int, b: ExfatBoot) -> None:
        self._dev, self._pos = dev, offset + b.fat_offset * b.bytes_per_sector
        self._len = min(b.count + 2, b.fat_length * b.bytes_per_sector // 4)
        self._pages: dict[int, array] = {}

    def __len__(self) -> int:
        return self._len

    def __getitem__(self, c: int) -> int:
        page, i = divmod(c * 4, self.PAGE)
        a = self._pages.get(page)
        if a is None:
            n = min(self.PAGE, self._len * 4 - page * self.PAGE)
            a = self._pages[page] = _le_array("I", self._dev.read(self._pos + page * self.PAGE, n))
        return a[i // 4]


def _exfat_fat(dev: BlockDevice, offset: int, b: ExfatBoot) -> _ExfatFat:
    return _ExfatFat(dev, offset, b)


def _chain(fat: _ExfatFat, first: int, b: ExfatBoot, nclusters: int) -> list[int]:
    """Cluster chain from the FAT; a zero entry means contiguous allocation (NoFatChain)."""
    out, c = [first], first
    while len(out) < nclusters:
        nxt = fat[c] if c < len(fat) else 0
        if nxt == 0:  # not chained: contiguous
            return list(range(first, min(first + nclusters, b.count + 2)))
        if nxt >= 0xFFFFFFF7 or not 2 <= nxt < b.count + 2:
            break
        out.append(nxt)
        c = nxt
    return out


def _exfat_root(dev: BlockDevice, offset: int, b: ExfatBoot, fat: _ExfatFat) -> bytes:
    data, c, seen = bytearray(), b.root_cluster, set()
    while 2 <= c < b.count + 2 and c not in seen and len(data) < (4 << 20):
        seen.add(c)
        data += dev.read(offset + b.cluster_pos(c), b.cluster_size)
        if c >= len(fat) or fat[c] >= 0xFFFFFFF7 or fat[c] == 0:
            break
        c = fat[c]
    return bytes(data)


def exfat_info(dev: BlockDevice, offset: int, b: ExfatBoot) -> tuple[str | None, tuple[int, int] | None]:
    """(label, (bitmap first cluster, bitmap bytes)) from the root directory."""
    fat = _exfat_fat(dev, offset, b)
    root = _exfat_root(dev, offset, b, fat)
    label, bitmap = None, None
    for i in range(0, len(root) - 31, 32):
        t = root[i]
        if t == 0:
            break
        if t == 0x81 and bitmap is None and not root[i + 1] & 1:
            first, length = struct.unpack_from("<IQ", root, i + 20)
            bitmap = (first, length)
        elif t == 0x83:
            n = min(root[i + 1], 11)
            label = root[i + 2:i + 2 + 2 * n].decode("utf-16-le", "replace") or None
    return label, bitmap


def exfat_used_ranges(dev: BlockDevice, offset: int, size: int, b: ExfatBoot) -> tuple[list[tuple[int, int]], int]:
    """Boot regions + FAT(s) (everything before the cluster heap), clusters set in the allocation bitmap,
    and everything after the last cluster."""
    _label, bm = exfat_info(dev, offset, b)
    if bm is None:
        raise RescueError(f"exFAT on {dev.path} at {offset}: no allocation bitmap entry in the root directory")
    first, length = bm
    where = f"exFAT on {dev.path} at {offset}"
    need = (b.count + 7) // 8
    if length < need:
        raise RescueError(f"{where}: the allocation bitmap is {length} bytes, {b.count} clusters need {need}")
    if not 2 <= first < b.count + 2:
        raise RescueError(f"{where}: the allocation bitmap starts at cluster {first}, outside the cluster heap")
    fat = _exfat_fat(dev, offset, b)
    nclus = -(-need // b.cluster_size)
    chain = _chain(fat, first, b, nclus)
    if len(chain) < nclus:
        raise RescueError(f"{where}: the allocation bitmap's cluster chain ends after {len(chain)} of "
                          f"{nclus} clusters")
    if any(b.cluster_pos(c) + b.cluster_size > size for c in (max(chain), b.root_cluster)):
        raise RescueError(f"{where}: the allocation bitmap or root directory lies past the partition's end")
    rb = RangeBuilder()
    heap = b.heap_offset * b.bytes_per_sector
    rb.add(0, heap)
    used, done = 0, 0
    for c in chain:
        n = min(b.cluster_size, need - done)
        used += rb.add_bitmap(dev.read(offset + b.cluster_pos(c), n), done * 8, b.cluster_size, heap, b.count)
        done += n
    # The bitmap's own clusters and the root directory are always allocated: if the map says they are
    # free, it is not this volume's allocation map and using it would leave data out.
    ranges = rb.result()
    for c in chain + [b.root_cluster]:
        if not covered(ranges, b.cluster_pos(c), b.cluster_size):
            raise RescueError(f"{where}: the allocation bitmap marks cluster {c} (bitmap or root directory) "
                              f"free: it is not this volume's allocation map")
    end = heap + b.count * b.cluster_size
    rb.add(end, size - end)
    return rb.result(clip=size), used

"""Add a small folder tree to a freshly made exFAT volume, without mounting it (exFAT specification 6-7).

exfatprogs has ``mkfs.exfat`` but no mtools-like writer, and the USB data partition must hold an initialised
repository (a few folders and the ``config`` file).  This writes exactly that: each folder and file in one
contiguous run of clusters after the last allocated one (``NoFatChain``, so the FAT is untouched), directory entry
sets (File, Stream Extension, File Name entries) with their checksums and name hashes, and the allocation bitmap.
The volume is read with the runtime's own parser (:mod:`rescuekit.disk.fat`).  ``fsck.exfat -n`` checks the result
in the tests.  Names are matched as Windows does, upper-cased; only ASCII names are supported (what a repository
holds), so upper-casing needs no up-case table lookup.
"""
from __future__ import annotations

import datetime as _dt
import os
import struct
from pathlib import Path

from rescuekit.disk.device import open_target
from rescuekit.disk.fat import ExfatBoot, exfat_info, parse_exfat_boot
from rescuekit.errors import RescueError

_ATTR_DIR, _ATTR_ARCHIVE = 0x10, 0x20
_FLAGS_CONTIGUOUS = 0x03  # AllocationPossible | NoFatChain
_ENTRY = 32


def _rot16(chk: int, byte: int) -> int:
    return ((((chk & 1) << 15) | (chk >> 1)) + byte) & 0xFFFF


def name_hash(name: str) -> int:
    """NameHash of the Stream Extension entry (7.6.4): over the up-cased name in UTF-16LE."""
    chk = 0
    for b in name.upper().encode("utf-16-le"):
        chk = _rot16(chk, b)
    return chk


def set_checksum(entries: bytes) -> int:
    """SetChecksum of a directory entry set (6.3.3): all bytes except the checksum field itself."""
    chk = 0
    for i, b in enumerate(entries):
        if i not in (2, 3):
            chk = _rot16(chk, b)
    return chk


def _timestamp(t: _dt.datetime) -> int:
    return ((t.year - 1980) << 25) | (t.month << 21) | (t.day << 16) | (t.hour << 11) | (t.minute << 5) | (t.second // 2)


def entry_set(name: str, *, is_dir: bool, first_cluster: int, length: int, when: _dt.datetime) -> bytes:
    """File + Stream Extension + File Name entries for one folder or file."""
    if not name or len(name) > 255 or not name.isascii() or any(c in name for c in '"*/:<>?\\|\0'):
        raise RescueError(f"exFAT: unsupported file name {name!r}")
    utf16 = name.encode("utf-16-le")
    parts = [utf16[i:i + 30] for i in range(0, len(utf16), 30)]
    ts = _timestamp(when)
    file_e = bytearray(_ENTRY)
    file_e[0], file_e[1] = 0x85, 1 + len(parts)
    struct.pack_into("<H", file_e, 4, _ATTR_DIR if is_dir else _ATTR_ARCHIVE)
    struct.pack_into("<III", file_e, 8, ts, ts, ts)
    file_e[22:25] = b"\x80\x80\x80"  # UTC offsets valid, +00:00
    stream = bytearray(_ENTRY)
    stream[0], stream[1], stream[3] = 0xC0, _FLAGS_CONTIGUOUS if length else 0x01, len(name)
    struct.pack_into("<H", stream, 4, name_hash(name))
    struct.pack_into("<Q", stream, 8, length)  # ValidDataLength (= DataLength: written in full)
    struct.pack_into("<IQ", stream, 20, first_cluster if length else 0, length)
    names = b"".join(bytes([0xC1, 0]) + p.ljust(30, b"\0") for p in parts)
    out = bytearray(file_e + stream + names)
    struct.pack_into("<H", out, 2, set_checksum(out))
    return bytes(out)


class _Volume:
    def __init__(self, dev, offset: int, boot: ExfatBoot) -> None:
        self.dev, self.offset, self.b = dev, offset, boot
        _label, bm = exfat_info(dev, offset, boot)
        if bm is None:
            raise RescueError(f"exFAT on {dev.path}: no allocation bitmap in the root directory")
        self.bitmap_pos = offset + boot.cluster_pos(bm[0])
        self.bitmap = bytearray(dev.read(self.bitmap_pos, (boot.count + 7) // 8))
        used = [i for i, byte in enumerate(self.bitmap) if byte]
        last = max(used) * 8 + (self.bitmap[max(used)].bit_length() - 1) if used else -1
        self.next = last + 1 + 2  # first cluster after the last allocated one

    def allocate(self, nbytes: int) -> int:
        n = -(-nbytes // self.b.cluster_size)
        first = self.next
        if first - 2 + n > self.b.count:
            raise RescueError(f"exFAT on {self.dev.path}: no room for {nbytes} bytes")
        for c in range(first, first + n):
            self.bitmap[(c - 2) // 8] |= 1 << ((c - 2) % 8)
        self.next += n
        return first

    def pos(self, cluster: int) -> int:
        return self.offset + self.b.cluster_pos(cluster)


def _write_dir(vol: _Volume, folder: Path, when: _dt.datetime) -> bytes:
    """Write ``folder``'s children (recursively) and return its directory entries."""
    entries = bytearray()
    for child in sorted(folder.iterdir(), key=lambda p: p.name):
        if child.is_dir():
            body = _write_dir(vol, child, when)
            size = max(len(body), 1)
            size = -(-size // vol.b.cluster_size) * vol.b.cluster_size  # a directory is whole clusters
            first = vol.allocate(size)
            vol.dev.write(vol.pos(first), body.ljust(size, b"\0"))
            entries += entry_set(child.name, is_dir=True, first_cluster=first, length=size, when=when)
        elif child.is_file():
            data = child.read_bytes()  # repository skeleton files are tiny
            first = vol.allocate(len(data)) if data else 0
            if data:
                pad = -len(data) % vol.b.cluster_size
                vol.dev.write(vol.pos(first), data + b"\0" * pad)
            entries += entry_set(child.name, is_dir=False, first_cluster=first, length=len(data), when=when)
        else:
            raise RescueError(f"exFAT: cannot store {child} (not a file or folder)")
    return bytes(entries)


def add_tree(image: Path, tree: Path, *, offset: int = 0) -> None:
    """Copy the contents of folder ``tree`` into the root of the exFAT volume at ``offset`` of ``image``."""
    with open_target(str(image)) as dev:
        boot = parse_exfat_boot(dev.read(offset, 512))
        if boot is None:
            raise RescueError(f"no exFAT volume in {image} at offset {offset}")
        vol = _Volume(dev, offset, boot)
        when = _dt.datetime.now(_dt.UTC)
        epoch = os.environ.get("SOURCE_DATE_EPOCH")
        if epoch and epoch.isdigit():
            when = _dt.datetime.fromtimestamp(int(epoch), _dt.UTC)
        new = _write_dir(vol, tree, when)
        # The root directory of a fresh volume is one cluster holding the bitmap, up-case and label entries:
        # append after its last used entry.
        root_pos = vol.pos(boot.root_cluster)
        root = dev.read(root_pos, boot.cluster_size)
        end = next((i for i in range(0, len(root), _ENTRY) if root[i] == 0), len(root))
        if end + len(new) > len(root):
            raise RescueError(f"exFAT on {image}: the new entries do not fit the root directory's first cluster")
        dev.write(root_pos + end, new)
        dev.write(vol.bitmap_pos, bytes(vol.bitmap))
        dev.flush()

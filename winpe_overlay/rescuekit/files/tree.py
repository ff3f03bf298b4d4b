"""One directory-tree model over the volume parsers (disk.ntfs, disk.fat): list, look up, read files."""
from __future__ import annotations

import fnmatch
import struct
from dataclasses import dataclass, field

from rescuekit.disk import fat, ntfs
from rescuekit.disk.device import BlockDevice
from rescuekit.errors import RescueError

FILE_ATTRIBUTE_READONLY, FILE_ATTRIBUTE_HIDDEN, FILE_ATTRIBUTE_SYSTEM = 0x1, 0x2, 0x4
FILE_ATTRIBUTE_DIRECTORY, FILE_ATTRIBUTE_ARCHIVE = 0x10, 0x20
FILE_ATTRIBUTE_SPARSE, FILE_ATTRIBUTE_REPARSE, FILE_ATTRIBUTE_COMPRESSED = 0x200, 0x400, 0x800
FILE_ATTRIBUTE_ENCRYPTED = 0x4000
ATTR_LETTERS = ((FILE_ATTRIBUTE_READONLY, "R"), (FILE_ATTRIBUTE_HIDDEN, "H"), (FILE_ATTRIBUTE_SYSTEM, "S"),
                (FILE_ATTRIBUTE_ARCHIVE, "A"), (FILE_ATTRIBUTE_SPARSE, "P"), (FILE_ATTRIBUTE_REPARSE, "L"),
                (FILE_ATTRIBUTE_COMPRESSED, "C"), (FILE_ATTRIBUTE_ENCRYPTED, "E"))
MAX_DEPTH = 256  # deeper trees are refused: a crafted volume's loops must end
FILETIME_EPOCH = 116444736000000000


def filetime(ft: int) -> float | None:
    return None if ft <= 0 else (ft - FILETIME_EPOCH) / 1e7


@dataclass
class Node:
    name: str  # as stored (long, Unicode, case kept)
    path: str  # "/"-separated from the volume root
    is_dir: bool
    size: int
    mtime: float | None
    ctime: float | None
    attributes: int  # FILE_ATTRIBUTE_* bits
    links: int = 1
    streams: list[tuple[str, int]] = field(default_factory=list)  # NTFS alternate data streams (name, size)
    reparse: bool = False
    encrypted: bool = False
    ref: object = None  # the file system's own handle (NTFS record number, FatEntry)
    error: str | None = None  # the entry is listed but its record cannot be read (why)

    @property
    def attr_text(self) -> str:
        return "".join(ch if self.attributes & bit else "-" for bit, ch in ATTR_LETTERS)

    def doc(self) -> dict:
        d = {"name": self.name, "path": self.path, "type": "dir" if self.is_dir else "file", "size": self.size,
             "modified": self.mtime, "created": self.ctime, "attributes": self.attr_text}
        if self.error:
            d["error"] = self.error
        if isinstance(self.ref, int):
            d.update(record=self.ref, links=self.links, reparse=self.reparse, encrypted=self.encrypted,
                     streams=[{"name": n, "size": s} for n, s in self.streams])
        return d


def _join(parent: str, name: str) -> str:
    return f"{parent.rstrip('/')}/{name}"


def stream_extents(st: ntfs.NtfsStream, cs: int) -> list[tuple[int, int]]:
    """The volume byte ranges ``ntfs.iter_stream`` reads for ``st``, in order: the allocated runs, up to the
    initialized size (compressed: the real clusters of the units up to the size). Holes read nothing."""
    if st.resident is not None:
        return []
    limit = -(-st.size // (st.unit * cs)) * st.unit * cs if st.unit else min(st.size, st.initialized)
    out, vcn = [], 0
    for lcn, length in st.runs:
        a, b = vcn * cs, min((vcn + length) * cs, limit)
        if lcn is not None and a < b:
            out.append((lcn * cs, b - a))
        vcn += length
        if b >= limit:
            break
    return out


class Tree:
    kind = "?"
    # Set by the source: called with the volume byte ranges a read is about to go through, in order; returns a
    # context manager during which those (and only those) may be fetched ahead (a repository image's chunks).
    readahead = None

    def root(self) -> Node:
        raise NotImplementedError

    def listdir(self, node: Node) -> list[Node]:
        raise NotImplementedError

    def read(self, node: Node, stream: str = "", start: int = 0):
        """Yield the bytes of ``node`` (or its stream) in pieces, from byte ``start`` on (the data before it
        is not read: only the allocation structures are walked to find where ``start`` lies)."""
        raise NotImplementedError

    def child(self, node: Node, name: str) -> Node | None:
        want = name.casefold()
        return next((n for n in self.listdir(node) if n.name.casefold() == want), None)

    def lookup(self, path: str) -> Node:
        node = self.root()
        for part in (p for p in path.replace("\\", "/").split("/") if p):
            if not node.is_dir:
                raise RescueError(f"{node.path} is a file, not a folder (looking up {path})")
            found = self.child(node, part)
            if found is None:
                raise RescueError(f"no such file or folder: {path} (nothing called {part!r} in "
                                  f"{node.path or '/'})")
            node = found
        return node

    def walk(self, node: Node, depth: int = 0, seen: frozenset = frozenset()):
        """Yield (node, children) top-down; folder loops and absurd depths are errors, not hangs."""
        key = self._key(node)
        if key in seen or depth > MAX_DEPTH:
            raise RescueError(f"folder {node.path or '/'} loops back to its own parent or is deeper than "
                              f"{MAX_DEPTH} levels: the volume's directory structure is damaged")
        kids = self.listdir(node)
        yield node, kids
        for k in kids:
            if k.is_dir and not k.error:
                yield from self.walk(k, depth + 1, seen | {key})

    def _key(self, node: Node) -> object:
        return node.path

    def find(self, pattern: str, start: Node | None = None):
        """Nodes whose name matches the glob ``pattern`` (case-insensitive), anywhere under ``start``."""
        pat = pattern.casefold()
        for _node, kids in self.walk(start or self.root()):
            for k in kids:
                if fnmatch.fnmatchcase(k.name.casefold(), pat):
                    yield k


class NtfsTree(Tree):
    kind = "ntfs"

    def __init__(self, dev: BlockDevice) -> None:
        self.vol = ntfs.NtfsVolume(dev, 0)

    def _node(self, number: int, name: str, path: str) -> Node:
        rec, attrs = ntfs.attribute_list(self.vol.dev, 0, self.vol.boot, number)
        flags, links = struct.unpack_from("<H", rec, 0x16)[0], struct.unpack_from("<H", rec, 0x12)[0]
        if not flags & 1:
            raise RescueError(f"{path}: MFT record {number} is not in use (the directory entry is stale)")
        is_dir = bool(flags & 2)
        ctime = mtime = None
        fattr = 0
        apos = ntfs._find_unnamed(rec, ntfs.AT_STANDARD_INFORMATION)
        if apos is not None and rec[apos + 8] == 0:
            si = ntfs._resident_value(rec, apos)
            if len(si) >= 36:
                c, m = struct.unpack_from("<QQ", si, 0)
                ctime, mtime, fattr = filetime(c), filetime(m), struct.unpack_from("<I", si, 32)[0]
        size, streams = 0, []
        for t, sname in attrs:
            if t != ntfs.AT_DATA:
                continue
            st = ntfs.data_stream(self.vol, number, sname)
            if st is None:
                continue
            if sname:
                streams.append((sname, st.size))
            else:
                size = st.size
        reparse = any(t == ntfs.AT_REPARSE_POINT for t, _n in attrs) or bool(fattr & FILE_ATTRIBUTE_REPARSE)
        encrypted = bool(fattr & FILE_ATTRIBUTE_ENCRYPTED) or \
            any(t == ntfs.AT_LOGGED_UTILITY_STREAM and n == "$EFS" for t, n in attrs)
        if is_dir:
            fattr |= FILE_ATTRIBUTE_DIRECTORY
        return Node(name, path, is_dir, 0 if is_dir else size, mtime, ctime, fattr, links, streams, reparse,
                    encrypted, number)

    def root(self) -> Node:
        n = self._node(ntfs.FILE_ROOT, "", "")
        n.path = ""
        return n

    def listdir(self, node: Node) -> list[Node]:
        out = []
        for e in self.vol.listdir(node.ref):
            if node.ref == ntfs.FILE_ROOT and e.record < 16 and e.name.startswith("$") or e.name == ".":
                continue  # the metadata files ($MFT, $Bitmap, ...) are not user files
            out.append(self._entry(e, node.path))
        return out

    def _entry(self, e: ntfs.DirEntry, parent: str) -> Node:
        path = _join(parent, e.name)
        try:
            return self._node(e.record, e.name, path)
        except RescueError as exc:  # one damaged record must not hide its folder's other entries
            return Node(e.name, path, e.is_dir, e.size, None, None, 0, ref=e.record, error=str(exc))

    def child(self, node: Node, name: str) -> Node | None:
        e = self.vol.find(node.ref, name)
        if e is None:
            return None
        return self._entry(e, node.path)

    def _key(self, node: Node) -> object:
        return node.ref

    def read(self, node: Node, stream: str = "", start: int = 0):
        where = f"{node.path}{':' + stream if stream else ''}"
        if node.error:
            raise RescueError(node.error)
        st = ntfs.data_stream(self.vol, node.ref, stream)
        if st is None:
            return
        st, skip = _stream_from(st, start, self.vol.boot.cluster_size)
        if self.readahead is None:
            yield from _skip(ntfs.iter_stream(self.vol, st, where), skip)
            return
        with self.readahead(stream_extents(st, self.vol.boot.cluster_size)):
            yield from _skip(ntfs.iter_stream(self.vol, st, where), skip)


def _stream_from(st: ntfs.NtfsStream, start: int, cs: int) -> tuple[ntfs.NtfsStream, int]:
    """``st`` cut to begin at the cluster (compressed: the compression unit) holding byte ``start``, and how
    many bytes of its first piece come before ``start``."""
    if start <= 0:
        return st, 0
    if st.resident is not None:
        rest = st.resident[start:]
        return ntfs.NtfsStream(len(rest), rest, [], len(rest), st.flags, 0), 0
    if start >= st.size:
        return ntfs.NtfsStream(0, None, [], 0, st.flags, st.unit), 0
    step = st.unit or 1
    vcn = start // (step * cs) * step
    total = sum(n for _l, n in st.runs)
    cut = vcn * cs
    return ntfs.NtfsStream(st.size - cut, None, ntfs._runs_slice(st.runs, vcn, max(0, total - vcn)),
                           max(0, st.initialized - cut), st.flags, st.unit), start - cut


def _skip(pieces, n: int):
    """``pieces`` without their first ``n`` bytes."""
    for piece in pieces:
        if n >= len(piece):
            n -= len(piece)
            continue
        yield memoryview(piece)[n:] if n else piece
        n = 0


class _BootTree(Tree):
    """A tree whose volume is described by its boot sector alone (FAT, exFAT); the root has no entry."""

    parse = staticmethod(fat.parse_fat_boot)
    what = "FAT"

    def __init__(self, dev: BlockDevice) -> None:
        self.dev = dev
        b = self.parse(dev.read(0, 512))
        if b is None:
            raise RescueError(f"no {self.what} boot sector on {dev.path}")
        self.boot = b

    def root(self) -> Node:
        return Node("", "", True, 0, None, None, FILE_ATTRIBUTE_DIRECTORY, ref=None)


class FatTree(_BootTree):
    kind = "fat"

    def _node(self, e: fat.FatEntry, path: str) -> Node:
        return Node(e.name, path, e.is_dir, 0 if e.is_dir else e.size, e.mtime, e.ctime, e.attributes & 0x37,
                    ref=e)

    def listdir(self, node: Node) -> list[Node]:
        return [self._node(e, _join(node.path, e.name)) for e in fat.fat_listdir(self.dev, 0, self.boot, node.ref)]

    def _key(self, node: Node) -> object:
        return node.ref.cluster if node.ref is not None else 0

    def read(self, node: Node, stream: str = "", start: int = 0):
        if stream:
            return
        e: fat.FatEntry = node.ref
        b, cs = self.boot, self.boot.cluster_size
        left, c, seen = e.size, e.cluster, set()
        skip = min(start, e.size)
        while skip >= cs:  # whole clusters before ``start``: follow the chain without reading them
            if not 2 <= c < b.count + 2 or c in seen:
                raise RescueError(f"{node.path}: its cluster chain ends or loops after {e.size - left} bytes")
            seen.add(c)
            nxt = fat.fat_next(self.dev, 0, b, c)
            c = nxt if nxt is not None else -1
            left -= cs
            skip -= cs
        yield from _skip(self._chain(node, left, c, seen), skip)

    def _chain(self, node: Node, left: int, c: int, seen: set):
        e: fat.FatEntry = node.ref
        b, cs = self.boot, self.boot.cluster_size
        while left > 0:
            if not 2 <= c < b.count + 2:
                raise RescueError(f"{node.path}: its cluster chain ends after {e.size - left} of {e.size} bytes")
            if c in seen:
                raise RescueError(f"{node.path}: its cluster chain loops (cluster {c})")
            # a run of consecutive clusters is read at once (files are mostly contiguous)
            first, n = c, 0
            while left - n * cs > 0 and n * cs < (1 << 20) and c == first + n and c not in seen:
                seen.add(c)
                n += 1
                nxt = fat.fat_next(self.dev, 0, b, c)
                c = nxt if nxt is not None else -1
            take = min(n * cs, left)
            yield self.dev.read(b.data_start + (first - 2) * cs, take)
            left -= take


class ExfatTree(_BootTree):
    kind = "exfat"
    parse = staticmethod(fat.parse_exfat_boot)
    what = "exFAT"

    def listdir(self, node: Node) -> list[Node]:
        return [Node(e.name, _join(node.path, e.name), e.is_dir, 0 if e.is_dir else e.size, e.mtime, e.ctime,
                     e.attributes & 0x37, ref=e) for e in fat.exfat_listdir(self.dev, 0, self.boot, node.ref)]

    def _key(self, node: Node) -> object:
        return node.ref.cluster if node.ref is not None else self.boot.root_cluster

    def read(self, node: Node, stream: str = "", start: int = 0):
        if stream:
            return
        e: fat.ExfatEntry = node.ref
        b = self.boot
        fo = 0  # the file offset where the current run begins
        for c, n in fat.exfat_clusters(self.dev, 0, b, e.cluster, e.size, e.contiguous, node.path):
            end = min(fo + n * b.cluster_size, e.size)
            pos = max(fo, start)
            while pos < end:
                take = min(1 << 20, end - pos)
                real = min(take, max(0, e.valid - pos))  # past the valid data length: zeros
                piece = self.dev.read(b.cluster_pos(c) + pos - fo, real) if real else b""
                yield piece + bytes(take - real) if real < take else piece
                pos += take
            fo += n * b.cluster_size


def open_tree(dev: BlockDevice, kind: str, readahead=None) -> Tree:
    """The tree of the ``kind`` volume spanning ``dev`` (``readahead``: see ``Tree.readahead``)."""
    if kind == "ntfs":
        tree: Tree = NtfsTree(dev)
    elif kind in ("fat12", "fat16", "fat32"):
        tree = FatTree(dev)
    elif kind == "exfat":
        tree = ExfatTree(dev)
    else:
        raise RescueError(f"{dev.path}: cannot browse a {kind} volume")
    tree.readahead = readahead
    return tree

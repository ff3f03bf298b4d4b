"""Pack files: blobs appended one after another, then a header, its length and a magic.

    blob_0 || blob_1 || ... || zstd(header_json) || u32le(len(zstd(header_json))) || b"RKPACK01"

A blob is a group of up to 8 consecutive new chunks (2 MiB), compressed together with zstd (or stored as is
when that does not make it smaller): dedup works per chunk, compression sees 2 MiB of context.
Header rows: [chunk id, blob offset, blob length, chunk length, zstd 0/1, chunk offset inside the group].

A pack is written to a temp name, fsynced and renamed to ``data/<xx>/<blake3 of the whole file>.pack``,
so its name verifies its content and a crash never leaves a half pack under a real name.
"""
from __future__ import annotations

import json
import os
import re
import secrets
import struct
from typing import NamedTuple
from pathlib import Path

import blake3
import zstandard

from rescuekit.errors import RescueError
from rescuekit.repo.config import FORMAT_VERSION, MAX_BLOB, MAX_CHUNK_SIZE, check_version
from rescuekit.repo.fsutil import fsync_dir, pread

PACK_MAGIC = b"RKPACK01"
TRAILER = struct.Struct("<I8s")

# Fault injection for tests only: after this many bytes of pack data (all packs of the process), raise ENOSPC
# (real ENOSPC on a tiny tmpfs is tested too).
_FAULT_ENV = "RESCUEKIT_TEST_PACK_ENOSPC_AFTER"
_fault_written = 0


class CorruptFile(RescueError):
    """A repository file that cannot be read (as opposed to one of a newer format version)."""


class Entry(NamedTuple):
    """Where a chunk lives: pack, offset + length of its blob in the pack, chunk length, codec, and the
    chunk's offset inside the (decompressed) blob. A tuple: the index holds one per chunk in memory."""

    pack: str
    offset: int
    clen: int
    ulen: int
    zstd: bool
    skip: int = 0

    def row(self, chunk_id: str) -> list:
        return [chunk_id, self.offset, self.clen, self.ulen, 1 if self.zstd else 0, self.skip]

    @classmethod
    def from_row(cls, pack: str, row: list) -> "Entry":
        return cls(pack, row[1], row[2], row[3], bool(row[4]), row[5])


_ID = re.compile(r"[0-9a-f]{64}")
_MAX = 1 << 48  # no pack offset comes near this


def is_id(value: object) -> bool:
    """A BLAKE3-256 id as the repository writes it: 64 lower-case hex digits."""
    return type(value) is str and _ID.fullmatch(value) is not None


def _row_ok(r: object) -> bool:
    if type(r) is not list or len(r) != 6:
        return False
    cid, off, clen, ulen, z, skip = r
    return (type(cid) is str and _ID.fullmatch(cid) is not None and type(off) is int and type(clen) is int
            and type(ulen) is int and type(skip) is int and 0 <= off < _MAX and 0 < clen <= MAX_BLOB
            and 0 <= ulen <= MAX_CHUNK_SIZE and 0 <= skip < MAX_BLOB and (z == 0 or z == 1) and type(z) is int)


def check_rows(rows: object, where: str) -> list[list]:
    """Chunk rows as in a pack header or index file, validated so that no reader trips over a bad field."""
    if type(rows) is not list or not all(map(_row_ok, rows)):
        raise CorruptFile(f"{where}: corrupt chunk list (malformed row)")
    return rows  # type: ignore[return-value]


def unzstd(data: bytes, limit: int, dctx: zstandard.ZstdDecompressor | None = None) -> bytes:
    """Decompress one zstd frame of at most ``limit`` bytes: a corrupt size field in the frame header must
    not make us allocate gigabytes (zstandard trusts it). Raises zstandard.ZstdError."""
    size = zstandard.frame_content_size(data)
    if size > limit:
        raise zstandard.ZstdError(f"frame claims {size} bytes")
    return (dctx or zstandard.ZstdDecompressor()).decompress(data, max_output_size=limit)


def json_limit(compressed: int) -> int:
    """Largest plausible decompressed size of zstd-compressed JSON (ids are random hex: ratio ~2)."""
    return 64 * compressed + (1 << 20)


def pack_path(root: Path, pack_id: str) -> Path:
    return root / "data" / pack_id[:2] / f"{pack_id}.pack"


def pack_files(root: Path) -> dict[str, Path]:
    """The packs present on disk, by id."""
    return {p.stem: p for p in (root / "data").glob("*/*.pack")}


def pack_shortfall(root: Path, ends: dict[str, int]) -> tuple[str, str] | None:
    """The first pack of ``ends`` (pack id -> bytes its used blobs need) that is missing or shorter than that:
    (pack id, "is missing from ..." / "is truncated ..."), or None. Checked before anything is written."""
    for pack_id, need in sorted(ends.items()):
        try:
            size = pack_path(root, pack_id).stat().st_size
        except FileNotFoundError:
            return pack_id, f"is missing from {root}"
        if size < need:
            return pack_id, f"is truncated ({size} of at least {need} bytes)"
    return None


def pack_ends(entries) -> dict[str, int]:
    """pack id -> end of the last blob ``entries`` (Entry objects) use in it."""
    ends: dict[str, int] = {}
    for e in entries:
        ends[e.pack] = max(ends.get(e.pack, 0), e.offset + e.clen)
    return ends


class PackWriter:
    """Appends blobs to a temp pack file; ``finish`` makes it durable under its content hash."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.tmp = root / "data" / f".pack-{secrets.token_hex(8)}.tmp"
        self._f = open(self.tmp, "wb")
        self._hash = blake3.blake3()
        self.size = 0
        self.rows: list[list] = []  # [chunk_id, offset, clen, ulen, zstd]
        limit = os.environ.get(_FAULT_ENV)
        self._fault_after = int(limit) if limit else None

    def add(self, blob: bytes, zstd: bool, members: list[tuple[str, int, int]]) -> list[list]:
        """Append one blob holding ``members`` = [(chunk id, offset in the group, length)]; returns rows."""
        if self._fault_after is not None:
            global _fault_written
            if _fault_written + len(blob) > self._fault_after:
                import errno
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(self.tmp))
            _fault_written += len(blob)
        self._f.write(blob)
        self._hash.update(blob)
        rows = [Entry("", self.size, len(blob), ulen, zstd, skip).row(cid) for cid, skip, ulen in members]
        self.rows.extend(rows)
        self.size += len(blob)
        return rows

    def finish(self) -> tuple[str, list[list]]:
        """Write header + trailer, fsync, rename; return (pack id, rows). On error the temp file goes."""
        try:
            return self._finish()
        except BaseException:
            self.abort()
            raise

    def _finish(self) -> tuple[str, list[list]]:
        header = zstandard.ZstdCompressor(level=3).compress(
            json.dumps({"version": FORMAT_VERSION, "chunks": self.rows}, separators=(",", ":")).encode())
        tail = header + TRAILER.pack(len(header), PACK_MAGIC)
        self._f.write(tail)
        self._hash.update(tail)
        self._f.flush()
        os.fsync(self._f.fileno())
        self._f.close()
        pack_id = self._hash.hexdigest()
        final = pack_path(self.root, pack_id)
        if not final.parent.is_dir():
            final.parent.mkdir(exist_ok=True)
            fsync_dir(final.parent.parent)  # the new data/<xx> entry must be durable before an index names it
        os.replace(self.tmp, final)
        fsync_dir(final.parent)
        return pack_id, self.rows

    def abort(self) -> None:
        try:
            self._f.close()
        except OSError:
            pass
        try:
            self.tmp.unlink()
        except OSError:
            pass


def _header(read_at, size: int, where: str) -> list[list]:
    """A pack's header rows, given ``read_at(offset, length)`` over its ``size`` bytes (the one parser)."""
    try:
        if size < TRAILER.size:
            raise CorruptFile(f"{where}: truncated pack ({size} bytes)")
        hlen, magic = TRAILER.unpack(read_at(size - TRAILER.size, TRAILER.size))
        if magic != PACK_MAGIC or hlen > size - TRAILER.size:
            raise CorruptFile(f"{where}: not a pack file (bad trailer)")
        doc = json.loads(unzstd(read_at(size - TRAILER.size - hlen, hlen), json_limit(hlen)))
        if not isinstance(doc, dict):
            raise ValueError("not an object")
    except (ValueError, UnicodeDecodeError, zstandard.ZstdError):
        raise CorruptFile(f"{where}: corrupt pack header") from None
    check_version(doc.get("version"), where)
    return check_rows(doc.get("chunks"), f"{where}: pack header")


def read_pack_header(path: Path) -> list[list]:
    """The chunk rows a pack's own header lists (used by verify and index rebuilding)."""
    with open(path, "rb") as f:
        def read_at(offset: int, n: int) -> bytes:
            f.seek(offset)
            return f.read(n)

        return _header(read_at, os.fstat(f.fileno()).st_size, str(path))


def parse_pack_header(data: bytes, where: str) -> list[list]:
    """The same for a pack already read into memory."""
    return _header(lambda offset, n: data[offset:offset + n], len(data), where)


class PackReader:
    """Reads stored blobs from packs, keeping a file descriptor per pack (thread-safe reads)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._fds: dict[str, int] = {}

    def read_blob(self, entry: Entry) -> bytes:
        fd = self._fds.get(entry.pack)
        if fd is None:
            path = pack_path(self.root, entry.pack)
            try:
                fd = os.open(str(path), os.O_RDONLY | getattr(os, "O_BINARY", 0))
            except FileNotFoundError:
                raise RescueError(f"pack {entry.pack} is missing from the repository ({path})") from None
            old = self._fds.setdefault(entry.pack, fd)
            if old != fd:
                os.close(fd)
                fd = old
        blob = pread(fd, entry.clen, entry.offset)
        if len(blob) != entry.clen:
            raise RescueError(f"pack {entry.pack} is truncated at offset {entry.offset}")
        return blob

    def close(self) -> None:
        for fd in self._fds.values():
            os.close(fd)
        self._fds.clear()

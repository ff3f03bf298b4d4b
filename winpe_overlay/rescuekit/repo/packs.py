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
import secrets
import struct
from typing import NamedTuple
from pathlib import Path

import blake3
import zstandard

from rescuekit.errors import RescueError
from rescuekit.repo.config import FORMAT_VERSION, check_version
from rescuekit.repo.fsutil import fsync_dir, pread

PACK_MAGIC = b"RKPACK01"
TRAILER = struct.Struct("<I8s")

# Fault injection for tests only: after this many bytes of pack data (all packs of the process), raise ENOSPC
# (real ENOSPC on a tiny tmpfs is tested too).
_FAULT_ENV = "RESCUEKIT_TEST_PACK_ENOSPC_AFTER"
_fault_written = 0


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


def pack_path(root: Path, pack_id: str) -> Path:
    return root / "data" / pack_id[:2] / f"{pack_id}.pack"


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
        final.parent.mkdir(exist_ok=True)
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


def read_pack_header(path: Path) -> list[list]:
    """The chunk rows a pack's own header lists (used by verify and index rebuilding)."""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            if size < TRAILER.size:
                raise RescueError(f"{path}: truncated pack ({size} bytes)")
            f.seek(size - TRAILER.size)
            hlen, magic = TRAILER.unpack(f.read(TRAILER.size))
            if magic != PACK_MAGIC or hlen > size - TRAILER.size:
                raise RescueError(f"{path}: not a pack file (bad trailer)")
            f.seek(size - TRAILER.size - hlen)
            doc = json.loads(zstandard.ZstdDecompressor().decompress(f.read(hlen)))
    except (ValueError, UnicodeDecodeError, zstandard.ZstdError):
        raise RescueError(f"{path}: corrupt pack header") from None
    check_version(doc.get("version"), str(path))
    return doc["chunks"]


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

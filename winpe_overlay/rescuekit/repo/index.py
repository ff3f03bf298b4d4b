"""Index files: which pack holds each chunk. ``index/<blake3 of the file>.idx`` (zstd-compressed JSON).

    {"version": 1, "packs": {"<pack id>": [[chunk_id, offset, clen, ulen, zstd, skip], ...], ...}}

An index file is only written after all packs it names are durable; a chunk listed by several index files
(after an interrupted prune) is valid in each, so readers take any entry whose pack exists.
"""
from __future__ import annotations

import json
from collections.abc import Container
from pathlib import Path

import blake3
import zstandard

from rescuekit.repo.config import FORMAT_VERSION, check_version
from rescuekit.repo.fsutil import atomic_write
from rescuekit.repo.packs import CorruptFile, Entry, check_rows, is_id, json_limit, pack_files, read_pack_header, unzstd


class Index:
    def __init__(self) -> None:
        self.entries: dict[str, Entry] = {}
        self.packs: dict[str, list[list]] = {}  # pack id -> rows
        self.files: list[str] = []  # index file ids that were loaded

    def add_pack(self, pack_id: str, rows: list[list]) -> None:
        self.packs[pack_id] = rows
        for row in rows:
            self.entries.setdefault(row[0], Entry.from_row(pack_id, row))

    def __contains__(self, chunk_id: str) -> bool:
        return chunk_id in self.entries

    def get(self, chunk_id: str) -> Entry | None:
        return self.entries.get(chunk_id)

    def drop_missing(self, present: Container[str]) -> None:
        """Forget packs that are not on disk, so that a capture stores their chunks again instead of
        deduplicating against data that is gone, and readers use another listed copy when there is one."""
        gone = [p for p in self.packs if p not in present]
        if not gone:
            return
        for p in gone:
            del self.packs[p]
        self.entries = {}
        for pack_id, rows in self.packs.items():
            for row in rows:
                self.entries.setdefault(row[0], Entry.from_row(pack_id, row))


def index_files(root: Path) -> list[Path]:
    return sorted(p for p in (root / "index").glob("*.idx") if not p.name.startswith("."))


def read_index_file(path: Path) -> dict[str, list[list]]:
    try:
        data = path.read_bytes()
        doc = json.loads(unzstd(data, json_limit(len(data))))
        if not isinstance(doc, dict):
            raise TypeError
    except (OSError, ValueError, UnicodeDecodeError, TypeError, zstandard.ZstdError):
        raise CorruptFile(f"{path}: corrupt index file") from None
    check_version(doc.get("version"), str(path))  # before the layout: a newer version may lay it out differently
    packs = doc.get("packs")
    if not isinstance(packs, dict) or not all(is_id(k) for k in packs):
        raise CorruptFile(f"{path}: corrupt index file")
    for rows in packs.values():
        check_rows(rows, str(path))
    return packs


def load_index(root: Path) -> Index:
    """All index files; if one is corrupt (e.g. a power cut on FAT32), the packs no intact index file lists
    are read from their own headers instead (verify still reports the file; prune rewrites the index)."""
    idx = Index()
    corrupt = False
    for path in index_files(root):
        try:
            packs = read_index_file(path)
        except CorruptFile:
            corrupt = True
        else:
            for pack_id, rows in packs.items():
                idx.add_pack(pack_id, rows)
        idx.files.append(path.stem)  # prune's new index replaces corrupt files too
    if corrupt:
        for pack_id, rows in headers_of_unlisted(root, idx.packs).items():
            idx.add_pack(pack_id, rows)
    return idx


def headers_of_unlisted(root: Path, listed: Container[str]) -> dict[str, list[list]]:
    """Chunk rows from the headers of the packs on disk that ``listed`` does not name (unreadable ones skipped:
    their chunks stay missing, which verify reports)."""
    out = {}
    for pack_id, path in sorted(pack_files(root).items()):
        if pack_id not in listed:
            try:
                out[pack_id] = read_pack_header(path)
            except CorruptFile:
                continue
    return out


def write_index_file(root: Path, packs: dict[str, list[list]]) -> str:
    """Atomically write one index file covering ``packs``; returns its id."""
    data = zstandard.ZstdCompressor(level=3).compress(
        json.dumps({"version": FORMAT_VERSION, "packs": packs}, separators=(",", ":")).encode())
    idx_id = blake3.blake3(data).hexdigest()
    atomic_write(root / "index" / f"{idx_id}.idx", data)
    return idx_id

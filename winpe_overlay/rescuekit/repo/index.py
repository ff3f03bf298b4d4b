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

from rescuekit.errors import RescueError
from rescuekit.repo.config import FORMAT_VERSION, check_version
from rescuekit.repo.fsutil import atomic_write
from rescuekit.repo.packs import Entry, check_rows, is_id, json_limit, unzstd


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
        raise RescueError(f"{path}: corrupt index file") from None
    check_version(doc.get("version"), str(path))  # before the layout: a newer version may lay it out differently
    packs = doc.get("packs")
    if not isinstance(packs, dict) or not all(is_id(k) for k in packs):
        raise RescueError(f"{path}: corrupt index file")
    for rows in packs.values():
        check_rows(rows, str(path))
    return packs


def load_index(root: Path) -> Index:
    idx = Index()
    for path in index_files(root):
        for pack_id, rows in read_index_file(path).items():
            idx.add_pack(pack_id, rows)
        idx.files.append(path.stem)
    return idx


def write_index_file(root: Path, packs: dict[str, list[list]]) -> str:
    """Atomically write one index file covering ``packs``; returns its id."""
    data = zstandard.ZstdCompressor(level=3).compress(
        json.dumps({"version": FORMAT_VERSION, "packs": packs}, separators=(",", ":")).encode())
    idx_id = blake3.blake3(data).hexdigest()
    atomic_write(root / "index" / f"{idx_id}.idx", data)
    return idx_id

"""Opening/creating a repository and the operations captures and restores build on."""
from __future__ import annotations

import errno
import os
import threading
from collections import deque
from concurrent.futures import CancelledError, Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import blake3
import zstandard

from rescuekit.errors import RescueError, UsageError
from rescuekit.repo.config import FORMAT_VERSION, MAX_BLOB, SUBDIRS, RepoConfig, load_config, new_config, \
    upgrade_config
from rescuekit.repo.fsutil import atomic_write, fsync_dir
from rescuekit.repo.index import Index, load_index, write_index_file
from rescuekit.repo.lock import RepoLock
from rescuekit.repo.manifest import image_order, manifest_paths, next_seq, peek, peek_seq, read_manifest, \
    write_manifest
from rescuekit.repo.packs import Entry, PackReader, PackWriter, pack_files, unzstd

ZSTD_LEVEL = 3
INDEX_EVERY_PACKS = 16  # write an index file this often so an interrupted capture keeps its progress


def _config_leftover(name: str) -> bool:
    """The temp file of a config write interrupted while creating a repository (fsutil.temp_name)."""
    return name.startswith(".config.") and name.endswith(".tmp")


class Repository:
    def __init__(self, root: Path, config: RepoConfig) -> None:
        self.root = root
        self.config = config

    # -- opening -------------------------------------------------------------------------------------
    @classmethod
    def open(cls, path: str | Path) -> "Repository":
        root = Path(path)
        if root.exists() and not root.is_dir():
            raise UsageError(f"{root} is a file, not a repository folder")
        return cls(root, load_config(root))

    @classmethod
    def open_or_create(cls, path: str | Path, **cfg_args: int) -> "Repository":
        root = Path(path)
        if (root / "config").exists():
            return cls.open(root)
        if root.exists() and not root.is_dir():
            raise UsageError(f"{root} is a file, not a repository folder")
        if root.exists() and any(p.name not in SUBDIRS and not _config_leftover(p.name) for p in root.iterdir()):
            raise UsageError(f"{root} is a non-empty folder but not a rescuekit repository; use an empty or new folder")
        cfg = new_config(**cfg_args)
        root.mkdir(parents=True, exist_ok=True)
        for sub in SUBDIRS:
            (root / sub).mkdir(exist_ok=True)
        fsync_dir(root)
        for leftover in [p for p in root.iterdir() if _config_leftover(p.name)]:
            leftover.unlink(missing_ok=True)
        atomic_write(root / "config", cfg.to_json())  # config last: a half-created folder is not a repository
        return cls(root, cfg)

    def lock(self, *, exclusive: bool, command: str, force_unlock: bool = False) -> RepoLock:
        if os.access(self.root, os.W_OK):  # tolerate repositories copied without their empty folders
            for sub in SUBDIRS:
                try:
                    (self.root / sub).mkdir(exist_ok=True)
                except OSError:
                    pass  # e.g. a full medium: readers do not need them, writers say what fails
        return RepoLock(self.root, exclusive=exclusive, command=command, force_unlock=force_unlock)

    def upgrade(self) -> None:
        """Raise the repository to this format version before writing files of it (writers, under the lock)."""
        upgrade_config(self.root, self.config)

    # -- images --------------------------------------------------------------------------------------
    def scan_images(self) -> tuple[list[dict], list[tuple[Path, str]]]:
        """The readable manifests, oldest first (by sequence number), and [(path, why)] of the others."""
        docs, bad = [], []
        for p in manifest_paths(self.root):  # one bad manifest must not hide the other images
            try:
                docs.append(read_manifest(p))
            except RescueError as exc:
                bad.append((p, str(exc)))
        docs.sort(key=image_order)
        return docs, bad

    def find_image(self, selector: str | None) -> dict:
        """By id, unique id prefix, name (the newest with that name) or ``latest``."""
        paths = manifest_paths(self.root)
        if not paths:
            raise RescueError(f"repository {self.root} holds no images")
        sel = selector or "latest"
        exact = self.root / "images" / f"{sel}.json"
        if exact in paths:
            return read_manifest(exact)
        docs, bad = self.scan_images()
        pick = None
        if sel == "latest" and docs:
            pick = docs[-1]
        named = [d for d in docs if d.get("name") == sel]
        if named:
            pick = named[-1]
        if pick is not None:
            self._refuse_if_unsure(pick, bad, None if sel == "latest" else sel)
            return pick
        pref = [d for d in docs if d["id"].startswith(sel.lower())]
        if len(pref) == 1:
            return pref[0]
        if len(pref) > 1:
            raise UsageError(f"image id prefix {sel!r} is ambiguous in {self.root}: "
                             + ", ".join(d['id'][:12] for d in pref))
        skipped = f"; {len(bad)} unreadable manifest(s) skipped, first: {bad[0][1]}" if bad else ""
        raise RescueError(f"no image {sel!r} in repository {self.root} (see `rescuekit images {self.root}`)"
                          + skipped)

    def _refuse_if_unsure(self, pick: dict, bad: list[tuple[Path, str]], name: str | None) -> None:
        """An unreadable manifest that may be newer than ``pick`` (and may carry ``name``) makes the choice
        unsafe: restoring older data silently is the harm to avoid. Its seq/name are read as far as possible."""
        for path, why in bad:
            seen = peek(path)
            if name is not None and isinstance(seen.get("name"), str) and seen["name"] != name:
                continue
            seq, mine = peek_seq(path), pick.get("seq")
            if seq is not None and type(mine) is int and seq < mine:
                continue
            what = "the latest image" if name is None else f"the newest image named {name!r}"
            raise RescueError(f"cannot tell which is {what} in {self.root}: {why}, and it may be newer than "
                              f"image {pick['id']}; name the image by id (`rescuekit images {self.root}`) or "
                              f"remove the bad one (`rescuekit forget {self.root} {path.stem}`)")

    def add_image(self, doc: dict, lock: RepoLock) -> dict:
        """Write a new image's manifest under ``lock`` (exclusive), numbered after every image present."""
        lock.check_held()  # if another process took our lock for stale, our chunks may be gone: commit nothing
        self.upgrade()
        doc = {**doc, "version": FORMAT_VERSION, "seq": next_seq(self.root)}
        try:
            write_manifest(self.root, doc)
        except OSError as exc:
            what = "no space left on device" if exc.errno in (errno.ENOSPC, errno.EDQUOT) else exc.strerror
            raise RescueError(f"{what} writing the image manifest {exc.filename}; the image was not saved: free "
                              "space on that medium and capture again (the data stored so far is reused)") from None
        return doc

    def load_index(self) -> Index:
        """The index without packs that are missing on disk (see Index.drop_missing)."""
        index = load_index(self.root)
        index.drop_missing(pack_files(self.root))
        return index


@dataclass
class StoreStats:
    chunks: int = 0
    zero_chunks: int = 0
    new_chunks: int = 0
    new_bytes: int = 0  # plaintext bytes of new chunks
    new_stored_bytes: int = 0  # their size in packs
    packs: list[str] = field(default_factory=list)


class ChunkStore:
    """Writes new chunks into packs (size-capped), flushing index files after the packs are durable.

    Dedup bookkeeping happens in the caller's thread; appending blobs to the pack, hashing it and finishing
    it (fsync + rename) happen in order on one background I/O thread. Finished packs are registered in the
    index by the caller's thread, and index files only ever name finished (durable) packs.
    """

    MAX_QUEUED = 32  # blobs waiting for the I/O thread (bounds memory: <= 64 MiB of groups)

    def __init__(self, repo: Repository, index: Index) -> None:
        repo.upgrade()  # before the first pack or index file of this format version is written
        self.repo = repo
        self.index = index
        self.stats = StoreStats()
        self._writer: PackWriter | None = None  # used by the I/O thread only
        self._unindexed: dict[str, list[list]] = {}
        self._io = ThreadPoolExecutor(1, thread_name_prefix="pack-io")
        self._queued: deque[Future[tuple[str, list[list]] | None]] = deque()

    def add_group(self, blob: bytes, zstd: bool, members: list[tuple[str, int, int]]) -> None:
        """Store one compressed group of new chunks [(chunk id, offset in group, length)]."""
        # A concurrent batch may have stored some of them meanwhile: the blob keeps their bytes but lists only
        # the others (a chunk listed twice would make every prune rewrite the pack to drop the copy).
        fresh = [m for m in members if m[0] not in self.index]
        if not fresh:
            return
        for cid, skip, ulen in fresh:
            # pack unknown until the pack is finished; meanwhile the entry only serves dedup
            self.index.entries[cid] = Entry("", 0, 0, ulen, zstd, skip)
            self.stats.new_chunks += 1
            self.stats.new_bytes += ulen
        self.stats.new_stored_bytes += len(blob)
        self._queued.append(self._io.submit(self._append, blob, zstd, fresh))
        self._collect(wait=len(self._queued) > self.MAX_QUEUED)

    def _append(self, blob: bytes, zstd: bool, members: list[tuple[str, int, int]]) -> tuple[str, list[list]] | None:
        """(I/O thread) append a blob; returns (pack id, rows) when that filled and finished the pack."""
        if self._writer is None:
            self._writer = PackWriter(self.repo.root)
        self._writer.add(blob, zstd, members)
        if self._writer.size >= self.repo.config.pack_size:
            return self._finish_writer()
        return None

    def _finish_writer(self) -> tuple[str, list[list]] | None:
        """(I/O thread) finish the open pack, or drop it when empty."""
        w, self._writer = self._writer, None
        if w is None:
            return None
        if not w.rows:
            w.abort()
            return None
        return w.finish()

    def _collect(self, *, wait: bool) -> None:
        """Register packs the I/O thread finished (and surface its errors)."""
        while self._queued and (wait or self._queued[0].done()):
            done = self._queued.popleft().result()
            wait = False
            if done is None:
                continue
            pack_id, rows = done
            for row in rows:
                e = self.index.entries.get(row[0])
                if e is not None and not e.pack:  # the placeholder from add_group
                    del self.index.entries[row[0]]
            self.index.add_pack(pack_id, rows)
            self._unindexed[pack_id] = rows
            self.stats.packs.append(pack_id)
            if len(self._unindexed) >= INDEX_EVERY_PACKS:
                self._flush_index()

    def _flush_index(self) -> None:
        if self._unindexed:
            write_index_file(self.repo.root, self._unindexed)
            self._unindexed = {}

    def close(self) -> None:
        """Finish the open pack and write the index: after this every new chunk is durable and indexed."""
        self._queued.append(self._io.submit(self._finish_writer))
        while self._queued:
            self._collect(wait=True)
        self._io.shutdown()
        self._flush_index()

    def abort(self) -> None:
        """Drop the open pack; index the finished ones so a later capture reuses them (best effort)."""
        for fut in self._queued:
            fut.cancel()
        while self._queued:
            try:
                self._collect(wait=True)
            except (OSError, CancelledError):
                pass  # that blob/pack failed or never ran; the open pack's temp file is removed below
        self._io.shutdown()
        if self._writer is not None:
            self._writer.abort()
            self._writer = None
        try:
            self._flush_index()
        except OSError:
            pass  # e.g. still no space: the finished packs are orphans that prune removes


_tls = threading.local()


def compress(data: bytes | bytearray | memoryview) -> tuple[bytes, bool]:
    """zstd level 3, or the plaintext when compression does not help (then restores skip decompression)."""
    cctx = getattr(_tls, "cctx", None)
    if cctx is None:
        cctx = _tls.cctx = zstandard.ZstdCompressor(level=ZSTD_LEVEL)
    out = cctx.compress(data)
    if len(out) >= len(data):
        return bytes(data), False
    return out, True


def decode_blob(blob: bytes, entry: Entry) -> bytes:
    """The plaintext of a stored blob (a group of chunks)."""
    if not entry.zstd:
        return blob
    dctx = getattr(_tls, "dctx", None)
    if dctx is None:
        dctx = _tls.dctx = zstandard.ZstdDecompressor()
    try:
        return unzstd(blob, MAX_BLOB, dctx)
    except zstandard.ZstdError:
        raise RescueError(f"blob at offset {entry.offset} of pack {entry.pack[:16]} does not decompress "
                          "(corrupt pack)") from None


def chunk_of(group: bytes, entry: Entry, chunk_id: str, *, check: bool = True) -> memoryview:
    """A chunk's bytes inside its decoded group, checked against its BLAKE3 id."""
    data = memoryview(group)[entry.skip:entry.skip + entry.ulen]
    if len(data) != entry.ulen or (check and blake3.blake3(data).hexdigest() != chunk_id):
        raise RescueError(f"chunk {chunk_id[:16]} in pack {entry.pack[:16]} at offset {entry.offset} "
                          "is corrupt (hash mismatch)")
    return data


def decode(blob: bytes, entry: Entry, chunk_id: str, *, check: bool = True) -> memoryview:
    """Decompress a stored blob and return (and by default check) one chunk of it."""
    return chunk_of(decode_blob(blob, entry), entry, chunk_id, check=check)


def chunk_hash(data: bytes | bytearray | memoryview) -> str:
    return blake3.blake3(data).hexdigest()


__all__ = ["Repository", "ChunkStore", "PackReader", "compress", "decode", "decode_blob", "chunk_of", "chunk_hash"]

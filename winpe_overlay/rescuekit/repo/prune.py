"""forget (remove image manifests) and prune (drop chunks no image uses).

Prune's crash-safe order: (0) temp leftovers and packs no index lists are deleted; (1) live chunks of partly
used packs are copied into new packs (durable); (2) one new index file listing every kept and new pack is
written atomically; (3) the old index files are deleted; (4) unused and repacked packs are deleted. A crash
before (3) leaves duplicate index entries that all point at existing packs; a crash after (3) leaves only
orphan packs, which the next prune deletes. On a full medium (ENOSPC in (1) or (2)) the packs no image uses
are deleted first and (1)-(4) retried: until then the old index names missing packs, which readers ignore.
"""
from __future__ import annotations

import errno
import os
from pathlib import Path

from rescuekit.errors import RescueError, UsageError
from rescuekit.imaging.units import human
from rescuekit.repo.fsutil import fsync_dir
from rescuekit.repo.index import Index, index_files, load_index, write_index_file
from rescuekit.repo.lock import RepoLock
from rescuekit.repo.manifest import image_path, manifest_paths, read_manifest
from rescuekit.repo.packs import CorruptFile, Entry, PackReader, PackWriter, pack_files, pack_path
from rescuekit.repo.repository import Repository, chunk_of, compress, decode_blob


def resolve_images(repo: Repository, selectors: list[str]) -> list[dict]:
    """Exact ids, unique id prefixes or names (a name must match exactly one image); a corrupt manifest
    by its exact id."""
    docs, corrupt = [], set()
    for p in manifest_paths(repo.root):
        try:
            docs.append(read_manifest(p))
        except CorruptFile:  # forgettable by its exact id (a newer version's manifest is not: it raises)
            corrupt.add(p.stem)
    out: dict[str, dict] = {}
    for sel in selectors:
        if sel in corrupt:
            out[sel] = {"id": sel, "name": "corrupt manifest"}
            continue
        hits = [d for d in docs if d["id"] == sel] or [d for d in docs if d.get("name") == sel] \
            or [d for d in docs if d["id"].startswith(sel.lower())]
        if not hits:
            raise RescueError(f"no image {sel!r} in repository {repo.root}")
        if len(hits) > 1:
            raise UsageError(f"{sel!r} matches {len(hits)} images in {repo.root} (" +
                             ", ".join(d["id"] for d in hits) + "); name them by id")
        out[hits[0]["id"]] = hits[0]
    return list(out.values())


def forget(repo: Repository, selectors: list[str], lock: RepoLock | None = None) -> list[dict]:
    docs = resolve_images(repo, selectors)
    if lock is not None:
        lock.check_held()
    for d in docs:
        image_path(repo.root, d["id"]).unlink()
    fsync_dir(repo.root / "images")
    return docs


def _crash_point(step: str) -> None:
    """Test hook: die like ``kill -9`` right after ``step`` when RESCUEKIT_TEST_CRASH_AFTER names it."""
    if os.environ.get("RESCUEKIT_TEST_CRASH_AFTER") == step:
        os._exit(137)


class _Tally:
    """Bytes prune removed and wrote (packs, index files, temp leftovers): what it freed is the difference."""

    def __init__(self) -> None:
        self.deleted = 0
        self.written = 0
        self.packs_deleted = 0

    def delete(self, path: Path, *, pack: bool = False) -> None:
        try:
            size = path.stat().st_size
            path.unlink()
        except FileNotFoundError:
            return
        self.deleted += size
        self.packs_deleted += pack


def _full(exc: OSError) -> bool:
    return exc.errno in (errno.ENOSPC, errno.EDQUOT)


def prune(repo: Repository, lock: RepoLock | None = None) -> dict:
    """Delete what no image uses. ``lock`` (exclusive) is checked before each step that deletes."""
    root = repo.root
    held = lock.check_held if lock is not None else (lambda: None)
    used: set[str] = set()
    for p in manifest_paths(root):
        try:
            doc = read_manifest(p)  # a newer version's manifest stops prune as is: its chunks can't be known
        except CorruptFile as exc:
            raise RescueError(f"prune refused: {exc}; forget that image first "
                              f"(`rescuekit forget {root} {p.stem}`)") from None
        for ext in doc["extents"]:
            used.update(c for c in ext["chunks"] if c is not None)
    index = load_index(root)
    on_disk = pack_files(root)
    index.drop_missing(on_disk)
    missing = [c for c in used if c not in index.entries or index.entries[c].pack not in on_disk]
    if missing:
        raise RescueError(f"prune refused: {len(missing)} chunk(s) used by images are missing; "
                          f"run `rescuekit verify {root}`")
    tally = _Tally()
    failure: OSError | None = None
    for attempt in ("normal", "full medium"):
        if attempt == "full medium":
            # Delete the packs no image uses at all before writing anything. Until the new index is written the
            # old one still names them; every reader ignores index entries of missing packs.
            on_disk = pack_files(root)  # (the failed attempt's copies are garbage now)
            _drop_garbage(root, index, on_disk, tally, held)
            for pack_id in [p for p, rows in index.packs.items()
                            if p in on_disk and not any(r[0] in used for r in rows)]:
                tally.delete(on_disk.pop(pack_id), pack=True)
            index.drop_missing(on_disk)
        else:
            _drop_garbage(root, index, on_disk, tally, held)
        try:
            repo.upgrade()
            return _prune_indexed(repo, index, on_disk, used, tally, held)
        except OSError as exc:
            if not _full(exc):
                raise
            failure = exc
    raise RescueError(f"no space left on device writing {getattr(failure, 'filename', None) or root}: prune deleted "
                      f"{tally.packs_deleted} unused pack(s) ({human(tally.deleted)}) but cannot rewrite the "
                      "index or the partly used packs; free more space and run prune again")


def _drop_garbage(root: Path, index: Index, on_disk: dict[str, Path], tally: _Tally, held) -> None:
    """(0) temp leftovers and packs no index lists: garbage in any state (the exclusive lock is held), so
    deleting them first is safe and frees space before anything is written."""
    held()
    for tmp in [*(root / "data").glob("**/*.tmp"), *(root / "index").glob(".*.tmp"), *(root / "images").glob(".*.tmp")]:
        tally.delete(tmp)
    for pack_id in [p for p in on_disk if p not in index.packs]:
        tally.delete(on_disk.pop(pack_id), pack=True)


def _prune_indexed(repo: Repository, index: Index, on_disk: dict[str, Path], used: set[str], tally: _Tally,
                   held) -> dict:
    root = repo.root

    def is_live(row: list, pack_id: str) -> bool:
        e = index.entries.get(row[0])
        return row[0] in used and e is not None and e.pack == pack_id and e.offset == row[1]

    keep: dict[str, list[list]] = {}
    rewrite: list[str] = []
    for pack_id, rows in index.packs.items():
        if pack_id not in on_disk:
            continue
        live = [r for r in rows if is_live(r, pack_id)]
        if len(live) == len(rows):
            keep[pack_id] = rows
        elif live:
            rewrite.append(pack_id)
    # (1) copy live chunks of partly used packs
    new_packs: dict[str, list[list]] = {}
    reader = PackReader(root)
    writer: PackWriter | None = None

    def finish(w: PackWriter) -> None:
        pid, prows = w.finish()
        if pid not in on_disk and pid not in new_packs:  # (identical bytes may be there already)
            tally.written += pack_path(root, pid).stat().st_size
        new_packs[pid] = prows

    try:
        for pack_id in rewrite:
            blobs: dict[int, list[list]] = {}
            for row in index.packs[pack_id]:
                blobs.setdefault(row[1], []).append(row)
            for rows in blobs.values():
                live = [r for r in rows if is_live(r, pack_id)]
                if not live:
                    continue
                e0 = Entry.from_row(pack_id, rows[0])
                raw = reader.read_blob(e0)
                group = decode_blob(raw, e0)
                parts = [bytes(chunk_of(group, Entry.from_row(pack_id, r), r[0])) for r in live]  # never copy
                blob, z, members = raw, e0.zstd, [(r[0], r[5], r[3]) for r in live]  # a corrupt chunk silently
                if len(live) < len(rows):
                    packed, pz = compress(b"".join(parts))
                    if len(packed) < len(raw):  # else the whole blob as it was, listing only the live chunks
                        offsets = [sum(map(len, parts[:i])) for i in range(len(parts))]
                        blob, z, members = packed, pz, [(r[0], o, len(x)) for r, o, x in zip(live, offsets, parts)]
                if writer is None:
                    writer = PackWriter(root)
                writer.add(blob, z, members)
                if writer.size >= repo.config.pack_size:
                    w, writer = writer, None
                    finish(w)
        if writer is not None:
            w, writer = writer, None
            finish(w)
    except BaseException:
        if writer is not None:
            writer.abort()
        raise
    finally:
        reader.close()
    _crash_point("packs-written")
    # (2) new index, (3) drop old index files
    new_id = None
    if keep or new_packs:
        before = {p.stem for p in index_files(root)}
        new_id = write_index_file(root, {**keep, **new_packs})
        if new_id not in before:
            tally.written += (root / "index" / f"{new_id}.idx").stat().st_size
    _crash_point("index-written")
    held()
    for old in index.files:
        if old != new_id:
            tally.delete(root / "index" / f"{old}.idx")
    fsync_dir(root / "index")
    _crash_point("old-index-deleted")
    # (4) delete packs nobody lists any more
    live_packs = set(keep) | set(new_packs)
    for pack_id, path in on_disk.items():
        if pack_id not in live_packs:
            tally.delete(path, pack=True)
            _crash_point("one-pack-deleted")
    for d in (root / "data").iterdir():
        if d.is_dir():
            fsync_dir(d)
    return {"packs_deleted": tally.packs_deleted, "packs_rewritten": len(rewrite), "packs_written": len(new_packs),
            "packs_kept": len(keep), "bytes_deleted": tally.deleted, "bytes_written": tally.written,
            "bytes_freed": tally.deleted - tally.written, "chunks_used": len(used)}


def repo_size(root: Path) -> int:
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file())

"""forget (remove image manifests) and prune (drop chunks no image uses).

Prune's crash-safe order: (1) live chunks of partly used packs are copied into new packs (durable);
(2) one new index file listing every kept and new pack is written atomically; (3) the old index files are
deleted; (4) unused, repacked and orphan packs and leftover temp files are deleted. A crash before (3)
leaves duplicate index entries that all point at existing packs; a crash after (3) leaves only orphan
packs, which the next prune deletes.
"""
from __future__ import annotations

import os
from pathlib import Path

from rescuekit.errors import RescueError, UsageError
from rescuekit.repo.fsutil import fsync_dir
from rescuekit.repo.index import load_index, write_index_file
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


def forget(repo: Repository, selectors: list[str]) -> list[dict]:
    docs = resolve_images(repo, selectors)
    for d in docs:
        image_path(repo.root, d["id"]).unlink()
    fsync_dir(repo.root / "images")
    return docs


def _crash_point(step: str) -> None:
    """Test hook: die like ``kill -9`` right after ``step`` when RESCUEKIT_TEST_CRASH_AFTER names it."""
    if os.environ.get("RESCUEKIT_TEST_CRASH_AFTER") == step:
        os._exit(137)


def prune(repo: Repository) -> dict:
    root = repo.root
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
                if len(live) == len(rows):  # a corrupt chunk silently; whole blob live: copy it as is
                    blob, z, members = raw, e0.zstd, [(r[0], r[5], r[3]) for r in live]
                else:
                    members, skip = [], 0
                    for r, part in zip(live, parts):
                        members.append((r[0], skip, len(part)))
                        skip += len(part)
                    blob, z = compress(b"".join(parts))
                if writer is None:
                    writer = PackWriter(root)
                writer.add(blob, z, members)
                if writer.size >= repo.config.pack_size:
                    pid, prows = writer.finish()
                    new_packs[pid] = prows
                    writer = None
        if writer is not None:
            pid, prows = writer.finish()
            new_packs[pid] = prows
            writer = None
    except BaseException:
        if writer is not None:
            writer.abort()
        raise
    finally:
        reader.close()
    _crash_point("packs-written")
    # (2) new index, (3) drop old index files
    new_id = write_index_file(root, {**keep, **new_packs}) if (keep or new_packs) else None
    _crash_point("index-written")
    for old in index.files:
        if old != new_id:
            (root / "index" / f"{old}.idx").unlink(missing_ok=True)
    fsync_dir(root / "index")
    _crash_point("old-index-deleted")
    # (4) delete packs nobody lists any more, and temp leftovers
    live_packs = set(keep) | set(new_packs)
    freed = 0
    deleted = 0
    for pack_id, path in on_disk.items():
        if pack_id not in live_packs:
            freed += path.stat().st_size
            path.unlink()
            deleted += 1
            _crash_point("one-pack-deleted")
    for tmp in [*(root / "data").glob("**/*.tmp"), *(root / "index").glob(".*.tmp"), *(root / "images").glob(".*.tmp")]:
        freed += tmp.stat().st_size
        tmp.unlink(missing_ok=True)
    for d in (root / "data").iterdir():
        if d.is_dir():
            fsync_dir(d)
    freed -= sum(pack_path(root, pid).stat().st_size for pid in new_packs)  # net of the rewritten copies
    return {"packs_deleted": deleted, "packs_rewritten": len(rewrite), "packs_written": len(new_packs),
            "packs_kept": len(keep), "bytes_freed": freed, "chunks_used": len(used)}


def repo_size(root: Path) -> int:
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file())

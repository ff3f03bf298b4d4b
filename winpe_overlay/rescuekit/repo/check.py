"""Repository verification: structure (config, index vs packs, manifests, every referenced chunk indexed) and,
with ``read_data``, every pack re-read and every chunk decompressed and re-hashed. Damaged chunks are mapped
back to the images and disk byte ranges they affect."""
from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor

import blake3

from rescuekit.errors import RescueError
from rescuekit.imaging.plan import merge
from rescuekit.progress import byte_progress
from rescuekit.repo.index import headers_of_unlisted, index_files, read_index_file
from rescuekit.repo.manifest import iter_chunks, manifest_paths, read_manifest
from rescuekit.repo.packs import CorruptFile, Entry, pack_ends, pack_files, pack_path, pack_shortfall, \
    parse_pack_header
from rescuekit.repo.repository import Repository, chunk_of, decode_blob


def check_repository(repo: Repository, *, image: str | None = None, read_data: bool = False,
                     progress: bool | None = None) -> dict:
    root = repo.root
    problems: list[str] = []
    # Manifests
    if image is not None:
        docs = [repo.find_image(image)]
    else:
        docs = []
        for p in manifest_paths(root):
            try:
                docs.append(read_manifest(p))
            except RescueError as exc:
                problems.append(str(exc))
    # Index files (each named by the BLAKE3 of its content)
    entries: dict[str, list[Entry]] = {}
    packs_indexed: dict[str, list[list]] = {}
    corrupt = False
    for p in index_files(root):
        try:
            packs = read_index_file(p)
        except CorruptFile as exc:
            problems.append(f"{exc} (its packs are read from their own headers; `rescuekit prune` rewrites "
                            "the index)")
            corrupt = True
            continue
        if blake3.blake3(p.read_bytes()).hexdigest() != p.stem:
            problems.append(f"{p}: index file content does not match its name (corrupt)")
        for pack_id, rows in packs.items():
            packs_indexed.setdefault(pack_id, rows)
            for row in rows:
                entries.setdefault(row[0], []).append(Entry.from_row(pack_id, row))
    if corrupt:  # as readers do (index.load_index)
        for pack_id, rows in headers_of_unlisted(root, packs_indexed).items():
            packs_indexed[pack_id] = rows
            for row in rows:
                entries.setdefault(row[0], []).append(Entry.from_row(pack_id, row))
    # Packs present and big enough for what the index says
    on_disk = pack_files(root)
    bad: set[str] = set()
    bad_packs: set[str] = set()
    gone: list[str] = []
    for pack_id, rows in packs_indexed.items():
        path = on_disk.get(pack_id)
        if path is None:
            gone.append(pack_id)
            bad_packs.add(pack_id)
            continue
        short = pack_shortfall(root, pack_ends(Entry.from_row(pack_id, r) for r in rows))
        if short:
            problems.append(f"pack {pack_id} {short[1]}")
            bad_packs.add(pack_id)
    for pack_id in bad_packs:  # a chunk is only lost if no other listed copy is in a good pack
        bad.update(r[0] for r in packs_indexed[pack_id]
                   if all(e.pack in bad_packs for e in entries.get(r[0], [])))
    orphans = sorted(set(on_disk) - set(packs_indexed))
    # Every referenced chunk indexed
    referenced: set[str] = set()
    for doc in docs:
        for ext in doc["extents"]:
            referenced.update(c for c in ext["chunks"] if c is not None)
    for cid in referenced:
        if cid not in entries:
            bad.add(cid)
    missing = len([c for c in referenced if c not in entries])
    if missing:
        problems.append(f"{missing} chunk(s) referenced by images are not in the index")
    notes: list[str] = []
    for pack_id in gone:
        where = f"pack {pack_id} listed in the index is missing ({pack_path(root, pack_id)})"
        if any(r[0] in referenced for r in packs_indexed[pack_id]):
            problems.append(where)
        else:  # e.g. prune on a full medium deleted unused packs before it could rewrite the index
            notes.append(f"{where}; no image {'checked ' if image else ''}uses its chunks (`rescuekit prune` "
                         "drops it from the index)")
    # Data
    checked_bytes = 0
    if read_data:
        want = {e.pack for cid in referenced for e in entries.get(cid, [])} if image else set(packs_indexed)
        want = sorted(p for p in want if p in on_disk)
        total = sum(on_disk[p].stat().st_size for p in want)

        def check_pack(pack_id: str) -> tuple[str, list[str], int, list[str]]:
            path = on_disk[pack_id]
            data = path.read_bytes()
            notes = []
            if blake3.blake3(data).hexdigest() != pack_id:
                notes.append(f"pack {pack_id} content does not match its name (corrupt)")
            else:  # its own header (version checked first) must list what the index says it holds
                try:
                    header = parse_pack_header(data, str(path))
                except CorruptFile as exc:
                    header = None
                    notes.append(str(exc))
                if header is not None and sorted(header) != sorted(packs_indexed[pack_id]):
                    notes.append(f"pack {pack_id}: its header and the index list different chunks")
            damaged = []
            groups: dict[int, bytes | None] = {}
            for row in packs_indexed[pack_id]:
                e = Entry.from_row(pack_id, row)
                if e.offset not in groups:
                    try:
                        groups.clear()  # rows of one blob are adjacent: keep one decoded group at a time
                        groups[e.offset] = decode_blob(data[e.offset:e.offset + e.clen], e)
                    except RescueError:
                        groups[e.offset] = None
                try:
                    if groups[e.offset] is None:
                        raise RescueError("undecodable")
                    chunk_of(groups[e.offset], e, row[0])
                except RescueError:
                    damaged.append(row[0])
            return pack_id, damaged, len(data), notes

        with ThreadPoolExecutor(max(2, os.cpu_count() or 2)) as pool, \
                byte_progress("verify packs", total, enabled=progress) as adv:
            for pack_id, damaged, n, pack_notes in pool.map(check_pack, want):
                adv(n)
                checked_bytes += n
                problems.extend(pack_notes)
                for cid in damaged:
                    # a chunk is only lost if no other indexed copy is intact (duplicates after prune)
                    if all(e.pack == pack_id for e in entries.get(cid, [])):
                        bad.add(cid)
                if damaged:
                    problems.append(f"pack {pack_id}: {len(damaged)} corrupt chunk(s)")
    # Map damaged chunks to images and byte ranges
    damaged_images = []
    for doc in docs:
        ranges = [(off, n) for off, n, cid in iter_chunks(doc, doc["chunk_size"]) if cid in bad]
        if ranges:
            damaged_images.append({"image": doc["id"], "name": doc.get("name"),
                                   "ranges": [list(r) for r in merge(ranges)]})
    return {"ok": not problems and not damaged_images, "repository": str(root), "images": len(docs),
            "packs": len(on_disk), "orphan_packs": len(orphans), "chunks": len(entries),
            "read_data": read_data, "bytes_read": checked_bytes, "problems": problems, "notes": notes,
            "damaged": damaged_images}

"""Capture a disk, partition or image file into a repository.

Chunks of the planned extents are read, checked for all-zero, hashed (BLAKE3) and - only when the index
does not know them yet - compressed, in a thread pool (blake3/zstd/pread release the GIL); the main thread
appends new chunks to packs in disk order. Order of durability: packs, then index, then the manifest.
"""
from __future__ import annotations

import errno
import os
import secrets
import time
from collections import deque
from contextlib import nullcontext
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from rescuekit import __version__
from rescuekit.disk.device import BlockDevice, open_source
from rescuekit.errors import RescueError, WindowsStateError
from rescuekit.imaging.plan import Plan, holes, make_plan, windows_refusals
from rescuekit.imaging.safety import holds
from rescuekit.progress import byte_progress
from rescuekit.repo.config import FORMAT_VERSION, utc_now
from rescuekit.repo.index import Index
from rescuekit.repo.manifest import IMAGE_FORMAT
from rescuekit.repo.repository import ChunkStore, Repository, chunk_hash, compress

GROUP = 8  # chunks per compression group (2 MiB of 256 KiB chunks): measured, see docs/imaging.md


@dataclass
class Batch:
    """What a worker found for up to GROUP consecutive chunks: ids (None = all-zero) and the new ones' blob."""

    ids: list[str | None]
    lengths: list[int]
    blob: bytes | None = None
    zstd: bool = False
    members: list[tuple[str, int, int]] | None = None


def workers() -> int:
    """Worker threads: one per core plus one to cover I/O waits (RESCUEKIT_THREADS overrides)."""
    env = os.environ.get("RESCUEKIT_THREADS")
    if env and env.isdigit() and int(env) > 0:
        return int(env)
    return (os.cpu_count() or 2) + 1


def _batches(plan: Plan, cs: int):
    batch: list[tuple[int, int, int, list]] = []
    for item in holes(plan, cs):
        batch.append(item)
        if len(batch) == GROUP:
            yield batch
            batch = []
    if batch:
        yield batch


def _work(dev: BlockDevice, index: Index, zero: bytes, batch: list[tuple[int, int, int, list]]) -> Batch:
    out = Batch([], [m for _ei, _pos, m, _gaps in batch])
    buf = bytearray(sum(out.lengths))  # the batch's chunks back to back: compressed without another copy
    view = memoryview(buf)
    new: list[tuple[str, int, int]] = []  # (chunk id, offset in buf, length)
    seen: set[str] = set()
    at = 0
    for _ei, pos, m, gaps in batch:
        chunk = view[at:at + m]
        at += m
        if gaps and gaps[0] == (0, m):
            out.ids.append(None)  # nothing used in this chunk (alignment padding only)
            continue
        dev.readinto(pos, chunk)
        for g, n in gaps:  # not used by the file system: store zeros, not stale data
            chunk[g:g + n] = memoryview(zero)[:n]
        if buf.startswith(zero if m == len(zero) else bytes(m), at - m):  # memcmp, no copy
            out.ids.append(None)
            continue
        cid = chunk_hash(chunk)
        out.ids.append(cid)
        if cid not in index and cid not in seen:  # known chunks are not compressed again (fast re-capture)
            seen.add(cid)
            new.append((cid, at - m, m))
    if new:
        if len(new) == len(batch):
            data = buf  # the usual first-capture case: all new, contiguous
        else:
            data = b"".join(view[o:o + m] for _cid, o, m in new)
        out.members, skip = [], 0
        for cid, _o, m in new:
            out.members.append((cid, skip, m))
            skip += m
        out.blob, out.zstd = compress(data)
    return out


def _source_doc(dev: BlockDevice, source: str) -> dict:
    info = dev.info
    return {"path": source, "kind": getattr(info, "kind", "file"), "model": getattr(info, "model", None),
            "serial": getattr(info, "serial", None), "size": dev.size, "sector_size": dev.sector_size}


def _table_doc(plan: Plan) -> dict:
    t = plan.table
    return {"kind": t.kind, "sector_size": t.sector_size, "disk_guid": t.disk_guid,
            "disk_signature": t.disk_signature, "first_usable": t.first_usable, "last_usable": t.last_usable,
            "header_regions": [list(r) for r in t.header_regions]}


def _check_size_unchanged(dev: BlockDevice, source: str) -> None:
    """A source whose size changes while it is read (a file still being written, a disk re-probed by the
    kernel) gives an image of no single state: refuse it (the caller has not written a manifest yet)."""
    now = dev.current_size() if hasattr(dev, "current_size") else dev.size
    if now != dev.size:
        raise RescueError(f"{source} changed size during the capture ({dev.size} -> {now} bytes); nothing was "
                          "stored as an image; capture it again when it is not in use")


def _decrypted(plan: Plan, dev: BlockDevice) -> None:
    """Mark the partitions read through a BitLocker decryption (manifest ``bitlocker``, see docs/format.md)."""
    for p in plan.partitions:
        vol = getattr(dev, "volumes", {}).get(p["start"])
        if vol is not None:
            p["bitlocker"] = {"decrypted": True, "encryption": vol.meta.describe(), "volume_guid": vol.meta.guid,
                              "unlocked_with": "recovery-password"}


def capture(source: str | Path, repo_path: str | Path, *, name: str | None = None, progress: bool | None = None,
            chunk_size: int | None = None, pack_size: int | None = None, force_unlock: bool = False,
            device: BlockDevice | None = None, allow_hibernated: bool = False,
            keep_pagefile: bool = False, recovery_passwords: list[str] | None = None) -> dict:
    """Capture ``source`` into the repository at ``repo_path`` (created if missing); returns the manifest.

    ``device``: an already open (read-only) device to capture instead of opening ``source`` (then only its
    name); used by ``winbackup import`` for the disk assembled from a backup's virtual disks. A volume Windows
    left hibernated (or with an unclean journal) is refused unless ``allow_hibernated``; pagefile/swapfile/hiberfil
    data is stored as zeros unless ``keep_pagefile``. With ``recovery_passwords`` every BitLocker volume is
    unlocked and captured decrypted (its used clusters only; see ``_decrypted``)."""
    cfg_args = {k: v for k, v in (("chunk_size", chunk_size), ("pack_size", pack_size)) if v}
    source = str(source)
    existing = Path(repo_path).absolute()
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    via = holds(source, existing) if device is None else None
    if via is not None:
        raise RescueError(f"the repository {repo_path} is on the disk being captured ({source}){via}; "
                          "store it on another disk")
    t0 = time.monotonic()
    opened = nullcontext(device) if device is not None else open_source(source)
    with opened as dev:  # a bad SOURCE must not leave a new empty repository behind
        if dev.size == 0:  # an empty card reader, a dying disk reporting capacity 0, an empty file
            raise RescueError(f"{source} is empty (0 bytes): nothing to capture (no medium, or a failing disk?)")
        if recovery_passwords:  # before the repository is created: a wrong password leaves nothing behind
            from rescuekit.disk.bitlocker import unlock_disk

            dev = unlock_disk(dev, recovery_passwords, source)
        if not allow_hibernated and (refused := windows_refusals(dev)):  # before the repository is created
            raise WindowsStateError(f"{source} {refused[0]}" + (f" (and {len(refused) - 1} more partition(s))"
                                                                 if len(refused) > 1 else ""))
        repo = Repository.open_or_create(repo_path, **cfg_args)
        with repo.lock(exclusive=True, command="capture", force_unlock=force_unlock) as lock:
            cs = repo.config.chunk_size
            label = Path(source).name or source  # \\.\PhysicalDrive0 has no file name
            plan = make_plan(dev, cs, keep_pagefile=keep_pagefile)
            _decrypted(plan, dev)
            index = repo.load_index()
            store = ChunkStore(repo, index)
            chunk_lists: list[list[str | None]] = [[] for _ in plan.extents]
            zero = bytes(cs)
            try:
                with ThreadPoolExecutor(workers()) as pool, \
                        byte_progress(f"capture {label}", plan.stored_bytes, enabled=progress) as adv:
                    inflight: deque[tuple[list, Future[Batch]]] = deque()
                    depth = 2 * workers()

                    def consume() -> None:
                        batch, fut = inflight.popleft()
                        r = fut.result()
                        for (ei, _pos, m, _gaps), cid in zip(batch, r.ids):
                            store.stats.chunks += 1
                            if cid is None:
                                store.stats.zero_chunks += 1
                            chunk_lists[ei].append(cid)
                            adv(m)
                        if r.blob is not None:
                            store.add_group(r.blob, r.zstd, r.members)

                    try:
                        for batch in _batches(plan, cs):
                            inflight.append((batch, pool.submit(_work, dev, index, zero, batch)))
                            if len(inflight) >= depth:
                                consume()
                        while inflight:
                            consume()
                    finally:
                        for _, fut in inflight:
                            fut.cancel()
                _check_size_unchanged(dev, source)  # before the index names the new packs
                store.close()
            except OSError as exc:
                store.abort()
                if exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
                    what = "no space left on device" if exc.errno != errno.EFBIG else "file too large"
                    raise RescueError(f"{what} writing the repository {repo.root}; the capture was stopped and the "
                                      "repository is still valid (free space, or `rescuekit prune` to drop the "
                                      "partial data)") from None
                raise
            except RescueError:
                store.abort()
                _check_size_unchanged(dev, source)  # a short read of a shrinking source: say what happened
                raise
            except BaseException:
                store.abort()
                raise
            st = store.stats
            zero_bytes = sum(min(cs, off + n - (off + i * cs))
                             for (off, n), ids in zip(plan.extents, chunk_lists)
                             for i, cid in enumerate(ids) if cid is None)
            doc = {
                "format": IMAGE_FORMAT, "version": FORMAT_VERSION, "id": secrets.token_hex(8),
                "name": name or label, "created": utc_now(), "tool": f"rescuekit {__version__}",
                "chunk_size": cs, "source": _source_doc(dev, source), "table": _table_doc(plan),
                "partitions": plan.partitions, "warnings": plan.warnings,
                "extents": [{"offset": off, "length": n, "chunks": ids}
                            for (off, n), ids in zip(plan.extents, chunk_lists)],
                "totals": {"disk_bytes": dev.size, "stored_bytes": plan.stored_bytes, "zero_bytes": zero_bytes,
                           "chunks": st.chunks, "zero_chunks": st.zero_chunks, "new_chunks": st.new_chunks,
                           "new_bytes": st.new_bytes, "new_stored_bytes": st.new_stored_bytes,
                           "new_packs": len(st.packs), "seconds": round(time.monotonic() - t0, 3)},
            }
            return repo.add_image(doc, lock)  # numbered (seq) and written under the lock, if still held

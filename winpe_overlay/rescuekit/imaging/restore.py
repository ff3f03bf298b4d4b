"""Restore an image (whole disk or one partition) onto a disk, partition or image file.

Order (docs/imaging.md): size and safety checks and the confirmation happen before anything is written;
then a journal file ``restores/<id>.json`` is written in the repository, the first and last MiB of the
destination (partition table and backup GPT / boot sector and backup boot sector) are zeroed, everything
else is written, those two MiB are written last, the GPT backup is moved for larger disks, and the journal
is removed. An interrupted restore therefore leaves a destination without a valid table or boot sector,
and `rescuekit images` reports the unfinished restore.
"""
from __future__ import annotations

import json
import os
import secrets
import socket
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import blake3

from rescuekit.disk.device import BlockDevice, open_source, open_target
from rescuekit.disk.filesystems import detect
from rescuekit.disk.partitions import fix_gpt_after_restore, read_table
from rescuekit.errors import RescueError, UsageError
from rescuekit.imaging.capture import workers
from rescuekit.imaging.safety import is_system_disk, same_disk
from rescuekit.imaging.units import human
from rescuekit.progress import byte_progress
from rescuekit.repo.config import utc_now
from rescuekit.repo.fsutil import atomic_write
from rescuekit.repo.manifest import iter_chunks
from rescuekit.repo.packs import PackReader, pack_ends, pack_shortfall
from rescuekit.repo.repository import Repository, chunk_of, decode_blob

HEAD = 1 << 20


@dataclass(slots=True)
class Piece:
    target: int  # destination byte offset
    length: int
    cid: str | None  # None: all-zero
    skip: int  # offset inside the chunk
    full: bool  # the piece is the whole chunk (its hash is the chunk id)


def describe_target(dev: BlockDevice) -> str:
    """What is on a destination now: model, size, table, partitions with file systems and labels."""
    info = dev.info
    kind = getattr(info, "kind", "file")
    model = getattr(info, "model", None) or ("image file" if kind == "file" else kind)
    lines = [f"{dev.path}: {model}, {human(dev.size)} ({dev.size} bytes)"]
    try:
        table = read_table(dev)
    except RescueError as exc:
        lines.append(f"  partition table: unreadable ({exc})")
        return "\n".join(lines)
    if table.kind == "none":
        try:
            fs = detect(dev, 0, dev.size)
            lines.append(f"  no partition table; file system: {fs.kind}{' ' + repr(fs.label) if fs.label else ''}")
        except RescueError:
            lines.append("  no partition table")
        return "\n".join(lines)
    lines.append(f"  partition table: {table.kind.upper()}")
    for p in table.partitions:
        try:
            fs = detect(dev, p.start, min(p.size, dev.size - p.start)) if not p.extended else None
            fsd = f"{fs.kind}{' ' + repr(fs.label) if fs and fs.label else ''}" if fs else "extended"
        except RescueError:
            fsd = "?"
        lines.append(f"  {p.number:>3}  {human(p.size):>10}  {p.type_name:<22} {fsd}")
    return "\n".join(lines)


def _pieces(doc: dict, lo: int, hi: int, base: int) -> list[Piece]:
    out = []
    for off, n, cid in iter_chunks(doc, doc["chunk_size"]):
        a, b = max(off, lo), min(off + n, hi)
        if a < b:
            out.append(Piece(base + a - lo, b - a, cid, a - off, a == off and b == off + n))
    return out


def _units(pieces: list[Piece], index, protect: list[tuple[int, int]]) -> tuple[list[list[int]], list[list[int]]]:
    """Group consecutive pieces by the blob that holds them (zero pieces in runs); pieces touching a
    protected range (written last) apart from the body."""
    body: list[list[int]] = []
    head: list[list[int]] = []
    last_key = None
    for i, pc in enumerate(pieces):
        in_head = any(pc.target < b and pc.target + pc.length > a for a, b in protect)
        if pc.cid is None:
            key = ("zero", in_head)
        else:
            e = index.entries[pc.cid]
            key = (e.pack, e.offset, in_head)
        dest = head if in_head else body
        if key == last_key and dest and len(dest[-1]) < 64:
            dest[-1].append(i)
        else:
            dest.append([i])
        last_key = key
    return body, head


def _pick_partition(doc: dict, number: int) -> dict:
    for p in doc["partitions"]:
        if p["number"] == number:
            return p
    nums = ", ".join(str(p["number"]) for p in doc["partitions"]) or "none"
    raise UsageError(f"image {doc['id'][:12]} has no partition {number} (partitions: {nums})")


def _target_base(ro: BlockDevice, number: int, needed: int) -> tuple[int, int, str]:
    """Where partition ``number`` goes in an existing target: (offset, available bytes, description)."""
    try:
        table = read_table(ro)
    except RescueError:
        table = None
    if table is not None and table.kind != "none":
        for p in table.partitions:
            if p.number == number and not p.extended:
                return p.start, min(p.size, ro.size - p.start), f"partition {number} of {ro.path}"
        # never lay a partition over a disk's partition table
        raise UsageError(f"{ro.path} has a {table.kind.upper()} partition table without a partition {number}; "
                         "give the partition itself (or its image file), or a disk that has a partition "
                         f"{number}; nothing was written")
    return 0, ro.size, ro.path


def _write_journal(repo: Repository, doc: dict, target: str, partition: int | None) -> Path | None:
    path = repo.root / "restores" / f"{secrets.token_hex(8)}.json"
    rec = {"image": doc["id"], "name": doc.get("name"), "target": target, "partition": partition,
           "started": utc_now(), "host": socket.gethostname(), "pid": os.getpid()}
    try:
        path.parent.mkdir(exist_ok=True)
        atomic_write(path, json.dumps(rec).encode())
    except OSError:
        return None  # read-only repository medium: nowhere to note it (the zeroed head still tells)
    return path


def _refuse_odd_target(target: str, root: Path, exists: bool) -> None:
    """A target inside the repository would overwrite its packs; a missing /dev/... name is a mistyped device
    (creating a disk-sized regular file in /dev would fill RAM and restore nothing)."""
    if target.startswith(("\\\\.\\", "//./")):
        return
    real, repo_real = Path(os.path.realpath(target)), Path(os.path.realpath(root))
    if real == repo_real or repo_real in real.parents:
        raise UsageError(f"refusing to restore onto {target}: it is inside the repository {root}")
    dev_name = real.parts[1:2] == ("dev",) and real.parts[2:3] != ("shm",)  # /dev/shm is a plain tmpfs
    if not exists and dev_name:
        raise RescueError(f"no such device: {target}; nothing was written (see `rescuekit disks`)")


def unfinished_restores(root: Path) -> list[dict]:
    out = []
    for p in sorted((root / "restores").glob("*.json")):
        try:
            doc = json.loads(p.read_bytes())
        except (OSError, ValueError):
            doc = None
        out.append(doc if isinstance(doc, dict) else {"target": "?", "journal": p.name})
    return out


def restore(repo_path: str | Path, target: str, *, image: str | None = None, partition: int | None = None,
            verify: bool = False, confirm: Callable[[str], bool] | None = None, progress: bool | None = None,
            force_unlock: bool = False) -> dict:
    """Restore; ``confirm(text)`` is asked (text = what will be overwritten) unless it is None."""
    repo = Repository.open(repo_path)
    t0 = time.monotonic()
    with repo.lock(exclusive=False, command="restore", force_unlock=force_unlock):
        doc = repo.find_image(image)
        disk_size = doc["source"]["size"]
        if partition is None:
            lo, hi = 0, disk_size
            what = f"image {doc['id'][:12]} ({doc.get('name')}, whole disk, {human(disk_size)})"
        else:
            p = _pick_partition(doc, partition)
            lo, hi = p["start"], p["start"] + p["size"]
            what = f"partition {partition} of image {doc['id'][:12]} ({doc.get('name')}, {human(p['size'])})"
        needed = hi - lo
        if same_disk(target, repo.root):
            raise RescueError(f"refusing to restore onto {target}: it holds the repository {repo.root}")
        if is_system_disk(target):
            raise RescueError(f"refusing to restore onto {target}: it is the running system's disk")
        exists = os.path.exists(target) or target.startswith(("\\\\.\\", "//./"))
        _refuse_odd_target(target, repo.root, exists)
        base = 0
        if exists:
            with open_source(target) as ro:
                if partition is None:
                    avail, where = ro.size, ro.path
                else:
                    base, avail, where = _target_base(ro, partition, needed)
                if avail < needed:
                    raise RescueError(f"{where} is too small: {avail} bytes, the {what} needs {needed} bytes "
                                      f"({human(needed)}); nothing was written")
                text = (f"Restoring {what} will overwrite {where}" +
                        (f" at offset {base}" if base else "") + ":\n" + describe_target(ro))
            if confirm is not None and not confirm(text):
                raise RescueError("restore cancelled; nothing was written")
        fresh = not exists
        pieces = _pieces(doc, lo, hi, base)
        # First and last MiB of what is written (partition table + backup GPT, or boot sector + backup boot
        # sector): zeroed first, written last, so an interrupted restore leaves nothing that looks valid.
        edge = min(HEAD, needed)
        protect = [(base, base + edge), (base + needed - edge, base + needed)]
        total = sum(pc.length for pc in pieces)
        reader = PackReader(repo.root)
        index = repo.load_index()
        for pc in pieces:
            if pc.cid is not None and pc.cid not in index:
                raise RescueError(f"chunk {pc.cid[:16]} of image {doc['id'][:12]} is missing from the repository "
                                  f"index; run `rescuekit verify {repo.root}`; nothing was written")
        trouble = pack_shortfall(repo.root, pack_ends(index.entries[pc.cid] for pc in pieces if pc.cid is not None))
        if trouble:
            raise RescueError(f"pack {trouble[0]} needed by image {doc['id'][:12]} {trouble[1]}; "
                              f"run `rescuekit verify {repo.root}`; nothing was written")
        zero = bytes(doc["chunk_size"])
        digests: dict[int, bytes] = {}
        journal = _write_journal(repo, doc, target, partition)
        try:
            with open_target(target, create_size=needed) as dev:
                if not fresh:  # an interrupted restore must not leave the old table/boot sector in place
                    wipe = protect + ([(dev.size - min(HEAD, dev.size), dev.size)] if partition is None else [])
                    for a, b in wipe:  # (a whole disk's old backup GPT sits at the target's end)
                        dev.write(a, bytes(b - a))
                    dev.flush()
                _crash_point("restore-wiped")

                def put(unit: list[int]) -> int:
                    """Write pieces that share one stored blob (decompressed once)."""
                    first = pieces[unit[0]]
                    if first.cid is None:
                        if not fresh:
                            for i in unit:
                                dev.write(pieces[i].target, memoryview(zero)[:pieces[i].length])
                        return sum(pieces[i].length for i in unit)
                    entry = index.entries[first.cid]
                    group = decode_blob(reader.read_blob(entry), entry)
                    gview = memoryview(group)
                    done = 0
                    run: list[int] = []  # [target, group offset, length]: adjacent pieces in one write
                    for i in unit:
                        pc = pieces[i]
                        e = index.entries[pc.cid]
                        view = chunk_of(group, e, pc.cid)[pc.skip:pc.skip + pc.length]  # hash-checked
                        if verify and not pc.full:
                            digests[i] = blake3.blake3(view).digest()
                        at = e.skip + pc.skip
                        if run and run[0] + run[2] == pc.target and run[1] + run[2] == at:
                            run[2] += pc.length
                        else:
                            if run:
                                dev.write(run[0], gview[run[1]:run[1] + run[2]])
                            run = [pc.target, at, pc.length]
                        done += pc.length
                    if run:
                        dev.write(run[0], gview[run[1]:run[1] + run[2]])
                    return done

                body, head = _units(pieces, index, protect)
                with ThreadPoolExecutor(workers()) as pool, \
                        byte_progress(f"restore {doc.get('name') or doc['id'][:12]}", total, enabled=progress) as adv:
                    for order in (body, head):  # the first MiB last
                        for n in pool.map(put, order):
                            adv(n)
                        if order is body:
                            dev.flush()
                            _crash_point("restore-body-written")
                dev.flush()
                if verify:
                    _drop_cache(target)
                # verify what came from the image before the GPT fix-up legitimately changes the head
                bad = _verify_written(dev, pieces, digests, progress) if verify else []
                if not bad and partition is None and doc["table"]["kind"] == "gpt" and dev.size > disk_size:
                    fix_gpt_after_restore(dev)
                    dev.flush()
        except BaseException:
            if fresh:  # a half-written image file we created is no output: remove it (and so its journal)
                for leftover in (Path(target), journal):
                    if leftover is not None:
                        leftover.unlink(missing_ok=True)
            raise
        finally:
            reader.close()
        if bad:
            raise RescueError(f"verification of {target} failed: {len(bad)} range(s) differ, first at byte "
                              f"{bad[0][0]} ({bad[0][1]} bytes); the disk may be failing")
        if journal is not None:
            journal.unlink()
        for p in (repo.root / "restores").glob("*.json"):  # earlier interrupted restores of this target are
            try:                                           # superseded now
                if json.loads(p.read_bytes()).get("target") == target:
                    p.unlink()
            except (OSError, ValueError, AttributeError):
                pass
        return {"image": doc["id"], "name": doc.get("name"), "target": target, "partition": partition,
                "bytes_written": total, "verified": verify, "seconds": round(time.monotonic() - t0, 3)}


def _crash_point(step: str) -> None:
    """Test hook: die like ``kill -9`` right after ``step`` when RESCUEKIT_TEST_CRASH_AFTER names it."""
    if os.environ.get("RESCUEKIT_TEST_CRASH_AFTER") == step:
        os._exit(137)


def _drop_cache(path: str) -> None:
    """Evict the (flushed, clean) target pages so --verify reads the medium, not the page cache (Linux)."""
    if not hasattr(os, "posix_fadvise") or path.startswith(("\\\\.\\", "//./")):
        return
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    except OSError:
        pass
    finally:
        os.close(fd)


def _verify_written(dev: BlockDevice, pieces: list[Piece], digests: dict[int, bytes],
                    progress: bool | None) -> list[tuple[int, int]]:
    """Re-read every written range and compare BLAKE3 (full chunks: against the chunk id)."""
    def check(i: int) -> tuple[int, int] | None:
        pc = pieces[i]
        buf = bytearray(pc.length)
        dev.readinto(pc.target, memoryview(buf))
        if pc.cid is None:
            ok = buf.count(0) == pc.length
        elif pc.full:
            ok = blake3.blake3(buf).hexdigest() == pc.cid
        else:
            ok = blake3.blake3(buf).digest() == digests[i]
        return None if ok else (pc.target, pc.length)

    total = sum(pc.length for pc in pieces)
    bad = []
    with ThreadPoolExecutor(workers()) as pool, byte_progress("verify written data", total, enabled=progress) as adv:
        for i, r in zip(range(len(pieces)), pool.map(check, range(len(pieces)))):
            adv(pieces[i].length)
            if r:
                bad.append(r)
    return bad

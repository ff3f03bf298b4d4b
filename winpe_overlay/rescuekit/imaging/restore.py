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
from rescuekit.disk.partitions import backup_gpt_at_end, gpt_rebuild, read_table
from rescuekit.errors import RescueError, UsageError
from rescuekit.imaging.capture import workers
from rescuekit.imaging.imageview import ImageView
from rescuekit.imaging.layout import moved_boot_sector_writes, plan_shrink
from rescuekit.imaging.safety import holds, system_holder
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


def describe_target(dev: BlockDevice, *, whole_disk: bool = False) -> str:
    """What is on a destination now: model, size, table, partitions with file systems and labels
    (``whole_disk``: the table is about to be replaced, say so)."""
    info = dev.info
    kind = getattr(info, "kind", "file")
    model = getattr(info, "model", None) or ("image file" if kind == "file" else kind)
    lines = [f"{dev.path}: {model}, {human(dev.size)} ({dev.size} bytes), {dev.sector_size}-byte sectors"]
    try:
        table = read_table(dev)
    except RescueError as exc:
        lines.append(f"  partition table: present but unreadable ({exc})"
                     + ("; it will be replaced by the image's" if whole_disk else ""))
        return "\n".join(lines)
    if table.kind == "none":
        try:
            fs = detect(dev, 0, dev.size)
            lines.append(f"  no partition table; file system: {fs.kind}{' ' + repr(fs.label) if fs.label else ''}")
        except RescueError:
            lines.append("  no partition table")
        backup = backup_gpt_at_end(dev)
        if backup is not None:
            lines.append(f"  a backup GPT remains at LBA {backup} (primary and protective MBR gone)"
                         + ("; it will be replaced by the image's" if whole_disk else ""))
        return "\n".join(lines)
    lines.append(f"  partition table: {table.kind.upper()}" + (" (replaced by the image's)" if whole_disk else ""))
    for w in table.warnings:
        lines.append(f"  warning: {w}")
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


def _moved_pieces(doc: dict, moves: list[tuple[int, int, int]]) -> list[Piece]:
    """Pieces that copy image bytes [src, src + n) to target offset dst, for each (src, n, dst) (one pass over
    the chunk map per move would be quadratic)."""
    from bisect import bisect_right

    chunks = list(iter_chunks(doc, doc["chunk_size"]))
    starts = [off for off, _n, _cid in chunks]
    out = []
    for src, n, dst in moves:
        i = max(0, bisect_right(starts, src) - 1)
        while i < len(chunks) and chunks[i][0] < src + n:
            off, m, cid = chunks[i]
            a, b = max(off, src), min(off + m, src + n)
            if a < b:
                out.append(Piece(dst + a - src, b - a, cid, a - off, a == off and b == off + m))
            i += 1
    return out


def _cut(pieces: list[Piece], ranges: list[tuple[int, int]]) -> list[Piece]:
    """``pieces`` without the target byte ``ranges`` (sorted (start, length)), split where needed."""
    from bisect import bisect_right

    starts = [a for a, _n in ranges]
    out = []
    for pc in pieces:
        pos, end = pc.target, pc.target + pc.length
        i = max(0, bisect_right(starts, pos) - 1)
        while pos < end:
            while i < len(ranges) and ranges[i][0] + ranges[i][1] <= pos:
                i += 1
            nxt = ranges[i][0] if i < len(ranges) else end
            if nxt <= pos:  # inside a cut range
                pos = min(end, ranges[i][0] + ranges[i][1])
                continue
            stop = min(end, nxt)
            whole = pos == pc.target and stop == end
            out.append(pc if whole else Piece(pos, stop - pos, pc.cid, pc.skip + pos - pc.target, False))
            pos = stop
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


def _target_base(ro: BlockDevice, number: int, target: str, root: Path) -> tuple[int, int, str, int | None]:
    """Where partition ``number`` goes in an existing target: (offset, available bytes, description, sector
    size of the target's table or None). A partition is never laid over a partition table: a table that is
    there but unreadable, or traces of one, are refused, not taken for "no table"."""
    try:
        table = read_table(ro)
    except RescueError as exc:
        raise RescueError(f"{ro.path} has a partition table that cannot be read ({exc}); restoring partition "
                          f"{number} would write over it: restore the whole disk (it replaces the table), repair "
                          "the table, or give the partition itself; nothing was written") from None
    if table.kind != "none":
        for p in table.partitions:
            if p.number == number and not p.extended:
                return p.start, min(p.size, ro.size - p.start), f"partition {number} of {ro.path}", table.sector_size
        raise UsageError(f"{ro.path} has a {table.kind.upper()} partition table without a partition {number}; "
                         "give the partition itself (or its image file), or a disk that has a partition "
                         f"{number}; nothing was written")
    why = None
    backup = backup_gpt_at_end(ro)
    if backup is not None:
        why = f"has no primary partition table but a backup GPT at LBA {backup}"
    elif getattr(ro.info, "kind", "file") == "disk":
        why = "is a whole disk without a partition table"
    elif any(u.get("partition") is None and _same_target(str(u.get("target")), target)
             for u in unfinished_restores(root)):
        why = "is a disk whose whole-disk restore did not finish (its partition table is wiped)"
    if why:
        raise RescueError(f"{ro.path} {why}; a partition restore would write over it: restore the whole disk, "
                          "or give the partition itself; nothing was written")
    return 0, ro.size, ro.path, None


def _same_target(a: str, b: str) -> bool:
    return a == b or (not a.startswith("\\\\") and os.path.realpath(a) == os.path.realpath(b))


def _image_sector_size(doc: dict) -> tuple[int | None, str]:
    """The sector size the image's layout depends on and how that is known; None for a volume image of a
    file (a file has no sector size)."""
    src, table = doc["source"], doc["table"]
    if src.get("kind") in ("disk", "partition") and src.get("sector_size"):
        return src["sector_size"], "the device it was captured from"
    if table["kind"] != "none" and table.get("sector_size"):
        return table["sector_size"], f"its {table['kind'].upper()}"
    return None, ""


def _check_sector_size(doc: dict, dev: BlockDevice, target: str, table_ss: int | None) -> None:
    """Refuse a destination whose sector size differs from the image's: partition tables count sectors and file
    systems record their sector size, so the restored disk would be misread (partitions 8x off). Not translated:
    the file systems inside would still be wrong for the new sector size."""
    want, how = _image_sector_size(doc)
    device = getattr(dev.info, "kind", "file") in ("disk", "partition") or dev.path.startswith(("\\\\.\\", "//./"))
    for have, what in ((dev.sector_size if device else None, "sectors"), (table_ss, "sectors in its partition table")):
        if want and have and have != want:
            raise RescueError(f"sector size mismatch: {target} has {have}-byte {what} but image {doc['id'][:12]} "
                              f"uses {want}-byte sectors (from {how}); its partition table and file systems would be "
                              f"misread there, so it is not translated: restore onto a disk with {want}-byte sectors "
                              "or into an image file; nothing was written")


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


def _check_chunks(doc: dict, index, root: Path) -> None:
    """Every chunk of the image indexed, every pack it needs present (before anything is written)."""
    ids = {cid for _off, _n, cid in iter_chunks(doc, doc["chunk_size"]) if cid is not None}
    for cid in ids:
        if cid not in index:
            raise RescueError(f"chunk {cid[:16]} of image {doc['id'][:12]} is missing from the repository "
                              f"index; run `rescuekit verify {root}`; nothing was written")
    trouble = pack_shortfall(root, pack_ends(index.entries[cid] for cid in ids))  # missing or truncated
    if trouble:
        raise RescueError(f"pack {trouble[0]} needed by image {doc['id'][:12]} {trouble[1]}; "
                          f"run `rescuekit verify {root}`; nothing was written")


def _plan_gpt(doc: dict, index, reader: PackReader, size: int, target: str,
              ends: dict[int, int] | None = None, starts: dict[int, int] | None = None) -> list[tuple[int, bytes]]:
    """The GPT writes for a whole-disk restore onto ``size`` bytes, from the image's own table: the valid copy
    (a capture accepts a damaged primary) rebuilt into both headers, the backup at the target's end (``ends``:
    partitions shrunk by the restore)."""
    try:
        return gpt_rebuild(ImageView(doc, index, reader), size, ends, starts)
    except RescueError as exc:
        raise RescueError(f"cannot lay out image {doc['id'][:12]}'s GPT on {target}: {exc}; nothing was written"
                          ) from None


def restore(repo_path: str | Path, target: str, *, image: str | None = None, partition: int | None = None,
            verify: bool = False, confirm: Callable[[str], bool] | None = None, progress: bool | None = None,
            force_unlock: bool = False, shrink_to: int | None = None) -> dict:
    """Restore; ``confirm(text)`` is asked (text = what will be overwritten) unless it is None.

    An NTFS or FAT volume larger than the target (or than ``shrink_to`` bytes) is shrunk on the way when its used
    clusters allow it (``rescuekit.imaging.layout``); otherwise refused before anything is written."""
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
        if needed <= 0:  # captured from an empty source by an older rescuekit
            raise RescueError(f"image {doc['id'][:12]} is empty (0 bytes): nothing to restore; nothing was written")
        via = holds(target, repo.root)
        if via is not None:
            raise RescueError(f"refusing to restore onto {target}: it holds the repository {repo.root}{via}")
        sys_path = system_holder(target)
        if sys_path is not None:
            raise RescueError(f"refusing to restore onto {target}: it is the running system's disk "
                              f"(it holds {sys_path})")
        exists = os.path.exists(target) or target.startswith(("\\\\.\\", "//./"))
        _refuse_odd_target(target, repo.root, exists)
        index = repo.load_index()
        _check_chunks(doc, index, repo.root)
        reader = PackReader(repo.root)
        try:
            return _restore(repo, doc, target, partition, lo, hi, what, exists, index, reader, verify=verify,
                            confirm=confirm, progress=progress, t0=t0, shrink_to=shrink_to)
        finally:
            reader.close()


def _restore(repo: Repository, doc: dict, target: str, partition: int | None, lo: int, hi: int, what: str,
             exists: bool, index, reader: PackReader, *, verify: bool, confirm: Callable[[str], bool] | None,
             progress: bool | None, t0: float, shrink_to: int | None = None) -> dict:
    needed = hi - lo
    base, seen, text = 0, None, None
    shrink = None
    if shrink_to is not None and shrink_to <= 0:
        raise UsageError(f"bad --shrink-to {shrink_to}")
    if exists:  # checked on a read-only handle: nothing is locked, dismounted or written before the answer
        with open_source(target) as ro:
            if partition is None:
                avail, where, table_ss = ro.size, ro.path, None
            else:
                base, avail, where, table_ss = _target_base(ro, partition, target, repo.root)
            _check_sector_size(doc, ro, target, table_ss)
            if shrink_to is not None and shrink_to > avail:
                raise RescueError(f"{where} is too small for --shrink-to {shrink_to}: {avail} bytes; nothing was "
                                  "written")
            want = min(avail, shrink_to or avail)
            if want < needed:  # shrink the volume on the way, or refuse naming the size needed
                shrink = plan_shrink(doc, index, reader, partition, lo, hi, want, where, what)
            seen = (ro.size, ro.sector_size)
            text = (f"Restoring {what} will overwrite {where}" + (f" at offset {base}" if base else "") + ":\n"
                    + describe_target(ro, whole_disk=partition is None)
                    + (f"\nLayout: {shrink.describe()}" if shrink else ""))
    elif shrink_to is not None and shrink_to < needed:
        shrink = plan_shrink(doc, index, reader, partition, lo, hi, shrink_to, target, what)
    gpt_writes: list[tuple[int, bytes]] = []
    vol_at = base
    if shrink is not None:  # its writes go last, after the volume's clusters (and are read back)
        if shrink.whole_disk:  # whole disk: up to the shrunk last partition's new end
            vol_at, needed = shrink.lo, shrink.disk_size
        else:
            needed = shrink.new_size
        hi = shrink.lo + shrink.identity  # image bytes written where they are
        gpt_writes = [(vol_at + off, data) for off, data in shrink.writes]
        if shrink.table == "gpt":  # (partitions after the shrunk one move down: new first and last LBAs)
            ss = doc["table"]["sector_size"] or 512
            ends = {shrink.number: shrink.end_lba} | {n: (new + size) // ss - 1 for n, _o, new, size in
                                                       shrink.moved_parts}
            gpt_writes += _plan_gpt(doc, index, reader, needed, target, ends=ends,
                                    starts={n: new // ss for n, _o, new, _s in shrink.moved_parts})
            gpt_writes += moved_boot_sector_writes(doc, index, reader, shrink.moved_parts, ss)
        gpt_writes += shrink.table_writes  # MBR: the entries cut to the new end
    elif partition is None and doc["table"]["kind"] == "gpt":
        gpt_writes = _plan_gpt(doc, index, reader, seen[0] if seen else needed, target)
    if text is not None and confirm is not None and not confirm(text):
        raise RescueError("restore cancelled; nothing was written")
    fresh = not exists
    pieces = _pieces(doc, lo, hi, base)
    if shrink is not None:  # partitions after the shrunk one: each written at its new (lower) offset
        for _n, old, new, size in shrink.moved_parts:
            pieces += _pieces(doc, old, old + size, new)
    moves = shrink.byte_moves() if shrink is not None else []
    if moves:  # data past the new end (NTFS) or renumbered (FAT), written where it moves to
        dest = sorted((vol_at + new, n) for _old, n, new in moves)
        pieces = _cut(pieces, dest)  # the (free) clusters they land on are not written from the image too
        # in source order: pieces of one stored blob stay adjacent, so each blob is decompressed once
        pieces += _moved_pieces(doc, sorted((shrink.lo + old, n, vol_at + new) for old, n, new in moves))
        verify = True  # every moved cluster's hash is checked on the target
    # First and last MiB of what is written (partition table + backup GPT, or boot sector + backup boot
    # sector): zeroed first, written last, so an interrupted restore leaves nothing that looks valid.
    edge = min(HEAD, needed)
    protect = [(base, base + edge), (base + needed - edge, base + needed)]
    total = sum(pc.length for pc in pieces)
    zero = bytes(doc["chunk_size"])
    digests: dict[int, bytes] = {}
    journal: Path | None = None
    created = False
    bad: list[tuple[int, int]] = []
    try:
        with open_target(target, create_size=needed) as dev:
            created = fresh
            if seen is not None and (dev.size, dev.sector_size) != seen:
                raise RescueError(f"{target} changed since it was checked ({seen[0]} bytes, {seen[1]}-byte sectors; "
                                  f"now {dev.size}, {dev.sector_size}); nothing was written")
            # The journal only once the target is open for writing: a target refused here (read-only, in use)
            # was not touched and must not be reported as an unfinished restore.
            journal = _write_journal(repo, doc, target, partition)
            try:
                bad = _write_all(dev, doc, pieces, index, reader, protect, zero, digests, fresh=fresh,
                                 wipe_end=partition is None, verify=verify, progress=progress, target=target,
                                 gpt_writes=gpt_writes)
                if shrink is not None and not bad:
                    shrink.check(dev, vol_at)  # structures re-read from the target
            except (RescueError, OSError) as exc:
                if fresh:
                    raise
                raise RescueError(f"{_one_line(exc)}; the restore onto {target} did not finish: it is incomplete "
                                  "(no valid partition table); restore it again") from exc
    except BaseException:
        if created:  # a half-written image file we created is no output: remove it (and so its journal)
            for leftover in (Path(target), journal):
                if leftover is not None:
                    leftover.unlink(missing_ok=True)
        raise
    if bad:
        raise RescueError(f"verification of {target} failed: {len(bad)} range(s) differ, first at byte "
                          f"{bad[0][0]} ({bad[0][1]} bytes); the disk may be failing")
    if journal is not None:
        journal.unlink()
    for p in (repo.root / "restores").glob("*.json"):  # earlier interrupted restores of this target are
        try:                                           # superseded now
            if _same_target(str(json.loads(p.read_bytes()).get("target")), target):
                p.unlink()
        except (OSError, ValueError, AttributeError):
            pass
    return {"image": doc["id"], "name": doc.get("name"), "target": target, "partition": partition,
            "bytes_written": total, "verified": verify, "seconds": round(time.monotonic() - t0, 3),
            "shrunk_to": shrink.new_size if shrink and shrink.shrink else None,
            "shrunk_fs": shrink.fs_kind if shrink else None,
            "moved_partitions": [{"number": n, "from": old, "to": new, "size": size}
                                 for n, old, new, size in (shrink.moved_parts if shrink else [])]}


def _one_line(exc: BaseException) -> str:
    if isinstance(exc, OSError):
        return f"{exc.strerror or exc}" + (f": {exc.filename}" if exc.filename else "")
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__


def _write_all(dev: BlockDevice, doc: dict, pieces: list[Piece], index, reader: PackReader,
               protect: list[tuple[int, int]], zero: bytes, digests: dict[int, bytes], *, fresh: bool,
               wipe_end: bool, verify: bool, progress: bool | None, target: str,
               gpt_writes: list[tuple[int, bytes]]) -> list[tuple[int, int]]:
    """Wipe the edges, write the body, then the edges, verify, then the planned GPT; the ranges that read
    back wrong (``verify``)."""
    if not fresh:  # an interrupted restore must not leave the old table/boot sector in place
        wipe = protect + ([(dev.size - min(HEAD, dev.size), dev.size)] if wipe_end else [])
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
    total = sum(pc.length for pc in pieces)
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
    # verify what came from the image before the GPT rebuild legitimately changes the head
    bad = _verify_written(dev, pieces, digests, progress) if verify else []
    if not bad and gpt_writes:
        for off, data in gpt_writes:
            dev.write(off, data)
        dev.flush()
        if verify:
            _drop_cache(target)
            bad = [(off, len(data)) for off, data in gpt_writes if dev.read(off, len(data)) != data]
    return bad


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

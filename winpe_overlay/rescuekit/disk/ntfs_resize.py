"""Shrink an NTFS volume, as ntfsresize does it (docs/imaging.md "Restore onto a smaller target").

Everything is computed from a read-only source (the image, through ``ImageView``) before anything is written:
``plan`` returns the cluster moves (old LCN -> free LCN below the new end) and a list of (byte offset relative to
the partition, bytes) to write after the volume's clusters: MFT records whose run lists point past the end
(rewritten where the record is after the move: $MFT's own clusters move too, its records with them; records 0-3
also in $MFTMirr), the boot sector with the new total sector count ($MFTMirr's LCN) and its backup in the new
last sector, $Bitmap's record and changed bitmap bytes, $BadClus's record.

Refused (RescueError naming the size needed or the reason): a size below the used clusters + slack or below the
end of $Bitmap/$Boot or of $MFT's first 16 records (not moved), bad clusters recorded in $BadClus, $Bitmap/$BadClus
split over extension records, a record without room for a longer run list, a hibernated volume or one whose
journal is not clean (``rescuekit.disk.winstate``). ``check`` re-reads the written volume.
"""
from __future__ import annotations

import heapq
import struct
from dataclasses import dataclass, field

from rescuekit.disk import ntfs, winstate
from rescuekit.disk.device import BlockDevice
from rescuekit.errors import RescueError

FILE_MFT, FILE_MFTMIRR, FILE_BADCLUS = 0, 1, 8
# Files whose clusters are not moved: $Bitmap (rewritten here), $Boot, $BadClus. $MFT's clusters move (its
# records with them), except the first 16 records the boot sector points at.
UNMOVABLE = {6, 7, 8}
MIRRORED = 4  # records in $MFTMirr
FIRST_RECORDS = 16  # $MFT's records that must stay contiguous at the boot sector's mft_lcn


@dataclass
class Shrink:
    old_size: int
    new_size: int
    cluster_size: int
    sector_size: int
    new_clusters: int
    used_clusters: int
    min_size: int  # smallest partition size this volume can be shrunk to without moving clusters
    writes: list[tuple[int, bytes]] = field(default_factory=list)  # relative to the partition start
    moves: list[tuple[int, int, int]] = field(default_factory=list)  # (old LCN, new LCN, clusters)
    mftmirr_lcn: int | None = None  # set when the records were rewritten ($MFTMirr may have moved)


def protect_fixups(rec: bytearray) -> None:
    """Apply the update sequence array to a record (inverse of ``ntfs.apply_fixups``; the USN is incremented)."""
    usa_ofs, usa_count = struct.unpack_from("<HH", rec, 4)
    usn = (struct.unpack_from("<H", rec, usa_ofs)[0] + 1) & 0xFFFF or 1
    struct.pack_into("<H", rec, usa_ofs, usn)
    for i in range(1, usa_count):
        pos = i * 512 - 2
        rec[usa_ofs + 2 * i:usa_ofs + 2 * i + 2] = rec[pos:pos + 2]
        struct.pack_into("<H", rec, pos, usn)


def _sbytes(v: int) -> bytes:
    n = 1
    while not -(1 << (8 * n - 1)) <= v < 1 << (8 * n - 1):
        n += 1
    return v.to_bytes(n, "little", signed=True)


def encode_runs(runs: list[tuple[int | None, int]]) -> bytes:
    """Mapping pairs for ``runs`` (inverse of ``ntfs.decode_runs``), with the terminating zero byte."""
    out = bytearray()
    prev = 0
    for lcn, n in runs:
        lb = _sbytes(n)
        if lcn is None:
            out += bytes([len(lb)]) + lb
        else:
            db = _sbytes(lcn - prev)
            out += bytes([len(lb) | len(db) << 4]) + lb + db
            prev = lcn
    return bytes(out) + b"\0"


class _Allocator:
    """Free clusters below the new end. A run is given one free extent that holds it whole when there is one (of
    the smallest size class that does, lowest first), else the largest ones, as ntfsresize's alloc_cluster prefers
    a whole fit: moved runs stay contiguous, so run lists grow as little as possible. Extents are kept in buckets
    by bit length (heaps of extent indices, i.e. by address; stale entries skipped)."""

    def __init__(self, free: list[tuple[int, int]]) -> None:
        self.free = [list(f) for f in free]
        self.buckets: list[list[int]] = [[] for _ in range(64)]
        for i, (_lcn, n) in enumerate(self.free):
            self.buckets[n.bit_length()].append(i)  # ascending indices: already heaps

    def _top(self, b: int) -> int | None:
        h = self.buckets[b]
        while h and self.free[h[0]][1].bit_length() != b:
            heapq.heappop(h)
        return h[0] if h else None

    def _pick(self, n: int, contiguous: bool) -> int:
        b0 = n.bit_length()
        i = self._top(b0)
        if i is not None and self.free[i][1] >= n:
            return i
        for b in range(b0 + 1, 64):  # the smallest size class that surely holds n
            i = self._top(b)
            if i is not None:
                return i
        fits = [i for i in self.buckets[b0] if self.free[i][1] >= n and self.free[i][1].bit_length() == b0]
        if fits:
            return min(fits)
        if contiguous:
            raise RescueError(f"no {n} contiguous free clusters below the new end")
        for b in range(b0, 0, -1):  # no extent holds it: the largest first
            i = self._top(b)
            if i is not None:
                return i
        raise RescueError("not enough free clusters below the new end")

    def take(self, n: int, contiguous: bool = False) -> list[tuple[int, int]]:
        """``n`` clusters as [(lcn, count)]; one extent only when ``contiguous`` ($MFTMirr stays one run)."""
        out = []
        while n:
            i = self._pick(n, contiguous)
            f = self.free[i]
            k = min(n, f[1])
            out.append((f[0], k))
            f[0] += k
            f[1] -= k
            n -= k
            if f[1]:
                heapq.heappush(self.buckets[f[1].bit_length()], i)
        return out


def _remap(runs: list[tuple[int | None, int]], nr: int, alloc: _Allocator,
           moves: list[tuple[int, int, int]], contiguous: bool = False) -> list[tuple[int | None, int]]:
    """``runs`` with every cluster at or past ``nr`` given a free cluster below it (VCNs unchanged, so the
    compression units of a compressed attribute stay where they are: only their clusters' LCNs change, as in
    ntfsresize's relocate_run); the moves appended to ``moves``."""
    out: list[tuple[int | None, int]] = []
    for lcn, n in runs:
        parts: list[tuple[int | None, int]]
        if lcn is None or lcn + n <= nr:
            parts = [(lcn, n)]
        else:
            keep = max(0, nr - lcn)
            parts = [(lcn, keep)] if keep else []
            old = lcn + keep
            for new, k in alloc.take(n - keep, contiguous):
                moves.append((old, new, k))
                parts.append((new, k))
                old += k
        for pl, pn in parts:
            if out and pl is not None and out[-1][0] is not None and out[-1][0] + out[-1][1] == pl:
                out[-1] = (out[-1][0], out[-1][1] + pn)
            else:
                out.append((pl, pn))
    return out


def _rewrite_runs(rec: bytearray, apos: int, mp: bytes) -> bool:
    """Replace the mapping pairs of the non-resident attribute at ``apos``; False when the record is too full."""
    alen = struct.unpack_from("<I", rec, apos + 4)[0]
    mp_off = struct.unpack_from("<H", rec, apos + 32)[0]
    used, size = struct.unpack_from("<II", rec, 24)
    new_alen = (mp_off + len(mp) + 7) & ~7
    if used - alen + new_alen > size:
        return False
    new_attr = bytes(rec[apos:apos + mp_off]) + mp + bytes(new_alen - mp_off - len(mp))
    rest = bytes(rec[apos + alen:used])
    body = new_attr + rest
    rec[apos:used] = bytes(used - apos)
    rec[apos:apos + len(body)] = body
    struct.pack_into("<I", rec, apos + 4, new_alen)
    struct.pack_into("<I", rec, 24, used - alen + new_alen)
    return True


def _relocate(dev: BlockDevice, offset: int, boot: ntfs.NtfsBoot, nr: int, used_ranges: list[tuple[int, int]],
              sh: "Shrink", where: str) -> None:
    """Move every cluster at or past LCN ``nr`` into free space below it: planned moves, rewritten MFT records."""
    cs, rs = boot.cluster_size, boot.mft_record_size
    if rs > cs:
        raise RescueError(f"the {where} has MFT records larger than its clusters: moving clusters is not implemented")
    free, pos = [], 0
    for s, n in used_ranges:
        a, b = s // cs, -(-(s + n) // cs)
        if a > pos:
            free.append((pos, min(a, nr) - pos))
        pos = max(pos, b)
        if pos >= nr:
            break
    if pos < nr:
        free.append((pos, nr - pos))
    free = [(a, n) for a, n in free if n > 0 and a < nr]
    alloc = _Allocator(free)
    mirrored: dict[int, bytes] = {}  # changed records 0-3, fixups undone
    # $MFT's own run list first: its records are read from their old places (the image), but rewritten records
    # are written where they are after the move. Its extents may sit in extension records (an attribute list).
    mft_ext = ntfs.attribute_extents(dev, offset, boot, FILE_MFT, ntfs.AT_DATA)
    mft_runs, mft_size = ntfs.extents_runs([(r, p) for _n, r, p in mft_ext], f"$MFT of the {where}")
    first = -(-FIRST_RECORDS * rs // cs)
    if boot.mft_lcn + first > nr:
        raise RescueError(f"the {where} has $MFT's first {FIRST_RECORDS} records past the new end (moving them is "
                          f"not implemented): it needs at least {(boot.mft_lcn + first) * cs + boot.bytes_per_sector} "
                          "bytes")
    planned: dict[tuple[int, int], list[tuple[int | None, int]]] = {}  # (record, attribute offset) -> new runs
    new_mft_runs: list[tuple[int | None, int]] = []
    for number, erec, epos in mft_ext:
        runs = ntfs._mapping_pairs(erec, epos)
        new = _remap(runs, nr, alloc, sh.moves) if any(lcn is not None and lcn + n > nr for lcn, n in runs) else runs
        planned[(number, epos)] = new
        new_mft_runs += new
    for number in range(mft_size // rs):
        rpos = number * rs
        raw = ntfs.read_stream(dev, offset, mft_runs, cs, rpos, rs)
        if raw[:4] != b"FILE":
            continue
        rec = bytearray(raw)
        if not struct.unpack_from("<H", rec, 22)[0] & 1:  # not in use (the flags lie before the first fixup)
            continue
        ntfs.apply_fixups(rec, f"MFT record {number} of the {where}")  # a torn record in use: refused
        todo = []
        for atype, apos in ntfs.iter_attributes(rec):
            if rec[apos + 8] == 0:
                continue
            runs = ntfs._mapping_pairs(rec, apos)
            if any(lcn is not None and lcn + n > nr for lcn, n in runs):
                todo.append((apos, runs, atype))
        if not todo:
            continue
        base_ref = struct.unpack_from("<Q", rec, 32)[0] & 0xFFFFFFFFFFFF
        if number in UNMOVABLE or (base_ref and base_ref in UNMOVABLE):
            raise RescueError(f"the {where} has clusters of a metadata file (MFT record {number}) past the new "
                              "end: moving them is not implemented")
        for apos, runs, atype in sorted(todo, reverse=True):  # later attributes first: earlier offsets stay
            new = planned.get((number, apos))
            if new is None:  # $MFTMirr stays one run (the boot sector names only its first cluster)
                contiguous = number == FILE_MFTMIRR and atype == ntfs.AT_DATA
                new = _remap(runs, nr, alloc, sh.moves, contiguous)
            if not _rewrite_runs(rec, apos, encode_runs(new)):
                raise RescueError(f"MFT record {number} of the {where} has no room for its moved attribute "
                                  f"0x{atype:X}'s longer run list: not shrunk")
        if number < MIRRORED:
            mirrored[number] = bytes(rec)
        protect_fixups(rec)
        vcn, within = divmod(rpos, cs)
        for lcn, n in new_mft_runs:  # the record's place on the volume after the move
            if vcn < n:
                sh.writes.append(((lcn + vcn) * cs + within, bytes(rec)))
                break
            vcn -= n
    # $MFTMirr holds copies of records 0-3: changed ones are written there too, where it is now (it may have
    # moved itself; the boot sector then names its new LCN).
    rec1 = bytearray(mirrored[1]) if 1 in mirrored else ntfs.read_mft_record(dev, offset, boot, 1)
    apos = ntfs._find_unnamed(rec1, ntfs.AT_DATA)
    sh.mftmirr_lcn = ntfs._mapping_pairs(rec1, apos)[0][0]
    for number, fixed in mirrored.items():
        rec = bytearray(fixed)
        protect_fixups(rec)
        sh.writes.append((sh.mftmirr_lcn * cs + number * rs, bytes(rec)))


def min_size(dev: BlockDevice, offset: int, size: int, boot: ntfs.NtfsBoot,
             _out: list | None = None) -> tuple[int, int]:
    """(smallest partition size holding every used cluster where it is + the backup boot sector, used clusters)."""
    ranges, used = ntfs.used_ranges(dev, offset, size, boot)
    if _out is not None:
        _out[:] = ranges
    area = boot.nr_clusters * boot.cluster_size
    last = max((s + n for s, n in ranges if s < area), default=boot.cluster_size)
    clusters = -(-min(last, area) // boot.cluster_size)
    return clusters * boot.cluster_size + boot.bytes_per_sector, used


def _record(dev: BlockDevice, offset: int, boot: ntfs.NtfsBoot, number: int) -> tuple[int, bytearray]:
    pos = boot.mft_lcn * boot.cluster_size + number * boot.mft_record_size
    return pos, ntfs.read_mft_record(dev, offset, boot, number)


def _attr(rec: bytes, atype: int, name: str, what: str) -> int:
    if ntfs._find_unnamed(rec, ntfs.AT_ATTRIBUTE_LIST) is not None:
        raise RescueError(f"{what} has an attribute list (split over several MFT records): not shrunk")
    for t, apos in ntfs.iter_attributes(rec):
        if t == atype and ntfs.attr_name(rec, apos) == name:
            if rec[apos + 8] == 0:
                raise RescueError(f"{what}: resident attribute, not expected")
            return apos
    raise RescueError(f"{what} has no {name or 'unnamed'} attribute 0x{atype:X}")


def plan(dev: BlockDevice, offset: int, size: int, new_size: int) -> Shrink:
    """The writes that make the NTFS volume at ``offset`` (``size`` bytes) of ``dev`` a ``new_size`` volume."""
    where = f"NTFS volume at byte {offset} of {dev.path}"
    boot = ntfs.parse_boot(dev.read(offset, 512))
    if boot is None:
        raise RescueError(f"no NTFS boot sector: {where}")
    bps, cs = boot.bytes_per_sector, boot.cluster_size
    ranges: list[tuple[int, int]] = []
    need, used = min_size(dev, offset, size, boot, ranges)
    # With moves: every used cluster plus 1% (at least 1 MiB) of slack for run lists and Windows' first boot.
    least = -(-(used * cs + max(1 << 20, used * cs // 100)) // cs) * cs + bps
    for number in sorted(UNMOVABLE - {FILE_BADCLUS}):  # and past the files whose clusters are not moved
        for rec, apos in ntfs.attribute_records(dev, offset, boot, number, ntfs.AT_DATA):
            if rec[apos + 8]:
                end = max((lcn + n for lcn, n in ntfs._mapping_pairs(rec, apos) if lcn is not None), default=0)
                least = max(least, end * cs + bps)
    least = max(least, (boot.mft_lcn + -(-FIRST_RECORDS * boot.mft_record_size // cs)) * cs + bps)
    if new_size < min(need, least):
        raise RescueError(f"the {where} needs at least {min(need, least)} bytes ({used} used clusters of {cs} "
                          "bytes)")
    st = winstate.probe(dev, offset, boot)
    if st.hiberfil is not None:
        raise RescueError(f"the {where} holds a hibernated Windows session: it cannot be resized (boot Windows, "
                          "shut it down fully, then capture again)")
    if st.journal_clean is not True:
        raise RescueError(f"the {where} has a journal ($LogFile) that is not clean: it cannot be resized "
                          "(boot Windows and shut it down fully, then capture again)")
    total = new_size // bps - 1  # the last sector holds the backup boot sector (as mkntfs lays it out)
    nr = total * bps // cs
    sh = Shrink(size, new_size, cs, bps, nr, used, min(need, least))
    if new_size < need:  # clusters at or past the new end: moved into free space below it
        _relocate(dev, offset, boot, nr, ranges, sh, where)
    bs = bytearray(dev.read(offset, bps))
    struct.pack_into("<q", bs, 0x28, total)
    if sh.mftmirr_lcn is not None:
        struct.pack_into("<q", bs, 0x38, sh.mftmirr_lcn)
    sh.writes += [(0, bytes(bs)), (total * bps, bytes(bs))]
    # $Bitmap: one bit per cluster, size rounded up to 8 bytes (ntfsresize); its clusters stay allocated.
    pos, rec = _record(dev, offset, boot, ntfs.FILE_BITMAP)
    apos = _attr(rec, ntfs.AT_DATA, "", f"$Bitmap of the {where}")
    bm = ((nr + 7) // 8 + 7) & ~7
    alloc = struct.unpack_from("<q", rec, apos + 40)[0]
    if bm > alloc:
        raise RescueError(f"$Bitmap of the {where} is smaller than the shrunk volume needs")
    struct.pack_into("<qq", rec, apos + 48, bm, bm)
    # Bits for the clusters past the new end, up to the bitmap's (8-byte) end, are set: "in use", as mkntfs
    # and Windows leave them (ntfsresize --info counts a clear one as an accounting error).
    runs = ntfs._mapping_pairs(rec, apos)
    orig = ntfs.read_stream(dev, offset, runs, cs, 0, bm)
    bmap = bytearray(orig)
    for lo_bit, n_bits in [(nr, bm * 8 - nr)] + [(new, k) for _old, new, k in sh.moves]:
        for bit in range(lo_bit, lo_bit + n_bits):
            bmap[bit // 8] |= 1 << (bit % 8)
    spans, i = [], 0
    while i < bm:  # the changed byte spans
        if bmap[i] != orig[i]:
            j = i
            while j < bm and bmap[j] != orig[j]:
                j += 1
            spans.append((i, j))
            i = j
        i += 1
    for first, last in spans:  # mapped to where they are on the volume
        vcn0 = 0
        for lcn, length in runs:
            a, b = max(first, vcn0 * cs), min(last, (vcn0 + length) * cs)
            if a < b and lcn is not None:
                sh.writes.append((lcn * cs + a - vcn0 * cs, bytes(bmap[a:b])))
            vcn0 += length
    protect_fixups(rec)
    sh.writes.append((pos, bytes(rec)))
    # $BadClus:$Bad is sparse over the whole volume; any real run is a recorded bad cluster.
    pos, rec = _record(dev, offset, boot, FILE_BADCLUS)
    apos = _attr(rec, ntfs.AT_DATA, "$Bad", f"$BadClus of the {where}")
    runs = ntfs._mapping_pairs(rec, apos)
    if any(lcn is not None for lcn, _n in runs) or struct.unpack_from("<q", rec, apos + 16)[0] != 0:
        raise RescueError(f"the {where} has bad clusters recorded in $BadClus: not shrunk (run chkdsk /b first)")
    mp = apos + struct.unpack_from("<H", rec, apos + 32)[0]
    lsz = rec[mp] & 0x0F
    if len(runs) != 1 or rec[mp] >> 4 != 0 or nr >= 1 << (8 * lsz - 1):
        raise RescueError(f"$BadClus of the {where} has an unexpected run list: not shrunk")
    rec[mp + 1:mp + 1 + lsz] = nr.to_bytes(lsz, "little")
    struct.pack_into("<q", rec, apos + 24, nr - 1)  # highest VCN
    struct.pack_into("<qq", rec, apos + 40, nr * cs, nr * cs)  # allocated, data size (initialized stays)
    protect_fixups(rec)
    sh.writes.append((pos, bytes(rec)))
    return sh


def check(dev: BlockDevice, offset: int, sh: Shrink) -> None:
    """Re-read the shrunk volume: geometry, backup boot sector, $Bitmap covering exactly the used clusters."""
    where = f"the shrunk NTFS volume at byte {offset} of {dev.path}"
    bs = dev.read(offset, sh.sector_size)
    boot = ntfs.parse_boot(bs)
    if boot is None or boot.nr_clusters != sh.new_clusters:
        raise RescueError(f"{where}: boot sector reads back wrong")
    if dev.read(offset + boot.total_sectors * boot.bytes_per_sector, sh.sector_size) != bs:
        raise RescueError(f"{where}: backup boot sector reads back wrong")
    _ranges, used = ntfs.used_ranges(dev, offset, sh.new_size, boot)
    if used != sh.used_clusters:
        raise RescueError(f"{where}: {used} used clusters after the shrink, {sh.used_clusters} before")

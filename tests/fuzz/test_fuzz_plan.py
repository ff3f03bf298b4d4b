"""Capture and restore planning under generated ranges (pure functions, hypothesis):

* ``align`` rounds out to the chunk grid inside the disk and keeps every input byte;
* ``holes`` tiles each extent with chunks in disk order, and the holes it reports (zeroed before hashing)
  are exactly the bytes of the chunk the file systems do not use: used bytes are never zeroed;
* ``iter_chunks`` + the restore's ``_pieces`` cover exactly the image's extents inside the restored range,
  each piece inside its chunk, written at the right place of the destination, in order, without overlap.
"""
from __future__ import annotations

from fuzz_helpers import budget, check_ranges, covers
from hypothesis import given, settings
from hypothesis import strategies as st

from rescuekit.disk.partitions import PartitionTable
from rescuekit.disk.ranges import merge
from rescuekit.imaging.plan import Plan, align, holes
from rescuekit.imaging.restore import _pieces
from rescuekit.repo.manifest import iter_chunks

CHUNKS = st.sampled_from([512, 4096, 1 << 16, 1 << 18])


@st.composite
def used_ranges(draw, max_size: int = 1 << 22):
    size = draw(st.integers(1, max_size))
    raw = draw(st.lists(st.tuples(st.integers(0, size - 1), st.integers(1, 1 << 20)), max_size=12))
    return size, merge([(s, min(n, size - s)) for s, n in raw])


def _intersect(a: list[tuple[int, int]], lo: int, hi: int) -> list[tuple[int, int]]:
    return [(max(s, lo), min(s + n, hi) - max(s, lo)) for s, n in a if s < hi and s + n > lo]


@settings(max_examples=budget(150))
@given(case=used_ranges(), chunk=CHUNKS)
def test_align_and_holes(case, chunk) -> None:
    size, used = case
    extents = align(used, chunk, size)
    check_ranges(extents, size, "extents")
    assert not covers(extents, used)  # nothing used is left out
    for s, n in extents:
        assert s % chunk == 0 and (n % chunk == 0 or s + n == size)
    plan = Plan(disk_size=size, sector_size=512, table=PartitionTable(kind="none"), extents=extents, used=used)
    expect = [(off, min(chunk, s + n - off)) for s, n in extents for off in range(s, s + n, chunk)]
    got = []
    for ei, off, m, gaps in holes(plan, chunk):
        got.append((off, m))
        s, n = extents[ei]
        assert s <= off and off + m <= s + n
        abs_gaps = [(off + g, k) for g, k in gaps]
        check_ranges([(g, k) for g, k in gaps], m, "gaps")
        inside = _intersect(used, off, off + m)
        # gaps and used bytes tile the chunk exactly
        assert merge(abs_gaps + inside) == [(off, m)], (off, m, gaps, inside)
        assert not any(g < us + un and us < g + k for g, k in abs_gaps for us, un in inside), "used bytes zeroed"
    assert got == expect


@st.composite
def images(draw):
    chunk = draw(st.sampled_from([512, 4096, 1 << 16]))
    size, used = draw(used_ranges(1 << 21))
    extents = align(used, chunk, size)
    doc = {"chunk_size": chunk, "extents": []}
    for s, n in extents:
        count = -(-n // chunk)
        ids = draw(st.lists(st.sampled_from([None, "a" * 64, "b" * 64]), min_size=count, max_size=count))
        doc["extents"].append({"offset": s, "length": n, "chunks": ids})
    lo = draw(st.integers(0, size - 1))
    hi = draw(st.integers(lo + 1, size))
    base = draw(st.integers(0, 1 << 30))
    return doc, size, extents, lo, hi, base


@settings(max_examples=budget(150))
@given(case=images())
def test_restore_pieces(case) -> None:
    doc, size, extents, lo, hi, base = case
    chunk = doc["chunk_size"]
    chunks = list(iter_chunks(doc, chunk))
    assert [(o, n) for o, n, _ in chunks] == [(o, min(chunk, s + n - o)) for s, n in extents
                                              for o in range(s, s + n, chunk)]
    pieces = _pieces(doc, lo, hi, base)
    dest = [(p.target, p.length) for p in pieces]
    check_ranges(merge(dest), base + hi - lo, "pieces")
    assert all(t >= base for t, _n in dest), "a piece before the destination's start"
    assert all(a[0] + a[1] <= b[0] for a, b in zip(dest, dest[1:])), "pieces overlap or are out of order"
    want = _intersect(extents, lo, hi)
    assert merge([(t - base + lo, n) for t, n in dest]) == merge(want)
    by_off = {o: (n, cid) for o, n, cid in chunks}
    for p in pieces:
        src = p.target - base + lo - p.skip  # the chunk this piece comes from
        n, cid = by_off[src]
        assert p.cid == cid and 0 <= p.skip and p.skip + p.length <= n
        assert p.full == (p.skip == 0 and p.length == n)

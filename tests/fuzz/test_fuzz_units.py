"""Properties of the small parsers and scanners the file-system code is built on (hypothesis, pure):
the fast allocation-bitmap scanner against a per-bit oracle, NTFS mapping pairs against an encoder written
from the spec, and boot-sector / record parsers on arbitrary bytes (None or RescueError, never a crash)."""
from __future__ import annotations

import re

from fuzz_helpers import budget, check_ranges
from hypothesis import example, given, settings
from hypothesis import strategies as st

from rescuekit.disk import fat, ntfs
from rescuekit.disk.ranges import RangeBuilder, merge
from rescuekit.errors import RescueError

# bitmaps made of the shapes real ones have: long zero / 0xFF stretches (whole 4 KiB blocks too), single mixed
# bytes and random bytes; stretch lengths near the scanner's 4 KiB block size, so runs end and start at block edges
lengths = st.one_of(st.integers(1, 64), st.sampled_from([4094, 4095, 4096, 4097, 8191, 8192, 8193]),
                    st.integers(1, 6000))
bitmap_parts = st.one_of(st.binary(min_size=1, max_size=64), st.integers(1, 254).map(lambda v: bytes([v])),
                         lengths.map(lambda n: b"\0" * n), lengths.map(lambda n: b"\xff" * n))


@settings(max_examples=budget(150))
# block-edge shapes: a 0xFF run ending at a 4 KiB edge followed by a mixed byte, a zero block, another run
@example(parts=[b"\xff" * 4096, b"\x0f", b"\0" * 10], first=0, unit=1, base=0, cut=200_000, pre=False)
@example(parts=[b"\0" * 4095, b"\xff" * 4098, b"\x80"], first=3, unit=512, base=7, cut=200_000, pre=True)
@example(parts=[b"\xff" * 8192, b"\0" * 4096, b"\xff"], first=0, unit=4096, base=0, cut=90_000, pre=False)
@given(parts=st.lists(bitmap_parts, max_size=8), first=st.integers(0, 1000), unit=st.sampled_from([1, 512, 4096]),
       base=st.integers(0, 1 << 20), cut=st.integers(0, 200_000), pre=st.booleans())
def test_bitmap_scan_matches_per_bit_oracle(parts, first, unit, base, cut, pre) -> None:
    data = b"".join(parts)
    limit = first + min(cut, len(data) * 8)
    rb = RangeBuilder()
    if pre:  # a range already there, touching the first unit: must merge, not duplicate
        rb.add(max(0, base + first * unit - unit), unit)
    count = rb.add_bitmap(data, first, unit, base, limit)
    got = rb.result()
    # oracle: the bits as a string, bit i of the bitmap = bit i of the little-endian integer
    bits = format(int.from_bytes(data, "little"), "b")[::-1].ljust(len(data) * 8, "0")[:limit - first]
    runs = [(base + (first + m.start()) * unit, (m.end() - m.start()) * unit) for m in re.finditer("1+", bits)]
    want = merge(([(max(0, base + first * unit - unit), unit)] if pre else []) + runs)
    assert count == bits.count("1")
    assert got == want
    check_ranges(got, 1 << 62, "bitmap ranges")


def _encode_runs(runs: list[tuple[int | None, int]]) -> bytes:
    """NTFS mapping pairs (ntfs-3g layout.h): header nibbles = bytes of the offset delta / of the length,
    both little-endian two's complement in the fewest bytes; a sparse run has no offset."""
    def sbytes(v: int) -> bytes:
        n = 1
        while not -(1 << (8 * n - 1)) <= v < (1 << (8 * n - 1)):
            n += 1
        return v.to_bytes(n, "little", signed=True)

    out, prev = bytearray(), 0
    for lcn, length in runs:
        lb = sbytes(length)
        ob = b"" if lcn is None else sbytes(lcn - prev)
        out += bytes([len(ob) << 4 | len(lb)]) + lb + ob
        if lcn is not None:
            prev = lcn
    return bytes(out) + b"\0"


@settings(max_examples=budget(60))
@given(runs=st.lists(st.tuples(st.one_of(st.none(), st.integers(0, 1 << 40)), st.integers(1, 1 << 33)),
                     max_size=20))
def test_ntfs_mapping_pairs_round_trip(runs) -> None:
    buf = b"\x11" * 3 + _encode_runs(runs)
    assert ntfs.decode_runs(buf, 3, len(buf)) == runs


@settings(max_examples=budget(100))
@given(buf=st.binary(max_size=200))
def test_ntfs_mapping_pairs_on_garbage(buf) -> None:
    try:
        runs = ntfs.decode_runs(buf, 0, len(buf))
    except RescueError:
        return
    assert all(n > 0 and (lcn is None or lcn >= 0) for lcn, n in runs)


@st.composite
def boot_sectors(draw):
    """512 bytes: random, or a random BPB behind a real-looking jump/OEM id/signature."""
    s = bytearray(draw(st.binary(min_size=512, max_size=512)))
    kind = draw(st.sampled_from(["raw", "fat", "ntfs", "exfat"]))
    if kind != "raw":
        s[0:3] = b"\xeb\x58\x90" if kind != "exfat" else b"\xeb\x76\x90"
        s[3:11] = {"fat": b"MSDOS5.0", "ntfs": b"NTFS    ", "exfat": b"EXFAT   "}[kind]
        s[510:512] = b"\x55\xaa"
    return bytes(s)


@settings(max_examples=budget(120))
@given(s=boot_sectors())
def test_boot_sector_parsers_on_arbitrary_bytes(s) -> None:
    """Each parser returns None or a geometry whose derived sizes are positive: never an exception."""
    fb = fat.parse_fat_boot(s)
    if fb is not None:
        assert fb.count > 0 and fb.cluster_size > 0 and fb.data_start > 0 and fb.kind in ("fat12", "fat16", "fat32")
    eb = fat.parse_exfat_boot(s)
    if eb is not None:
        assert eb.cluster_size >= 512 and 2 <= eb.root_cluster < eb.count + 2
    nb = ntfs.parse_boot(s)
    if nb is not None:
        assert nb.cluster_size > 0 and nb.mft_lcn > 0 and 256 <= nb.mft_record_size <= 65536


@settings(max_examples=budget(80))
@given(rec=st.binary(min_size=1024, max_size=1024), usa=st.tuples(st.integers(0, 1100), st.integers(0, 4)))
def test_mft_fixups_on_arbitrary_records(rec, usa) -> None:
    r = bytearray(rec)
    r[4:8] = usa[0].to_bytes(2, "little") + usa[1].to_bytes(2, "little")
    try:
        ntfs.apply_fixups(r, "test record")
    except RescueError:
        return
    assert len(r) == 1024
    list(ntfs.iter_attributes(bytes(r)))  # walking the attributes of whatever came out never raises

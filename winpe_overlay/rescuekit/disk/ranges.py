"""Byte-range lists and fast allocation-bitmap scanning (no Python loop per bit)."""
from __future__ import annotations

import bisect
import re

# Runs of all-set bytes, or one mixed byte; all-zero bytes are skipped by the regex engine in C.
_SET_OR_MIXED = re.compile(rb"\xff+|[^\x00\xff]")
_NONZERO = re.compile(rb"[^\x00]+")


_BLOCK = 4096
_ZEROS = bytes(_BLOCK)
_ONES = b"\xff" * _BLOCK


def _iter_runs(data: bytes | memoryview):
    """(start, end) of runs of 0xFF bytes and of single mixed bytes, in order.

    Whole all-zero / all-one blocks are decided with one memcmp each: the regex engine alone crawls
    through long zero stretches at ~30 MB/s, and free space is mostly long zero stretches.
    """
    mv = memoryview(data)
    n = len(mv)
    run_start = -1  # start of a pending 0xFF run that may continue into the next block
    for b0 in range(0, n, _BLOCK):
        blk = mv[b0:b0 + _BLOCK]
        if blk == _ZEROS[:len(blk)]:
            if run_start >= 0:
                yield run_start, b0
                run_start = -1
            continue
        if blk == _ONES[:len(blk)]:
            if run_start < 0:
                run_start = b0
            continue
        for m in _SET_OR_MIXED.finditer(blk):
            s, e = m.span()
            s += b0
            e += b0
            if run_start >= 0:
                if s == b0 and blk[0] == 0xFF:  # the pending run continues
                    s = run_start
                else:
                    yield run_start, b0
                run_start = -1
            if data[s] == 0xFF and e == b0 + len(blk):
                run_start = s  # may continue in the next block
            else:
                yield s, e
        if run_start >= 0 and run_start < b0:  # block did not continue the pending run
            yield run_start, b0
            run_start = -1
    if run_start >= 0:
        yield run_start, n


def _byte_runs(v: int) -> tuple[tuple[int, int], ...]:
    """Runs (first_bit, nbits) of set bits in byte ``v``, LSB first (bit 0 = first unit)."""
    runs, bit = [], 0
    while bit < 8:
        if v >> bit & 1:
            start = bit
            while bit < 8 and v >> bit & 1:
                bit += 1
            runs.append((start, bit - start))
        else:
            bit += 1
    return tuple(runs)


_BYTE_RUNS = [_byte_runs(v) for v in range(256)]


class RangeBuilder:
    """Collects (start, length) ranges appended in ascending order, merging touching ones."""

    def __init__(self) -> None:
        self._out: list[list[int]] = []

    def add(self, start: int, length: int) -> None:
        if length <= 0:
            return
        out = self._out
        if out and start <= out[-1][0] + out[-1][1]:
            end = max(out[-1][0] + out[-1][1], start + length)
            out[-1][1] = end - out[-1][0]
        else:
            out.append([start, length])

    def add_bitmap(self, data: bytes | memoryview, first_unit: int, unit_size: int, base: int,
                   unit_limit: int) -> int:
        """Add the units whose bit is set in ``data`` (bit i of ``data`` = unit ``first_unit + i``).

        Unit u covers bytes ``base + u * unit_size``; units >= ``unit_limit`` are ignored.
        Returns the number of set units counted. Cost is per run of set bits, not per bit.
        """
        count = 0
        out = self._out
        byte_runs = _BYTE_RUNS
        last = out[-1] if out else None
        for m in _iter_runs(data):
            s, e = m
            v = data[s]
            u0 = first_unit + s * 8
            for b, n in ((0, (e - s) * 8),) if v == 0xFF else byte_runs[v]:
                u = u0 + b
                if u >= unit_limit:
                    return count
                if u + n > unit_limit:
                    n = unit_limit - u
                count += n
                start, length = base + u * unit_size, n * unit_size
                # Inline merge (hot loop): extend the last range when this one touches it.
                if last is not None and start <= last[0] + last[1]:
                    end = start + length
                    if end > last[0] + last[1]:
                        last[1] = end - last[0]
                else:
                    last = [start, length]
                    out.append(last)
        return count

    def add_flags(self, flags: bytes, first_unit: int, unit_size: int, base: int) -> int:
        """Add the units whose flag byte is non-zero (one byte per unit); all-zero blocks skipped by memcmp."""
        count = 0
        mv = memoryview(flags)
        for b0 in range(0, len(mv), _BLOCK):
            blk = mv[b0:b0 + _BLOCK]
            if blk == _ZEROS[:len(blk)]:
                continue
            for m in _NONZERO.finditer(blk):
                s, e = m.span()
                count += e - s
                self.add(base + (first_unit + b0 + s) * unit_size, (e - s) * unit_size)
        return count

    def result(self, clip: int | None = None) -> list[tuple[int, int]]:
        out = []
        for s, n in self._out:
            if clip is not None:
                if s >= clip:
                    break
                n = min(n, clip - s)
            out.append((s, n))
        return out


def merge(ranges: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Sort and merge overlapping or touching (start, length) ranges; empty ones dropped."""
    rb = RangeBuilder()
    for s, n in sorted(ranges):
        rb.add(s, n)
    return rb.result()


def covered(ranges: list[tuple[int, int]], start: int, length: int) -> bool:
    """Whether sorted, merged ``ranges`` cover all of [start, start + length)."""
    i = bisect.bisect_right(ranges, (start, float("inf"))) - 1
    return length <= 0 or i >= 0 and ranges[i][0] + ranges[i][1] >= start + length


def total(ranges: list[tuple[int, int]]) -> int:
    return sum(n for _s, n in ranges)


def subtract(ranges: list[tuple[int, int]], remove: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """``ranges`` minus ``remove`` (both (start, length) lists; result sorted and merged)."""
    out: list[tuple[int, int]] = []
    cut = merge(remove)
    j = 0
    for s, n in merge(ranges):
        pos, end = s, s + n
        while j < len(cut) and cut[j][0] + cut[j][1] <= pos:
            j += 1
        k = j
        while pos < end and k < len(cut) and cut[k][0] < end:
            cs, ce = cut[k][0], cut[k][0] + cut[k][1]
            if cs > pos:
                out.append((pos, cs - pos))
            pos = max(pos, ce)
            k += 1
        if pos < end:
            out.append((pos, end - pos))
    return out

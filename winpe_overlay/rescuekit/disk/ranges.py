"""Byte-range lists and fast allocation-bitmap scanning (no Python loop per bit)."""
from __future__ import annotations

import re

# Runs of all-set bytes, or one mixed byte; all-zero bytes are skipped by the regex engine in C.
_SET_OR_MIXED = re.compile(rb"\xff+|[^\x00\xff]")
_NONZERO = re.compile(rb"[^\x00]+")


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
        Returns the number of set units counted.
        """
        count = 0
        for m in _SET_OR_MIXED.finditer(data):
            s, e = m.span()
            if data[s] == 0xFF:
                runs: tuple[tuple[int, int], ...] = ((0, (e - s) * 8),)
            else:
                runs = _BYTE_RUNS[data[s]]
            u0 = first_unit + s * 8
            for b, n in runs:
                u = u0 + b
                if u >= unit_limit:
                    return count
                n = min(n, unit_limit - u)
                count += n
                self.add(base + u * unit_size, n * unit_size)
        return count

    def add_flags(self, flags: bytes, first_unit: int, unit_size: int, base: int) -> int:
        """Add the units whose flag byte is non-zero (one byte per unit)."""
        count = 0
        for m in _NONZERO.finditer(flags):
            s, e = m.span()
            count += e - s
            self.add(base + (first_unit + s) * unit_size, (e - s) * unit_size)
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


def total(ranges: list[tuple[int, int]]) -> int:
    return sum(n for _s, n in ranges)

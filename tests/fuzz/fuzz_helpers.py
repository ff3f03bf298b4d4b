"""Helpers for the property-based / mutation tier: a memfd-backed BlockDevice (the real FileDevice code on
bytes in memory, so thousands of mutated images cost no disk I/O) and the invariants every parser result
must satisfy."""
from __future__ import annotations

import os
import random
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager

from rescuekit.disk.device import FileDevice

MiB = 1 << 20
# RESCUEKIT_FUZZ_SCALE=N multiplies every example/mutation budget (a longer local run); CI runs 1.
SCALE = max(1, int(os.environ.get("RESCUEKIT_FUZZ_SCALE", "1") or 1))


def budget(n: int) -> int:
    return n * SCALE


def sfdisk_write(img, size: int, script: str) -> None:
    """A new sparse image of ``size`` bytes partitioned by ``sfdisk`` from ``script`` (fast: sgdisk syncs)."""
    with open(img, "wb") as f:
        f.truncate(size)
    res = subprocess.run(["sfdisk", "-q", "-f", "--no-reread", "--no-tell-kernel", str(img)], input=script,
                         capture_output=True, text=True)
    assert res.returncode == 0, res.stderr


class MemDisk:
    """A disk image held in a memfd, read through ``FileDevice`` (pread, bounds checks, error messages).

    ``mutated(edits)`` applies {offset: bytes} and restores the original bytes afterwards."""

    def __init__(self, data: bytes, name: str = "mem.img") -> None:
        self.fd = os.memfd_create(name)
        os.pwrite(self.fd, data, 0)
        os.ftruncate(self.fd, len(data))
        self.size = len(data)
        self.dev = FileDevice(name, self.fd, self.size)

    @classmethod
    def from_file(cls, path) -> "MemDisk":
        with open(path, "rb") as f:
            return cls(f.read(), name=os.path.basename(str(path)))

    def read(self, offset: int, n: int) -> bytes:
        return os.pread(self.fd, n, offset)

    def write(self, offset: int, data: bytes) -> None:
        os.pwrite(self.fd, data, offset)

    @contextmanager
    def mutated(self, edits: dict[int, bytes]) -> Iterator[FileDevice]:
        saved = {off: self.read(off, len(b)) for off, b in edits.items()}
        try:
            for off, b in edits.items():
                self.write(off, b)
            yield self.dev
        finally:
            for off, b in saved.items():
                self.write(off, b)

    def close(self) -> None:
        os.close(self.fd)

    def __enter__(self) -> "MemDisk":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def check_ranges(ranges: list[tuple[int, int]], limit: int, what: str) -> None:
    """Sorted, disjoint, non-touching (merged), non-empty ranges inside [0, limit)."""
    prev_end = -1
    for s, n in ranges:
        assert n > 0, f"{what}: empty range {(s, n)}"
        assert s >= 0 and s + n <= limit, f"{what}: range {(s, n)} outside 0..{limit}"
        assert s > prev_end, f"{what}: ranges not sorted/merged at {(s, n)} (previous end {prev_end})"
        prev_end = s + n


def covers(ranges: list[tuple[int, int]], need: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """The parts of ``need`` that ``ranges`` (sorted, merged) leave out."""
    out = []
    for s, n in need:
        pos, end = s, s + n
        for a, m in ranges:
            if a + m <= pos:
                continue
            if a >= end:
                break
            if a > pos:
                out.append((pos, a - pos))
            pos = max(pos, a + m)
            if pos >= end:
                break
        if pos < end:
            out.append((pos, end - pos))
    return out


def mutations(rng: random.Random, regions: list[tuple[int, int]], count: int,
              original: MemDisk | None = None) -> Iterator[dict[int, bytes]]:
    """Seeded byte-level mutations inside ``regions``: bit flips, random bytes, 0x00/0xFF runs, and aligned
    little-endian integer fields set to boundary values or nudged by one (what breaks size arithmetic)."""
    specials = [0, 1, 2, 0x7F, 0x80, 0xFF, 0x100, 0xFFFF, 0x10000, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFF,
                1 << 32, (1 << 63) - 1, 1 << 63, (1 << 64) - 1]
    for _ in range(count):
        s, n = rng.choice(regions)
        off = s + rng.randrange(n)
        op = rng.randrange(6)
        if op == 0:
            old = original.read(off, 1)[0] if original else 0
            edit = {off: bytes([old ^ (1 << rng.randrange(8))])}
        elif op == 1:
            edit = {off: rng.randbytes(rng.randint(1, 16))}
        elif op == 2:
            edit = {off: bytes([rng.choice((0, 0xFF))]) * rng.randint(1, 64)}
        else:
            width = (2, 4, 8)[op - 3]
            off -= off % width
            mask = (1 << (8 * width)) - 1
            if original is not None and rng.random() < 0.5:
                v = int.from_bytes(original.read(off, width), "little") + rng.choice((-1, 1, -8, 8))
            else:
                v = rng.choice(specials)
            edit = {off: (v & mask).to_bytes(width, "little")}
        yield edit

"""Regressions for partition-table defects the mutation tier (test_fuzz_tables.py) found, on real tables."""
from __future__ import annotations

import struct

from fuzz_helpers import MemDisk, MiB, check_ranges, covers, sfdisk_write
from test_fuzz_tables import CHUNK, SS, _gpt_crc_fixed

from rescuekit.disk.partitions import read_table
from rescuekit.imaging.plan import make_plan


def _sfdisk(tmp_path, script: str, size: int = 8 * MiB) -> MemDisk:
    img = tmp_path / "d.img"
    sfdisk_write(img, size, script)
    return MemDisk.from_file(img)


def test_gpt_partition_past_the_disk_end_keeps_the_plan_inside_the_disk(tmp_path) -> None:
    """A (CRC-valid) entry that starts past the disk's end: the gap before it used to be planned up to that
    start, 2^73 bytes past the disk; it is clipped at the disk's end (and stored: the table is damaged)."""
    with _sfdisk(tmp_path, "label: gpt\nstart=2048, size=2048\nstart=4096, size=2048\n") as m:
        entry2 = 2 * SS + 128
        edit = _gpt_crc_fixed(m, {entry2 + 32: struct.pack("<QQ", (1 << 64) - 1, (1 << 64) - 1)}, SS)
        with m.mutated(edit) as dev:
            t = read_table(dev)
            assert t.partitions[1].start > m.size and any("past the end" in w for w in t.warnings)
            plan = make_plan(dev, CHUNK)
        check_ranges(plan.used, m.size, "plan.used")
        assert not covers(plan.used, [(2 * MiB, m.size - 2 * MiB)])  # everything after partition 1 kept


def test_mbr_logical_partition_past_the_end_is_reported(tmp_path) -> None:
    """A logical partition whose EBR gives it more sectors than the extended partition (and the disk) holds
    was listed without a warning; primaries past the end always had one."""
    with _sfdisk(tmp_path, "label: dos\nstart=2048, size=2048, type=7\ntype=5\nsize=2048, type=7\n") as m:
        t0 = read_table(m.dev)
        [ebr] = [s for s, _n in t0.header_regions if s > 0]
        with m.mutated({ebr + 446 + 12: struct.pack("<I", 0xFFFFFF00)}) as dev:
            t = read_table(dev)
            [logical] = [p for p in t.partitions if p.logical]
            assert logical.end > m.size
            assert any("logical partition 5" in w and "past the end" in w for w in t.warnings), t.warnings
            check_ranges(make_plan(dev, CHUNK).used, m.size, "plan.used")


def test_damaged_backup_gpt_is_still_stored(tmp_path) -> None:
    """A backup GPT whose header is damaged was left out of the image (the table regions named only valid
    copies, and it lies in the unallocated tail): a restore then zeroed it. Its place is stored as it is."""
    with _sfdisk(tmp_path, "label: gpt\nstart=2048, size=2048\n") as m:
        last = m.size - SS
        with m.mutated({last + 40: b"\x01"}) as dev:  # a byte of the backup header: its CRC fails
            t = read_table(dev)
            assert any("backup GPT" in w for w in t.warnings), t.warnings
            plan = make_plan(dev, CHUNK)
        assert not covers(plan.used, [(last - 32 * SS, 33 * SS)])
        assert not covers(t.header_regions, [(last - 32 * SS, 33 * SS)])


def test_logical_partitions_behind_a_broken_ebr_chain_are_still_stored(mem_tables) -> None:
    """Logical partitions are only found through the EBR chain: a damaged EBR hid every logical after it, and
    their data - inside the extended partition, or after the last partition the damaged table still showed -
    was left out of the image. The inside of an extended partition is stored; an MBR with damage found keeps
    the tail too."""
    m = mem_tables["mbr"]
    t0 = read_table(m.dev)
    plan0 = make_plan(m.dev, CHUNK)
    ext = next(p for p in t0.partitions if p.extended)
    ebr0 = ext.start
    cases = {
        "first EBR without 55AA (reads as an empty extended partition)": {ebr0 + 510: b"\0\0"},
        "link to the second EBR cleared (reads as a shorter chain)": {ebr0 + 462: bytes(16)},
        "extended entry's type cleared, start/size left (half-empty slot)": {446 + 16 * 2 + 4: b"\0"},
        "extended entry moved onto partition 1 (overlap)": {446 + 16 * 2 + 8: struct.pack("<I", 4096)},
    }
    for what, edit in cases.items():
        with m.mutated(edit) as dev:
            plan = make_plan(dev, CHUNK)
        assert not covers(plan.used, plan0.used), (what, covers(plan.used, plan0.used)[:3], plan.warnings)

"""Capture-plan arithmetic and the refusals that protect the repository disk and the system disk."""
from __future__ import annotations

from pathlib import Path

import pytest

from rescuekit.disk import inventory
from rescuekit.disk.partitions import PartitionTable
from rescuekit.imaging.plan import Plan, align, holes, merge
from rescuekit.imaging.safety import is_system_disk, same_disk
from imaging_helpers import rk

K = 1024


def test_merge_and_align() -> None:
    assert merge([(10, 5), (0, 10), (30, 0), (20, 5), (24, 10)]) == [(0, 15), (20, 14)]
    assert align([(5, 10), (300, 1)], 256, 1000) == [(0, 512)]  # touching grid cells merge
    assert align([(5, 10), (600, 1)], 256, 1000) == [(0, 256), (512, 256)]
    assert align([(990, 5)], 256, 1000) == [(768, 232)]  # clipped at the disk end


def test_holes_mark_unused_bytes_inside_chunks() -> None:
    used = [(0, 1 * K), (3 * K, 2 * K), (9 * K, 7 * K)]
    plan = Plan(disk_size=20 * K, sector_size=512, table=PartitionTable(kind="none"), used=used,
                extents=align(used, 4 * K, 20 * K))
    assert plan.extents == [(0, 16 * K)]
    got = [(off, m, gaps) for _ei, off, m, gaps in holes(plan, 4 * K)]
    assert got == [
        (0, 4 * K, [(1 * K, 2 * K)]),
        (4 * K, 4 * K, [(1 * K, 3 * K)]),
        (8 * K, 4 * K, [(0, 1 * K)]),
        (12 * K, 4 * K, []),
    ]


def test_system_and_repository_disk_detected(tmp_path: Path) -> None:
    holder = inventory.disk_holding(tmp_path)
    if holder is None:
        pytest.skip("tmp_path is not on a local disk here (tmpfs/overlay)")
    assert same_disk(holder, tmp_path)
    image = tmp_path / "x.img"
    image.write_bytes(b"\0" * 4096)
    assert not same_disk(str(image), tmp_path) and not is_system_disk(str(image))
    # capture only reads: safe to check the refusal end to end on the real disk
    res = rk("capture", holder, tmp_path / "repo", check=False, timeout=120)
    assert res.returncode == 1 and "is on the disk being captured" in res.stderr, res.stderr
    assert not (tmp_path / "repo").exists()


def test_new_pack_folder_is_made_durable(tmp_path: Path, monkeypatch) -> None:
    """A pack's new data/<xx> folder is fsynced in data/ (else a power cut could lose a pack an index names)."""
    from rescuekit.repo import packs

    synced: list[Path] = []
    monkeypatch.setattr(packs, "fsync_dir", lambda p: synced.append(Path(p)))
    (tmp_path / "data").mkdir()
    w = packs.PackWriter(tmp_path)
    w.add(b"x" * 100, False, [("0" * 64, 0, 100)])
    pack_id, _ = w.finish()
    assert synced == [tmp_path / "data", tmp_path / "data" / pack_id[:2]]


def test_unallocated_tail_is_not_captured_but_backup_gpt_is(tmp_path: Path) -> None:
    """A small partition on a big disk: the plan reads the partition and the table regions, not the empty tail."""
    import os
    import subprocess

    from rescuekit.disk.device import open_source
    from rescuekit.imaging.plan import make_plan

    disk = tmp_path / "disk.img"
    size = 64 << 20
    with open(disk, "wb") as f:  # stale data everywhere, so nothing is elided as zeros
        f.write(os.urandom(size))
    subprocess.run(["sgdisk", "-Z", str(disk)], check=True, capture_output=True)
    subprocess.run(["sgdisk", "-n", "1:2048:+8M", "-n", "2:30M:+4M", str(disk)], check=True, capture_output=True)
    with open_source(disk) as dev:
        plan = make_plan(dev, 256 * K)
    covered = lambda a, b: sum(max(0, min(o + n, b) - max(o, a)) for o, n in plan.extents)  # noqa: E731
    assert covered(0, 1 << 20) == 1 << 20                       # first MiB (protective MBR, GPT)
    assert covered(9 << 20, 30 << 20) == (30 - 9) << 20         # the gap between the partitions is kept
    assert covered(34 << 20, size - (1 << 20)) == 0              # the unallocated tail is not read
    assert covered(size - 33 * 512, size) == 33 * 512            # the backup GPT is

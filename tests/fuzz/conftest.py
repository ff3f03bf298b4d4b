"""The property-based / mutation tier: hypothesis profile (derandomized, fixed budgets) and real images made
once per session by the real tools (sgdisk, sfdisk, mkfs.vfat + mtools, mkfs.exfat, mkntfs + wimlib).

RESCUEKIT_FUZZ_SCALE=N multiplies every budget (examples and mutations) for a longer local run; CI uses 1."""
from __future__ import annotations

from pathlib import Path

import pytest
from fuzz_helpers import MiB, MemDisk
from hypothesis import HealthCheck, settings

from tests.conftest import require_tools

settings.register_profile(
    "rescuekit-ci", derandomize=True, deadline=None, database=None, print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture, HealthCheck.data_too_large])
settings.load_profile("rescuekit-ci")


@pytest.fixture(scope="session")
def mtd():
    require_tools("sgdisk", "sfdisk", "mkntfs", "ntfsclone", "wimlib-imagex", "mkfs.vfat", "mcopy", "mkfs.exfat")
    import make_test_disks

    return make_test_disks


def _punch_holes(vol: Path, hashes: dict[str, str]) -> None:
    """Delete every third file (mtools): used clusters then come in runs with free holes between them, so a
    parser that maps clusters to the wrong bytes cannot hide behind one contiguous run."""
    import subprocess

    victims = [f"::/{p}" for i, p in enumerate(sorted(hashes)) if i % 3 == 1]
    subprocess.run(["mdel", "-i", str(vol), *victims], check=True, capture_output=True)


def _fat(mtd, path: Path, size: int, bits: int, seed: int) -> Path:
    vol, hashes = mtd.make_fat_volume(path, size, bits=bits, tree_bytes=1 * MiB, seed=seed)
    _punch_holes(vol, hashes)
    return vol


@pytest.fixture(scope="session")
def fs_images(mtd, tmp_path_factory) -> dict[str, Path]:
    """Small real volumes with files (FAT: with holes left by deleted files): FAT12, FAT16, FAT32, exFAT, NTFS."""
    d = tmp_path_factory.mktemp("fuzz-fs")
    out = {
        "fat12": _fat(mtd, d / "fat12.img", 3 * MiB, 12, 12),
        "fat16": _fat(mtd, d / "fat16.img", 12 * MiB, 16, 16),
        "fat32": _fat(mtd, d / "fat32.img", 36 * MiB, 32, 32),
        "exfat": mtd.make_exfat_files(d / "exfat.img", 8 * MiB, cluster_size=512, tree_bytes=1 * MiB)[0],
        "ntfs": mtd.make_ntfs_volume(d / "ntfs.img", 12 * MiB, tree_bytes=1 * MiB, seed=7)[0],
    }
    return out


@pytest.fixture(scope="session")
def mem_fs(fs_images) -> dict[str, MemDisk]:
    disks = {k: MemDisk.from_file(p) for k, p in fs_images.items()}
    yield disks
    for m in disks.values():
        m.close()


def _fill_partitions(mtd, disk: Path, tmp: Path) -> None:
    """A small FAT volume with files (and holes) in every data partition of ``disk`` (sfdisk -J layout)."""
    for p in mtd._layout(disk):
        if p["type"] in ("5", "f", "85"):
            continue
        num = int(p["node"][len(str(disk)):].lstrip("p"))
        size = p["size"] * 512
        vol = _fat(mtd, tmp / f"p{num}.img", size, 16 if size >= 12 * MiB else 12, 40 + num)
        mtd._dd_into(vol, disk, p["start"] * 512)
        vol.unlink()


@pytest.fixture(scope="session")
def table_disks(mtd, tmp_path_factory) -> dict[str, Path]:
    """28 MiB disks with FAT partitions: GPT (3 partitions, free space at the end) and MBR (2 primaries +
    an extended partition holding 2 logicals)."""
    import subprocess

    d = tmp_path_factory.mktemp("fuzz-tables")
    gpt, mbr = d / "gpt.img", d / "mbr.img"
    for p in (gpt, mbr):
        with open(p, "wb") as f:
            f.truncate(28 * MiB)
    subprocess.run(["sgdisk", "-n1:2048:+12M", "-t1:0700", "-c1:data one", "-n2:0:+2M", "-t2:ef00",
                    "-n3:0:+8M", "-t3:0700", "-c3:data three", str(gpt)], check=True, capture_output=True)
    script = ("label: dos\nlabel-id: 0x5eed0001\nstart=2048, size=12MiB, type=6, bootable\nsize=3MiB, type=1\n"
              "type=5\nsize=4MiB, type=6\nsize=3MiB, type=1\n")
    subprocess.run(["sfdisk", "-q", str(mbr)], input=script, text=True, check=True, capture_output=True)
    for disk in (gpt, mbr):
        _fill_partitions(mtd, disk, d)
    return {"gpt": gpt, "mbr": mbr}


@pytest.fixture(scope="session")
def mem_tables(table_disks) -> dict[str, MemDisk]:
    disks = {k: MemDisk.from_file(p) for k, p in table_disks.items()}
    yield disks
    for m in disks.values():
        m.close()

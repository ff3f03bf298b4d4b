"""The property-based / mutation tier: hypothesis profile (derandomized, fixed budgets) and real images made
once per session by the real tools (sgdisk, sfdisk, mkfs.vfat + mtools, mkfs.exfat, mkntfs + wimlib).

RESCUEKIT_FUZZ_SCALE=N multiplies every budget (examples and mutations) for a longer local run; CI uses 1."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
from fuzz_helpers import MiB, MemDisk
from hypothesis import HealthCheck, settings

from tests.conftest import require_tools

SCALE = max(1, int(os.environ.get("RESCUEKIT_FUZZ_SCALE", "1") or 1))

settings.register_profile(
    "rescuekit-ci", derandomize=True, deadline=None, database=None, print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture, HealthCheck.data_too_large])
settings.load_profile("rescuekit-ci")


def budget(n: int) -> int:
    return n * SCALE


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
        "exfat": mtd.make_exfat_volume(d / "exfat.img", 8 * MiB),
        "ntfs": mtd.make_ntfs_volume(d / "ntfs.img", 12 * MiB, tree_bytes=1 * MiB, seed=7)[0],
    }
    return out


@pytest.fixture(scope="session")
def mem_fs(fs_images) -> dict[str, MemDisk]:
    disks = {k: MemDisk.from_file(p) for k, p in fs_images.items()}
    yield disks
    for m in disks.values():
        m.close()

"""Real test disks for the disk layer, built once per session (sgdisk/sfdisk, mkntfs + wimlib, mkfs.vfat + mtools)."""
from __future__ import annotations

from pathlib import Path

import pytest
from disk_helpers import MiB

from tests.conftest import require_tools


@pytest.fixture(scope="session")
def mtd():
    require_tools("sgdisk", "sfdisk", "mkntfs", "ntfsclone", "ntfsfix", "ntfscp", "wimlib-imagex", "mkfs.vfat",
                  "fsck.vfat", "mcopy", "mkfs.exfat", "fsck.exfat", "dd")
    import make_test_disks

    return make_test_disks


@pytest.fixture(scope="session")
def gpt_disk(mtd, tmp_path_factory) -> tuple[Path, dict]:
    d = tmp_path_factory.mktemp("gpt")
    return mtd.make_gpt_disk(d / "gpt.img", 320 * MiB, tree_bytes=6 * MiB, esp_size=64 * MiB)


@pytest.fixture(scope="session")
def mbr_disk(mtd, tmp_path_factory) -> tuple[Path, dict]:
    d = tmp_path_factory.mktemp("mbr")
    return mtd.make_mbr_disk(d / "mbr.img", 320 * MiB, tree_bytes=3 * MiB)


@pytest.fixture(scope="session")
def stale_ntfs(mtd, tmp_path_factory) -> tuple[Path, dict]:
    """NTFS volume whose free space holds stale (random/text) data, like a used Windows disk."""
    d = tmp_path_factory.mktemp("ntfs")
    return mtd.make_ntfs_volume(d / "vol.img", 192 * MiB, tree_bytes=24 * MiB, stale_free_space=True, seed=5)

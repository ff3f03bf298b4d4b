"""Session fixtures: real GPT and MBR test disks (scripts/make_test_disks.py) and a repository holding both."""
from __future__ import annotations

from pathlib import Path

import make_test_disks as mtd
import pytest
from imaging_helpers import MiB, rk_json

from tests.conftest import require_tools

TOOLS = ("sgdisk", "sfdisk", "mkntfs", "ntfsfix", "ntfscp", "wimlib-imagex", "mkfs.vfat", "fsck.vfat", "mcopy",
         "unshare", "dd")


@pytest.fixture(scope="session")
def disks(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A GPT disk (ESP FAT32 + MSR + NTFS) and an MBR disk (NTFS, FAT32, extended: FAT16 + NTFS)."""
    require_tools(*TOOLS)
    d = tmp_path_factory.mktemp("disks")
    gpt, gpt_hashes = mtd.make_gpt_disk(d / "gpt.img", 200 * MiB, esp_size=40 * MiB, tree_bytes=8 * MiB)
    mbr, mbr_hashes = mtd.make_mbr_disk(d / "mbr.img")
    return {"gpt": (gpt, gpt_hashes), "mbr": (mbr, mbr_hashes)}


@pytest.fixture(scope="session")
def repo(disks: dict, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A repository with one capture of each disk (tests must not modify it: copy it first)."""
    r = tmp_path_factory.mktemp("repo") / "repo"
    gpt = rk_json("capture", disks["gpt"][0], r, "--name", "gpt")
    mbr = rk_json("capture", disks["mbr"][0], r, "--name", "mbr")
    return {"path": r, "gpt": gpt, "mbr": mbr}


@pytest.fixture
def repo_copy(repo: dict, tmp_path: Path) -> Path:
    import shutil

    dst = tmp_path / "repo"
    shutil.copytree(repo["path"], dst)
    return dst

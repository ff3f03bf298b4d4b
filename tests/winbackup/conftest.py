"""Session fixtures: real WindowsImageBackup folders in the Windows 7 (VHD, MBR) and Windows 10 (VHDX, GPT)
shapes, built once by scripts/make_winbackup.py (mkntfs + wimlib, mkfs.vfat + mcopy, sfdisk/sgdisk, qemu-img)."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.conftest import require_tools

TOOLS = ("sgdisk", "sfdisk", "mkntfs", "ntfsfix", "wimlib-imagex", "mkfs.vfat", "fsck.vfat", "mcopy", "mmd",
         "qemu-img", "dd")


@pytest.fixture(scope="session")
def win7(tmp_path_factory: pytest.TempPathFactory) -> dict:
    require_tools(*TOOLS)
    import make_winbackup

    return make_winbackup.make_win7(tmp_path_factory.mktemp("win7"))


@pytest.fixture(scope="session")
def win10(tmp_path_factory: pytest.TempPathFactory) -> dict:
    require_tools(*TOOLS)
    import make_winbackup

    return make_winbackup.make_win10(tmp_path_factory.mktemp("win10"))


@pytest.fixture
def copy_set(tmp_path: Path):
    """copy_set(backup) -> a private copy of the backup's WindowsImageBackup tree (for tests that damage it)."""
    def make(backup: dict) -> Path:
        dst = tmp_path / "copy"
        shutil.copytree(backup["root"] / "WindowsImageBackup", dst / "WindowsImageBackup")
        return dst / "WindowsImageBackup" / backup["set"].parent.name / backup["set"].name

    return make

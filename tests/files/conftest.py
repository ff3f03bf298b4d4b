"""Session fixtures: a real NTFS volume (mkntfs + wimlib, ntfs-3g for compressed/sparse/ADS/hard links), a
FAT32 volume (mkfs.vfat + mcopy -m), a GPT disk holding both and a repository with its capture."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest
from files_helpers import make_disk, make_exfat, make_fat, make_ntfs

from tests.conftest import require_tools
from tests.winbackup.conftest import win7, win10  # noqa: F401 - the backups the winbackup tests use

TOOLS = ("mkntfs", "wimlib-imagex", "ntfs-3g", "mkfs.vfat", "mcopy", "sgdisk", "umount")


@pytest.fixture(scope="session")
def vols(tmp_path_factory: pytest.TempPathFactory) -> dict:
    require_tools(*TOOLS)
    d = tmp_path_factory.mktemp("files")
    ntfs = make_ntfs(d / "ntfs.img")
    fat = make_fat(d / "fat.img")
    disk = make_disk(d / "disk.img", d / "fat.img", d / "ntfs.img")
    repo = d / "repo"
    res = subprocess.run([sys.executable, "-m", "rescuekit", "capture", str(disk), str(repo), "--name", "pc",
                          "--json"], capture_output=True, text=True, check=True)
    return {"ntfs": d / "ntfs.img", "fat": d / "fat.img", "disk": disk, "repo": repo,
            "image": json.loads(res.stdout), "ntfs_files": ntfs["files"], "streams": ntfs["streams"],
            "fat_files": fat["files"]}


@pytest.fixture(scope="session")
def exfat_vol(tmp_path_factory: pytest.TempPathFactory) -> dict:
    require_tools("mkfs.exfat", "mount.exfat-fuse", "losetup", "umount")
    d = tmp_path_factory.mktemp("exfat")
    info = make_exfat(d / "exfat.img")
    repo = d / "repo"
    subprocess.run([sys.executable, "-m", "rescuekit", "capture", str(d / "exfat.img"), str(repo), "--name", "stick"],
                   capture_output=True, text=True, check=True)
    return {"img": d / "exfat.img", "repo": repo, "files": info["files"]}

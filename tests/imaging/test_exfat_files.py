"""exFAT with real files (written through exfat-fuse: interleaved FAT chains, holes from deleted files,
stale data in free space), 4 KiB clusters and 512-byte clusters (a bitmap spanning many clusters): capture
and restore give a volume that fsck.exfat finds clean, with every file's hash, used bytes as dump.exfat
counts them, and the free space not stored."""
from __future__ import annotations

import re
import subprocess
from array import array
from pathlib import Path

import make_test_disks as mtd
import pytest
from imaging_helpers import MiB, rk, rk_json

from rescuekit.disk import fat
from rescuekit.disk.device import open_source
from rescuekit.disk.filesystems import detect

from tests.conftest import require_tools


@pytest.fixture(scope="session")
def exfat_vols(tmp_path_factory) -> dict[int, tuple[Path, dict[str, str]]]:
    require_tools("mkfs.exfat", "fsck.exfat", "dump.exfat", "mount.exfat-fuse", "losetup")
    d = tmp_path_factory.mktemp("exfat")
    return {cs: mtd.make_exfat_files(d / f"ex{cs}.img", 24 * MiB, cluster_size=cs, seed=cs % 97, tree_bytes=3 * MiB)
            for cs in (4096, 512)}


def _dump_used_clusters(vol: Path) -> int:
    out = subprocess.run(["dump.exfat", str(vol)], capture_output=True, text=True, check=True).stdout
    total = int(re.search(r"Total Clusters:\s+(\d+)", out).group(1))
    free = int(re.search(r"Free Clusters:\s+(\d+)", out).group(1))
    return total - free


@pytest.mark.parametrize("cs", [4096, 512])
def test_exfat_with_files_round_trip(cs: int, exfat_vols, tmp_path: Path) -> None:
    vol, hashes = exfat_vols[cs]
    assert len(hashes) > 5 and "interleaved-1.bin" in hashes and "interleaved-2.bin" in hashes
    with open_source(vol) as dev:
        fs = detect(dev, 0, dev.size)
        eb = fat.parse_exfat_boot(dev.read(0, 512))
        entries = array("I")
        entries.frombytes(dev.read(eb.fat_offset * eb.bytes_per_sector, 4 * (eb.count + 2)))
    # the interleaved writes made real FAT chains that jump between clusters (not contiguous runs)
    assert sum(1 for c in range(2, eb.count + 2) if 2 <= entries[c] < eb.count + 2 and entries[c] != c + 1) > 20
    assert (fs.kind, fs.cluster_size, fs.warnings) == ("exfat", cs, [])
    assert fs.used_bytes == _dump_used_clusters(vol) * cs
    repo = tmp_path / "repo"
    doc = rk_json("capture", vol, repo)
    assert doc["partitions"][0]["fs"] == "exfat" and not doc["warnings"]
    # stale free space is not stored: about the used bytes plus the chunk grid's rounding
    assert doc["totals"]["stored_bytes"] < vol.stat().st_size // 2
    out = tmp_path / "restored.img"
    rk("restore", repo, out, "--yes", "--verify")
    res = subprocess.run(["fsck.exfat", "-n", str(out)], capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr
    assert mtd.file_hashes_exfat(out) == hashes

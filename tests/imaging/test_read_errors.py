"""Read errors (EIO) from the source during capture: the capture stops with one line naming the source and
the offset, exits non-zero, and leaves the repository valid (no manifest, verify passes, prune removes what
the failed capture stored). Bad sectors come from a FUSE file that fails chosen byte ranges (faultfs.py)."""
from __future__ import annotations

import json
import random
import re
from pathlib import Path

import make_test_disks as mtd
import pytest
from faultfs import faulty_file
from imaging_helpers import MiB, rk, rk_json

from rescuekit.disk import fat, ntfs
from rescuekit.disk.device import open_source
from rescuekit.disk.partitions import read_table
from rescuekit.repo.index import load_index
from rescuekit.repo.packs import pack_files

CHUNK = 256 << 10
ERROR = re.compile(r"rescuekit: error: read error at offset (\d+) of (.+): Input/output error")


def _random_volume(path: Path, size: int, seed: int) -> Path:
    rng = random.Random(seed)
    with open(path, "wb") as f:
        for _ in range(size // MiB):
            f.write(rng.randbytes(MiB))
    return path


@pytest.fixture(scope="session")
def small_fat(tmp_path_factory) -> Path:
    vol, _ = mtd.make_fat_volume(tmp_path_factory.mktemp("fat16") / "small.img", 16 * MiB, bits=16,
                                 tree_bytes=1 * MiB)
    return vol


def _repo_with_one_image(small_fat: Path, tmp_path: Path) -> tuple[Path, dict]:
    repo = tmp_path / "repo"
    return repo, rk_json("capture", small_fat, repo, "--name", "good", "--pack-size", "1M")


def _check_failed_capture(res, faulty: Path, bad: tuple[int, int], log: Path) -> int:
    """One-line error naming the faulty file and an offset in the chunk that holds the bad range."""
    assert res.returncode == 1, res.stdout + res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in res.stderr, res.stderr
    m = ERROR.fullmatch(lines[0])
    assert m and m.group(2) == str(faulty), lines[0]
    offset = int(m.group(1))
    assert bad[0] // CHUNK * CHUNK <= offset < bad[0] + bad[1], (offset, bad)
    assert log.read_text().strip(), "the bad range was never read"
    return offset


def _check_repo_after(repo: Path, good: dict, tmp_path: Path, small_fat: Path) -> None:
    """Only the good image is there; verify passes; prune deletes exactly the failed capture's packs."""
    assert [p.stem for p in repo.glob("images/*.json")] == [good["id"]]
    assert not list(repo.glob("data/**/*.tmp")) and not list(repo.glob("data/.*.tmp"))
    rep = rk_json("verify", repo, "--read-data")
    assert rep["ok"] and rep["images"] == 1
    before = set(pack_files(repo))
    assert before > _image_packs(repo, good), "the failed capture finished no pack before the error"
    pr = rk_json("prune", repo)
    assert set(pack_files(repo)) == _image_packs(repo, good)
    assert pr["packs_deleted"] == len(before - set(pack_files(repo))) > 0
    assert rk_json("verify", repo, "--read-data")["ok"]
    out = tmp_path / "good.img"
    rk("restore", repo, out, "--image", "good", "--yes", "--verify")
    assert out.read_bytes() == small_fat.read_bytes()


def _image_packs(repo: Path, doc: dict) -> set[str]:
    index = load_index(repo)
    man = json.loads((repo / "images" / f"{doc['id']}.json").read_text())
    return {index.entries[c].pack for e in man["extents"] for c in e["chunks"] if c}


def test_read_error_stops_capture_of_a_volume(small_fat: Path, tmp_path: Path) -> None:
    """A raw volume (stored whole): the bad sector lies 20 MiB in, after packs were already finished."""
    src = _random_volume(tmp_path / "vol.img", 24 * MiB, seed=11)
    repo, good = _repo_with_one_image(small_fat, tmp_path)
    bad = (20 * MiB + 8192, 4096)
    with faulty_file(src, [bad], tmp_path) as faulty:
        res = rk("capture", faulty, repo, "--name", "bad", check=False)
        _check_failed_capture(res, faulty, bad, tmp_path / "faultfs.log")
    _check_repo_after(repo, good, tmp_path, small_fat)
    # the same data read without errors captures and restores byte for byte
    doc = rk_json("capture", src, repo)
    out = tmp_path / "again.img"
    rk("restore", repo, out, "--image", doc["id"], "--yes")
    assert out.read_bytes() == src.read_bytes()


def _bad_spot(disk: Path, where: str) -> tuple[int, int]:
    """A 512-byte bad sector in a structure the capture parses or stores."""
    with open_source(disk) as dev:
        table = read_table(dev)
        parts = {p.type_name: p for p in table.partitions}
        if where == "backup-gpt":
            return dev.size - 512, 512
        if where == "ntfs-mft":  # $MFT record 6 ($Bitmap): read by the plan, then by the capture
            p = parts["Basic data"]
            nb = ntfs.parse_boot(dev.read(p.start, 512))
            return p.start + nb.mft_lcn * nb.cluster_size + 6 * nb.mft_record_size, 512
        if where == "fat32-fat":  # the ESP's FAT, a few sectors in
            p = parts["EFI System"]
            fb = fat.parse_fat_boot(dev.read(p.start, 512))
            return p.start + (fb.reserved + 2) * fb.bytes_per_sector, 512
    raise AssertionError(where)


@pytest.mark.parametrize("where", ["ntfs-mft", "fat32-fat", "backup-gpt"])
def test_read_error_stops_capture_of_a_disk(where: str, disks: dict, small_fat: Path, tmp_path: Path) -> None:
    """A bad sector in a partition table, an allocation map or used data: whatever the plan does with a
    structure it cannot read (store it whole), the capture reads it and stops."""
    disk = disks["gpt"][0]  # only read, through the fault file system
    repo, good = _repo_with_one_image(small_fat, tmp_path)
    bad = _bad_spot(disk, where)
    with faulty_file(disk, [bad], tmp_path) as faulty:
        res = rk("capture", faulty, repo, "--name", "bad", "--pack-size", "1M", check=False)
        _check_failed_capture(res, faulty, bad, tmp_path / "faultfs.log")
    assert [p.stem for p in repo.glob("images/*.json")] == [good["id"]]
    assert rk_json("verify", repo, "--read-data")["ok"]
    rk_json("prune", repo)
    assert set(pack_files(repo)) == _image_packs(repo, good)
    assert rk_json("verify", repo, "--read-data")["ok"]

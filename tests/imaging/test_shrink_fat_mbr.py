"""Restore onto a smaller target: FAT volumes (truncated, or laid out again with renumbered and split clusters) and
whole MBR disks (the last partition, primary or logical, shrinks; the extended partition is cut to the new end).
Real volumes: mkfs.vfat + mtools (files at the start and near the end, fragmented files, long names, attributes,
distinct timestamps), sfdisk disks with mkntfs + wimlib NTFS; checked with fsck.vfat -n, sfdisk --verify,
ntfsfix -n, ntfsresize --info and every file's hash and times read back by mtools (mcopy -m)."""
from __future__ import annotations

import hashlib
import os
import random
import re
import subprocess
from pathlib import Path

import make_test_disks as mtd
import pytest
from imaging_helpers import MiB, check_fat, check_ntfs, one_line_error, rk, rk_json

from rescuekit.disk import fat
from rescuekit.disk.device import open_source
from tests.conftest import require_tools

FAT_SIZE = 320 * MiB  # 4 KiB clusters: 81751 clusters, so 40% smaller falls below FAT32's 65525 minimum


def _m(*args: object) -> None:
    subprocess.run([str(a) for a in args], check=True, capture_output=True)


def make_spread_fat32(path: Path, size: int, seed: int = 11) -> None:
    """FAT32 with files at the start, files near the end (written after a filler that is then deleted), fragmented
    files (every other small file deleted, a larger one written into the holes), long and mixed-case names, empty
    files, attributes and a distinct modification time per file and folder."""
    rng = random.Random(seed)
    with open(path, "wb") as f:
        f.truncate(size)
    _m("mkfs.vfat", "-F", "32", "-s", "8", "-n", "SHRINK", "-i", "1234ABCD", path)
    work = path.parent / "src"
    mtd.gen_tree(work / "early", seed=seed, total_bytes=3 * MiB)
    mtd.gen_tree(work / "late", seed=seed + 1, total_bytes=3 * MiB)
    (work / "late" / "A very long file name with spaces and ünïcode.txt").write_bytes(rng.randbytes(70000))
    (work / "late" / "Mixed.Case").write_bytes(b"x")
    (work / "late" / "empty").write_bytes(b"")
    for i in range(20):
        (work / f"frag{i}").write_bytes(rng.randbytes(9000))
    (work / "holes.bin").write_bytes(rng.randbytes(200000))
    for i, p in enumerate(sorted(work.rglob("*"))):
        t = 946684800 + i * 86400 + 2 * i  # 2000-01-01 on, 2 s apart (FAT's resolution)
        os.utime(p, (t, t))
    _m("mcopy", "-s", "-m", "-Q", "-i", path, work / "early", "::/")
    fill = path.parent / "fill.bin"
    with open(fill, "wb") as f:
        f.truncate(size - 12 * MiB)
    _m("mcopy", "-i", path, fill, "::/FILL.BIN")
    fill.unlink()
    for i in range(20):
        _m("mcopy", "-m", "-i", path, work / f"frag{i}", f"::/frag{i}")
    _m("mcopy", "-s", "-m", "-Q", "-i", path, work / "late", "::/")
    for i in range(0, 20, 2):
        _m("mdel", "-i", path, f"::/frag{i}")
    _m("mdel", "-i", path, "::/FILL.BIN")
    _m("mcopy", "-m", "-i", path, work / "holes.bin", "::/holes.bin")
    _m("mattrib", "-i", path, "+r", "+h", "::/late/Mixed.Case")
    _m("mattrib", "-i", path, "+s", "::/early")


def fat_files(vol: Path, work: Path, offset: int = 0) -> dict[str, tuple[str, int]]:
    """Every file's sha256 and modification time as mtools copies them out (mcopy -m), plus attributes."""
    out = work / f"files-{vol.name}-{offset}"
    out.mkdir()
    _m("mcopy", "-s", "-m", "-n", "-Q", "-i", f"{vol}@@{offset}", "::/*", out)
    got = {str(p.relative_to(out)): (hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir",
                                     int(p.stat().st_mtime)) for p in out.rglob("*")}
    attrs = subprocess.run(["mattrib", "-/", "-i", f"{vol}@@{offset}", "::"], capture_output=True, text=True,
                           check=True).stdout
    got["<attributes>"] = (attrs, 0)
    return got


def fat_entries(vol: Path, offset: int = 0) -> list[tuple]:
    """Every directory entry as rescuekit's FAT parser reads it (long + short name, attributes, size, times)."""
    out: list[tuple] = []
    with open_source(str(vol)) as dev:
        b = fat.parse_fat_boot(dev.read(offset, 512))

        def walk(entry, prefix: str) -> None:
            for e in fat.fat_listdir(dev, offset, b, entry):
                out.append((prefix + e.name, e.short_name, e.attributes, e.size, e.mtime, e.ctime))
                if e.is_dir:
                    walk(e, prefix + e.name + "/")

        walk(None, "/")
    return out


@pytest.fixture(scope="session")
def spread_fat(tmp_path_factory: pytest.TempPathFactory) -> dict:
    require_tools("mkfs.vfat", "mcopy", "mdel", "mattrib", "fsck.vfat")
    d = tmp_path_factory.mktemp("fatshrink")
    vol = d / "fat32.img"
    make_spread_fat32(vol, FAT_SIZE)
    check_fat(vol)
    repo = d / "repo"
    doc = rk_json("capture", vol, repo)
    return {"vol": vol, "repo": repo, "doc": doc, "files": fat_files(vol, d), "entries": fat_entries(vol)}


def _sized(path: Path, size: int) -> Path:
    with open(path, "ab") as f:
        f.truncate(size)
    return path


def _check_fat(out: Path, spread: dict, tmp: Path) -> None:
    check_fat(out)
    assert fat_files(out, tmp) == spread["files"]
    assert fat_entries(out) == spread["entries"]


def test_fat32_40_percent_smaller_laid_out_again(spread_fat: dict, tmp_path: Path) -> None:
    """320 MiB -> 192 MiB: files near the old end, so clusters are renumbered; 4 KiB clusters would leave fewer
    than 65525 (Windows would read it as FAT16), so they are split to 2 KiB."""
    out = _sized(tmp_path / "small.img", FAT_SIZE * 6 // 10)
    res = subprocess.run([os.sys.executable, "-m", "rescuekit", "restore", str(spread_fat["repo"]), str(out)],
                         input="n\n", capture_output=True, text=True)
    assert res.returncode == 1 and "Layout: the FAT32 volume shrinks from 320.0 MiB to 192.0 MiB" in res.stderr
    assert "clusters split from 4096 to 2048 bytes" in res.stderr
    res = rk_json("restore", spread_fat["repo"], out, "--yes")
    assert res["shrunk_to"] == FAT_SIZE * 6 // 10 and res["shrunk_fs"] == "FAT32" and res["verified"]
    with open_source(str(out)) as dev:
        b = fat.parse_fat_boot(dev.read(0, 512))
    assert b.kind == "fat32" and b.cluster_size == 2048 and b.count >= 65525
    _check_fat(out, spread_fat, tmp_path)


def test_fat32_minimum_and_below(spread_fat: dict, tmp_path: Path) -> None:
    """The size the refusal names is accepted (and checks clean); 1 MiB less is refused, nothing written."""
    tiny = _sized(tmp_path / "tiny.img", 8 * MiB)
    err = one_line_error(rk("restore", spread_fat["repo"], tiny, "--yes", check=False))
    least = int(re.search(r"needs at least (\d+) bytes", err).group(1))
    assert least < 40 * MiB and "nothing was written" in err
    under = _sized(tmp_path / "under.img", least // 512 * 512 - MiB)
    err = one_line_error(rk("restore", spread_fat["repo"], under, "--yes", check=False))
    assert f"needs at least {least} bytes" in err
    assert open(under, "rb").read() == bytes(under.stat().st_size)
    ok = _sized(tmp_path / "ok.img", -(-least // 512) * 512)
    rk("restore", spread_fat["repo"], ok, "--yes")
    _check_fat(ok, spread_fat, tmp_path)


def test_killed_fat_shrink_restore_leaves_journal_rerun_completes(spread_fat: dict, tmp_path: Path) -> None:
    import shutil

    repo = tmp_path / "repo"
    shutil.copytree(spread_fat["repo"], repo)
    out = _sized(tmp_path / "k.img", FAT_SIZE // 2)
    res = rk("restore", repo, out, "--yes", check=False, env={"RESCUEKIT_TEST_CRASH_AFTER": "restore-body-written"})
    assert res.returncode == 137
    assert "did not finish" in rk("images", repo).stderr
    assert subprocess.run(["fsck.vfat", "-n", str(out)], capture_output=True).returncode != 0  # no boot sector yet
    rk("restore", repo, out, "--yes")
    assert rk_json("images", repo)["unfinished_restores"] == []
    _check_fat(out, spread_fat, tmp_path)


def test_fat_truncated_when_used_clusters_fit(disks: dict, repo: dict, tmp_path: Path) -> None:
    """FAT16 (logical partition 5 of the MBR image, files at its start) onto a file 40% smaller: only the size
    fields change (no cluster moves, so no forced verify)."""
    src, hashes = disks["mbr"]
    p5 = next(p for p in repo["mbr"]["partitions"] if p["number"] == 5)
    out = _sized(tmp_path / "p5.img", p5["size"] * 6 // 10 // 512 * 512)
    res = rk_json("restore", repo["path"], out, "--image", "mbr", "--partition", "5", "--yes")
    assert res["shrunk_fs"] == "FAT16" and not res["verified"]
    check_fat(out)
    assert mtd.file_hashes_fat(out) == hashes[5]
    orig = mtd.extract_partition(src, p5["start"], p5["size"], tmp_path / "src5.img")
    assert fat_entries(out) == fat_entries(orig)


def _sfdisk_verify(disk: Path) -> None:
    res = subprocess.run(["sfdisk", "--verify", str(disk)], capture_output=True, text=True)
    assert res.returncode == 0 and "No errors detected" in res.stdout, res.stdout + res.stderr


def _parts(disk: Path) -> dict[int, tuple[int, int, str]]:
    out = subprocess.run(["sfdisk", "-J", str(disk)], capture_output=True, text=True, check=True).stdout
    import json

    return {int(re.search(r"(\d+)$", p["node"]).group(1)): (p["start"] * 512, p["size"] * 512, p["type"])
            for p in json.loads(out)["partitiontable"]["partitions"]}


def _ntfs_ok(vol: Path) -> None:
    check_ntfs(vol)
    r = subprocess.run(["ntfsresize", "--info", "--force", "--no-progress-bar", str(vol)], capture_output=True,
                       text=True)
    assert r.returncode == 0 and "ERROR" not in r.stdout + r.stderr, r.stdout + r.stderr


def test_mbr_disk_last_logical_shrinks(disks: dict, repo: dict, tmp_path: Path) -> None:
    """The session's 320 MiB MBR disk (NTFS, FAT32, extended: FAT16 + NTFS) onto 250 MiB: logical 6 (NTFS) ends at
    the new end, the extended partition too; partitions 1, 2, 5 keep their place; every file intact."""
    src, hashes = disks["mbr"]
    out = _sized(tmp_path / "small.img", 250 * MiB)
    res = subprocess.run([os.sys.executable, "-m", "rescuekit", "restore", str(repo["path"]), str(out),
                          "--image", "mbr"], input="n\n", capture_output=True, text=True)
    assert res.returncode == 1 and "Layout: partition 6 (kept at its offset" in res.stderr, res.stderr
    res = rk_json("restore", repo["path"], out, "--image", "mbr", "--yes", "--verify")
    assert res["shrunk_fs"] == "NTFS"
    _sfdisk_verify(out)
    before, after = _parts(src), _parts(out)
    assert {n: before[n] for n in (1, 2, 5)} == {n: after[n] for n in (1, 2, 5)}
    assert after[6][0] == before[6][0] and after[6][0] + after[6][1] == 250 * MiB
    assert after[3][0] == before[3][0] and after[3][0] + after[3][1] == 250 * MiB
    for n, (start, size, _t) in after.items():
        if n == 3:
            continue
        vol = mtd.extract_partition(out, start, size, tmp_path / f"p{n}.img")
        if n in (1, 6):
            _ntfs_ok(vol)
            assert mtd.file_hashes_ntfs(vol) == hashes[n]
        else:
            check_fat(vol)
            assert mtd.file_hashes_fat(vol) == hashes[n]
        vol.unlink()


def test_mbr_disk_that_fits_only_cuts_the_extended_partition(disks: dict, repo: dict, tmp_path: Path) -> None:
    """Onto 280 MiB every partition fits (the extended one, reaching 320 MiB, does not): no file system shrinks,
    the extended partition ends at the new end. A target that would cut partition 2 is refused, untouched."""
    out = _sized(tmp_path / "fits.img", 280 * MiB)
    res = rk_json("restore", repo["path"], out, "--image", "mbr", "--yes")
    assert res["shrunk_to"] is None
    _sfdisk_verify(out)
    after = _parts(out)
    assert after[3][0] + after[3][1] == 280 * MiB
    assert after[6] == _parts(disks["mbr"][0])[6]
    small = _sized(tmp_path / "cut.img", 150 * MiB)
    err = one_line_error(rk("restore", repo["path"], small, "--image", "mbr", "--yes", check=False))
    assert "partition 2 (before the last one) ends past the new end" in err and "nothing was written" in err
    assert open(small, "rb").read(MiB) == bytes(MiB)


@pytest.fixture(scope="session")
def mbr_primary(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A 200 MiB MBR disk as Windows 7 lays it out: a small active "System Reserved" partition (FAT16 here) and
    C: (NTFS) as the last primary, filling the disk."""
    require_tools("sfdisk", "mkntfs", "wimlib-imagex", "mkfs.vfat", "mcopy")
    d = tmp_path_factory.mktemp("mbrprim")
    disk = d / "disk.img"
    _sized(disk, 200 * MiB)
    subprocess.run(["sfdisk", "-q", str(disk)], input="label: dos\nstart=2048, size=32MiB, type=6, bootable\n"
                   "type=7\n", text=True, check=True)
    hashes = {}
    for n, (start, size, _t) in _parts(disk).items():
        if n == 1:
            vol, hashes[1] = mtd.make_fat_volume(d / "p1.img", size, bits=16, seed=21, tree_bytes=1 * MiB,
                                                 label="SYSRES", part_start_sector=start // 512)
        else:
            vol, hashes[2] = mtd.make_ntfs_volume(d / "p2.img", size, seed=22, tree_bytes=8 * MiB,
                                                  part_start_sector=start // 512)
        mtd._dd_into(vol, disk, start)
        vol.unlink()
    repo = d / "repo"
    rk("capture", disk, repo)
    return {"disk": disk, "hashes": hashes, "repo": repo}


def test_mbr_disk_last_primary_40_percent_smaller(mbr_primary: dict, tmp_path: Path) -> None:
    out = _sized(tmp_path / "small.img", 120 * MiB)
    res = rk_json("restore", mbr_primary["repo"], out, "--yes")
    assert res["shrunk_fs"] == "NTFS" and res["shrunk_to"] == 120 * MiB - 33 * MiB
    _sfdisk_verify(out)
    before, after = _parts(mbr_primary["disk"]), _parts(out)
    assert after[1] == before[1] and after[2][0] == before[2][0] and sum(after[2][:2]) == 120 * MiB
    p1 = mtd.extract_partition(out, *after[1][:2], tmp_path / "p1.img")
    check_fat(p1)
    assert mtd.file_hashes_fat(p1) == mbr_primary["hashes"][1]
    p2 = mtd.extract_partition(out, *after[2][:2], tmp_path / "p2.img")
    _ntfs_ok(p2)
    assert mtd.file_hashes_ntfs(p2) == mbr_primary["hashes"][2]
    assert out.read_bytes()[:446] == mbr_primary["disk"].read_bytes()[:446]  # boot code, signature kept

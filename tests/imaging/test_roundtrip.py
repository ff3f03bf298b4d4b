"""Capture real GPT/MBR disks, restore onto blank larger images, check tables, file systems and every file."""
from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from pathlib import Path

import make_test_disks as mtd
from imaging_helpers import MiB, check_disk_files, check_ntfs, layout, rk, rk_json


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_capture_stores_only_used_data(repo: dict, disks: dict) -> None:
    t = repo["gpt"]["totals"]
    assert t["disk_bytes"] == 200 * MiB
    assert t["stored_bytes"] < 80 * MiB  # FS-aware: not the whole 200 MiB disk
    parts = {p["number"]: p for p in repo["gpt"]["partitions"]}
    assert parts[1]["fs"] == "fat32" and parts[3]["fs"] == "ntfs"
    listing = rk_json("images", repo["path"])
    assert [i["name"] for i in listing["images"]] == ["gpt", "mbr"]
    assert listing["unfinished_restores"] == []


def test_gpt_restore_to_larger_disk(repo: dict, disks: dict, tmp_path: Path) -> None:
    target = tmp_path / "big.img"
    with open(target, "wb") as f:
        f.truncate(256 * MiB)
    res = rk_json("restore", repo["path"], target, "--image", "gpt", "--verify", "--yes")
    assert res["verified"]
    v = subprocess.run(["sgdisk", "-v", str(target)], capture_output=True, text=True)
    assert v.returncode == 0 and "No problems found" in v.stdout, v.stdout
    src, dst = layout(disks["gpt"][0]), layout(target)
    assert [(p["start"], p["size"], p["type"]) for p in src] == [(p["start"], p["size"], p["type"]) for p in dst]
    check_disk_files(target, disks["gpt"][1], tmp_path)


def test_mbr_restore_to_larger_disk(repo: dict, disks: dict, tmp_path: Path) -> None:
    target = tmp_path / "big.img"
    with open(target, "wb") as f:
        f.truncate(400 * MiB)
    rk("restore", repo["path"], target, "--image", "mbr", "--yes")
    v = subprocess.run(["sfdisk", "-V", str(target)], capture_output=True, text=True)
    assert v.returncode == 0, v.stdout + v.stderr
    assert len(layout(target)) == 5  # 1, 2, extended 3, logical 5 and 6
    check_disk_files(target, disks["mbr"][1], tmp_path)


def test_restore_to_new_file_is_byte_identical_in_stored_ranges(repo: dict, disks: dict, tmp_path: Path) -> None:
    """A restore into a missing file creates it with the disk's size; the NTFS backup boot sector is there."""
    target = tmp_path / "new.img"
    rk("restore", repo["path"], target, "--image", "gpt", "--yes")
    assert target.stat().st_size == 200 * MiB
    ntfs = layout(target)[-1]
    with open(disks["gpt"][0], "rb") as a, open(target, "rb") as b:
        last = ntfs["start"] + ntfs["size"] - 512
        a.seek(last), b.seek(last)
        assert a.read(512) == b.read(512) != bytes(512)  # backup boot sector
    vol = mtd.extract_partition(target, ntfs["start"], ntfs["size"], tmp_path / "v.img")
    check_ntfs(vol)


def test_single_partition_restore(repo: dict, disks: dict, tmp_path: Path) -> None:
    gpt, hashes = disks["gpt"]
    ntfs = layout(gpt)[-1]
    # into a new partition image file
    vol = tmp_path / "ntfs.img"
    rk("restore", repo["path"], vol, "--image", "gpt", "--partition", "3", "--verify", "--yes")
    assert vol.stat().st_size == ntfs["size"]
    check_ntfs(vol)
    assert mtd.file_hashes_ntfs(vol) == hashes[3]
    # into partition 3 of a disk with the same layout whose partition was wiped
    disk = tmp_path / "disk.img"
    rk("restore", repo["path"], disk, "--image", "gpt", "--yes")
    with open(disk, "r+b") as f:
        f.seek(ntfs["start"])
        f.write(bytes(4 * MiB))
    before_esp = _sha(mtd.extract_partition(disk, layout(disk)[0]["start"], layout(disk)[0]["size"], tmp_path / "e1"))
    rk("restore", repo["path"], disk, "--image", "gpt", "--partition", "3", "--yes")
    check_disk_files(disk, hashes, tmp_path)
    after_esp = _sha(mtd.extract_partition(disk, layout(disk)[0]["start"], layout(disk)[0]["size"], tmp_path / "e2"))
    assert before_esp == after_esp  # other partitions untouched


def test_smaller_target_refused_before_writing(repo: dict, disks: dict, tmp_path: Path) -> None:
    target = tmp_path / "small.img"
    # 64 MiB < 200 MiB, and too small for the NTFS partition's used data even shrunk (tests/imaging/test_shrink.py)
    target.write_bytes(os.urandom(1 * MiB) * 64)
    before = _sha(target)
    res = rk("restore", repo["path"], target, "--image", "gpt", "--yes", check=False)
    assert res.returncode == 1
    assert "too small" in res.stderr and str(200 * MiB) in res.stderr and "Traceback" not in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1
    assert _sha(target) == before
    # a partition number the target disk's table does not have is refused (never written over the table)
    gptcopy = tmp_path / "gpt.img"
    shutil.copyfile(disks["gpt"][0], gptcopy)
    res = rk("restore", repo["path"], gptcopy, "--image", "mbr", "--partition", "5", "--yes", check=False)
    assert res.returncode == 2 and "without a partition 5" in res.stderr
    assert _sha(gptcopy) == _sha(disks["gpt"][0])
    # a partition the image does not have is refused too
    res = rk("restore", repo["path"], tmp_path / "tiny.img", "--image", "gpt", "--partition", "9", "--yes", check=False)
    assert res.returncode == 2 and "no partition 9" in res.stderr


def test_confirmation_shows_target_and_no_means_nothing_written(repo: dict, disks: dict, tmp_path: Path) -> None:
    import sys

    target = tmp_path / "t.img"
    rk("restore", repo["path"], target, "--image", "mbr", "--yes")  # now it holds the MBR disk's partitions
    before = _sha(target)
    res = subprocess.run([sys.executable, "-m", "rescuekit", "restore", str(repo["path"]), str(target),
                          "--image", "gpt"], input="n\n", capture_output=True, text=True)
    assert res.returncode != 0
    assert "MBR" in res.stderr and "NTFS1" in res.stderr and "FAT5" in res.stderr  # current partitions + labels
    assert _sha(target) == before


def test_unknown_partition_copied_whole_with_zero_chunks_elided(tmp_path: Path) -> None:
    """A partition without a known file system (e.g. BitLocker) is stored whole, all-zero chunks as markers."""
    disk = tmp_path / "d.img"
    with open(disk, "wb") as f:
        f.truncate(64 * MiB)
    subprocess.run(["sgdisk", "-n1:2048:+40M", "-t1:0700", str(disk)], check=True, capture_output=True)
    part = layout(disk)[0]
    blob = os.urandom(3 * MiB + 1234)
    with open(disk, "r+b") as f:
        f.seek(part["start"] + 10 * MiB + 77)
        f.write(blob)
        f.seek(part["start"])
        f.write(b"\xeb\x58\x90-FVE-FS-" + os.urandom(500))  # BitLocker signature at offset 3
    repo = tmp_path / "repo"
    doc = rk_json("capture", disk, repo)
    p1 = doc["partitions"][0]
    assert p1["fs"] == "bitlocker" and p1["stored_bytes"] == part["size"]
    assert doc["totals"]["zero_chunks"] >= (40 - 5) * 4  # 256 KiB chunks of the untouched 35+ MiB
    assert doc["totals"]["new_bytes"] <= 6 * MiB
    out = tmp_path / "out.img"
    rk("restore", repo, out, "--yes", "--verify")
    assert _sha(out) == _sha(disk)


def test_destroyed_partition_table_is_imaged_raw(disks: dict, tmp_path: Path) -> None:
    """Both GPT headers broken: the disk is still captured (whole, with a warning) and restores bit for bit."""
    disk = tmp_path / "broken.img"
    shutil.copyfile(disks["gpt"][0], disk)
    size = disk.stat().st_size
    with open(disk, "r+b") as f:
        for off in (512 + 16, size - 512 + 16):  # the header CRC fields of the primary and backup GPT
            f.seek(off)
            f.write(b"\xde\xad\xbe\xef")
    doc = rk_json("capture", disk, tmp_path / "repo")
    assert doc["warnings"] and "unpartitioned" in doc["warnings"][0]
    assert doc["partitions"][0]["type_name"] == "whole volume"
    out = tmp_path / "out.img"
    rk("restore", tmp_path / "repo", out, "--yes", "--verify")
    assert _sha(out) == _sha(disk)


def test_damaged_file_system_is_stored_whole(disks: dict, tmp_path: Path) -> None:
    """NTFS whose $Bitmap record is unreadable: that partition is stored whole (warning); the rest as usual."""
    import struct

    gpt, hashes = disks["gpt"]
    disk = tmp_path / "damaged.img"
    shutil.copyfile(gpt, disk)
    ntfs = layout(disk)[-1]
    with open(disk, "r+b") as f:
        f.seek(ntfs["start"])
        boot = f.read(512)
        cluster = struct.unpack_from("<H", boot, 11)[0] * boot[13]
        rec = boot[0x40]
        rec = rec * cluster if rec < 128 else 1 << (256 - rec)
        f.seek(ntfs["start"] + struct.unpack_from("<q", boot, 0x30)[0] * cluster + 6 * rec)
        assert f.read(4) == b"FILE"
        f.seek(-4, os.SEEK_CUR)
        f.write(b"XXXX")  # MFT record 6 ($Bitmap) no longer parses
    doc = rk_json("capture", disk, tmp_path / "repo")
    assert any(w.startswith("partition 3:") for w in doc["warnings"]), doc["warnings"]
    parts = {p["number"]: p for p in doc["partitions"]}
    assert parts[3]["stored_bytes"] == ntfs["size"]  # whole partition
    assert parts[1]["stored_bytes"] < parts[1]["size"]  # the intact FAT32 ESP still only its used data
    out = tmp_path / "out.img"
    rk("restore", tmp_path / "repo", out, "--yes", "--verify")
    with open(out, "rb") as a, open(disk, "rb") as b:
        a.seek(ntfs["start"]), b.seek(ntfs["start"])
        assert a.read(ntfs["size"]) == b.read(ntfs["size"])  # bit for bit, damage included
    check_disk_files(out, {1: hashes[1]}, tmp_path)

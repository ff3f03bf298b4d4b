"""Helpers: run the CLI, check restored disks with sfdisk/sgdisk, ntfsfix, fsck.vfat and file hashes."""
from __future__ import annotations

import json
import struct
import subprocess
from pathlib import Path

import make_test_disks as mtd

from tests.cli_helpers import one_line_error, rk, rk_json  # noqa: F401 - the winbackup tests import them from here

MiB = 1 << 20


def partitions(disk: Path) -> list[dict]:
    out = subprocess.run(["sfdisk", "-J", str(disk)], capture_output=True, text=True, check=True).stdout
    t = json.loads(out)["partitiontable"]
    return [{"start": p["start"] * 512, "size": p["size"] * 512, "type": p["type"],
             "bootable": p.get("bootable", False)} for p in t["partitions"]]


def check_table(disk: Path, kind: str) -> None:
    if kind == "mbr":
        res = subprocess.run(["sfdisk", "-V", str(disk)], capture_output=True, text=True)
        assert res.returncode == 0 and "No errors detected" in res.stdout, res.stdout + res.stderr
    else:
        res = subprocess.run(["sgdisk", "-v", str(disk)], capture_output=True, text=True)
        assert res.returncode == 0 and "No problems found" in res.stdout, res.stdout + res.stderr


def hidden_sectors(disk: Path, start: int, fs: str) -> list[int]:
    """The hidden-sectors field of the boot sector and its copies (NTFS: last sector; FAT32: sector 6)."""
    with open(disk, "rb") as f:
        f.seek(start)
        boot = f.read(512)
        out = [struct.unpack_from("<I", boot, 0x1C)[0]]
        if fs == "ntfs":
            total = struct.unpack_from("<q", boot, 0x28)[0]
            f.seek(start + total * 512)
        else:
            f.seek(start + struct.unpack_from("<H", boot, 0x32)[0] * 512)
        copy = f.read(512)
        out.append(struct.unpack_from("<I", copy, 0x1C)[0])
    return out


def check_volume(disk: Path, start: int, size: int, fs: str, hashes: dict, work: Path) -> None:
    """File system check (no mount) and every file's sha256 against the source tree."""
    vol = mtd.extract_partition(disk, start, size, work / f"v{start}.img")
    try:
        if fs == "ntfs":
            res = subprocess.run(["ntfsfix", "-n", str(vol)], capture_output=True, text=True)
            assert res.returncode == 0 and "corrupt" not in res.stdout.lower(), res.stdout + res.stderr
            got = mtd.file_hashes_ntfs(vol)
        else:
            res = subprocess.run(["fsck.vfat", "-n", str(vol)], capture_output=True, text=True)
            assert res.returncode == 0, res.stdout + res.stderr
            got = mtd.file_hashes_fat(vol)
        assert got == hashes
    finally:
        vol.unlink()

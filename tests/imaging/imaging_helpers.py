"""Helpers for the imaging tests: run the CLI, check restored disks with the real tools."""
from __future__ import annotations

import json
import os
import struct
import subprocess
from pathlib import Path

import make_test_disks as mtd

from tests.cli_helpers import one_line_error, rk, rk_json  # noqa: F401 - the imaging tests import them from here

MiB = 1 << 20


def layout(disk: Path) -> list[dict]:
    """sfdisk -J partitions with byte offsets."""
    out = subprocess.run(["sfdisk", "-J", str(disk)], capture_output=True, text=True, check=True).stdout
    parts = json.loads(out)["partitiontable"]["partitions"]
    return [{"node": p["node"], "start": p["start"] * 512, "size": p["size"] * 512, "type": p["type"]} for p in parts]


def part_number(node: str, disk: Path) -> int:
    return int("".join(ch for ch in node[len(str(disk)):] if ch.isdigit()))


def check_ntfs(vol: Path) -> None:
    res = subprocess.run(["ntfsfix", "-n", str(vol)], capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "BAD" not in res.stdout and "corrupt" not in res.stdout.lower(), res.stdout


def check_fat(vol: Path) -> None:
    res = subprocess.run(["fsck.vfat", "-n", str(vol)], capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr


def check_disk_files(disk: Path, hashes: dict[int, dict[str, str]], work: Path) -> None:
    """Every partition with expected files: file system check + every file's hash."""
    for p in layout(disk):
        num = part_number(p["node"], disk)
        if num not in hashes:
            continue
        vol = mtd.extract_partition(disk, p["start"], p["size"], work / f"p{num}.img")
        if p["type"] in ("7", "EBD0A0A2-B9E5-4433-87C0-68B6B72699C7"):
            check_ntfs(vol)
            got = mtd.file_hashes_ntfs(vol)
        else:
            check_fat(vol)
            got = mtd.file_hashes_fat(vol)
        vol.unlink()
        assert got == hashes[num], f"partition {num}: files differ"


def tree_size(root: Path) -> int:
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file())


def _fill(d: Path, size: int, rng) -> int:
    """Files of ``size`` random bytes in new directory ``d`` until the volume is full; how many fit."""
    d.mkdir()
    i = 0
    while True:
        try:
            (d / f"f{i:05d}").write_bytes(rng.randbytes(size))
        except OSError:
            (d / f"f{i:05d}").unlink(missing_ok=True)
            return i
        i += 1


# A security descriptor unlike ntfs-3g's default: owner and group SYSTEM, DACL Everyone full control.
_SD = bytes.fromhex("01000480" "14000000" "20000000" "00000000" "2c000000"
                    "010100000000000512000000" "010100000000000512000000"
                    "02001c000100000000001400ff011f00" "010100000000000100000000")


def _symlink_reparse(target: str) -> bytes:
    """An IO_REPARSE_TAG_SYMLINK reparse point to a relative ``target``: tag, length, reserved, name offsets and
    lengths, flags (1: relative), substitute and print names."""
    a = target.encode("utf-16-le")
    body = struct.pack("<HHHHI", 0, len(a), len(a), len(a), 1) + a + a
    return struct.pack("<IHH", 0xA000000C, len(body), 0) + body


_REPARSE = _symlink_reparse("mid1.bin")


def make_fragmented_ntfs(path: Path, size: int = 64 * MiB, seed: int = 11) -> None:
    """An NTFS volume (mkntfs, then files through ntfs-3g) whose layout a restore onto a smaller target has to
    move: the volume filled with 512 KiB files, every second one deleted, then four rounds of 500 small files
    (so $MFT grows into those holes, in dozens of runs, some near the end of the volume), 8 KiB files filling it
    again with every second one deleted, then a compressed folder (LZNT1 text, mixed, incompressible), a sparse
    file, a file with 60 named streams and a 4 MiB file written into the 8 KiB holes (both get a non-resident
    $ATTRIBUTE_LIST with extension records), a short (DOS) name, a reparse point and a security descriptor of
    its own; last the remaining 512 KiB files and 3 of 4 remaining 8 KiB ones are deleted (used space ~21 MiB)."""
    import random

    _run = lambda *c: subprocess.run([str(x) for x in c], check=True, capture_output=True)  # noqa: E731
    mtd._new_file(path, size)
    _run("mkntfs", "-F", "-Q", "-q", "-L", "Frag", path)
    mnt = Path(path.parent, f"{path.name}.mnt")
    mnt.mkdir()
    _run("ntfs-3g", "-o", "compression,streams_interface=windows", path, mnt)
    rng = random.Random(seed)
    try:
        n = _fill(mnt / "fill", 512 << 10, rng)
        for j in range(0, n, 2):
            (mnt / "fill" / f"f{j:05d}").unlink()
        for r in range(4):
            d = mnt / "many" / f"round{r}"
            d.mkdir(parents=True)
            for k in range(500):
                (d / f"file{k:04d}.txt").write_bytes(rng.randbytes(rng.choice([50, 300, 1500, 5000])))
            (mnt / f"mid{r}.bin").write_bytes(rng.randbytes(300_000))
        c = _fill(mnt / "chaff", 8 << 10, rng)
        for j in range(0, c, 2):
            (mnt / "chaff" / f"f{j:05d}").unlink()
        comp = mnt / "Compressed"
        comp.mkdir()
        os.setxattr(comp, "system.ntfs_attrib_be", (0x800).to_bytes(4, "big"))  # FILE_ATTRIBUTE_COMPRESSED
        (comp / "log.txt").write_bytes(b"".join(b"%08d compressible line of text\n" % i for i in range(60_000)))
        (comp / "mixed.bin").write_bytes(rng.randbytes(100_000) + bytes(200_000) + b"abc" * 50_000)
        with open(mnt / "sparse.vhd", "wb") as f:  # holes written by seeking
            for at, data in ((0, b"head" * 1000), (6 * MiB, b"middle"), (12 * MiB, b"tail")):
                f.seek(at)
                f.write(data)
        (mnt / "manystreams.txt").write_bytes(rng.randbytes(20_000))
        for i in range(60):
            (mnt / f"manystreams.txt:stream number {i:02d} with a long name").write_bytes(rng.randbytes(100 + i * 37))
        (comp / "random.bin").write_bytes(rng.randbytes(400_000))
        (mnt / "fragmented.bin").write_bytes(rng.randbytes(4 * MiB))
        (mnt / "Long file name with a short one.txt").write_bytes(b"short name\r\n")
        os.setxattr(mnt / "Long file name with a short one.txt", "system.ntfs_dos_name", b"LONGFI~1.TXT")
        (mnt / "reparse.lnk").write_bytes(b"")
        os.setxattr(mnt / "reparse.lnk", "system.ntfs_reparse_data", _REPARSE)
        os.setxattr(mnt / "mid0.bin", "system.ntfs_acl", _SD)
        for j in range(1, n, 2):
            (mnt / "fill" / f"f{j:05d}").unlink()
        for j in range(1, c, 2):
            if j % 8 != 1:
                (mnt / "chaff" / f"f{j:05d}").unlink()
    finally:
        _run("umount", mnt)
        mnt.rmdir()

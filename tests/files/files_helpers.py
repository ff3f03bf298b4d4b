"""Helpers for the files/extract/find tests: real volumes with known content and modification times."""
from __future__ import annotations

import hashlib
import os
import random
import subprocess
import tempfile
from pathlib import Path

import make_test_disks as mtd

from builder.files import sha256_file as sha_file  # one streaming SHA-256 of a file, the builder's

MiB = 1 << 20
T0 = 1_600_000_000  # even: FAT keeps 2-second steps


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def expected(root: Path) -> dict[str, tuple[str, int]]:
    """{relative path: (sha256, mtime ns)} of every regular file under root."""
    out = {}
    for dp, _ds, fs in os.walk(root):
        for n in fs:
            p = Path(dp, n)
            out[p.relative_to(root).as_posix()] = (sha_file(p), p.stat().st_mtime_ns)
    return out


def user_tree(root: Path, seed: int) -> None:
    """A deep tree with long and Unicode names, a 10 MB file and small files, with fixed even mtimes."""
    rng = random.Random(seed)
    deep = root / "Users/Ana/Documents" / "/".join(f"level{i:02d}" for i in range(14))
    deep.mkdir(parents=True)
    (deep / "thesis final v3.docx").write_bytes(rng.randbytes(70_000))
    (root / "Users/Ana/Documents/Résumé – 2024.txt").write_bytes("Ana's CV ✓\n".encode() * 300)
    (root / "Users/Ana/Documents/日本語のファイル名.txt").write_bytes(rng.randbytes(5000))
    (root / "Users/Ana/Documents/A very long file name that goes on and on beyond eight dot three.txt"
     ).write_bytes(b"long\n" * 1000)
    (root / "Big").mkdir()
    (root / "Big/ten.bin").write_bytes(rng.randbytes(10 * MiB))
    (root / "Users/Ana/tiny.ini").write_bytes(b"[x]\r\ny=1\r\n")
    (root / "Users/Ana/empty.txt").write_bytes(b"")
    for i in range(40):
        (root / f"Users/Ana/Documents/note{i:03d}.txt").write_bytes(f"note {i}\n".encode() * (i * 50 + 1))
    for i, p in enumerate(sorted(root.rglob("*"))):
        os.utime(p, (T0 + 2 * i, T0 + 2 * i))


def run(*cmd: object) -> str:
    return subprocess.run([str(c) for c in cmd], check=True, capture_output=True, text=True).stdout


def make_ntfs(path: Path, size: int = 96 * MiB) -> dict:
    """mkntfs + wimlib apply of user_tree, then through ntfs-3g: a compressed folder, a sparse file, alternate
    data streams and hard links. Returns {"files": expected(), "streams": {path: sha}}."""
    with tempfile.TemporaryDirectory(dir=path.parent) as tmp:
        src = Path(tmp, "tree")
        user_tree(src, 14)
        mtd.make_ntfs_volume(path, size, src, label="Data")
    mnt = Path(tempfile.mkdtemp(dir=path.parent))
    run("ntfs-3g", "-o", "compression,streams_interface=windows", path, mnt)
    try:
        comp = mnt / "Compressed"
        comp.mkdir()
        os.setxattr(comp, "system.ntfs_attrib_be", (0x800).to_bytes(4, "big"))  # FILE_ATTRIBUTE_COMPRESSED
        rng = random.Random(5)
        (comp / "log.txt").write_bytes(b"".join(b"%08d compressible line of text\n" % i for i in range(60_000)))
        (comp / "mixed.bin").write_bytes(rng.randbytes(100_000) + bytes(200_000) + b"abc" * 50_000)
        (comp / "small.txt").write_bytes(b"tiny")
        with open(mnt / "sparse.vhd", "wb") as f:  # holes written by seeking
            f.write(b"head" * 1000)
            f.seek(6 * MiB)
            f.write(b"middle")
            f.seek(12 * MiB)
            f.write(b"tail")
        (mnt / "withstream.txt").write_bytes(b"main data\n")
        (mnt / "withstream.txt:Zone.Identifier").write_bytes(b"[ZoneTransfer]\r\nZoneId=3\r\n")
        (mnt / "withstream.txt:big").write_bytes(rng.randbytes(300_000))
        os.link(mnt / "Users/Ana/tiny.ini", mnt / "hardlink.ini")
        many = mnt / "manystreams.txt"  # more streams than one 1 KiB MFT record holds: an $ATTRIBUTE_LIST
        many.write_bytes(rng.randbytes(20_000))
        streams = {}
        for i in range(40):
            data = rng.randbytes(100 + i * 37)
            (mnt / f"manystreams.txt:stream number {i:02d} with a long name").write_bytes(data)
            streams[f"manystreams.txt:stream number {i:02d} with a long name"] = sha(data)
        for i, p in enumerate(sorted([comp, *comp.iterdir(), mnt / "sparse.vhd", mnt / "withstream.txt", many])):
            os.utime(p, (T0 + 1000 + i, T0 + 1000 + i + 0.5))
        files = expected(mnt)
        streams.update({"withstream.txt:Zone.Identifier": sha(b"[ZoneTransfer]\r\nZoneId=3\r\n"),
                        "withstream.txt:big": sha((mnt / "withstream.txt:big").read_bytes())})
    finally:
        run("umount", mnt)
        mnt.rmdir()
    return {"files": files, "streams": streams}


def make_fat(path: Path, size: int = 40 * MiB) -> dict:
    """mkfs.vfat -F 32 + mcopy -s -m (modification times kept) of a small user tree."""
    mtd._new_file(path, size)
    run("mkfs.vfat", "-F", "32", "-n", "USB", path)
    with tempfile.TemporaryDirectory(dir=path.parent) as tmp:
        src = Path(tmp, "tree")
        rng = random.Random(3)
        (src / "Photos/2023/Summer").mkdir(parents=True)
        (src / "Photos/2023/Summer/IMG_0001.JPG").write_bytes(rng.randbytes(3 * MiB + 123))
        (src / "Photos/2023/Summer/holiday at the lake.jpeg").write_bytes(rng.randbytes(400_000))
        (src / "Docs").mkdir()
        (src / "Docs/Budget 2024 (final).xlsx").write_bytes(rng.randbytes(50_000))
        (src / "Docs/readme.txt").write_bytes(b"hello\r\n")
        (src / "Docs/empty.txt").write_bytes(b"")
        for i, p in enumerate(sorted(src.rglob("*"))):
            os.utime(p, (T0 + 2 * i, T0 + 2 * i))
        files = expected(src)
        run("mcopy", "-s", "-m", "-Q", "-i", path, src / "Photos", src / "Docs", "::/")
    return {"files": files}


def make_disk(path: Path, fat_vol: Path, ntfs_vol: Path) -> Path:
    """GPT: partition 1 = the FAT32 volume, partition 2 = the NTFS volume."""
    fs, ns = fat_vol.stat().st_size, ntfs_vol.stat().st_size
    mtd._new_file(path, fs + ns + 4 * MiB)
    run("sgdisk", "-n", f"1:2048:+{fs // 512}", "-t", "1:0700", "-n", f"2:0:+{ns // 512}", "-t", "2:0700", path)
    lay = mtd._layout(path)
    for vol, p in ((fat_vol, lay[0]), (ntfs_vol, lay[1])):
        mtd._dd_into(vol, path, p["start"] * 512)
    return path


def make_exfat(path: Path, size: int = 48 * MiB) -> dict:
    """mkfs.exfat, then files written through exfat-fuse on a loop device (detached whatever happens)."""
    mtd.make_exfat_volume(path, size, label="STICK")
    mnt = Path(tempfile.mkdtemp(dir=path.parent))
    loop = run("losetup", "-f", "--show", path).strip()
    try:
        run("mount.exfat-fuse", loop, mnt)
        try:
            rng = random.Random(9)
            deep = mnt / "Camera/DCIM/100MEDIA/Ünïcode – a long folder name beyond 15 characters"
            deep.mkdir(parents=True)
            (deep / "VID_0001.MP4").write_bytes(rng.randbytes(5 * MiB + 7))
            (mnt / "Camera/notes.txt").write_bytes(b"exfat notes\n" * 100)
            (mnt / "empty.bin").write_bytes(b"")
            fragmented = mnt / "fragmented.bin"  # two files grown in turn: FAT-chained, not contiguous
            other = mnt / "other.bin"
            with open(fragmented, "wb") as f, open(other, "wb") as g:
                for _ in range(8):
                    f.write(rng.randbytes(70_000))
                    f.flush()
                    g.write(rng.randbytes(70_000))
                    g.flush()
            for i, p in enumerate(sorted(mnt.rglob("*"))):
                os.utime(p, (T0 + 2 * i, T0 + 2 * i))
            files = expected(mnt)
        finally:
            run("umount", mnt)
    finally:
        run("losetup", "-d", loop)
        mnt.rmdir()
    return {"files": files}

"""Helpers of the Linux-base tests: build a disc, make the repository disk."""
from __future__ import annotations

import subprocess
from pathlib import Path

from tests.conftest import RK_HOST

MiB = 1 << 20
TOOLS = ("apt-get", "dpkg-deb", "grub-mkimage", "mkfs.vfat", "mcopy", "strip", "mksquashfs", "nasm", "lzop",
         "qemu-system-x86_64", "sgdisk", "sfdisk", "mkfs.exfat", "mkntfs", "ntfsfix", "fsck.vfat")


def build(out: Path, *args: str) -> subprocess.CompletedProcess:
    res = subprocess.run([*RK_HOST, "build", "--base", "linux", "--output", str(out), *args],
                         capture_output=True, text=True, timeout=1800)
    assert res.returncode == 0, res.stdout + res.stderr
    return res


def make_repo_disk(path: Path, size: int = 128 * MiB) -> Path:
    """An MBR disk with one exFAT partition labelled RKREPO (made in a file, then put in place: no loop device)."""
    with open(path, "wb") as f:
        f.truncate(size)
    subprocess.run(["sfdisk", "-q", str(path)], input="label: dos\nstart=2048, type=7\n", text=True, check=True)
    part = path.with_suffix(".part")
    with open(part, "wb") as f:
        f.truncate(size - 2048 * 512)
    subprocess.run(["mkfs.exfat", "-L", "RKREPO", str(part)], capture_output=True, check=True)
    subprocess.run(["dd", f"if={part}", f"of={path}", "bs=1M", "seek=1", "conv=notrunc,sparse", "status=none"],
                   check=True)
    part.unlink()
    return path

"""Helpers for the ``rescuekit usb`` tests: run the command, cut partitions out of an image, attach loop devices."""
from __future__ import annotations

import contextlib
import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

from tests.conftest import RK_HOST, require_tools

MIB = 1 << 20


def rescuekit_usb(*args: str, stdin: str | None = "") -> subprocess.CompletedProcess:
    """``rescuekit usb ...`` in a subprocess; stdin is not a terminal (a non-interactive run)."""
    return subprocess.run([*RK_HOST, "usb", *args], capture_output=True, text=True, input=stdin)


def partitions(image: Path | str) -> list[dict]:
    """The partition table as sfdisk (a tool we did not write) reads it."""
    require_tools("sfdisk")
    out = subprocess.run(["sfdisk", "--json", str(image)], check=True, capture_output=True, text=True).stdout
    return json.loads(out)["partitiontable"]["partitions"]


def cut_partition(image: Path, part: dict, dest: Path) -> Path:
    """Copy one partition (sfdisk entry, 512-byte sectors) into its own file, keeping holes."""
    start, size = part["start"] * 512, part["size"] * 512
    with open(image, "rb") as src, open(dest, "wb") as dst:
        dst.truncate(size)
        pos = 0
        while pos < size:
            n = min(8 * MIB, size - pos)
            data = os.pread(src.fileno(), n, start + pos)
            if data.strip(b"\0"):
                os.pwrite(dst.fileno(), data, pos)
            pos += n
    return dest


def fsck(tool: str, target: Path | str) -> subprocess.CompletedProcess:
    require_tools(tool)
    return subprocess.run([tool, "-n", str(target)], capture_output=True, text=True)


@contextlib.contextmanager
def loop_device(backing: Path, *, partscan: bool = True) -> Iterator[str]:
    """``losetup -f --show [--partscan] FILE``; always detached again, by its own name."""
    require_tools("losetup")
    cmd = ["losetup", "-f", "--show", *(["--partscan"] if partscan else []), str(backing)]
    dev = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.strip()
    try:
        yield dev
    finally:
        subprocess.run(["losetup", "-d", dev], capture_output=True)


@contextlib.contextmanager
def mounted(device: str, where: Path, *, fuse_exfat: bool = False) -> Iterator[Path]:
    where.mkdir(parents=True, exist_ok=True)
    cmd = ["mount.exfat-fuse", device, str(where)] if fuse_exfat else ["mount", device, str(where)]
    subprocess.run(cmd, check=True, capture_output=True)
    try:
        yield where
    finally:
        subprocess.run(["umount", str(where)], capture_output=True)

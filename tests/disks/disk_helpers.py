"""Helpers shared by the disk-layer tests."""
from __future__ import annotations

import subprocess

MiB = 1 << 20


def run(*cmd, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run([str(c) for c in cmd], capture_output=True, text=True, check=check)


def copy_sparse(src, dst, size: int | None = None) -> None:
    run("cp", "--sparse=always", src, dst)
    if size is not None:
        with open(dst, "r+b") as f:
            f.truncate(size)

"""Helpers for the imaging tests: run the CLI, check restored disks with the real tools."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import make_test_disks as mtd

MiB = 1 << 20


def rk(*args: object, check: bool = True, env: dict | None = None, timeout: int = 300) -> subprocess.CompletedProcess:
    """Run ``python -m rescuekit ARGS`` (the runtime entry point, as in WinPE)."""
    res = subprocess.run([sys.executable, "-m", "rescuekit", *map(str, args)], capture_output=True, text=True,
                         env={**os.environ, **(env or {})}, timeout=timeout)
    if check and res.returncode != 0:
        raise AssertionError(f"rescuekit {' '.join(map(str, args))} failed ({res.returncode}):\n"
                             f"{res.stdout}\n{res.stderr}")
    return res


def one_line_error(res: subprocess.CompletedProcess) -> str:
    """The single ``rescuekit: error: ...`` line of a failed run (no traceback, nothing else on stderr)."""
    assert res.returncode != 0 and "Traceback" not in res.stderr, res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("rescuekit: error: "), res.stderr
    return lines[0]


def rk_json(*args: object) -> dict:
    return json.loads(rk(*args, "--json").stdout)


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

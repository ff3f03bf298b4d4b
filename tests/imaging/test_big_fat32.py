"""A FAT32 volume above 2 Mi clusters (the FAT map is read in chunks of 1 Mi entries): files whose cluster
chains cross both chunk boundaries are captured and restored intact, and fsck.vfat finds the copy clean.

A wrong entry-chunk offset once restored a 600 MB file corrupted while fsck stayed clean (the FAT was
right, the data clusters were not stored), so the file contents are compared, not only fsck. Kept cheap:
a sparse 1100 MiB volume with 512-byte clusters, files placed by mtools at chosen clusters (through the
FSInfo next-free hint) so ~230 MB of data suffice, and data that compresses well but differs per sector."""
from __future__ import annotations

import hashlib
import struct
import subprocess
from array import array
from pathlib import Path

import make_test_disks as mtd
import pytest
from imaging_helpers import MiB, check_fat, rk, rk_json

from rescuekit.disk import fat
from rescuekit.disk.device import open_source
from rescuekit.disk.filesystems import detect, used_ranges
from rescuekit.disk.ranges import covered

BOUNDARIES = [2 + fat.FAT_CHUNK_ENTRIES, 2 + 2 * fat.FAT_CHUNK_ENTRIES]  # first clusters of chunks 2 and 3
# name, first cluster (via the FSInfo hint), size
FILES = [("A.BIN", 1_000_000, 160 * MiB), ("B.BIN", 2_080_000, 64 * MiB)]


def _data(tag: int, size: int) -> bytes:
    """Non-zero, different in every 512-byte sector (a misplaced sector shows), compressible (cheap)."""
    return b"".join(struct.pack("<QQ", tag, i) * 32 for i in range(size // 512))


def _set_next_free(vol: Path, cluster: int) -> None:
    with open(vol, "r+b") as f:
        boot = f.read(512)
        fsinfo = struct.unpack_from("<H", boot, 48)[0] * 512
        f.seek(fsinfo + 492)
        f.write(struct.pack("<I", cluster - 1))  # mtools starts searching after the hint


def _chain(vol: Path, b: fat.FatBoot, first: int) -> list[int]:
    """A file's clusters, walked in the FAT by the test (an oracle independent of the capture's map)."""
    with open(vol, "rb") as f:
        f.seek(b.reserved * b.bytes_per_sector)
        entries = array("I")
        entries.frombytes(f.read(4 * (b.count + 2)))
    out, c = [], first
    while 2 <= c < b.count + 2 and len(out) <= b.count:
        out.append(c)
        c = entries[c] & 0x0FFFFFFF
    return out


@pytest.fixture(scope="session")
def big_fat32(tmp_path_factory) -> tuple[Path, dict[str, str], dict[str, list[int]]]:
    d = tmp_path_factory.mktemp("bigfat32")
    vol = d / "vol.img"
    with open(vol, "wb") as f:
        f.truncate(1100 * MiB)
    subprocess.run(["mkfs.vfat", "-F", "32", "-s", "1", "-n", "BIG", str(vol)], check=True, capture_output=True)
    hashes = {}
    small = d / "SMALL.TXT"
    small.write_bytes(b"at the start of the volume\r\n" * 1000)
    subprocess.run(["mcopy", "-i", str(vol), str(small), "::/SMALL.TXT"], check=True)
    hashes["SMALL.TXT"] = hashlib.sha256(small.read_bytes()).hexdigest()
    for tag, (name, first, size) in enumerate(FILES, 1):
        src = d / name
        data = _data(tag, size)
        src.write_bytes(data)
        hashes[name] = hashlib.sha256(data).hexdigest()
        _set_next_free(vol, first)
        subprocess.run(["mcopy", "-i", str(vol), str(src), f"::/{name}"], check=True)
        src.unlink()
    check_fat(vol)
    with open(vol, "rb") as f:
        b = fat.parse_fat_boot(f.read(512))
    assert b.kind == "fat32" and b.count > 2 * fat.FAT_CHUNK_ENTRIES
    listing = subprocess.run(["mdir", "-a", "-i", str(vol), "::/"], capture_output=True, text=True).stdout
    chains = {}
    root = _chain(vol, b, b.root_cluster)
    with open(vol, "rb") as f:
        f.seek(b.data_start + (root[0] - 2) * b.cluster_size)
        rootdir = f.read(b.cluster_size * len(root))
    for name, _first, _size in FILES:
        i = rootdir.index(name.split(".")[0].ljust(8).encode() + b"BIN")
        first = struct.unpack_from("<H", rootdir, i + 20)[0] << 16 | struct.unpack_from("<H", rootdir, i + 26)[0]
        chains[name] = _chain(vol, b, first)
    # the placement worked: each big file's chain crosses a FAT-map chunk boundary
    for (name, _first, size), boundary in zip(FILES, BOUNDARIES):
        c = chains[name]
        assert len(c) == size // 512 and c[0] < boundary <= c[-1], (name, c[0], c[-1], listing)
    return vol, hashes, chains


def test_used_ranges_cover_chains_across_fat_chunks(big_fat32) -> None:
    vol, _hashes, chains = big_fat32
    with open_source(vol) as dev:
        fs = detect(dev, 0, dev.size)
        ranges = used_ranges(dev, 0, dev.size, fs)
        b = fat.parse_fat_boot(dev.read(0, 512))
    assert fs.kind == "fat32" and not fs.warnings
    for name, chain in chains.items():
        for c in chain:
            assert covered(ranges, b.data_start + (c - 2) * b.cluster_size, b.cluster_size), (name, c)
    # and nothing far from the data: used clusters = the chains + the root directory
    used_clusters = sum(len(c) for c in chains.values())
    assert used_clusters <= fs.used_bytes // b.cluster_size <= used_clusters + 64


def test_capture_restore_big_fat32(big_fat32, tmp_path) -> None:
    vol, hashes, _chains = big_fat32
    repo = tmp_path / "repo"
    doc = rk_json("capture", vol, repo)
    [part] = doc["partitions"]
    assert part["fs"] == "fat32" and not doc["warnings"]
    out = tmp_path / "restored.img"
    rk("restore", repo, out, "--yes", "--verify")
    check_fat(out)  # fsck.vfat -n clean...
    assert mtd.file_hashes_fat(out) == hashes  # ...and every file's content intact

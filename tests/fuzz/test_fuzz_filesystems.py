"""Mutated file systems (seeded byte mutations of real FAT12/16/32, exFAT and NTFS volumes): detect and
used_ranges only ever fail with RescueError, return sorted, disjoint ranges inside the partition, and a
damaged boot sector or file-system structure is refused (whole partition stored) or still covers every byte
the intact volume uses: used data is never silently left out."""
from __future__ import annotations

import random

import pytest
from fuzz_helpers import budget, check_ranges, covers, mutations

from rescuekit.disk import fat, ntfs
from rescuekit.disk.filesystems import detect, used_ranges
from rescuekit.errors import RescueError

KINDS = ("fat12", "fat16", "fat32", "exfat", "ntfs")


def _parse(dev, size):
    """(fs, ranges) or (None, error) - any exception but RescueError propagates (a test failure)."""
    try:
        fs = detect(dev, 0, size)
        return fs, used_ranges(dev, 0, size, fs)
    except RescueError as exc:
        assert "\n" not in str(exc), f"multi-line error: {exc!r}"
        return None, exc


def _data_end(kind: str, boot: bytes, size: int) -> int:
    """End of the cluster area: FAT/exFAT bytes after it (the tail) are stored but hold no data."""
    if kind in ("fat12", "fat16", "fat32"):
        fb = fat.parse_fat_boot(boot)
        return fb.data_start + fb.count * fb.cluster_size
    if kind == "exfat":
        eb = fat.parse_exfat_boot(boot)
        return eb.heap_offset * eb.bytes_per_sector + eb.count * eb.cluster_size
    return size  # NTFS: the tail is the backup boot sector


def _clip(ranges, end):
    return [(s, min(n, end - s)) for s, n in ranges if s < end]


def _structures(kind: str, m) -> dict[str, list[tuple[int, int]]]:
    """Byte regions of the volume's own structures, by name, from the intact volume ("boot": the BPB
    fields, where one wrong value moves everything; boot code and messages are left alone)."""
    boot = m.read(0, 512)
    if kind == "ntfs":
        nb = ntfs.parse_boot(boot)
        mft = nb.mft_lcn * nb.cluster_size
        return {"boot": [(0x0B, 0x4B)], "backup-boot": [(nb.nr_clusters * nb.cluster_size, 512)]
                if nb.nr_clusters * nb.cluster_size < m.size else [(m.size - 512, 512)],
                "mft-records": [(mft, 16 * nb.mft_record_size)]}
    if kind == "exfat":
        eb = fat.parse_exfat_boot(boot)
        _label, (bm_first, bm_len) = fat.exfat_info(m.dev, 0, eb)
        return {"boot": [(0x40, 0x38)], "fat": [(eb.fat_offset * eb.bytes_per_sector, 64)],
                "root": [(eb.cluster_pos(eb.root_cluster), 256)],
                "bitmap": [(eb.cluster_pos(bm_first), min(bm_len, 512))]}
    fb = fat.parse_fat_boot(boot)
    fat_pos = fb.reserved * fb.bytes_per_sector
    root = fb.data_start + (fb.root_cluster - 2) * fb.cluster_size if kind == "fat32" else \
        (fb.reserved + fb.num_fats * fb.fat_sectors) * fb.bytes_per_sector
    return {"boot": [(11, 79)], "fat": [(fat_pos, min(4096, fb.fat_sectors * fb.bytes_per_sector))],
            "root": [(root, 512)]}


@pytest.mark.parametrize("kind", KINDS)
def test_mutated_filesystem(kind: str, mem_fs) -> None:
    m = mem_fs[kind]
    fs0, used0 = _parse(m.dev, m.size)
    assert fs0 is not None and fs0.kind == kind and not fs0.warnings, used0
    check_ranges(used0, m.size, f"intact {kind}")
    need = _clip(used0, _data_end(kind, m.read(0, 512), m.size))  # what must be stored, whatever the damage
    bad: list[str] = []
    structs = _structures(kind, m)
    rng = random.Random(f"fs-{kind}")
    stats = {"refused": 0, "whole": 0, "parsed": 0}
    for name, regions in structs.items():
        for edit in mutations(rng, regions, budget(120), original=m):
            with m.mutated(edit) as dev:
                fs, got = _parse(dev, m.size)
            where = f"{kind} {name} mutation {edit!r}"
            if fs is None:
                stats["refused"] += 1
                continue
            check_ranges(got, m.size, where)
            if fs.kind in ("unknown", "zero", "bitlocker") or fs.warnings:
                assert got == [(0, m.size)], where
                stats["whole"] += 1
                continue
            stats["parsed"] += 1
            if name != "bitmap" and name != "fat":  # the allocation map itself may legitimately change
                missing = covers(got, need)
                if missing:
                    bad.append(f"{where}: parsed as {fs.kind} but leaves out used bytes {missing[:4]}")
    assert not bad, f"{len(bad)} of {sum(stats.values())} mutations: " + "; ".join(bad[:8])
    assert stats["parsed"] and (stats["whole"] or stats["refused"]), stats


def _le(v: int, n: int) -> bytes:
    return v.to_bytes(n, "little")


def _fat_field_damage(kind: str, m) -> list[tuple[str, dict[int, bytes]]]:
    fb = fat.parse_fat_boot(m.read(0, 512))
    out = [("one FAT fewer", {16: bytes([fb.num_fats - 1])}), ("one FAT more", {16: bytes([fb.num_fats + 1])})]
    if kind == "fat32":
        out.append(("FAT size + 1", {36: _le(fb.fat_sectors + 1, 4)}))
        out.append(("FAT size - 1", {36: _le(fb.fat_sectors - 1, 4)}))
    else:
        out.append(("FAT size + 1", {22: _le(fb.fat_sectors + 1, 2)}))
        out.append(("root entries + 1", {17: _le(fb.root_entries + 1, 2)}))
        out.append(("root entries + 1 sector", {17: _le(fb.root_entries + fb.bytes_per_sector // 32, 2)}))
        out.append(("root entries x 33", {17: _le(fb.root_entries * 33, 2)}))
        out.append(("no root entries", {17: _le(0, 2)}))
        # one cluster more of root directory: every folder moves onto its neighbour, which also starts with '.'
        out.append(("root entries + 1 cluster", {17: _le(fb.root_entries + fb.cluster_size // 32, 2)}))
    return out


@pytest.mark.parametrize("kind", ("fat12", "fat16", "fat32"))
def test_fat_layout_damage_is_not_trusted(kind: str, mem_fs) -> None:
    """Regression (found by the mutation test): a wrong FAT count, FAT size or root-entry count moves every
    cluster; the FAT still decoded and its map left used data out. Now such a layout is refused (the whole
    partition is stored) because the FAT copies, the root's subfolders' '.' entries or the sector fill
    do not match."""
    m = mem_fs[kind]
    fs0, used0 = _parse(m.dev, m.size)
    need = _clip(used0, _data_end(kind, m.read(0, 512), m.size))
    for what, edit in _fat_field_damage(kind, m):
        with m.mutated(edit) as dev:
            fs, got = _parse(dev, m.size)
        # stored whole: as a damaged map (a warning), or as an unknown file system (BPB refused outright)
        assert fs is not None and (fs.warnings or fs.kind == "unknown") and got == [(0, m.size)], \
            (what, fs and fs.kind, got[:3])
        assert not covers(got, need)


def _mtools_files(img, tmp) -> dict[str, str] | None:
    """{path: sha256} of every file mtools reads from ``img``; None when mtools cannot read it."""
    import hashlib
    import shutil
    import subprocess

    out = tmp / "files"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir()
    res = subprocess.run(["mcopy", "-s", "-n", "-Q", "-i", str(img), "::/*", str(out)], capture_output=True)
    if res.returncode != 0:
        return None
    return {p.relative_to(out).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(out.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("kind", ("fat12", "fat16", "fat32"))
def test_bpb_damage_restores_what_mtools_reads(kind: str, mem_fs, tmp_path) -> None:
    """End to end with an independent reader: for a damaged BPB that is still accepted, an image holding only
    the planned ranges (what capture stores and restore writes onto a fresh file) gives mtools the same files,
    byte for byte, as the damaged volume itself."""
    m = mem_fs[kind]
    rng = random.Random(f"mtools-{kind}")
    src, restored = tmp_path / "src.img", tmp_path / "restored.img"
    compared = 0
    for edit in mutations(rng, [(11, 79)], budget(12), original=m):
        with m.mutated(edit) as dev:
            fs, got = _parse(dev, m.size)
            if fs is None or fs.kind not in ("fat12", "fat16", "fat32") or fs.warnings:
                continue
            data = m.read(0, m.size)
        src.write_bytes(data)
        with open(restored, "wb") as f:
            f.truncate(m.size)
            for s, n in got:
                f.seek(s)
                f.write(data[s:s + n])
        want = _mtools_files(src, tmp_path)
        if want is None:
            continue
        assert _mtools_files(restored, tmp_path) == want, f"{kind} BPB mutation {edit!r}"
        compared += 1
    assert compared, "no accepted mutation was compared"


FAT_FIELDS = {"bytes/sector": (11, 2), "reserved": (14, 2), "FATs": (16, 1), "root entries": (17, 2),
              "sectors16": (19, 2), "FAT size16": (22, 2), "sectors32": (32, 4), "FAT size32": (36, 4),
              "root cluster": (44, 4)}


@pytest.mark.parametrize("kind", ("fat12", "fat16", "fat32"))
def test_fat_bpb_field_sweep(kind: str, mem_fs) -> None:
    """Every BPB layout field nudged by small and large steps, every sectors-per-cluster value: the volume is
    refused or stored whole, or every byte the intact volume uses is still stored (systematic, not sampled)."""
    m = mem_fs[kind]
    boot = m.read(0, 512)
    _fs0, used0 = _parse(m.dev, m.size)
    need = _clip(used0, _data_end(kind, boot, m.size))
    edits = [{13: bytes([v])} for v in range(256)]
    for off, w in FAT_FIELDS.values():
        v = int.from_bytes(boot[off:off + w], "little")
        for d in (-64, -16, -8, -2, -1, 1, 2, 8, 16, 64, v, -v // 2, -v):
            if 0 <= v + d < 1 << (8 * w):
                edits.append({off: (v + d).to_bytes(w, "little")})
    bad = []
    for edit in edits:
        with m.mutated(edit) as dev:
            fs, got = _parse(dev, m.size)
        if fs is not None and fs.kind.startswith("fat") and not fs.warnings and covers(got, need):
            bad.append(f"{edit!r}: leaves out {covers(got, need)[:2]}")
    assert not bad, bad[:8]

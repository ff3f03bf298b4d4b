"""Hostile / corrupted on-disk structures: a RescueError or the whole partition with a warning, never a
traceback, a huge allocation, or used ranges that silently leave data out."""
from __future__ import annotations

import struct

import pytest
from disk_helpers import MiB, _seal, copy_sparse, run

from rescuekit.disk import device, fat, filesystems, ntfs

PART = 1 * MiB  # volumes sit at this offset of the test file, so bad pointers can reach "before" them
VOL = 24 * MiB


@pytest.fixture(scope="module")
def ntfs_disk(tmp_path_factory, mtd) -> bytes:
    vol = tmp_path_factory.mktemp("hostile") / "v.img"
    with open(vol, "wb") as f:
        f.truncate(VOL)
    run("mkntfs", "-F", "-Q", "-q", vol)
    return bytes(PART) + vol.read_bytes() + bytes(PART)


def _edit_bitmap_data(img: bytearray, edit) -> None:
    """Apply ``edit(rec, data_attr_pos)`` to $Bitmap's MFT record (fixups undone and re-applied)."""
    nb = ntfs.parse_boot(bytes(img[PART:PART + 512]))
    pos = PART + nb.mft_lcn * nb.cluster_size + ntfs.FILE_BITMAP * nb.mft_record_size
    rec = bytearray(img[pos:pos + nb.mft_record_size])
    ntfs.apply_fixups(rec, "test")
    apos = next(p for t, p in ntfs.iter_attributes(rec) if t == ntfs.AT_DATA)
    assert rec[apos + 8] == 1  # non-resident
    edit(rec, apos)
    img[pos:pos + len(rec)] = _seal(rec)


def _runs_at(rec: bytearray, apos: int) -> int:
    return apos + struct.unpack_from("<H", rec, apos + 32)[0]


def _set_first_lcn(rec: bytearray, apos: int, lcn: int) -> None:
    mp = _runs_at(rec, apos)
    lsz, osz = rec[mp] & 0x0F, rec[mp] >> 4
    rec[mp + 1 + lsz:mp + 1 + lsz + osz] = lcn.to_bytes(osz, "little", signed=True)


HOSTILE_BITMAPS = {
    # Mapping pairs offset at the end of the attribute: no runs at all.
    "no runs": lambda rec, a: struct.pack_into("<H", rec, a + 32, struct.unpack_from("<I", rec, a + 4)[0]),
    "data size 0": lambda rec, a: struct.pack_into("<qqq", rec, a + 40, 0, 0, 0),
    "negative data size": lambda rec, a: struct.pack_into("<q", rec, a + 48, -4096),
    "negative LCN": lambda rec, a: _set_first_lcn(rec, a, -1),
    "run in free space": lambda rec, a: _set_first_lcn(rec, a, VOL // 4096 - 64),
    "sparse run": lambda rec, a: rec.__setitem__(_runs_at(rec, a), rec[_runs_at(rec, a)] & 0x0F),
    "lowest VCN not 0": lambda rec, a: struct.pack_into("<q", rec, a + 16, 1),
}


@pytest.mark.parametrize("case", sorted(HOSTILE_BITMAPS))
def test_ntfs_hostile_bitmap_means_whole_partition(ntfs_disk, tmp_path, case):
    img = bytearray(ntfs_disk)
    _edit_bitmap_data(img, HOSTILE_BITMAPS[case])
    path = tmp_path / "disk.img"
    path.write_bytes(img)
    with device.open_source(path) as d:
        fs = filesystems.detect(d, PART, VOL)
        assert fs.kind == "ntfs"
        assert filesystems.used_ranges(d, PART, VOL, fs) == [(0, VOL)], case
        assert fs.warnings and "whole partition" in fs.warnings[0]


def test_ntfs_intact_bitmap_is_not_whole(ntfs_disk, tmp_path):
    path = tmp_path / "disk.img"
    path.write_bytes(ntfs_disk)
    with device.open_source(path) as d:
        fs = filesystems.detect(d, PART, VOL)
        ranges = filesystems.used_ranges(d, PART, VOL, fs)
    assert not fs.warnings and sum(n for _s, n in ranges) < VOL // 2


EXFAT_HEAD = 4 * MiB  # boot regions, FAT, bitmap and root directory all lie in the first MiBs


@pytest.fixture(scope="module")
def exfat_vol(tmp_path_factory, mtd):
    """An exFAT volume whose allocation bitmap spans two clusters (64 Ki clusters of 4 KiB)."""
    return mtd.make_exfat_volume(tmp_path_factory.mktemp("hostile_exfat") / "ex.img", 256 * MiB)


def _exfat_bitmap_entry(img: bytes) -> tuple[fat.ExfatBoot, int]:
    eb = fat.parse_exfat_boot(img[:512])
    root = eb.cluster_pos(eb.root_cluster)
    i = next(i for i in range(0, eb.cluster_size, 32) if img[root + i] == 0x81)
    return eb, root + i


def _fat_entry_of_bitmap(img: bytearray) -> int:
    eb, ent = _exfat_bitmap_entry(img)
    return eb.fat_offset * eb.bytes_per_sector + 4 * struct.unpack_from("<I", img, ent + 20)[0]


HOSTILE_EXFAT = {
    "bitmap length 0": lambda img: struct.pack_into("<Q", img, _exfat_bitmap_entry(img)[1] + 24, 0),
    "bitmap cluster 0": lambda img: struct.pack_into("<I", img, _exfat_bitmap_entry(img)[1] + 20, 0),
    "bitmap elsewhere": lambda img: struct.pack_into("<I", img, _exfat_bitmap_entry(img)[1] + 20, 5000),
    "bitmap chain cut": lambda img: struct.pack_into("<I", img, _fat_entry_of_bitmap(img), 0xFFFFFFFF),
}


@pytest.mark.parametrize("case", sorted(HOSTILE_EXFAT))
def test_exfat_hostile_bitmap_means_whole_partition(exfat_vol, tmp_path, case):
    path = tmp_path / "ex.img"
    copy_sparse(exfat_vol, path)
    with open(path, "r+b") as f:
        img = bytearray(f.read(EXFAT_HEAD))
        eb, _ent = _exfat_bitmap_entry(img)
        assert -(-eb.count // 8 // eb.cluster_size) == 2 and eb.cluster_pos(eb.root_cluster) < EXFAT_HEAD
        HOSTILE_EXFAT[case](img)
        f.seek(0)
        f.write(img)
    with device.open_source(path) as d:
        fs = filesystems.detect(d, 0, d.size)
        assert fs.kind == "exfat"
        assert filesystems.used_ranges(d, 0, d.size, fs) == [(0, d.size)], case
        assert fs.warnings and "whole partition" in fs.warnings[0]


def _bump_reserved(img: bytearray) -> None:
    """One more reserved sector in the BPB: the FAT would be read one sector too late."""
    struct.pack_into("<H", img, 14, struct.unpack_from("<H", img, 14)[0] + 1)


def _free_fat32_root(img: bytearray) -> None:
    b = fat.parse_fat_boot(bytes(img[:512]))
    struct.pack_into("<I", img, b.reserved * b.bytes_per_sector + 4 * b.root_cluster, 0)


@pytest.mark.parametrize("bits,edit", [(16, _bump_reserved), (32, _bump_reserved), (32, _free_fat32_root)])
def test_fat_bpb_not_matching_fat_means_whole_partition(mtd, tmp_path, bits, edit):
    vol, _h = mtd.make_fat_volume(tmp_path / "f.img", 40 * MiB, bits=bits, tree_bytes=200_000)
    img = bytearray(vol.read_bytes())
    edit(img)
    vol.write_bytes(img)
    with device.open_source(vol) as d:
        fs = filesystems.detect(d, 0, d.size)
        assert fs.kind == f"fat{bits}"
        assert filesystems.used_ranges(d, 0, d.size, fs) == [(0, d.size)]
        assert fs.warnings and "whole partition" in fs.warnings[0]


def test_fat16_with_a_fat12_cluster_count_means_whole_partition(mtd, tmp_path):
    """A shrunken total-sectors field turns a FAT16 volume into a FAT12 cluster count: its FAT must not
    be decoded as 12-bit entries (files would be left out)."""
    vol, _h = mtd.make_fat_volume(tmp_path / "f.img", 32 * MiB, bits=16, tree_bytes=200_000)
    img = bytearray(vol.read_bytes())
    assert img[0x36:0x3E] == b"FAT16   " and struct.unpack_from("<H", img, 19)[0] == 0
    struct.pack_into("<I", img, 32, 16000)  # total sectors (32-bit field)
    vol.write_bytes(img)
    with device.open_source(vol) as d:
        fs = filesystems.detect(d, 0, d.size)
        assert fs.kind == "fat12"
        assert filesystems.used_ranges(d, 0, d.size, fs) == [(0, d.size)]
        assert "says FAT16" in fs.warnings[0] and "whole partition" in fs.warnings[0]


def test_ntfs_mft_past_the_partition_is_not_read(ntfs_disk, tmp_path):
    """A boot sector whose $MFT lies beyond the partition (here: in the next volume's place) is refused
    instead of reading another volume's records."""
    img = bytearray(ntfs_disk[:PART + VOL]) + bytearray(ntfs_disk[PART:PART + VOL])  # a copy follows
    nb = ntfs.parse_boot(bytes(img[PART:PART + 512]))
    struct.pack_into("<qq", img, PART + 0x28, 2 * VOL // 512 - 1, nb.mft_lcn + VOL // nb.cluster_size)
    path = tmp_path / "disk.img"
    path.write_bytes(img)
    with device.open_source(path) as d:
        fs = filesystems.detect(d, PART, VOL)
        assert fs.kind == "ntfs"
        assert filesystems.used_ranges(d, PART, VOL, fs) == [(0, VOL)]
        assert "past the end of the partition" in fs.warnings[0]

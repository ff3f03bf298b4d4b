"""File-system detection and used ranges: NTFS vs ntfsclone, FAT via fsck.vfat + mtools, exFAT, BitLocker."""
from __future__ import annotations

import hashlib
import random
import struct
import uuid

import pytest
from disk_helpers import MiB, copy_sparse, run

from rescuekit.disk import device, filesystems, partitions
from rescuekit.disk.ranges import RangeBuilder, merge, total


def copy_used(src_path, dst_path, offset=0, size=None, regions=()) -> tuple[list, filesystems.FsInfo]:
    """Write only the used ranges (plus ``regions``) of the volume at ``offset`` into a blank file."""
    with device.open_source(src_path) as s, device.open_target(dst_path, create_size=s.size) as t:
        size = size or s.size - offset
        fs = filesystems.detect(s, offset, size)
        ranges = filesystems.used_ranges(s, offset, size, fs)
        for a, n in regions:
            t.write(a, s.read(a, n))
        for a, n in ranges:
            t.write(offset + a, s.read(offset + a, n))
    return ranges, fs


def sha(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_ntfs_used_ranges_equal_ntfsclone(stale_ntfs, tmp_path):
    vol, hashes = stale_ntfs
    ours = tmp_path / "ours.img"
    ranges, fs = copy_used(vol, ours)
    assert fs.kind == "ntfs" and fs.label == "Windows" and fs.cluster_size == 4096 and not fs.warnings
    size = vol.stat().st_size
    # Sorted, merged, inside the partition, and the last sector (backup boot sector) included.
    assert ranges == merge(ranges) and ranges[0][0] == 0 and sum(ranges[-1]) == size
    # ntfsclone -o writes used clusters + metadata, unused clusters as zeros: byte-identical to ours, so we
    # store everything it stores and no stale free-space data.
    ref = tmp_path / "ntfsclone.img"
    run("ntfsclone", "-f", "-q", "-o", ref, vol)
    assert sha(ours) == sha(ref)
    assert sha(vol) != sha(ref)  # the free space really holds stale data
    out = run("ntfsfix", "-n", ours).stdout
    assert "alternate boot sector... OK" in out, out
    # Used bytes agree with ntfsclone's own accounting (its save-image header: inuse clusters).
    img = tmp_path / "vol.ntfsclone"
    run("ntfsclone", "-f", "-q", "--save-image", "-o", img, vol)
    head = img.read_bytes()[:64]
    assert head[:16] == b"\0ntfsclone-image"
    cluster_size, device_size, nr_clusters, inuse = struct.unpack_from("<IqqQ", head, 18)
    assert cluster_size == fs.cluster_size and device_size == size
    assert fs.used_bytes == inuse * cluster_size
    assert total(ranges) >= fs.used_bytes


def test_ntfs_files_survive_used_copy(stale_ntfs, tmp_path, mtd):
    vol, hashes = stale_ntfs
    ours = tmp_path / "ours.img"
    copy_used(vol, ours)
    assert mtd.file_hashes_ntfs(ours) == hashes


def test_ntfs_damaged_bitmap_record_means_whole_partition(stale_ntfs, tmp_path):
    vol, _h = stale_ntfs
    bad = tmp_path / "bad.img"
    copy_sparse(vol, bad)
    with device.open_source(bad) as d:
        boot = d.read(0, 512)
    from rescuekit.disk import ntfs

    nb = ntfs.parse_boot(boot)
    with open(bad, "r+b") as f:  # break $Bitmap's FILE signature
        f.seek(nb.mft_lcn * nb.cluster_size + 6 * nb.mft_record_size)
        f.write(b"XXXX")
    with device.open_source(bad) as d:
        fs = filesystems.detect(d, 0, d.size)
        assert fs.kind == "ntfs" and fs.warnings and "whole partition" in fs.warnings[0]
        assert filesystems.used_ranges(d, 0, d.size, fs) == [(0, d.size)]


def test_gpt_disk_partitions(gpt_disk, tmp_path, mtd):
    """Every partition of the GPT disk: used-range copy keeps the table valid and every file intact."""
    disk, hashes = gpt_disk
    out = tmp_path / "out.img"
    with device.open_source(disk) as d:
        t = partitions.read_table(d)
    kinds = []
    for p in t.partitions:
        ranges, fs = copy_used(disk, out, p.start, p.size, regions=t.header_regions)
        kinds.append((fs.kind, fs.label))
    assert kinds == [("fat32", "ESP"), ("zero", None), ("ntfs", "Windows")]
    assert "No problems found" in run("sgdisk", "-v", out).stdout
    esp, nt = t.partitions[0], t.partitions[2]
    assert mtd.file_hashes_fat(out, esp.start) == hashes[1]
    assert mtd.file_hashes_ntfs(out, nt.start, nt.size) == hashes[3]
    vol = mtd.extract_partition(out, esp.start, esp.size, tmp_path / "esp.img")
    r = run("fsck.vfat", "-n", vol, check=False)
    assert r.returncode == 0, r.stdout + r.stderr


def test_mbr_fat16_fat32_logical(mbr_disk, tmp_path, mtd):
    disk, hashes = mbr_disk
    with device.open_source(disk) as d:
        t = partitions.read_table(d)
    out = tmp_path / "out.img"
    seen = {}
    for p in t.data_partitions:
        ranges, fs = copy_used(disk, out, p.start, p.size, regions=t.header_regions)
        seen[p.number] = fs.kind
        # Only a small part of each mostly-empty volume is stored.
        assert total(ranges) < p.size // 2
    assert seen == {1: "ntfs", 2: "fat32", 5: "fat16", 6: "ntfs"}
    assert run("sfdisk", "-d", out).stdout.replace(str(out), "X") == run("sfdisk", "-d", disk).stdout.replace(
        str(disk), "X")
    for p in t.data_partitions:
        if seen[p.number] == "ntfs":
            assert mtd.file_hashes_ntfs(out, p.start, p.size) == hashes[p.number]
        else:
            assert mtd.file_hashes_fat(out, p.start) == hashes[p.number]
            vol = mtd.extract_partition(out, p.start, p.size, tmp_path / f"p{p.number}.img")
            r = run("fsck.vfat", "-n", vol, check=False)
            assert r.returncode == 0, r.stdout + r.stderr


def test_fat12(mtd, tmp_path):
    vol, hashes = mtd.make_fat_volume(tmp_path / "f12.img", 4 * MiB, bits=12, tree_bytes=600_000, label="SMALL")
    ours = tmp_path / "ours.img"
    ranges, fs = copy_used(vol, ours)
    assert fs.kind == "fat12" and fs.label == "SMALL"
    assert mtd.file_hashes_fat(ours) == hashes
    assert run("fsck.vfat", "-n", ours, check=False).returncode == 0


def test_fat32_fragmented_after_deletes(mtd, tmp_path):
    """Deleted files leave holes: freed clusters are not stored, files written into holes are."""
    vol, hashes = mtd.make_fat_volume(tmp_path / "f32.img", 48 * MiB, tree_bytes=3 * MiB, label="FRAG")
    names = sorted(hashes)
    for n in names[1::2]:
        run("mdel", "-i", vol, "::/" + n)
        del hashes[n]
    (tmp_path / "big.bin").write_bytes(random.Random(1).randbytes(900_000))
    run("mcopy", "-i", vol, tmp_path / "big.bin", "::/big.bin")
    hashes["big.bin"] = hashlib.sha256((tmp_path / "big.bin").read_bytes()).hexdigest()
    ours = tmp_path / "ours.img"
    ranges, fs = copy_used(vol, ours)
    assert mtd.file_hashes_fat(ours) == hashes
    assert run("fsck.vfat", "-n", ours, check=False).returncode == 0
    assert len(ranges) > 3


def test_exfat_empty_volume(mtd, tmp_path):
    vol = mtd.make_exfat_volume(tmp_path / "ex.img", 64 * MiB, label="STICK")
    ours = tmp_path / "ours.img"
    ranges, fs = copy_used(vol, ours)
    assert (fs.kind, fs.label, fs.cluster_size) == ("exfat", "STICK", 4096)
    dump = run("dump.exfat", vol).stdout
    vals = {k.strip(): v.strip() for k, _s, v in (ln.partition(":") for ln in dump.splitlines()) if v}
    total_c, free_c = int(vals["Total Clusters"]), int(vals["Free Clusters"])
    assert fs.used_bytes == (total_c - free_c) * 4096
    heap = int(vals["Cluster Heap Offset (sector offset)"]) * 512
    assert ranges == [(0, heap + fs.used_bytes)]
    r = run("fsck.exfat", "-n", ours, check=False)
    assert r.returncode == 0, r.stdout + r.stderr


def test_exfat_bitmap_parsing(mtd, tmp_path):
    """Set bits in the allocation bitmap (as a populated volume would have) and check the ranges."""
    vol = mtd.make_exfat_volume(tmp_path / "ex.img", 64 * MiB)
    with device.open_source(vol) as d:
        fs = filesystems.detect(d, 0, d.size)
        from rescuekit.disk import fat

        eb = fat.parse_exfat_boot(d.read(0, 512))
        _label, (first, _length) = fat.exfat_info(d, 0, eb)
    bm_pos = eb.cluster_pos(first)
    with open(vol, "r+b") as f:
        f.seek(bm_pos + 100)  # clusters 802..809 in use
        f.write(b"\xff")
        f.seek(bm_pos + 1000)  # clusters 8002 and 8005
        f.write(b"\x09")
    with device.open_source(vol) as d:
        fs = filesystems.detect(d, 0, d.size)
        ranges = filesystems.used_ranges(d, 0, d.size, fs)
    heap = eb.heap_offset * 512
    assert ranges[1:] == [(heap + 800 * 4096, 8 * 4096), (heap + 8000 * 4096, 4096), (heap + 8003 * 4096, 4096)]
    assert fs.used_bytes == (4 + 8 + 2) * 4096


BL_GUID = uuid.UUID("4967D63B-2E29-4AD8-8399-F6A339E3D001").bytes_le


def _write(path, data: bytes, size: int = 4 * MiB) -> None:
    with open(path, "wb") as f:
        f.truncate(size)
        f.write(data)


def test_bitlocker_detection(tmp_path, mtd):
    bl = bytearray(512)
    bl[0:3] = b"\xeb\x58\x90"
    bl[3:11] = b"-FVE-FS-"
    bl[11:13] = struct.pack("<H", 512)
    bl[0xA0:0xB0] = BL_GUID
    bl[510:512] = b"\x55\xaa"
    _write(tmp_path / "bl.img", bytes(bl) + random.Random(2).randbytes(4096))
    # BitLocker To Go: a FAT32-looking boot sector with OEM MSWIN4.1 and the BitLocker GUID at 0x1A8.
    vol, _h = mtd.make_fat_volume(tmp_path / "togo.img", 40 * MiB, tree_bytes=100_000)
    boot = bytearray(vol.read_bytes()[:512])
    boot[3:11] = b"MSWIN4.1"
    plain = tmp_path / "plain.img"
    _write(plain, bytes(boot), 40 * MiB)
    copy_sparse(vol, plain)
    with open(plain, "r+b") as f:
        f.write(bytes(boot))
    boot[0x1A8:0x1B8] = BL_GUID
    with open(vol, "r+b") as f:
        f.write(bytes(boot))
    for path, kind in ((tmp_path / "bl.img", "bitlocker"), (vol, "bitlocker"), (plain, "fat32")):
        with device.open_source(path) as d:
            fs = filesystems.detect(d, 0, d.size)
            assert fs.kind == kind, path
            if kind == "bitlocker":
                assert filesystems.used_ranges(d, 0, d.size, fs) == [(0, d.size)]


def test_zero_and_unknown(tmp_path):
    _write(tmp_path / "zero.img", b"", 3 * MiB)
    _write(tmp_path / "rand.img", random.Random(3).randbytes(MiB), 3 * MiB)
    for name, kind in (("zero.img", "zero"), ("rand.img", "unknown")):
        with device.open_source(tmp_path / name) as d:
            fs = filesystems.detect(d, 0, d.size)
            assert fs.kind == kind
            assert filesystems.used_ranges(d, 0, d.size, fs) == [(0, d.size)]


def test_bitmap_scanner_matches_bit_by_bit():
    rng = random.Random(4)
    data = bytes(rng.choice([0, 0, 0xFF, 0xFF, rng.randrange(256)]) for _ in range(5000))
    limit = len(data) * 8 - 5
    rb = RangeBuilder()
    count = rb.add_bitmap(data, 16, 4096, 1000, limit)
    want = [u for u in range(len(data) * 8) if data[u // 8] >> (u % 8) & 1 and u + 16 < limit]
    assert count == len(want)
    assert rb.result() == merge([(1000 + (u + 16) * 4096, 4096) for u in want])


def test_bitmap_scanner_large_is_linear():
    """A 32 MiB bitmap (1 TB at 4 KiB clusters) with realistic runs scans without a per-bit loop."""
    rng = random.Random(5)
    parts, n = [], 0
    while n < 32 * MiB:
        k = rng.randrange(1, 4096)
        parts.append(b"\xff" * k + bytes([rng.randrange(256)]) + bytes(rng.randrange(1, 4096)))
        n += len(parts[-1])
    data = b"".join(parts)[: 32 * MiB]
    rb = RangeBuilder()
    count = rb.add_bitmap(data, 0, 4096, 0, len(data) * 8)
    assert count == int.from_bytes(data, "little").bit_count()
    assert total(rb.result()) == count * 4096


@pytest.mark.parametrize("mkntfs_args", [["-c", "512"], ["-c", "65536"], ["-c", "2097152"], ["-s", "4096"]],
                         ids=["512B-clusters", "64K-clusters", "2M-clusters", "4K-sectors"])
def test_ntfs_geometries_equal_ntfsclone(tmp_path, mtd, mkntfs_args):
    """Cluster sizes above 64 KiB use the negative sectors-per-cluster encoding; 4 KiB sectors too."""
    vol = tmp_path / "v.img"
    vol.write_bytes(random.Random(7).randbytes(40 * MiB))  # stale data everywhere
    run("mkntfs", "-F", "-Q", "-q", *mkntfs_args, vol)
    ours = tmp_path / "ours.img"
    ranges, fs = copy_used(vol, ours)
    assert fs.kind == "ntfs" and not fs.warnings
    ref = tmp_path / "ref.img"
    run("ntfsclone", "-f", "-q", "-o", ref, vol)
    assert sha(ours) == sha(ref)


def test_ntfs_smaller_than_partition_keeps_tail(tmp_path):
    """A volume shrunk inside its partition: everything after the last cluster is stored (backup boot
    sector at the volume's end, and the rest of the partition)."""
    vol = tmp_path / "v.img"
    with open(vol, "wb") as f:
        f.truncate(48 * MiB)
    run("mkntfs", "-F", "-Q", "-q", vol, str(32 * MiB // 512 - 1))  # NTFS of 32 MiB - 1 sector
    with device.open_source(vol) as d:
        fs = filesystems.detect(d, 0, d.size)
        ranges = filesystems.used_ranges(d, 0, d.size, fs)
        total_sectors = struct.unpack_from("<q", d.read(0, 512), 0x28)[0]
        backup = total_sectors * 512  # the backup boot sector follows the volume's last sector
        assert d.read(backup, 512) == d.read(0, 512)
    assert ranges[-1][0] + ranges[-1][1] == 48 * MiB
    assert ranges[-1][0] <= backup


def test_ntfs_dirty_flag(tmp_path):
    vol = tmp_path / "v.img"
    with open(vol, "wb") as f:
        f.truncate(24 * MiB)
    run("mkntfs", "-F", "-Q", "-q", "-L", "Dirty", vol)
    from rescuekit.disk import ntfs

    with device.open_source(vol) as d:
        fs = filesystems.detect(d, 0, d.size)
        nb = ntfs.parse_boot(d.read(0, 512))
        rec = ntfs.read_mft_record(d, 0, nb, ntfs.FILE_VOLUME)
    assert (fs.label, fs.dirty) == ("Dirty", False)
    pos = next(p for t, p in ntfs.iter_attributes(rec) if t == ntfs.AT_VOLUME_INFORMATION)
    voff = struct.unpack_from("<H", rec, pos + 20)[0]
    flags_at = nb.mft_lcn * nb.cluster_size + 3 * nb.mft_record_size + pos + voff + 10
    assert flags_at % 512 < 510  # not an update-sequence slot
    with open(vol, "r+b") as f:
        f.seek(flags_at)
        f.write(b"\x01\x00")
    with device.open_source(vol) as d:
        assert filesystems.detect(d, 0, d.size).dirty is True


def _ntfsclone_clusters(img: bytes) -> tuple[int, list[tuple[int, int]]]:
    """Walk an ntfsclone --save-image stream (ntfsclone.c: 0x00 + s64 = skip clusters, 0x01 + data = one
    used cluster) into (cluster size, merged cluster ranges)."""
    assert img[:16] == b"\0ntfsclone-image"
    cs = struct.unpack_from("<I", img, 18)[0]
    pos = struct.unpack_from("<I", img, 46)[0]  # offset_to_image_data (image format 10.x)
    rb, lcn = RangeBuilder(), 0
    while pos < len(img):
        cmd = img[pos]
        if cmd == 0:
            lcn += struct.unpack_from("<q", img, pos + 1)[0]
            pos += 9
        elif cmd == 1:
            rb.add(lcn, 1)
            lcn += 1
            pos += 1 + cs
        else:
            raise AssertionError(f"unknown ntfsclone command {cmd} at {pos}")
    return cs, rb.result()


def test_ntfs_clusters_equal_ntfsclone_image_stream(stale_ntfs, tmp_path):
    """The clusters ntfsclone's own image stores are exactly the clusters our ranges cover."""
    vol, _h = stale_ntfs
    img = tmp_path / "vol.ntfsclone"
    run("ntfsclone", "-f", "-q", "--save-image", "-o", img, vol)
    cs, theirs = _ntfsclone_clusters(img.read_bytes())
    with device.open_source(vol) as d:
        fs = filesystems.detect(d, 0, d.size)
        ranges = filesystems.used_ranges(d, 0, d.size, fs)
        nr = struct.unpack_from("<q", d.read(0, 512), 0x28)[0] * 512 // cs
    # ntfsclone saves the partial "cluster" after the last one (holding the backup boot sector) as LCN nr;
    # our tail range is that same area.
    assert ranges[-1] == (nr * cs, d.size - nr * cs) and 0 < d.size - nr * cs <= cs
    ours = merge([(s // cs, -(-(s + n) // cs) - s // cs) for s, n in ranges])
    assert ours == theirs


@pytest.mark.parametrize("fat_args", [["-F", "16", "-s", "4"], ["-F", "32", "-s", "1"], ["-F", "32", "-s", "8"]],
                         ids=["fat16", "fat32", "fat32-few-clusters"])
def test_fat_bad_clusters_not_stored(tmp_path, mtd, fat_args):
    """Clusters marked bad (mkfs.fat -l) are not stored; with -F 32 and < 65525 clusters Linux still
    writes 32-bit FAT entries, and so do we read them (mtools, following the spec, cannot)."""
    vol = tmp_path / "v.img"
    with open(vol, "wb") as f:
        f.truncate(40 * MiB)
    (tmp_path / "bad.txt").write_text("30000\n30001\n")  # 1 KiB blocks
    run("mkfs.vfat", *fat_args, "-l", tmp_path / "bad.txt", vol)
    few = fat_args[-1] == "8"
    want = {}
    if not few:
        (tmp_path / "f.bin").write_bytes(random.Random(8).randbytes(3 * MiB))
        run("mcopy", "-i", vol, tmp_path / "f.bin", "::/f.bin")
        want = {"f.bin": hashlib.sha256((tmp_path / "f.bin").read_bytes()).hexdigest()}
    ours = tmp_path / "ours.img"
    ranges, fs = copy_used(vol, ours)
    assert fs.kind == ("fat16" if "16" in fat_args else "fat32")
    assert not any(s <= 30000 * 1024 < s + n for s, n in ranges)
    if not few:
        assert mtd.file_hashes_fat(ours) == want
    # mkfs.fat -l leaves FAT32's free-cluster hint stale, so fsck complains about the original too:
    # the copy must give exactly the same verdict.
    a, b = (run("fsck.vfat", "-n", p, check=False) for p in (vol, ours))
    assert (a.returncode, a.stdout.replace(str(vol), "X")) == (b.returncode, b.stdout.replace(str(ours), "X"))


def test_ntfs_bitmap_behind_attribute_list(tmp_path, mtd):
    """$Bitmap's $DATA in an extension record (found through $ATTRIBUTE_LIST and $MFT's data runs): same
    ranges as before the move, and still byte-identical to what ntfs-3g's ntfsclone copies."""
    from disk_helpers import ntfs_move_bitmap_data

    vol = tmp_path / "v.img"
    vol.write_bytes(random.Random(9).randbytes(48 * MiB))
    run("mkntfs", "-F", "-Q", "-q", vol)
    tree = tmp_path / "tree"
    mtd.gen_tree(tree, seed=9, total_bytes=3 * MiB)
    run("wimlib-imagex", "capture", tree, tmp_path / "t.wim", "--compress=none")
    run("wimlib-imagex", "apply", tmp_path / "t.wim", "1", vol)
    with device.open_source(vol) as d:
        before = filesystems.used_ranges(d, 0, d.size, filesystems.detect(d, 0, d.size))
    ntfs_move_bitmap_data(vol)
    assert "$DATA (0x80) from mft record 17" in run("ntfsinfo", "-i", "6", vol).stdout
    ours = tmp_path / "ours.img"
    ranges, fs = copy_used(vol, ours)
    assert not fs.warnings and ranges == before
    ref = tmp_path / "ref.img"
    run("ntfsclone", "-f", "-q", "-o", ref, vol)
    assert sha(ours) == sha(ref)

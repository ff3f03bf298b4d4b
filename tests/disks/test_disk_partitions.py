"""Partition tables: GPT and MBR parsing against sgdisk/sfdisk, damaged GPTs, GPT relocation."""
from __future__ import annotations

import json
import struct
import subprocess

import pytest

from rescuekit.disk import device, partitions
from rescuekit.errors import RescueError

from disk_helpers import MiB, copy_sparse, run


def sfdisk_json(path) -> dict:
    return json.loads(run("sfdisk", "-J", path).stdout)["partitiontable"]


def test_gpt_matches_sfdisk(gpt_disk):
    path, _h = gpt_disk
    ref = sfdisk_json(path)
    with device.open_source(path) as dev:
        t = partitions.read_table(dev)
    assert t.kind == "gpt" and not t.warnings
    assert t.disk_guid == ref["id"]
    assert t.first_usable == ref["firstlba"] * 512 and t.last_usable == (ref["lastlba"] + 1) * 512
    assert [(p.number, p.start // 512, p.size // 512, p.type, p.guid, p.name) for p in t.partitions] == [
        (i + 1, r["start"], r["size"], r["type"], r["uuid"], r["name"]) for i, r in enumerate(ref["partitions"])]
    assert [p.type_name for p in t.partitions] == ["EFI System", "Microsoft reserved", "Basic data"]
    # MBR + primary header + entries, and backup entries + header at the end.
    size = path.stat().st_size
    assert t.header_regions == [(0, 34 * 512), (size - 33 * 512, 33 * 512)]


def test_sgdisk_p_agrees(gpt_disk):
    path, _h = gpt_disk
    out = run("sgdisk", "-p", path).stdout
    rows = [ln.split() for ln in out.splitlines() if ln.strip()[:1].isdigit()]
    with device.open_source(path) as dev:
        t = partitions.read_table(dev)
    assert [(int(r[0]), int(r[1]), int(r[2])) for r in rows] == [
        (p.number, p.start // 512, p.end // 512 - 1) for p in t.partitions]


def test_mbr_with_logicals_matches_sfdisk(mbr_disk):
    path, _h = mbr_disk
    ref = sfdisk_json(path)
    with device.open_source(path) as dev:
        t = partitions.read_table(dev)
    assert t.kind == "mbr" and not t.warnings
    assert t.disk_signature == int(ref["id"], 16)
    got = [(f"{path}{p.number}", p.start // 512, p.size // 512, f"{p.type:x}", p.bootable) for p in t.partitions]
    want = [(r["node"], r["start"], r["size"], r["type"], bool(r.get("bootable"))) for r in ref["partitions"]]
    # sfdisk shows the extended partition's size as in the table; ours too.
    assert got == want
    ext = [p for p in t.partitions if p.extended]
    assert len(ext) == 1 and [p.number for p in t.partitions if p.logical] == [5, 6]
    assert [p.number for p in t.data_partitions] == [1, 2, 5, 6]
    # MBR + one EBR per logical partition; each EBR's first entry points at its logical partition.
    assert t.header_regions[0] == (0, 512) and len(t.header_regions) == 3
    assert t.header_regions[1] == (ext[0].start, 512)
    with device.open_source(path) as dev:
        for (ebr, n), logical in zip(t.header_regions[1:], [p for p in t.partitions if p.logical]):
            sector = dev.read(ebr, n)
            assert sector[510:] == b"\x55\xaa"
            assert struct.unpack_from("<I", sector, 446 + 8)[0] * 512 == logical.start - ebr


def test_blank_and_partitionless(tmp_path, stale_ntfs):
    blank = tmp_path / "blank.img"
    blank.write_bytes(bytes(1 * MiB))
    with device.open_source(blank) as dev:
        assert partitions.read_table(dev).kind == "none"
    with device.open_source(stale_ntfs[0]) as dev:  # a volume's boot sector has 55AA too
        assert partitions.read_table(dev).kind == "none"


def test_garbage_mbr_is_an_error(tmp_path):
    g = tmp_path / "garbage.img"
    data = bytearray(b"\x5a" * MiB)
    data[510:512] = b"\x55\xaa"
    g.write_bytes(bytes(data))
    with device.open_source(g) as dev, pytest.raises(RescueError, match="garbage"):
        partitions.read_table(dev)
    with device.open_source(g) as dev:  # lenient: image it raw
        t = partitions.read_table(dev, strict=False)
    assert t.kind == "none" and "garbage" in t.warnings[0] and "unpartitioned" in t.warnings[0]


def test_damaged_primary_gpt_uses_backup(gpt_disk, tmp_path):
    path, _h = gpt_disk
    bad = tmp_path / "bad.img"
    copy_sparse(path, bad)
    with device.open_source(path) as dev:
        good = partitions.read_table(dev)
    with open(bad, "r+b") as f:  # flip a byte in the primary entries -> entries CRC mismatch
        f.seek(1024 + 40)
        b = f.read(1)
        f.seek(1024 + 40)
        f.write(bytes([b[0] ^ 0xFF]))
    with device.open_source(bad) as dev:
        t = partitions.read_table(dev)
    assert t.partitions == good.partitions
    assert any("primary GPT is damaged" in w for w in t.warnings)
    # Both copies damaged: an error, not a guess.
    with open(bad, "r+b") as f:
        f.seek(bad.stat().st_size - 512 + 56)  # disk GUID, inside the CRC
        f.write(b"\xff" * 8)
    with device.open_source(bad) as dev, pytest.raises(RescueError, match="GPT .* damaged"):
        partitions.read_table(dev)


def test_fix_gpt_after_restore_to_larger(gpt_disk, tmp_path):
    path, _h = gpt_disk
    big = tmp_path / "big.img"
    new_size = path.stat().st_size + 200 * MiB
    copy_sparse(path, big, new_size)
    with device.open_source(big) as dev:
        assert any("not at the end" in w for w in partitions.read_table(dev).warnings)
    with device.open_target(big) as dev:
        partitions.fix_gpt_after_restore(dev)
    v = run("sgdisk", "-v", big).stdout
    assert "No problems found" in v, v
    ref = sfdisk_json(big)
    assert ref["lastlba"] == new_size // 512 - 34
    with device.open_source(big) as dev:
        t = partitions.read_table(dev)
        mbr = dev.read(0, 512)
    assert not t.warnings
    assert t.last_usable == new_size - 33 * 512
    assert struct.unpack_from("<I", mbr, 446 + 12)[0] == new_size // 512 - 1  # protective MBR size
    with device.open_source(path) as dev:
        assert t.partitions == partitions.read_table(dev).partitions
    # Idempotent: fixing again changes nothing.
    before = big.read_bytes()[:34 * 512]
    with device.open_target(big) as dev:
        partitions.fix_gpt_after_restore(dev)
    assert big.read_bytes()[:34 * 512] == before


def test_fix_gpt_refuses_a_too_small_disk(gpt_disk, tmp_path):
    path, _h = gpt_disk
    small = tmp_path / "small.img"
    copy_sparse(path, small, path.stat().st_size - 4 * MiB)
    with device.open_target(small) as dev, pytest.raises(RescueError, match="too small"):
        partitions.fix_gpt_after_restore(dev)


def test_hybrid_mbr_uses_gpt(gpt_disk, tmp_path):
    path, _h = gpt_disk
    hy = tmp_path / "hybrid.img"
    copy_sparse(path, hy)
    run("sgdisk", "-h", "3", hy)
    with device.open_source(hy) as dev:
        t = partitions.read_table(dev)
    assert t.kind == "gpt" and t.hybrid_mbr and len(t.partitions) == 3


def test_4k_sector_gpt(tmp_path):
    """A GPT written for 4096-byte sectors is found at byte 4096."""
    disk = tmp_path / "4k.img"
    with open(disk, "wb") as f:
        f.truncate(64 * MiB)
    # sgdisk cannot pretend a file has 4 KiB sectors: build the GPT by hand.
    import uuid
    import zlib

    ss, nent = 4096, 128
    entries = bytearray(nent * 128)
    tguid = uuid.UUID("EBD0A0A2-B9E5-4433-87C0-68B6B72699C7").bytes_le
    struct.pack_into("<16s16sQQQ", entries, 0, tguid, uuid.uuid4().bytes_le, 256, 16000 - 1, 0)
    last = 64 * MiB // ss - 1
    esec = nent * 128 // ss

    def hdr(my, alt, elba):
        h = bytearray(struct.pack("<8sIIIIQQQQ16sQIII", b"EFI PART", 0x10000, 92, 0, 0, my, alt, 2 + esec,
                                  last - esec - 1, uuid.uuid4().bytes_le, elba, nent, 128, zlib.crc32(entries)))
        struct.pack_into("<I", h, 16, zlib.crc32(h))
        return bytes(h)

    with open(disk, "r+b") as f:
        mbr = bytearray(512)
        struct.pack_into("<B3sB3sII", mbr, 446, 0, b"\0\x02\0", 0xEE, b"\xff\xff\xff", 1, last)
        mbr[510:512] = b"\x55\xaa"
        f.write(mbr)
        f.seek(ss)
        f.write(hdr(1, last, 2))
        f.seek(2 * ss)
        f.write(entries)
        f.seek((last - esec) * ss)
        f.write(entries)
        f.seek(last * ss)
        f.write(hdr(last, 1, last - esec))
    with device.open_source(disk) as dev:
        t = partitions.read_table(dev)
    assert t.kind == "gpt" and t.sector_size == 4096 and not t.warnings
    assert [(p.start, p.size) for p in t.partitions] == [(256 * ss, (16000 - 256) * ss)]
    # Relocation works in 4 KiB sectors too.
    with open(disk, "r+b") as f:
        f.truncate(96 * MiB)
    with device.open_target(disk) as dev:
        assert any("not at the end" in w for w in partitions.read_table(dev).warnings)
        partitions.fix_gpt_after_restore(dev)
        t2 = partitions.read_table(dev)
    assert not t2.warnings and t2.partitions == t.partitions
    assert t2.last_usable == 96 * MiB - (1 + 128 * 128 // 4096) * 4096


def test_stale_gpt_beside_mbr_uses_mbr(tmp_path):
    """A disk repartitioned as MBR without wiping its old GPT: like the OS (and sfdisk), read the MBR."""
    path = tmp_path / "stale.img"
    with open(path, "wb") as f:
        f.truncate(64 * MiB)
    run("sgdisk", "-n1:2048:+20M", "-t1:0700", path)
    subprocess.run(["sfdisk", "-q", "--wipe", "never", str(path)], input="label: dos\nstart=2048, size=81920, type=7\n",
                   text=True, check=True, capture_output=True)
    assert sfdisk_json(path)["label"] == "dos"
    with device.open_source(path) as dev:
        assert dev.read(512, 8) == b"EFI PART"  # the stale GPT is still there
        t = partitions.read_table(dev)
    assert t.kind == "mbr" and [(p.start, p.size) for p in t.partitions] == [(1 * MiB, 40 * MiB)]
    assert "stale GPT" in t.warnings[0]


def _mbr_slot(sector: bytearray, slot: int, ptype: int, start: int, count: int) -> None:
    struct.pack_into("<B3sB3sII", sector, 446 + 16 * slot, 0, b"\0" * 3, ptype, b"\0" * 3, start, count)


def test_two_extended_partitions_number_logicals_uniquely(tmp_path):
    """Logical numbers continue across extended partitions: no two partitions share a number."""
    path = tmp_path / "two_ext.img"
    img = bytearray(16 * MiB)
    mbr = bytearray(512)
    _mbr_slot(mbr, 0, 0x05, 2048, 8192)
    _mbr_slot(mbr, 1, 0x0F, 10240, 8192)
    mbr[510:512] = b"\x55\xaa"
    img[:512] = mbr
    for ext in (2048, 10240):
        ebr = bytearray(512)
        _mbr_slot(ebr, 0, 0x07, 2048, 4096)
        ebr[510:512] = b"\x55\xaa"
        img[ext * 512:ext * 512 + 512] = ebr
    path.write_bytes(img)
    with device.open_source(path) as dev:
        t = partitions.read_table(dev)
    assert [(p.number, p.start // 512, p.logical) for p in t.partitions] == [
        (1, 2048, False), (5, 4096, True), (2, 10240, False), (6, 12288, True)]

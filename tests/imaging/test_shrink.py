"""Restore an NTFS volume onto a smaller target (the subset without cluster moves: every used cluster below
the new end), on a real volume: mkntfs + wimlib at 64 MiB, grown to 128 MiB with ntfsresize (so its data lies in
the first half, as on a volume that was extended). Checked with ntfsfix -n, ntfsresize --info --force, every
file's hash and every file's metadata as `wimlib-imagex dir --detailed` reads it."""
from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import make_test_disks as mtd
import pytest
from imaging_helpers import MiB, check_fat, check_ntfs, make_fragmented_ntfs, one_line_error, rk, rk_json

from rescuekit.disk import ntfs, ntfs_resize
from rescuekit.disk.device import open_source
from tests.conftest import require_tools

BIG = 128 * MiB


@pytest.fixture(scope="session")
def grown(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The grown volume, its file hashes, its smallest size without moves and a repository with its image."""
    require_tools("mkntfs", "wimlib-imagex", "ntfsfix", "ntfsresize")
    d = tmp_path_factory.mktemp("grown")
    vol, hashes = mtd.make_ntfs_volume(d / "vol.img", 64 * MiB, tree_bytes=12 * MiB, seed=5)
    os.truncate(vol, BIG)
    subprocess.run(["ntfsresize", "-f", "-f", "--no-progress-bar", "-s", str(BIG), str(vol)], check=True,
                   capture_output=True)
    subprocess.run(["ntfsfix", "-d", str(vol)], check=True, capture_output=True)  # ntfsresize leaves it dirty
    with open_source(str(vol)) as dev:
        need, _used = ntfs_resize.min_size(dev, 0, dev.size, ntfs.parse_boot(dev.read(0, 512)))
    repo = d / "repo"
    doc = rk_json("capture", vol, repo)
    assert doc["partitions"][0]["windows_state"] == []
    return {"vol": vol, "hashes": hashes, "need": need, "repo": repo, "doc": doc, "meta": metadata(vol, d)}


def metadata(vol: Path, work: Path) -> str:
    """Every file's metadata (names, short names, attributes, security descriptors, times, stream hashes)."""
    wim = work / f"{vol.name}.wim"
    wim.unlink(missing_ok=True)
    subprocess.run(["wimlib-imagex", "capture", str(vol), str(wim), "--compress=none"], check=True,
                   capture_output=True)
    out = subprocess.run(["wimlib-imagex", "dir", str(wim), "1", "--detailed"], check=True, capture_output=True,
                         text=True).stdout
    wim.unlink()
    return re.sub(r"^(Offset in WIM|Part Number|Reference Count|Link Group ID) .*$", "", out, flags=re.M)


def _sized(path: Path, size: int) -> None:
    with open(path, "ab") as f:
        f.truncate(size)


def _check(out: Path, grown: dict, size: int, tmp: Path) -> None:
    assert out.stat().st_size == size
    check_ntfs(out)
    res = subprocess.run(["ntfsresize", "--info", "--force", "--no-progress-bar", str(out)], capture_output=True,
                         text=True)
    assert res.returncode == 0 and "ERROR" not in res.stdout + res.stderr, res.stdout + res.stderr
    assert f"Current volume size: {(size // 512 - 1) * 512 // 4096 * 4096 + 512} bytes" in res.stdout
    assert mtd.file_hashes_ntfs(out) == grown["hashes"]
    assert metadata(out, tmp) == grown["meta"]


def test_restore_onto_smaller_file(grown: dict, tmp_path: Path) -> None:
    size = 80 * MiB  # 37.5 % smaller
    assert grown["need"] < size
    out = tmp_path / "small.img"
    _sized(out, size)
    res = rk_json("restore", grown["repo"], out, "--yes", "--verify")
    assert res["shrunk_to"] == size and res["verified"]
    _check(out, grown, size, tmp_path)


def test_shrink_to_new_file_and_confirm_text(grown: dict, tmp_path: Path) -> None:
    out = tmp_path / "new.img"
    rk("restore", grown["repo"], out, "--shrink-to", "72M", "--yes")
    _check(out, grown, 72 * MiB, tmp_path)
    # an existing larger target, --shrink-to: the prompt shows the new layout; answering no writes nothing
    big = tmp_path / "big.img"
    _sized(big, BIG)
    res = subprocess.run([os.sys.executable, "-m", "rescuekit", "restore", str(grown["repo"]), str(big),
                          "--shrink-to", "90M"], input="n\n", capture_output=True, text=True)
    assert res.returncode == 1 and "Layout: the NTFS volume shrinks from 128.0 MiB to 90.0 MiB" in res.stderr
    assert open(big, "rb").read(4096) == bytes(4096)


def test_no_move_minimum_and_1_mib_below(grown: dict, tmp_path: Path) -> None:
    """At the smallest size without moves nothing moves; 1 MiB below it clusters move; both check clean."""
    need = grown["need"]
    for name, size in (("min", -(-need // 512) * 512 + 512), ("below", -(-need // 512) * 512 + 512 - MiB)):
        out = tmp_path / f"{name}.img"
        _sized(out, size)
        res = rk_json("restore", grown["repo"], out, "--yes")
        assert res["verified"] == (name == "below")  # a moving restore always verifies
        _check(out, grown, size, tmp_path)


@pytest.mark.parametrize("moves", [False, True], ids=["no moves", "moves"])
def test_killed_shrink_restore_leaves_journal_rerun_completes(grown: dict, tmp_path: Path, moves: bool) -> None:
    import shutil

    repo = tmp_path / "repo"
    shutil.copytree(grown["repo"], repo)
    out = tmp_path / "k.img"
    _sized(out, -(-grown["need"] // 512) * 512 - MiB if moves else 80 * MiB)
    res = rk("restore", repo, out, "--yes", check=False, env={"RESCUEKIT_TEST_CRASH_AFTER": "restore-body-written"})
    assert res.returncode == 137
    assert "did not finish" in rk("images", repo).stderr
    rk("restore", repo, out, "--yes", "--verify")
    assert rk_json("images", repo)["unfinished_restores"] == []
    _check(out, grown, out.stat().st_size, tmp_path)


def test_shrink_refusals(grown: dict, tmp_path: Path, disks: dict, repo: dict) -> None:
    # a FAT32 partition (the ESP, 512-byte clusters) below FAT32's 65525-cluster minimum: refused with the size
    part = tmp_path / "p1.img"
    _sized(part, 20 * MiB)
    res = rk("restore", repo["path"], part, "--image", "gpt", "--partition", "1", "--yes", check=False)
    assert res.returncode == 1 and "FAT volume" in res.stderr and "needs at least" in res.stderr, res.stderr
    assert open(part, "rb").read() == bytes(20 * MiB)
    # (MBR disks and FAT shrinks: tests/imaging/test_shrink_fat_mbr.py)
    # --shrink-to larger than the target
    out = tmp_path / "t.img"
    _sized(out, 80 * MiB)
    res = rk("restore", grown["repo"], out, "--shrink-to", "100M", "--yes", check=False)
    assert res.returncode == 1 and "too small for --shrink-to" in res.stderr


def test_hibernated_image_not_shrunk(tmp_path: Path) -> None:
    import random

    rng = random.Random(3)
    vol, _h = mtd.make_ntfs_volume(tmp_path / "h.img", 64 * MiB, tree_bytes=1 * MiB,
                                   system_files={"hiberfil.sys": b"HIBR" + rng.randbytes(MiB)})
    os.truncate(vol, BIG)
    subprocess.run(["ntfsresize", "-f", "-f", "--no-progress-bar", "-s", str(BIG), str(vol)], check=True,
                   capture_output=True)
    rk("capture", vol, tmp_path / "repo", "--allow-hibernated")
    res = rk("restore", tmp_path / "repo", tmp_path / "o.img", "--shrink-to", "80M", "--yes", check=False)
    assert res.returncode == 1 and "hibernated Windows session: it cannot be resized" in res.stderr
    assert not (tmp_path / "o.img").exists()


@pytest.fixture(scope="session")
def grown_gpt(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A 200 MiB GPT disk (ESP, MSR, NTFS last) whose NTFS was made at 48 MiB and grown to fill its partition."""
    require_tools("sgdisk", "mkntfs", "wimlib-imagex", "ntfsresize", "mcopy")
    d = tmp_path_factory.mktemp("grown_gpt")
    disk, hashes = mtd.make_gpt_disk(d / "disk.img", 200 * MiB, esp_size=40 * MiB, tree_bytes=1 * MiB)
    p = mtd._layout(disk)[2]
    start, size = p["start"] * 512, p["size"] * 512
    vol, hashes[3] = mtd.make_ntfs_volume(d / "p3.img", 48 * MiB, tree_bytes=6 * MiB, seed=8,
                                          part_start_sector=p["start"])
    os.truncate(vol, size)
    subprocess.run(["ntfsresize", "-f", "-f", "--no-progress-bar", "-s", str(size), str(vol)], check=True,
                   capture_output=True)
    subprocess.run(["ntfsfix", "-d", str(vol)], check=True, capture_output=True)
    mtd._dd_into(vol, disk, start)
    repo = d / "repo"
    doc = rk_json("capture", disk, repo)
    return {"disk": disk, "hashes": hashes, "repo": repo, "doc": doc, "meta": metadata(vol, d)}


def test_whole_gpt_disk_onto_smaller_disk(grown_gpt: dict, tmp_path: Path) -> None:
    out = tmp_path / "small.img"
    _sized(out, 120 * MiB)  # 40 % smaller than the 200 MiB source
    res = subprocess.run([os.sys.executable, "-m", "rescuekit", "restore", str(grown_gpt["repo"]), str(out)],
                         input="n\n", capture_output=True, text=True)
    assert "Layout: partition 3 (kept at its offset" in res.stderr and res.returncode == 1
    res = rk_json("restore", grown_gpt["repo"], out, "--yes", "--verify")
    assert res["shrunk_to"]
    v = subprocess.run(["sgdisk", "-v", str(out)], capture_output=True, text=True)
    assert v.returncode == 0 and "No problems found" in v.stdout, v.stdout
    src, got = mtd._layout(grown_gpt["disk"]), mtd._layout(out)
    assert [(p["start"], p["size"], p["uuid"]) for p in got[:2]] == [(p["start"], p["size"], p["uuid"]) for p in src[:2]]
    assert got[2]["start"] == src[2]["start"] and got[2]["uuid"] == src[2]["uuid"]
    assert (got[2]["start"] + got[2]["size"]) * 512 == 120 * MiB - 33 * 512  # up to the new last usable LBA
    vol = mtd.extract_partition(out, got[2]["start"] * 512, got[2]["size"] * 512, tmp_path / "p3.img")
    check_ntfs(vol)
    r = subprocess.run(["ntfsresize", "--info", "--force", "--no-progress-bar", str(vol)], capture_output=True,
                       text=True)
    assert r.returncode == 0 and "ERROR" not in r.stdout + r.stderr, r.stdout
    assert mtd.file_hashes_ntfs(vol) == grown_gpt["hashes"][3]
    assert metadata(vol, tmp_path) == grown_gpt["meta"]
    esp = mtd.extract_partition(out, got[0]["start"] * 512, got[0]["size"] * 512, tmp_path / "p1.img")
    assert mtd.file_hashes_fat(esp) == grown_gpt["hashes"][1]


def test_whole_gpt_disk_40_percent_smaller_moves_clusters(disks: dict, repo: dict, tmp_path: Path) -> None:
    """The session's GPT test disk (its NTFS files spread to the end, $MFTMirr and $LogFile in the middle) onto a
    disk 40% smaller: clusters past the new end are moved, their run lists (and $MFTMirr's copies) rewritten."""
    src_disk, hashes = disks["gpt"]
    out = tmp_path / "small.img"
    _sized(out, 120 * MiB)
    res = rk_json("restore", repo["path"], out, "--image", "gpt", "--yes")
    assert res["shrunk_to"] and res["verified"]  # moved clusters are always re-read and hash-checked
    v = subprocess.run(["sgdisk", "-v", str(out)], capture_output=True, text=True)
    assert v.returncode == 0 and "No problems found" in v.stdout, v.stdout
    src, got = mtd._layout(src_disk), mtd._layout(out)
    assert [(p["start"], p["size"]) for p in got[:2]] == [(p["start"], p["size"]) for p in src[:2]]
    s3 = mtd.extract_partition(src_disk, src[2]["start"] * 512, src[2]["size"] * 512, tmp_path / "s3.img")
    with open_source(str(s3)) as dev:
        need, _u = ntfs_resize.min_size(dev, 0, dev.size, ntfs.parse_boot(dev.read(0, 512)))
    assert need > got[2]["size"] * 512  # clusters had to move
    vol = mtd.extract_partition(out, got[2]["start"] * 512, got[2]["size"] * 512, tmp_path / "p3.img")
    check_ntfs(vol)
    r = subprocess.run(["ntfsresize", "--info", "--force", "--no-progress-bar", str(vol)], capture_output=True,
                       text=True)
    assert r.returncode == 0 and "ERROR" not in r.stdout + r.stderr, r.stdout  # every run list vs $Bitmap
    assert mtd.file_hashes_ntfs(vol) == hashes[3]
    assert metadata(vol, tmp_path) == metadata(s3, tmp_path)
    esp = mtd.extract_partition(out, got[0]["start"] * 512, got[0]["size"] * 512, tmp_path / "p1.img")
    assert mtd.file_hashes_fat(esp) == hashes[1]


def test_moving_shrink_refused_1_mib_below_its_minimum(repo: dict, tmp_path: Path) -> None:
    """--partition 3 of the GPT image into files: far too small and 1 MiB below the minimum refused (naming it,
    nothing written), the minimum itself restored."""
    tiny = tmp_path / "tiny.img"
    _sized(tiny, 8 * MiB)
    res = rk("restore", repo["path"], tiny, "--image", "gpt", "--partition", "3", "--yes", check=False)
    assert res.returncode == 1 and res.stderr.count("\n") == 1
    least = int(re.search(r"needs at least (\d+) bytes", res.stderr).group(1))
    under = tmp_path / "under.img"
    _sized(under, least - MiB)
    res = rk("restore", repo["path"], under, "--image", "gpt", "--partition", "3", "--yes", check=False)
    assert res.returncode == 1 and f"needs at least {least} bytes" in res.stderr and "nothing was written" in res.stderr
    assert open(under, "rb").read() == bytes(least - MiB)
    ok = tmp_path / "ok.img"
    _sized(ok, -(-least // 512) * 512)
    rk("restore", repo["path"], ok, "--image", "gpt", "--partition", "3", "--yes")
    check_ntfs(ok)


DISK = 88 * MiB  # the fragmented fixture's GPT disk


@pytest.fixture(scope="session")
def fragmented(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Windows' GPT layout in small: ESP (FAT16, 12 MiB), MSR (2 MiB), the 64 MiB NTFS volume of
    ``make_fragmented_ntfs`` (grown fragmented $MFT, attribute lists, fragmented, compressed and sparse files, all
    reaching its end), a recovery partition after it (NTFS, 8 MiB, WinRE type, "required" + "no drive letter"
    attributes), captured into a repository."""
    require_tools("sgdisk", "mkntfs", "ntfs-3g", "wimlib-imagex", "mkfs.vfat", "mcopy", "umount")
    d = tmp_path_factory.mktemp("fragmented")
    vol = d / "c.img"
    make_fragmented_ntfs(vol)
    disk = d / "disk.img"
    mtd._new_file(disk, DISK)
    subprocess.run(["sgdisk", "-n1:2048:+12M", "-t1:ef00", "-c1:EFI system partition", "-n2:0:+2M", "-t2:0c01",
                    "-c2:Microsoft reserved partition", "-n3:0:+64M", "-t3:0700", "-c3:Basic data partition",
                    "-n4:0:+8M", "-t4:de94bba4-06d1-4d40-a16a-bfd50179d6ac", "-c4:Recovery", "-A4:set:0",
                    "-A4:set:63", str(disk)], check=True, capture_output=True)
    lay = mtd._layout(disk)
    esp, hashes = mtd.make_fat_volume(d / "esp.img", 12 * MiB, bits=16, seed=21, tree_bytes=1 * MiB,
                                      part_start_sector=lay[0]["start"])
    rec, rec_hashes = mtd.make_ntfs_volume(d / "rec.img", 8 * MiB, seed=22, tree_bytes=2 * MiB, label="Recovery",
                                           part_start_sector=lay[3]["start"])
    for v, p in ((esp, lay[0]), (vol, lay[2]), (rec, lay[3])):
        mtd._dd_into(v, disk, p["start"] * 512)
    repo = d / "repo"
    doc = rk_json("capture", disk, repo)
    return {"vol": vol, "disk": disk, "repo": repo, "doc": doc, "hashes": mtd.file_hashes_ntfs(vol),
            "meta": metadata(vol, d), "esp": hashes, "rec": rec_hashes, "rec_meta": metadata(rec, d)}


def _runs(vol: Path, path: str | None = None, record: int | None = None) -> list[tuple[int | None, int]]:
    with open_source(str(vol)) as dev:
        v = ntfs.NtfsVolume(dev)
        return ntfs.data_stream(v, record if path is None else v.lookup(path).record).runs


def test_fragmented_volume_40_percent_smaller(fragmented: dict, tmp_path: Path) -> None:
    """--partition 3 onto a file 40% smaller than the volume: $MFT's own runs past the new end move (its records
    with them: record 0's run list and $MFTMirr rewritten), as do runs of files with a non-resident attribute list
    (extents in extension records), fragmented, compressed (LZNT1 units split over runs) and sparse files."""
    src = fragmented["vol"]
    size = 64 * MiB * 6 // 10 // 512 * 512
    nr = (size // 512 - 1) * 512 // 4096
    with open_source(str(src)) as dev:
        v = ntfs.NtfsVolume(dev)
        for name in ("manystreams.txt", "fragmented.bin"):  # the fixture makes what the test claims to cover
            rec = v.record(v.lookup(name).record)
            apos = ntfs._find_unnamed(rec, ntfs.AT_ATTRIBUTE_LIST)
            assert apos is not None and rec[apos + 8] == 1, name
    mft = _runs(src, record=0)
    assert len(mft) > 20 and any(lcn is not None and lcn + n > nr for lcn, n in mft)
    for name in ("fragmented.bin", "Compressed/log.txt", "Compressed/mixed.bin", "sparse.vhd"):
        assert any(lcn is not None and lcn + n > nr for lcn, n in _runs(src, name)), name
    out = tmp_path / "c.img"
    _sized(out, size)
    res = rk_json("restore", fragmented["repo"], out, "--partition", "3", "--yes")
    assert res["shrunk_to"] == size and res["verified"]
    _check(out, fragmented, size, tmp_path)
    assert all(lcn is None or lcn + n <= nr for lcn, n in _runs(out, record=0))


def test_gpt_disk_with_recovery_partition_after_40_percent_smaller(fragmented: dict, tmp_path: Path) -> None:
    """ESP, MSR, NTFS, recovery: NTFS shrinks, the recovery partition moves down (same size, type, GUIDs, name,
    attributes), the backup GPT at the new end; every partition checked. The first attempt is killed after the body
    (clusters moved, the recovery partition written at its new place): its journal is reported, the rerun below
    completes."""
    import shutil

    disk = fragmented["disk"]
    repo = tmp_path / "repo"
    shutil.copytree(fragmented["repo"], repo)
    size = DISK * 6 // 10 // MiB * MiB
    out = tmp_path / "small.img"
    _sized(out, size)
    res = subprocess.run([os.sys.executable, "-m", "rescuekit", "restore", str(fragmented["repo"]), str(out)],
                         input="n\n", capture_output=True, text=True)
    assert res.returncode == 1 and "partition 4 moves down from byte" in res.stderr, res.stderr
    assert open(out, "rb").read(MiB) == bytes(MiB)
    tiny = tmp_path / "tiny.img"  # too small for the used data + the partitions around it: refused, untouched
    _sized(tiny, 40 * MiB)
    line = one_line_error(rk("restore", fragmented["repo"], tiny, "--yes", check=False))
    assert "partition 3 would have to shrink to" in line and "needs at least" in line and "nothing was written" in line
    assert open(tiny, "rb").read() == bytes(40 * MiB)
    res = rk("restore", repo, out, "--yes", check=False, env={"RESCUEKIT_TEST_CRASH_AFTER": "restore-body-written"})
    assert res.returncode == 137
    assert "did not finish" in rk("images", repo).stderr
    res = rk_json("restore", repo, out, "--yes")
    assert [m["number"] for m in res["moved_partitions"]] == [4] and res["verified"]
    assert rk_json("images", repo)["unfinished_restores"] == []
    v = subprocess.run(["sgdisk", "-v", str(out)], capture_output=True, text=True)
    assert v.returncode == 0 and "No problems found" in v.stdout, v.stdout
    src, got = _gpt_entries(disk), _gpt_entries(out)
    assert got[:2] == src[:2]
    assert got[2]["first"] == src[2]["first"] and got[2]["last"] < src[2]["last"]
    same = ("type", "guid", "name", "attrs")
    assert [got[2][k] for k in same] == [src[2][k] for k in same]
    assert got[3]["first"] < src[3]["first"] and (got[3]["first"] - src[3]["first"]) % 2048 == 0
    assert got[3]["last"] - got[3]["first"] == src[3]["last"] - src[3]["first"]
    assert [got[3][k] for k in same] == [src[3][k] for k in same]
    assert got[3]["first"] - got[2]["last"] == src[3]["first"] - src[2]["last"]  # the gap kept
    assert (got[3]["last"] + 1 + 33) * 512 <= size  # before the backup GPT at the new end
    parts = {i + 1: mtd.extract_partition(out, p["first"] * 512, (p["last"] - p["first"] + 1) * 512,
                                          tmp_path / f"p{i + 1}.img") for i, p in enumerate(got) if i != 1}
    check_fat(parts[1])
    assert mtd.file_hashes_fat(parts[1]) == fragmented["esp"]
    vol = parts[3]
    check_ntfs(vol)
    r = subprocess.run(["ntfsresize", "--info", "--force", "--no-progress-bar", str(vol)], capture_output=True,
                       text=True)
    assert r.returncode == 0 and "ERROR" not in r.stdout + r.stderr, r.stdout
    assert mtd.file_hashes_ntfs(vol) == fragmented["hashes"]
    assert metadata(vol, tmp_path) == fragmented["meta"]
    check_ntfs(parts[4])
    import struct

    for at in (0, (got[3]["last"] - got[3]["first"]) * 512):  # boot sector and backup: "hidden sectors" = new start
        with open(parts[4], "rb") as f:
            f.seek(at)
            assert struct.unpack_from("<I", f.read(512), 0x1C)[0] == got[3]["first"], at
    assert mtd.file_hashes_ntfs(parts[4]) == fragmented["rec"]
    assert metadata(parts[4], tmp_path) == fragmented["rec_meta"]


def _gpt_entries(disk: Path) -> list[dict]:
    """The primary GPT's used entries: type, unique GUID, first/last LBA, attributes, name."""
    import struct
    import uuid

    with open(disk, "rb") as f:
        f.seek(512)
        hdr = f.read(92)
        lba, n, esize = struct.unpack_from("<QII", hdr, 72)
        f.seek(lba * 512)
        raw = f.read(n * esize)
    out = []
    for i in range(n):
        e = raw[i * esize:(i + 1) * esize]
        if e[:16] != bytes(16):
            first, last, attrs = struct.unpack_from("<QQQ", e, 32)
            out.append({"type": str(uuid.UUID(bytes_le=e[:16])), "guid": str(uuid.UUID(bytes_le=e[16:32])),
                        "first": first, "last": last, "attrs": attrs,
                        "name": e[56:128].decode("utf-16-le").rstrip("\0")})
    return out


def test_gpt_tail_layout_moves_partitions_after_by_whole_mib() -> None:
    """The layout arithmetic: the NTFS partition with the most free space shrinks; the ones after it move down
    together by whole MiB (at least one), gaps kept; a last NTFS partition with nothing after it just ends at the
    new last usable LBA."""
    from rescuekit.imaging.layout import gpt_tail_layout

    def part(n: int, start_mib: int, size_mib: int, fs: str, used_mib: int = 0) -> dict:
        return {"number": n, "start": start_mib * MiB, "size": size_mib * MiB, "fs": fs, "used_bytes": used_mib * MiB}

    doc = {"partitions": [part(1, 1, 100, "fat32"), part(2, 101, 16, None), part(3, 117, 800, "ntfs", 200),
                          part(4, 918, 500, "ntfs", 400), part(5, 1420, 10, "fat32")]}  # 1 MiB gap before 4
    last_usable = 1000 * 2048 - 1  # a 1000 MiB disk (its backup GPT ignored here)
    shrunk, end, moved = gpt_tail_layout(doc, last_usable, 512)
    assert shrunk["number"] == 3  # most free space, not the largest used or the last
    delta = (1430 - 1000) * MiB
    assert moved == [(4, 918 * MiB, 918 * MiB - delta, 500 * MiB), (5, 1420 * MiB, 1420 * MiB - delta, 10 * MiB)]
    assert end == (918 * MiB - delta) // 512 - 2048 - 1  # the 1 MiB gap before partition 4 stays
    # only a few sectors short: the tail still moves a whole MiB
    _s, end, moved = gpt_tail_layout(doc, 1430 * 2048 - 34, 512)
    assert [m[2] for m in moved] == [917 * MiB, 1419 * MiB] and end == 916 * 2048 - 1
    # NTFS last: nothing moves, it ends at the new last usable LBA
    shrunk, end, moved = gpt_tail_layout({"partitions": doc["partitions"][:3]}, 700 * 2048 - 1, 512)
    assert shrunk["number"] == 3 and end == 700 * 2048 - 1 and moved == []


def test_allocator_prefers_a_whole_fit() -> None:
    """Moved runs get one free extent that holds them when there is one (the smallest size class), else the largest
    extents first; a contiguous request ($MFTMirr) never splits; running out is a RescueError."""
    from rescuekit.disk.ntfs_resize import _Allocator
    from rescuekit.errors import RescueError

    a = _Allocator([(10, 3), (20, 100), (200, 9), (300, 40)])
    assert a.take(8) == [(200, 8)]  # 9 holds it: not the 3 below it, not the 100
    assert a.take(30) == [(300, 30)]  # the 40, not the 100
    assert a.take(100) == [(20, 100)]
    assert a.take(12) == [(330, 10), (10, 2)]  # nothing holds 12: the largest (10 at 330) first
    assert a.take(2) == [(12, 1), (208, 1)]
    with pytest.raises(RescueError):
        a.take(1)
    b = _Allocator([(0, 2), (5, 2)])
    with pytest.raises(RescueError, match="contiguous"):
        b.take(3, contiguous=True)
    assert b.take(3) == [(0, 2), (5, 1)]

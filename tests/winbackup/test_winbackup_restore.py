"""`winbackup restore` / `import` on real backups: valid tables, file systems, hidden sectors and every file's
hash; targets larger than, equal to and smaller than the (assumed) original disk; refusals write nothing."""
from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from wb_helpers import MiB, check_table, check_volume, hidden_sectors, one_line_error, partitions, rk, rk_json

ORIGINAL = 512 * MiB  # the disk the backed-up volumes came from (a backup does not record it)


def _target(path: Path, size: int) -> Path:
    with open(path, "wb") as f:
        f.truncate(size)
        f.seek(0)
        f.write(b"\xaa" * MiB)  # an old "table": must be gone
    return path


def _check_restored(disk: Path, backup: dict, kind: str, res: dict, work: Path) -> None:
    check_table(disk, kind)
    parts = partitions(disk)
    by_guid = {p["guid"]: p for p in res["partitions"] if p["guid"]}
    assert set(by_guid) == set(backup["volumes"])
    for guid, want in backup["volumes"].items():
        rp = by_guid[guid]
        (sp,) = [p for p in parts if p["start"] == rp["start"]]
        assert sp["size"] == want["size"]
        assert hidden_sectors(disk, sp["start"], want["fs"]) == [sp["start"] // 512] * 2
        check_volume(disk, sp["start"], sp["size"], want["fs"], want["hashes"], work)
    if kind == "mbr":
        assert [p["bootable"] for p in parts] == [True, False]  # System Reserved active, then C:
        assert [p["type"] for p in parts] == ["7", "7"]
        import make_winbackup

        assert disk.read_bytes()[:440] == make_winbackup.MBR_CODE  # the boot volume's MBR loader is kept
        assert not any("boot code" in w for w in res["warnings"])
    else:
        assert [p["type"] for p in parts] == ["C12A7328-F81F-11D2-BA4B-00A0C93EC93B",
                                             "E3C9E316-0B5C-4DB8-817D-F92DF00215AE",
                                             "EBD0A0A2-B9E5-4433-87C0-68B6B72699C7"]


@pytest.mark.parametrize("shape", ["win7", "win10"])
@pytest.mark.parametrize("size", ["larger", "equal", "smaller"])
def test_restore(shape: str, size: str, request, tmp_path: Path) -> None:
    backup = request.getfixturevalue(shape)
    kind = "mbr" if shape == "win7" else "gpt"
    probe = rk_json("winbackup", "restore", backup["set"], tmp_path / "probe.img", "--yes")  # a new file: minimum
    need = probe["needed_bytes"]
    assert probe["disk_bytes"] == need < ORIGINAL
    n = {"larger": ORIGINAL + 64 * MiB, "equal": ORIGINAL, "smaller": need}[size]
    disk = _target(tmp_path / "t.img", n)
    res = rk_json("winbackup", "restore", backup["set"], disk, "--yes", "--verify")
    assert res["verified"] and res["disk_bytes"] == n == disk.stat().st_size
    assert res["layout"] == ("bios" if shape == "win7" else "uefi")
    # only used data is written: far less than the volumes' size
    assert res["bytes_written"] < sum(v["size"] for v in backup["volumes"].values()) // 2 + 16 * MiB
    _check_restored(disk, backup, kind, res, tmp_path)


def _digest(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


def test_restore_refusals(win7: dict, win10: dict, copy_set, tmp_path: Path) -> None:
    probe = rk_json("winbackup", "restore", win7["set"], tmp_path / "probe.img", "--yes")
    small = _target(tmp_path / "small.img", 30 * MiB)  # C: would have to shrink below its used data
    before = _digest(small)
    one_line_error(rk("winbackup", "restore", win7["set"], small, "--yes", check=False), "too small",
                   str(probe["needed_bytes"]), "cannot be shrunk to fit", "nothing was written")
    one_line_error(rk("winbackup", "restore", win7["set"], small, "--layout", "uefi", "--yes", check=False),
                   "EFI system partition")
    one_line_error(rk("winbackup", "restore", win10["set"], small, "--layout", "bios", "--yes", check=False),
                   "\\Boot\\BCD")
    one_line_error(rk("winbackup", "restore", win7["set"], small, "--volume", "D:", "--yes", check=False),
                   "no volume 'D:'")
    # only C: selected: no boot manager among the selection
    one_line_error(rk("winbackup", "restore", win7["set"], small, "--volume", "C:", "--yes", check=False),
                   "boot manager")
    # declined confirmation
    big = _target(tmp_path / "big.img", probe["needed_bytes"] + 64 * MiB)
    big_before = _digest(big)
    res = rk("winbackup", "restore", win7["set"], big, check=False, stdin="n\n")
    assert res.returncode == 1 and "will overwrite" in res.stderr and "System Reserved" in res.stderr
    assert res.stderr.rstrip().endswith("rescuekit: error: restore cancelled; nothing was written"), res.stderr
    # damaged backups: truncated VHDX, missing VHDX, no BackupSpecs.xml
    s = copy_set(win10)
    v = sorted(s.glob("*.vhdx"))[1]
    v.write_bytes(v.read_bytes()[:len(v.read_bytes()) - 12 * MiB])  # more than one 8 MiB block
    one_line_error(rk("winbackup", "restore", s, big, "--yes", check=False), "truncated")
    v.unlink()
    one_line_error(rk("winbackup", "restore", s, big, "--yes", check=False), "missing")
    (s / "BackupSpecs.xml").unlink()
    one_line_error(rk("winbackup", "restore", s, big, "--yes", check=False), "BackupSpecs.xml")
    one_line_error(rk("winbackup", "import", s, tmp_path / "repo", check=False), "BackupSpecs.xml")
    assert _digest(small) == before and _digest(big) == big_before
    assert not (tmp_path / "repo").exists()


@pytest.mark.parametrize("shape", ["win7", "win10"])
def test_restore_grow(shape: str, request, tmp_path: Path) -> None:
    """--grow: the last partition reaches the end; its file system and files are intact; the grown
    space is not written."""
    backup = request.getfixturevalue(shape)
    disk = _target(tmp_path / "g.img", ORIGINAL)
    res = rk_json("winbackup", "restore", backup["set"], disk, "--yes", "--grow", "--verify")
    kind = "mbr" if shape == "win7" else "gpt"
    check_table(disk, kind)
    last = partitions(disk)[-1]
    tail = 0 if kind == "mbr" else MiB
    assert last["start"] + last["size"] == ORIGINAL - tail
    assert any("grown" in w and "extend" in w for w in res["warnings"])
    assert res["bytes_written"] < 64 * MiB
    c = next(v for v in backup["volumes"].values() if v["letter"] == "C:")
    assert hidden_sectors(disk, last["start"], "ntfs") == [last["start"] // 512] * 2
    check_volume(disk, last["start"], last["size"], "ntfs", c["hashes"], tmp_path)


def test_restore_one_volume_by_guid(win10: dict, tmp_path: Path) -> None:
    """A selection that keeps the ESP: ESP + MSR only (no Windows): restored, with a warning."""
    esp = next(g for g, v in win10["volumes"].items() if v["fs"] == "fat32")
    res = rk_json("winbackup", "restore", win10["set"], tmp_path / "esp.img", "--volume", "{" + esp + "}", "--yes")
    assert [p["role"] for p in res["partitions"]] == ["boot", "msr"]
    assert any("Windows" in w for w in res["warnings"])
    check_table(tmp_path / "esp.img", "gpt")


@pytest.mark.parametrize("shape", ["win7", "win10"])
def test_import_then_restore(shape: str, request, tmp_path: Path) -> None:
    backup = request.getfixturevalue(shape)
    repo = tmp_path / "repo"
    doc = rk_json("winbackup", "import", backup["set"], repo)
    assert [p["fs"] for p in doc["partitions"] if p["fs"] != "zero"] == \
        [v["fs"] for v in sorted(backup["volumes"].values(), key=lambda v: v["letter"])]
    rk("verify", repo)
    disk = tmp_path / "from-repo.img"
    with open(disk, "wb") as f:
        f.truncate(ORIGINAL)
    rk("restore", repo, disk, "--yes")
    kind = "mbr" if shape == "win7" else "gpt"
    check_table(disk, kind)
    parts = partitions(disk)
    vols = [p for p in parts if p["type"] != "E3C9E316-0B5C-4DB8-817D-F92DF00215AE"]
    wants = sorted(backup["volumes"].values(), key=lambda v: v["letter"])  # boot volume ("") first, then C:
    for p, want in zip(vols, wants):
        assert hidden_sectors(disk, p["start"], want["fs"]) == [p["start"] // 512] * 2
        check_volume(disk, p["start"], p["size"], want["fs"], want["hashes"], tmp_path)


def test_restore_one_volume_onto_partition(win7: dict, tmp_path: Path) -> None:
    """--partition: C: onto partition 2 of an existing disk; the rest of the disk is left as it was."""
    import subprocess

    disk = tmp_path / "existing.img"
    with open(disk, "wb") as f:
        f.truncate(200 * MiB)
    subprocess.run(["sfdisk", "-q", str(disk)], input="label: dos\nstart=2048, size=20480, type=c\n"
                   "start=24576, size=163840, type=7\nstart=190464, size=8192, type=7\n", text=True, check=True)
    with open(disk, "r+b") as f:
        f.seek(24576 * 512 - MiB)
        f.write(b"\x5a" * MiB)  # the data just before and after partition 2 must survive
        f.seek(24576 * 512 + 163840 * 512)
        f.write(b"\xa5" * MiB)
    before = disk.read_bytes()
    c = next(g for g, v in win7["volumes"].items() if v["letter"] == "C:")
    one_line_error(rk("winbackup", "restore", win7["set"], disk, "--partition", "2", "--yes", check=False),
                   "exactly one volume")
    one_line_error(rk("winbackup", "restore", win7["set"], disk, "--partition", "3", "--volume", "C:", "--yes",
                      check=False), "too small", "nothing was written")
    one_line_error(rk("winbackup", "restore", win7["set"], disk, "--partition", "4", "--volume", "C:", "--yes",
                      check=False), "without a partition 4")
    assert disk.read_bytes() == before
    res = rk_json("winbackup", "restore", win7["set"], disk, "--partition", "2", "--volume", c, "--yes", "--verify")
    assert res["offset"] == 24576 * 512 and res["verified"]
    after = disk.read_bytes()
    start, size = 24576 * 512, 72 * MiB
    assert after[:start] == before[:start] and after[start + 163840 * 512:] == before[start + 163840 * 512:]
    check_table(disk, "mbr")
    assert hidden_sectors(disk, start, "ntfs") == [24576, 24576]
    check_volume(disk, start, size, "ntfs", win7["volumes"][c]["hashes"], tmp_path)


@pytest.mark.parametrize("shape", ["win7", "win10"])
def test_restore_onto_40_percent_smaller_target(shape: str, request, tmp_path: Path) -> None:
    """A target 40% below the smallest layout: the last volume (C:, NTFS) ends at the new end, its file system
    shrunk (clusters past the end moved); the other volumes keep their place; every file intact."""
    import subprocess

    backup = request.getfixturevalue(shape)
    need = rk_json("winbackup", "restore", backup["set"], tmp_path / "probe.img", "--yes")["needed_bytes"]
    n = need * 6 // 10 // MiB * MiB
    disk = _target(tmp_path / "s.img", n)
    res = rk("winbackup", "restore", backup["set"], disk, check=False, stdin="n\n")
    assert res.returncode == 1 and "Layout: partition" in res.stderr and "the NTFS volume shrinks" in res.stderr
    res = rk_json("winbackup", "restore", backup["set"], disk, "--yes")
    kind = "mbr" if shape == "win7" else "gpt"
    check_table(disk, kind)
    parts = partitions(disk)
    last = parts[-1]
    assert last["start"] + last["size"] == n - (MiB if kind == "gpt" else 0) and res["shrunk_to"] == last["size"]
    assert res["verified"] or not res["shrunk_to"]
    c = next(v for v in backup["volumes"].values() if v["letter"] == "C:")
    assert hidden_sectors(disk, last["start"], "ntfs") == [last["start"] // 512] * 2
    check_volume(disk, last["start"], last["size"], "ntfs", c["hashes"], tmp_path)
    import make_test_disks as mtd

    vol = mtd.extract_partition(disk, last["start"], last["size"], tmp_path / "c.img")
    r = subprocess.run(["ntfsresize", "--info", "--force", "--no-progress-bar", str(vol)], capture_output=True,
                       text=True)
    assert r.returncode == 0 and "ERROR" not in r.stdout + r.stderr, r.stdout
    for p in parts[:-1]:  # the volumes before keep their size
        want = next((v for v in backup["volumes"].values() if v["size"] == p["size"]), None)
        if want is not None:
            check_volume(disk, p["start"], p["size"], want["fs"], want["hashes"], tmp_path)
    # far too small even shrunk: refused naming the sizes, nothing written
    tiny = _target(tmp_path / "tiny.img", parts[-1]["start"] + 2 * MiB)
    before = _digest(tiny)
    one_line_error(rk("winbackup", "restore", backup["set"], tiny, "--yes", check=False), "too small",
                   str(need), "cannot be shrunk to fit", "needs at least", "nothing was written")
    assert _digest(tiny) == before


def _winstate_edits():
    """tests/imaging/test_winstate.py's editors of hiberfil.sys and the $Volume dirty flag."""
    import importlib
    import sys

    sys.path.insert(0, str(Path(__file__).parents[1] / "imaging"))
    return importlib.import_module("test_winstate")


def _with_c_volume(win7: dict, copy_set, tmp_path: Path, edit) -> Path:
    """A copy of the Windows 7 backup whose C: VHD holds a new NTFS volume (with hiberfil.sys) edited by ``edit``."""
    import random
    import subprocess

    import make_test_disks as mtd
    import make_winbackup

    s = copy_set(win7)
    vol, _h = mtd.make_ntfs_volume(tmp_path / "c.img", 72 * MiB, tree_bytes=1 * MiB, part_start_sector=128,
                                   system_files={"hiberfil.sys": bytes(4096) + random.Random(1).randbytes(MiB)})
    edit(vol)
    raw = tmp_path / "c.raw"
    make_winbackup._vhd_disk(raw, vol, 128 * 512, "mbr")
    vhd = s / f"{make_winbackup.WIN7_C_GUID}.vhd"
    vhd.unlink()
    subprocess.run(["qemu-img", "convert", "-f", "raw", "-O", "vpc", "-o", "subformat=dynamic", str(raw), str(vhd)],
                   check=True)
    return s


def test_hibernated_backup_refused_at_restore_and_import(win7: dict, copy_set, tmp_path: Path) -> None:
    """C: with hiberfil.sys saying HIBR: restore and import refuse with capture's message and exit code 3 before
    anything is written; --allow-hibernated restores it."""
    edits = _winstate_edits()
    s = _with_c_volume(win7, copy_set, tmp_path, lambda vol: edits.set_hiberfil(vol, b"HIBR" + bytes(4092)))
    disk = _target(tmp_path / "t.img", ORIGINAL)
    before = _digest(disk)
    res = rk("winbackup", "restore", s, disk, "--yes", check=False)
    assert res.returncode == 3
    one_line_error(res, "volume C:: Windows was hibernated or shut down with Fast Startup: boot it and choose "
                   "Restart, or shut down with Shift held; or restore anyway with --allow-hibernated, the restored "
                   "disk then holds the hibernated session", "nothing was written")
    assert _digest(disk) == before
    res = rk("winbackup", "import", s, tmp_path / "repo", check=False)
    assert res.returncode == 3 and "capture anyway with --allow-hibernated" in res.stderr
    assert not (tmp_path / "repo").exists()
    res = rk_json("winbackup", "restore", s, disk, "--yes", "--allow-hibernated")
    assert any("hibernated" in w for w in res["warnings"])
    check_table(disk, "mbr")


def test_dirty_backup_restored_with_warning(win7: dict, copy_set, tmp_path: Path) -> None:
    s = _with_c_volume(win7, copy_set, tmp_path, _winstate_edits().set_dirty)
    disk = _target(tmp_path / "t.img", ORIGINAL)
    res = rk_json("winbackup", "restore", s, disk, "--yes")
    assert any("marked dirty" in w and "chkdsk" in w for w in res["warnings"]), res["warnings"]
    check_table(disk, "mbr")

"""Restores that used to do real harm (issue 8), on real GPT/MBR disks (sgdisk/sfdisk/mkntfs/mkfs.vfat):
damaged GPT copies, unreadable target tables, size boundaries, stale data, empty and resizing sources,
targets refused when opened, write errors and a lying disk under --verify."""
from __future__ import annotations

import errno
import hashlib
import os
import random
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import make_test_disks as mtd
from imaging_helpers import MiB, check_disk_files, check_ntfs, layout, rk, rk_json

from rescuekit.disk.device import open_source
from rescuekit.disk.partitions import read_table

SIZE = 200 * MiB  # the session GPT disk (tests/imaging/conftest.py)


def _sha(path: Path, offset: int = 0, length: int | None = None) -> str:
    with open(path, "rb") as f:
        f.seek(offset)
        return hashlib.sha256(f.read(length if length is not None else -1)).hexdigest()


def _err(res: subprocess.CompletedProcess, code: int = 1) -> str:
    assert res.returncode == code and "Traceback" not in res.stderr, res.stdout + res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("rescuekit: error: "), res.stderr
    return lines[0]


def _patch(path: Path, offset: int, data: bytes) -> None:
    with open(path, "r+b") as f:
        f.seek(offset)
        f.write(data)


def _table(path: Path):
    with open_source(path) as dev:
        return read_table(dev)


def _stale(path: Path, size: int, seed: int = 3) -> Path:
    """A file of ``size`` bytes of random data: a used disk's stale content."""
    rng = random.Random(seed)
    with open(path, "wb") as f:
        for _ in range(size // MiB):
            f.write(rng.randbytes(MiB))
        f.write(rng.randbytes(size % MiB))
    return path


def _unfinished(repo: Path) -> list:
    return rk_json("images", repo)["unfinished_restores"]


# ---------------------------------------------------------------- defect 1: a GPT copy damaged at capture

def _last(size: int) -> int:
    return size - 512


GPT_DAMAGE = {  # every way one GPT copy of the captured disk can be unusable (the other is intact)
    "primary header CRC": lambda p, size: _patch(p, 512 + 16, b"\xde\xad\xbe\xef"),
    "primary header and entries zeroed": lambda p, size: _patch(p, 512, bytes(33 * 512)),
    "primary entries CRC": lambda p, size: _patch(p, 1024 + 56, b"\xff" * 8),
    "protective MBR zeroed": lambda p, size: _patch(p, 0, bytes(512)),
    "backup header CRC": lambda p, size: _patch(p, _last(size) + 16, b"\xde\xad\xbe\xef"),
    "backup header and entries zeroed": lambda p, size: _patch(p, size - 33 * 512, bytes(33 * 512)),
}


@pytest.fixture(scope="module")
def damaged_gpt_repo(disks: dict, tmp_path_factory) -> Path:
    """One repository with a capture of the GPT disk per GPT_DAMAGE case (named after it)."""
    d = tmp_path_factory.mktemp("damaged_gpt")
    repo = d / "repo"
    for case, damage in GPT_DAMAGE.items():
        disk = d / "disk.img"
        shutil.copyfile(disks["gpt"][0], disk)
        damage(disk, SIZE)
        doc = rk_json("capture", disk, repo, "--name", case)
        assert doc["warnings"] and any("GPT" in w for w in doc["warnings"]), doc["warnings"]
        assert doc["partitions"][0]["type_name"] != "whole volume"  # the valid copy was used
    return repo


@pytest.mark.parametrize("grow", [0, 56 * MiB], ids=["same size", "larger"])
@pytest.mark.parametrize("case", sorted(GPT_DAMAGE))
def test_damaged_gpt_copy_is_rebuilt_from_the_valid_one(damaged_gpt_repo, disks, tmp_path, case, grow):
    """Both headers come back valid (backup at the target's end) and the relocated backup alone is enough:
    with the restored disk's primary destroyed, sgdisk and our parser still read every partition."""
    target = _stale(tmp_path / "t.img", SIZE + grow)
    rk("restore", damaged_gpt_repo, target, "--image", case, "--yes", "--verify")
    v = subprocess.run(["sgdisk", "-v", str(target)], capture_output=True, text=True)
    assert v.returncode == 0 and "No problems found" in v.stdout, v.stdout
    want = [(p.start, p.size, p.type, p.guid) for p in _table(disks["gpt"][0]).partitions]
    t = _table(target)
    assert not t.warnings, t.warnings
    assert [(p.start, p.size, p.type, p.guid) for p in t.partitions] == want
    assert t.last_usable == SIZE + grow - 33 * 512
    if grow:  # the image's backup, now mid-disk, is gone
        with open(target, "rb") as f:
            f.seek(_last(SIZE))
            assert f.read(8) != b"EFI PART"
    _patch(target, 512, bytes(33 * 512))  # destroy the restored primary header and entries
    t = _table(target)
    assert [(p.start, p.size, p.type, p.guid) for p in t.partitions] == want
    assert any("using the backup GPT" in w for w in t.warnings)
    p = subprocess.run(["sgdisk", "-p", str(target)], capture_output=True, text=True)
    assert "valid backup" in p.stdout + p.stderr, p.stdout + p.stderr
    rows = [line.split() for line in p.stdout.splitlines() if line.strip()[:1].isdigit()]
    assert [(int(r[1]) * 512, (int(r[2]) - int(r[1]) + 1) * 512) for r in rows] == [w[:2] for w in want]


def test_damaged_primary_restores_files_onto_larger_disk(damaged_gpt_repo, disks, tmp_path):
    target = tmp_path / "t.img"
    with open(target, "wb") as f:
        f.truncate(SIZE + 100 * MiB)
    rk("restore", damaged_gpt_repo, target, "--image", "primary header CRC", "--yes")
    check_disk_files(target, disks["gpt"][1], tmp_path)


# ---------------------------------------------------------------- defect 2: target table present but unreadable

def _gpt_both_crc(p: Path) -> None:
    GPT_DAMAGE["primary header CRC"](p, SIZE)
    GPT_DAMAGE["backup header CRC"](p, SIZE)


def _pmbr_no_gpt(p: Path) -> None:
    _patch(p, 512, bytes(512))
    _patch(p, _last(SIZE), bytes(512))


def _backup_only(p: Path) -> None:
    _patch(p, 0, bytes(34 * 512))  # protective MBR, primary header and entries gone; the backup is intact


def _bad_entry(p: Path) -> None:
    """A GPT whose entry 3 ends before it starts, CRCs recomputed (a structurally invalid table)."""
    import struct
    import zlib

    with open(p, "r+b") as f:
        for hdr_off in (512, SIZE - 512):
            f.seek(hdr_off)
            hdr = bytearray(f.read(92))
            elba = struct.unpack_from("<Q", hdr, 72)[0]
            f.seek(elba * 512)
            ents = bytearray(f.read(128 * 128))
            struct.pack_into("<Q", ents, 2 * 128 + 40, 2048)  # last LBA of entry 3 < its first
            f.seek(elba * 512)
            f.write(ents)
            struct.pack_into("<I", hdr, 88, zlib.crc32(ents))
            hdr[16:20] = bytes(4)
            struct.pack_into("<I", hdr, 16, zlib.crc32(hdr))
            f.seek(hdr_off)
            f.write(hdr)


def _garbage_mbr(p: Path) -> None:
    _patch(p, 446, b"\x33")  # slot 1 status byte: neither 0x00 nor 0x80


UNREADABLE = {  # case: (test disk and image, partition, damage, why)
    "both GPT copies damaged": ("gpt", 3, _gpt_both_crc, "cannot be read"),
    "protective MBR without a GPT": ("gpt", 3, _pmbr_no_gpt, "cannot be read"),
    "GPT with an impossible entry": ("gpt", 3, _bad_entry, "cannot be read"),
    "only the backup GPT left": ("gpt", 3, _backup_only, "backup GPT at LBA"),
    "garbage MBR": ("mbr", 5, _garbage_mbr, "is garbage"),
}


@pytest.mark.parametrize("case", sorted(UNREADABLE))
def test_partition_restore_over_unreadable_table_refused(repo, disks, tmp_path, case):
    kind, number, damage, msg = UNREADABLE[case]
    target = tmp_path / "t.img"
    shutil.copyfile(disks[kind][0], target)
    damage(target)
    before = _sha(target)
    res = rk("restore", repo["path"], target, "--image", kind, "--partition", number, "--yes", check=False)
    line = _err(res)
    assert msg in line and "restore the whole disk" in line and "nothing was written" in line, line
    assert _sha(target) == before
    # the whole-disk restore says the table is replaced, and does it
    res = subprocess.run([sys.executable, "-m", "rescuekit", "restore", str(repo["path"]), str(target),
                          "--image", kind], input="n\n", capture_output=True, text=True)
    assert res.returncode == 1 and _sha(target) == before
    assert "replaced by the image's" in res.stderr, res.stderr
    rk("restore", repo["path"], target, "--image", kind, "--yes")
    assert _table(target).kind == kind and not _table(target).warnings


def test_partition_restore_after_interrupted_whole_disk_restore_refused(repo, repo_copy, disks, tmp_path):
    """An interrupted whole-disk restore wipes the table: that disk is not a partition (the journal says)."""
    target = tmp_path / "t.img"
    shutil.copyfile(disks["gpt"][0], target)
    res = rk("restore", repo_copy, target, "--image", "gpt", "--yes", check=False,
             env={"RESCUEKIT_TEST_CRASH_AFTER": "restore-wiped"})
    assert res.returncode == 137
    before = _sha(target)
    line = _err(rk("restore", repo_copy, target, "--image", "gpt", "--partition", "3", "--yes", check=False))
    assert "did not finish" in line and _sha(target) == before


def test_partition_restore_into_table_with_bad_primary_uses_backup_layout(repo, disks, tmp_path):
    """A target whose primary GPT is damaged but backup intact is still readable: partition 3 goes where the
    backup says, the rest of the disk is untouched."""
    target = tmp_path / "t.img"
    shutil.copyfile(disks["gpt"][0], target)
    GPT_DAMAGE["primary header CRC"](target, SIZE)
    p3 = layout(disks["gpt"][0])[2]
    _patch(target, p3["start"], bytes(4 * MiB))
    head = _sha(target, 0, p3["start"])
    rk("restore", repo["path"], target, "--image", "gpt", "--partition", "3", "--yes")
    assert _sha(target, 0, p3["start"]) == head
    assert _sha(target, p3["start"], p3["size"]) == _sha(disks["gpt"][0], p3["start"], p3["size"])


# ---------------------------------------------------------------- size boundaries

@pytest.mark.parametrize("short", [512, 512 << 10, 0], ids=["1 sector short", "512 KiB short", "exact"])
def test_whole_disk_size_boundary(repo, disks, tmp_path, short):
    target = _stale(tmp_path / "t.img", SIZE - short)
    before = _sha(target)
    res = rk("restore", repo["path"], target, "--image", "gpt", "--yes", check=False)
    assert res.returncode == 0, res.stderr
    # Shorter: the last (NTFS) partition is shrunk on the way (its data lies below the new end; refusals at
    # the shrink boundary: tests/imaging/test_shrink.py)
    assert ("NTFS shrunk" in res.stdout) == bool(short) and _sha(target) != before
    assert not _table(target).warnings
    check_disk_files(target, {3: disks["gpt"][1][3]}, tmp_path)


@pytest.mark.parametrize("short", [512, 0], ids=["1 sector short", "exact"])
def test_partition_size_boundary_and_next_partition_untouched(repo, disks, tmp_path, short):
    """--partition 3 into a disk whose partition 3 is 1 sector smaller than the image's (its NTFS shrunk) or the
    same size (restored); partition 4 right after it keeps its stale data either way."""
    src = layout(disks["gpt"][0])
    p3 = src[2]
    target = _stale(tmp_path / "t.img", SIZE + 64 * MiB)
    end3 = (p3["start"] + p3["size"] - short) // 512 - 1
    subprocess.run(["sgdisk", "-Z", str(target)], capture_output=True, check=True)
    subprocess.run(["sgdisk", "-a1", *(f"-n{i + 1}:{p['start'] // 512}:{(p['start'] + p['size']) // 512 - 1}"
                                for i, p in enumerate(src[:2])),
                    f"-n3:{p3['start'] // 512}:{end3}", f"-n4:{end3 + 1}:+32M", str(target)],
                   capture_output=True, check=True)
    p4 = layout(target)[3]
    assert p4["start"] == p3["start"] + p3["size"] - short
    before, before4 = _sha(target), _sha(target, p4["start"], p4["size"])
    res = rk("restore", repo["path"], target, "--image", "gpt", "--partition", "3", "--yes", check=False)
    assert _sha(target) != before
    # 1 sector short: the NTFS volume is shrunk on the way (see tests/imaging/test_shrink.py)
    assert res.returncode == 0 and ("NTFS shrunk" in res.stdout) == bool(short), res.stderr
    vol = mtd.extract_partition(target, p3["start"], p3["size"] - short, tmp_path / "p3.img")
    check_ntfs(vol)
    assert mtd.file_hashes_ntfs(vol) == disks["gpt"][1][3]
    assert _sha(target, p4["start"], p4["size"]) == before4


# ---------------------------------------------------------------- stale data on the target

def test_zero_chunks_land_on_a_target_full_of_stale_data(tmp_path):
    """A partition stored whole with all-zero chunks elided: on an existing target the zeros are written."""
    disk = tmp_path / "d.img"
    with open(disk, "wb") as f:
        f.truncate(48 * MiB)
    subprocess.run(["sgdisk", "-n1:2048:+40M", "-t1:0700", str(disk)], check=True, capture_output=True)
    part = layout(disk)[0]
    _patch(disk, part["start"], b"\xeb\x58\x90-FVE-FS-" + os.urandom(500))  # BitLocker: stored whole
    _patch(disk, part["start"] + 20 * MiB + 5, os.urandom(MiB))
    repo = tmp_path / "repo"
    doc = rk_json("capture", disk, repo)
    assert doc["totals"]["zero_chunks"] > 100
    target = _stale(tmp_path / "t.img", 48 * MiB)
    rk("restore", repo, target, "--yes")
    assert _sha(target, 0, part["start"] + part["size"]) == _sha(disk, 0, part["start"] + part["size"])


def test_old_backup_gpt_at_larger_targets_end_is_wiped(repo, tmp_path):
    """An MBR image onto a larger disk that held a GPT: its backup GPT at the end must not survive (tools
    would find a GPT beside the MBR); a GPT image: only the new backup is at the end."""
    target = tmp_path / "t.img"
    with open(target, "wb") as f:
        f.truncate(400 * MiB)
    subprocess.run(["sgdisk", "-n1:2048:+300M", str(target)], check=True, capture_output=True)
    rk("restore", repo["path"], target, "--image", "mbr", "--yes")
    with open(target, "rb") as f:
        f.seek(400 * MiB - MiB)
        assert f.read() == bytes(MiB)
    t = _table(target)
    assert t.kind == "mbr" and not t.warnings
    p = subprocess.run(["sgdisk", "-v", str(target)], capture_output=True, text=True)
    assert "Found invalid GPT and valid MBR" in p.stdout, p.stdout


# ---------------------------------------------------------------- defect 8: empty and resizing sources

def test_empty_source_is_refused(tmp_path):
    empty = tmp_path / "empty.img"
    empty.touch()
    line = _err(rk("capture", empty, tmp_path / "repo", check=False))
    assert "is empty (0 bytes)" in line and str(empty) in line
    assert not (tmp_path / "repo").exists()


def test_empty_image_is_not_restored(repo, repo_copy, tmp_path):
    """A 0-byte image (captured by an older rescuekit) must not wipe the target's last MiB."""
    from rescuekit.repo.manifest import read_manifest, write_manifest

    doc = read_manifest(repo_copy / "images" / f"{repo['mbr']['id']}.json")
    doc.update(id="0" * 16, name="empty", partitions=[], extents=[])
    doc["source"] = {**doc["source"], "size": 0}
    doc.pop("checksum")
    write_manifest(repo_copy, doc)
    target = _stale(tmp_path / "t.img", 8 * MiB)
    before = _sha(target)
    line = _err(rk("restore", repo_copy, target, "--image", "empty", "--yes", check=False))
    assert "is empty (0 bytes)" in line and _sha(target) == before


@pytest.mark.parametrize("change", [+4 * MiB, -4 * MiB], ids=["grows", "shrinks"])
def test_source_resized_during_capture_is_refused(tmp_path, monkeypatch, change):
    """The source file changes size after the plan was made: no image, the repository stays valid."""
    from rescuekit.imaging import capture as cap
    from rescuekit.errors import RescueError

    src = _stale(tmp_path / "vol.img", 16 * MiB)
    real_plan = cap.make_plan

    def plan_then_resize(dev, cs, **kw):
        plan = real_plan(dev, cs, **kw)
        with open(src, "r+b") as f:
            f.truncate(16 * MiB + change)
        return plan

    monkeypatch.setattr(cap, "make_plan", plan_then_resize)
    repo = tmp_path / "repo"
    with pytest.raises(RescueError, match=r"changed size during the capture \(16777216 -> "):
        cap.capture(src, repo, progress=False)
    assert not list((repo / "images").glob("*.json"))
    assert rk_json("verify", repo)["ok"]


# ---------------------------------------------------------------- defect 7: refused when opened, no journal

def test_immutable_target_refused_without_journal(repo, repo_copy, tmp_path):
    """Opening the target for writing fails (EPERM: an immutable file, as on a write-protected medium)."""
    from tests.conftest import require_tools

    require_tools("chattr")
    target = _stale(tmp_path / "t.img", SIZE)
    r = subprocess.run(["chattr", "+i", str(target)], capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"chattr +i not supported here: {r.stderr.strip()}")
    try:
        line = _err(rk("restore", repo_copy, target, "--image", "gpt", "--yes", check=False))
        assert str(target) in line
    finally:
        subprocess.run(["chattr", "-i", str(target)], check=True)
    assert _unfinished(repo_copy) == [] and not list((repo_copy / "restores").glob("*.json"))


def test_read_only_file_system_target_refused_without_journal(repo, repo_copy, tmp_path):
    """EROFS: the target's folder is a read-only bind mount (private mount namespace); the repository is not."""
    d = tmp_path / "ro"
    d.mkdir()
    target = _stale(d / "t.img", SIZE)
    new = d / "new.img"
    py = sys.executable
    script = f"""
mount --bind {d} {d} && mount -o remount,ro,bind {d} || exit 99
{py} -m rescuekit restore {repo_copy} {target} --image gpt --yes; echo "rc1=$?"
{py} -m rescuekit restore {repo_copy} {new} --image gpt --yes; echo "rc2=$?"
"""
    res = subprocess.run(["unshare", "-m", "sh", "-c", script], capture_output=True, text=True, timeout=120,
                         env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    if res.returncode == 99:
        pytest.skip(f"cannot make a read-only bind mount here: {res.stderr.strip()[:200]}")
    assert "rc1=1" in res.stdout and "rc2=1" in res.stdout, res.stdout + res.stderr
    errs = res.stderr.strip().splitlines()
    assert len(errs) == 2 and all(e.startswith("rescuekit: error: ") for e in errs), res.stderr
    assert "read-only" in errs[0].lower() and "read-only" in errs[1].lower(), errs
    assert not new.exists()
    assert _unfinished(repo_copy) == []


# ---------------------------------------------------------------- faults injected at the OS layer

def _inject(monkeypatch, path: Path, fault):
    """Route os.pwritev on ``path``'s descriptors through ``fault(fd, bufs, offset)`` (the real FileDevice
    code, a faulty medium below it)."""
    import rescuekit.disk.device as device

    real_open, real_pwritev = os.open, os.pwritev
    fds: set[int] = set()

    def open_(p, flags, *a, **k):
        fd = real_open(p, flags, *a, **k)
        if os.path.realpath(p) == os.path.realpath(path) and flags & (os.O_RDWR | os.O_WRONLY):
            fds.add(fd)
        return fd

    def pwritev(fd, bufs, offset):
        if fd in fds:
            return fault(real_pwritev, fd, bufs, offset)
        return real_pwritev(fd, bufs, offset)

    monkeypatch.setattr(device.os, "open", open_)
    monkeypatch.setattr(device.os, "pwritev", pwritev)


def _cli(capsys, *args) -> tuple[int, str]:
    from rescuekit.cli import COMMAND_MODULES, _register_all, cli, run

    _register_all(cli, COMMAND_MODULES)
    with pytest.raises(SystemExit) as exc:
        run(cli, [str(a) for a in args])
    return exc.value.code, capsys.readouterr().err


def test_write_error_during_restore_is_one_line_and_leaves_a_journal(repo, repo_copy, tmp_path, monkeypatch,
                                                                    capsys):
    target = _stale(tmp_path / "t.img", SIZE)

    def eio(real, fd, bufs, offset):
        if 2 * MiB <= offset < SIZE - 2 * MiB:  # the body (the wiped edges were written first)
            raise OSError(errno.EIO, "Input/output error")
        return real(fd, bufs, offset)

    _inject(monkeypatch, target, eio)
    code, err = _cli(capsys, "restore", repo_copy, target, "--image", "gpt", "--yes")
    lines = err.strip().splitlines()
    assert code == 1 and len(lines) == 1, err
    assert lines[0].startswith("rescuekit: error: write error at offset ") and "Input/output error" in lines[0]
    assert "incomplete" in lines[0] and str(target) in lines[0]
    monkeypatch.undo()
    [u] = _unfinished(repo_copy)
    assert u["target"] == str(target) and u["image"] == repo["gpt"]["id"]
    assert _table(target).kind == "none"  # the wiped head was not written: no table passes for restored


def test_verify_catches_a_disk_that_loses_writes(repo, repo_copy, disks, tmp_path, monkeypatch, capsys):
    """A lying medium: writes into one MiB report success but do not land. --verify must fail."""
    target = _stale(tmp_path / "t.img", SIZE)
    p3 = layout(disks["gpt"][0])[2]
    lost = (p3["start"], p3["start"] + MiB)  # NTFS boot region: stored data

    def lose(real, fd, bufs, offset):
        n = sum(len(b) for b in bufs)
        if offset < lost[1] and offset + n > lost[0]:
            return n  # "written"
        return real(fd, bufs, offset)

    _inject(monkeypatch, target, lose)
    code, err = _cli(capsys, "restore", repo_copy, target, "--image", "gpt", "--yes", "--verify")
    assert code == 1 and "verification of" in err and "differ" in err, err
    monkeypatch.undo()
    assert len(_unfinished(repo_copy)) == 1


# ---------------------------------------------------------------- the running system's disk

def test_restore_onto_system_disk_and_repository_disk_refused(repo_copy, monkeypatch, capsys):
    """The disk holding / (and a partition of it): refused before anything is opened for writing (open_target
    is replaced by a trap, so a broken check fails this test instead of wiping the machine). With the
    repository on that disk the repository refusal comes first; on a tmpfs, the system one."""
    from rescuekit.disk import inventory
    from rescuekit.imaging import restore as rmod

    systems = sorted(inventory.system_disk_paths())
    if not systems or inventory.disk_holding(repo_copy) not in systems:
        pytest.skip("/ and the test folders are not on a local block device here (overlay/tmpfs)")
    if not os.path.isdir("/dev/shm"):
        pytest.skip("no /dev/shm tmpfs for a repository off the system disk")

    def trap(*a, **k):
        raise AssertionError("open_target reached for the system disk")

    monkeypatch.setattr(rmod, "open_target", trap)
    disk = systems[0]
    parts = sorted(p for p in os.listdir(f"/sys/block/{Path(disk).name}") if p.startswith(Path(disk).name))
    targets = [disk] + [f"/dev/{p}" for p in parts[:1]]
    for t in targets:
        code, err = _cli(capsys, "restore", repo_copy, t, "--image", "gpt", "--yes")
        assert code == 1 and f"it holds the repository {repo_copy}" in err, err
    import tempfile

    shm = Path(tempfile.mkdtemp(dir="/dev/shm"))
    try:
        shutil.copytree(repo_copy, shm / "repo")
        for t in targets:
            code, err = _cli(capsys, "restore", shm / "repo", t, "--image", "gpt", "--yes")
            assert code == 1 and "the running system's disk (it holds /)" in err, err
        assert _unfinished(shm / "repo") == []
    finally:
        shutil.rmtree(shm)
    assert _unfinished(repo_copy) == []


# ---------------------------------------------------------------- the menu asks

def test_menu_restore_asks_before_writing(repo, tmp_path):
    """The menu's restore shows restore()'s own description of the target and writes only after the typed word."""
    target = tmp_path / "t.img"
    rk("restore", repo["path"], target, "--image", "mbr", "--yes")
    before = _sha(target)
    cfg = tmp_path / "config.toml"
    cfg.write_text(f"[rescuekit]\nrepository = {str(repo['path'])!r}\n")
    # restore, repository 1, image #1 (gpt: shown second, newest first), disk 1, a wrong word, result, exit
    res = subprocess.run([sys.executable, "-B", "-m", "rescuekit", "menu", "--no-scan", str(target), "--log-dir",
                          str(tmp_path / "logs")], input="1\n1\n2\n1\nerase it\n\n0\n",
                         capture_output=True, text=True, env={**os.environ, "RESCUEKIT_CONFIG": str(cfg)},
                         timeout=120)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "Type ERASE" in res.stdout and "partition table: MBR" in res.stdout, res.stdout
    assert "restore cancelled; nothing was written" in res.stdout
    assert _sha(target) == before
    assert _unfinished(repo["path"]) == []

"""Windows' disk states at capture (hibernated / Fast Startup, unclean $LogFile, dirty $Volume, BitLocker) and the
pagefile/swapfile/hiberfil exclusion, on a real NTFS volume (mkntfs + wimlib) whose hiberfil.sys, $LogFile and
$Volume flags are edited in place."""
from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import struct
import subprocess
from pathlib import Path

import make_test_disks as mtd
import pytest
from imaging_helpers import MiB, check_ntfs, rk, rk_json

from rescuekit.disk import ntfs, winstate
from rescuekit.disk.device import open_source
from tests.conftest import require_tools

SIZES = {"pagefile.sys": 4 * MiB, "swapfile.sys": 1 * MiB, "hiberfil.sys": 2 * MiB}


@pytest.fixture(scope="session")
def winvol(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    """A 64 MiB NTFS volume with a tree and random pagefile/swapfile/hiberfil.sys (hiberfil header zero)."""
    require_tools("mkntfs", "wimlib-imagex", "ntfsfix", "ntfscat")
    rng = random.Random(15)
    files = {n: rng.randbytes(s) for n, s in SIZES.items()}
    files["hiberfil.sys"] = bytes(4096) + files["hiberfil.sys"][4096:]
    vol, hashes = mtd.make_ntfs_volume(tmp_path_factory.mktemp("win") / "win.img", 64 * MiB, tree_bytes=2 * MiB,
                                       system_files=files)
    return vol, hashes


def _copy(src: Path, dst: Path) -> Path:
    subprocess.run(["cp", "--sparse=always", str(src), str(dst)], check=True)
    return dst


def _state(vol: Path) -> winstate.WinState:
    with open_source(str(vol)) as dev:
        return winstate.probe(dev, 0)


def _patch(vol: Path, pos: int, data: bytes) -> None:
    with open(vol, "r+b") as f:
        f.seek(pos)
        f.write(data)


def _cluster(vol: Path) -> int:
    with open_source(str(vol)) as dev:
        return ntfs.parse_boot(dev.read(0, 512)).cluster_size


def set_hiberfil(vol: Path, header: bytes) -> None:
    lcn, _n = _state(vol).system_files["hiberfil.sys"][0]
    _patch(vol, lcn * _cluster(vol), header)


def set_dirty(vol: Path) -> None:
    """Set VOLUME_IS_DIRTY in $Volume (record 3) in $MFT and $MFTMirr, as Windows leaves it."""
    with open_source(str(vol)) as dev:
        boot = ntfs.parse_boot(dev.read(0, 512))
        rec = ntfs.read_mft_record(dev, 0, boot, ntfs.FILE_VOLUME)
        for atype, apos in ntfs.iter_attributes(rec):
            if atype == ntfs.AT_VOLUME_INFORMATION:
                voff = struct.unpack_from("<H", rec, apos + 20)[0]
                at = apos + voff + 10
        flags = struct.unpack_from("<H", rec, at)[0] | ntfs.VOLUME_IS_DIRTY
        assert at % 512 < 510  # not under an update sequence slot
        for lcn in (boot.mft_lcn, boot.mftmirr_lcn):
            _patch(vol, lcn * boot.cluster_size + 3 * boot.mft_record_size + at, struct.pack("<H", flags))


def restart_page(clean: bool, page: int = 4096) -> bytes:
    """A $LogFile restart page (RSTR, update sequence applied): one client in use, clean flag or not."""
    usa_count = page // 512 + 1
    buf = bytearray(page)
    struct.pack_into("<4sHHqIIHhh", buf, 0, b"RSTR", 0x1E, usa_count, 0, page, page, 0x30, 1, 1)
    struct.pack_into("<QHHHH", buf, 0x30, 0x4000, 1, 0xFFFF, 0, 2 if clean else 0)
    usn = b"\x01\x00"
    buf[0x1E:0x20] = usn
    for i in range(1, usa_count):
        buf[0x1E + 2 * i:0x20 + 2 * i] = buf[i * 512 - 2:i * 512]
        buf[i * 512 - 2:i * 512] = usn
    return bytes(buf)


def set_logfile(vol: Path, clean: bool) -> None:
    with open_source(str(vol)) as dev:
        v = ntfs.NtfsVolume(dev, 0)
        runs, _size, _res = winstate._runs(v, winstate.FILE_LOGFILE)
        cs = v.boot.cluster_size
    lcn = runs[0][0]
    assert runs[0][1] * cs >= 8192
    _patch(vol, lcn * cs, restart_page(clean) * 2)


def ntfscat(vol: Path, name: str) -> bytes:
    return subprocess.run(["ntfscat", str(vol), name], capture_output=True, check=True).stdout


def test_clean_volume_excludes_system_file_data(winvol, tmp_path: Path) -> None:
    vol, hashes = winvol
    st = _state(vol)
    assert st.flags() == [] and st.journal_clean is True and st.dirty is False and st.hiberfil is None
    assert set(st.system_files) == set(SIZES)
    repo = tmp_path / "repo"
    doc = rk_json("capture", vol, repo)
    part = doc["partitions"][0]
    assert part["windows_state"] == []
    cs = _cluster(vol)
    for name, size in SIZES.items():  # all their clusters but the first 64 KiB
        assert part["excluded"][name] == -(-size // cs) * cs - 64 * 1024
    kept = rk_json("capture", vol, repo, "--keep-pagefile")
    assert kept["partitions"][0]["excluded"] == {}
    saved = kept["totals"]["stored_bytes"] - doc["totals"]["stored_bytes"]
    assert saved >= sum(SIZES.values()) - 3 * (64 << 10) - 3 * (256 << 10)  # chunk grid rounding
    out = rk("images", repo).stdout
    assert "stored as zeros: hiberfil.sys" in out
    # restore the default image: every file but the three intact; theirs zero after the first 64 KiB
    rk("restore", repo, tmp_path / "r.img", "--image", doc["id"], "--yes")
    check_ntfs(tmp_path / "r.img")
    got = mtd.file_hashes_ntfs(tmp_path / "r.img")
    assert got == {k: v for k, v in hashes.items() if k not in SIZES}
    for name, size in SIZES.items():
        data = ntfscat(tmp_path / "r.img", name)
        orig = ntfscat(vol, name)
        assert len(data) == size and data[:64 << 10] == orig[:64 << 10] and data[64 << 10:].count(0) == size - (64 << 10)
    # --keep-pagefile restores them byte for byte
    rk("restore", repo, tmp_path / "k.img", "--image", kept["id"], "--yes")
    for name in SIZES:
        assert hashlib.sha256(ntfscat(tmp_path / "k.img", name)).hexdigest() == hashes[name]


@pytest.mark.parametrize("sig", [b"HIBR", b"hibr", b"WAKE"])
def test_hibernated_refused_then_allowed(winvol, tmp_path: Path, sig: bytes) -> None:
    vol = _copy(winvol[0], tmp_path / "v.img")
    set_hiberfil(vol, sig + os.urandom(4092))
    repo = tmp_path / "repo"
    res = rk("capture", vol, repo, check=False)
    assert res.returncode == 3, res.stderr
    assert res.stderr.count("\n") == 1 and "Traceback" not in res.stderr
    assert ("rescuekit: error: " in res.stderr and "Windows was hibernated or shut down with Fast Startup: boot it "
            "and choose Restart, or shut down with Shift held; or capture anyway with --allow-hibernated, the "
            "image then holds the hibernated session" in res.stderr)
    assert not repo.exists()  # refused before the repository was created
    res = rk("capture", vol, repo, "--allow-hibernated", "--json")
    doc = json.loads(res.stdout)
    part = doc["partitions"][0]
    assert part["windows_state"] == ["hibernated"] and part["excluded"] == {}  # the session needs its pagefile
    assert any("hibernated" in w for w in doc["warnings"])
    assert "hibernated Windows session" in rk("images", repo).stdout
    assert rk_json("images", repo)["images"][0]["partitions"][0]["windows_state"] == ["hibernated"]


def test_unclean_journal_refused_clean_restart_page_accepted(winvol, tmp_path: Path) -> None:
    vol = _copy(winvol[0], tmp_path / "v.img")
    set_logfile(vol, clean=False)
    assert _state(vol).journal_clean is False
    res = rk("capture", vol, tmp_path / "repo", check=False)
    assert res.returncode == 3 and "NTFS journal has unfinished transactions" in res.stderr, res.stderr
    assert "--allow-hibernated" in res.stderr
    doc = rk_json("capture", vol, tmp_path / "repo", "--allow-hibernated")
    assert doc["partitions"][0]["windows_state"] == ["journal-unclean"]
    set_logfile(vol, clean=True)
    assert _state(vol).journal_clean is True
    doc = rk_json("capture", vol, tmp_path / "repo")
    assert doc["partitions"][0]["windows_state"] == []


def test_dirty_volume_warned_captured_marked(winvol, tmp_path: Path) -> None:
    vol = _copy(winvol[0], tmp_path / "v.img")
    set_dirty(vol)
    assert _state(vol).dirty is True
    res = rk("capture", vol, tmp_path / "repo")
    assert "rescuekit: warning: volume: the NTFS volume is marked dirty" in res.stderr
    doc = rk_json("images", tmp_path / "repo")["images"][0]
    assert doc["partitions"][0]["windows_state"] == ["dirty"]
    assert "[dirty]" in rk("images", tmp_path / "repo").stdout
    assert "run chkdsk" in rk("images", tmp_path / "repo").stdout


def test_bitlocker_reported_as_ciphertext(tmp_path: Path) -> None:
    vol = tmp_path / "bl.img"
    with open(vol, "wb") as f:
        f.write(b"\xeb\x58\x90-FVE-FS-" + os.urandom(500) + b"\x55\xaa")
        f.truncate(8 * MiB)
    rk("capture", vol, tmp_path / "repo")
    out = rk("images", tmp_path / "repo").stdout
    assert "1:bitlocker" in out and "BitLocker: stored whole as ciphertext" in out


def test_journal_parser_refuses_garbage(winvol, tmp_path: Path) -> None:
    """A $LogFile that is neither reset nor a restart page: state unknown (a warning), not a refusal."""
    vol = _copy(winvol[0], tmp_path / "v.img")
    with open_source(str(vol)) as dev:
        v = ntfs.NtfsVolume(dev, 0)
        runs, _s, _r = winstate._runs(v, winstate.FILE_LOGFILE)
        cs = v.boot.cluster_size
    _patch(vol, runs[0][0] * cs, b"JUNK" * 1024)
    st = _state(vol)
    assert st.journal_clean is None and st.problems and not st.hibernated
    res = rk("capture", vol, tmp_path / "repo")
    assert "journal state unknown" in res.stderr
    shutil.rmtree(tmp_path / "repo")

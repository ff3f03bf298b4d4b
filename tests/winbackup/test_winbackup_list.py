"""`winbackup list`, BackupSpecs.xml parsing, and the NTFS/FAT lookups it uses, on real backups."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from wb_helpers import one_line_error, rk, rk_json

from rescuekit.disk import fat
from rescuekit.disk.ntfs import NtfsVolume
from rescuekit.errors import RescueError
from rescuekit.vdisk import open_vdisk
from rescuekit.winbackup.specs import parse_specs


def _check_listing(doc: dict, backup: dict, machine: str, date: str, fmt: str, partition: int) -> None:
    (b,) = doc["backups"]
    assert (b["machine"], b["date"], Path(b["path"])) == (machine, date, backup["set"])
    vols = {v["guid"]: v for v in b["volumes"]}
    assert set(vols) == set(backup["volumes"])
    for guid, want in backup["volumes"].items():
        v = vols[guid]
        assert v["format"] == fmt and v["partition"] == partition
        assert (v["fs"], v["label"], v["size"]) == (want["fs"], want["label"], want["size"])
        assert (v["drive_letter"] or "") == want["letter"]
        assert v["windows"] == (want["letter"] == "C:")
        assert 0 < v["used_bytes"] < v["size"]
        assert v["warnings"] == []
    boots = {g: v["boot_manager"] for g, v in vols.items() if v["boot_manager"]}
    return boots


def test_list_win7(win7: dict) -> None:
    boots = _check_listing(rk_json("winbackup", "list", win7["root"]), win7, "WIN7-PC", "2019-02-22 12:43:51",
                           "vhd", 1)
    assert list(boots.values()) == ["bios"]
    assert win7["volumes"][next(iter(boots))]["label"] == "System Reserved"


def test_list_win10(win10: dict) -> None:
    boots = _check_listing(rk_json("winbackup", "list", win10["set"]), win10, "WIN10-PC", "2024-05-01 08:30:00",
                           "vhdx", 2)
    assert list(boots.values()) == ["uefi"]


@pytest.mark.parametrize("level", ["root", "wib", "pc", "set"])
def test_list_accepts_every_level(win7: dict, level: str) -> None:
    s = win7["set"]
    path = {"root": win7["root"], "wib": s.parent.parent, "pc": s.parent, "set": s}[level]
    assert [b["machine"] for b in rk_json("winbackup", "list", path)["backups"]] == ["WIN7-PC"]
    out = rk("winbackup", "list", path).stdout
    assert "System Reserved" in out and "boot manager (bios)" in out and "Windows" in out


def test_specs_file_is_byte_exact(win7: dict) -> None:
    raw = (win7["set"] / "BackupSpecs.xml").read_bytes()
    assert len(raw) == 1186  # the size of the real Windows 7 file with these two volumes (reference, Bastion)
    assert raw[:2] == b"<\0" and raw.endswith(b">\0\0\0") and b"\n\0" not in raw


def test_specs_shapes() -> None:
    body = ('<BackupSpecs{v}><FileSpecs><Volume Name="\\\\?\\Volume{{0a0b0c0d-1111-2222-3333-444455556666}}\\" '
            'AccessPath="C:" OriginalAccessPath="C:" Label="" OriginalLabel="" NewAttr="x" ><FileSpec FilePath="C:\\" '
            'FileName="*" IsRecursive="true" IsInclude="true" /></Volume></FileSpecs>'
            '<SystemState IsPresent="true" /><AllCritical IsPresent="false" />{extra}</BackupSpecs>')
    old = parse_specs(body.format(v="", extra="").encode("utf-16-le") + b"\0\0", "x")
    new = parse_specs(b"\xff\xfe" + body.format(v=' Version="2"', extra='<ComponentSpecs><ComponentSpec '
                      'WriterId="{1}" /></ComponentSpecs><Unknown><Deeper/></Unknown>').encode("utf-16-le"), "x")
    for s in (old, new):
        (v,) = s.volumes
        assert (v.guid, v.access_path, s.system_state, s.all_critical) == \
            ("0a0b0c0d-1111-2222-3333-444455556666", "C:", True, False)
    assert (old.version, new.version, new.components) == (None, 2, 1)
    for bad, why in ((b"\0\0", "not a BackupSpecs"), ("<Other/>".encode("utf-16-le"), "<Other>"),
                     ("<BackupSpecs><FileSpecs>".encode("utf-16-le"), "well-formed"),
                     ("<BackupSpecs/>".encode("utf-16-le"), "no volumes")):
        with pytest.raises(RescueError, match=why):
            parse_specs(bad, "x")


def test_ntfs_and_fat_lookups(win10: dict) -> None:
    """The general lookups (issue 14 builds on them): listing matches the source tree, names fold case."""
    s = win10["set"]
    for guid, want in win10["volumes"].items():
        with open_vdisk(next(s.glob(f"{guid}.vhdx"))) as d:
            start = 2 << 20
            if want["fs"] == "ntfs":
                vol = NtfsVolume(d, start)
                assert vol.label() == "Windows"
                sys32 = vol.lookup("\\WINDOWS\\system32")
                assert sys32 is not None and sys32.is_dir
                etc = "Windows/System32/drivers/etc/"
                names = {e.name for e in vol.listdir(vol.lookup(etc).record)}
                assert "hosts" in names and names == {p[len(etc):] for p in want["hashes"] if p.startswith(etc)}
                top = {p.split("/")[0] for p in want["hashes"]}
                assert top <= {e.name for e in vol.listdir()}
                for path in list(want["hashes"])[:40]:
                    e = vol.lookup(path.upper())
                    assert e is not None and not e.is_dir and e.name == path.split("/")[-1], path
                assert vol.lookup("Windows/nope") is None and vol.lookup("bootmgr/x") is None
            else:
                b = fat.parse_fat_boot(d.read(start, 512))
                e = fat.fat_lookup(d, start, b, "\\efi\\MICROSOFT\\boot\\bcd")
                assert e is not None and e.size == 32768 and not e.is_dir
                assert {x.name for x in fat.fat_listdir(d, start, b, fat.fat_lookup(d, start, b, "EFI"))} == \
                    {"Microsoft", "Boot"}
                assert fat.fat_lookup(d, start, b, "EFI/none") is None


def test_list_errors(win10: dict, copy_set, tmp_path: Path) -> None:
    s = copy_set(win10)
    vhdx = sorted(s.glob("*.vhdx"))
    # truncated virtual disk
    data = vhdx[1].read_bytes()
    vhdx[1].write_bytes(data[:300 * 1024])
    one_line_error(rk("winbackup", "list", s, check=False), "truncated", vhdx[1].name)
    # missing virtual disk named in BackupSpecs.xml
    vhdx[1].unlink()
    one_line_error(rk("winbackup", "list", s, check=False), "missing", vhdx[1].stem)
    # no BackupSpecs.xml
    (s / "BackupSpecs.xml").unlink()
    one_line_error(rk("winbackup", "list", s, check=False), "without BackupSpecs.xml")
    one_line_error(rk("winbackup", "list", tmp_path / "nothing", check=False), "no such folder")
    empty = tmp_path / "empty"
    empty.mkdir()
    one_line_error(rk("winbackup", "list", empty, check=False), "no Windows system image backup")
    # a bit flip in a VHDX header copy AND its twin
    shutil.rmtree(s.parent.parent.parent)
    s = copy_set(win10)
    v = sorted(s.glob("*.vhdx"))[0]
    buf = bytearray(v.read_bytes())
    for off in (64 * 1024 + 33, 128 * 1024 + 33):
        buf[off] ^= 0x40
    v.write_bytes(buf)
    one_line_error(rk("winbackup", "list", s, check=False), "CRC-32C", v.name)
    # a broken backup beside a good one (drive-level listing): the good one is listed, the other named
    shutil.copytree(win10["set"], s.parent / "Backup 2024-06-01 083000")
    res = rk("winbackup", "list", s.parent.parent.parent, "--json")
    doc = __import__("json").loads(res.stdout)
    assert [b["date"] for b in doc["backups"]] == ["2024-06-01 08:30:00"]
    assert [Path(e["path"]).name for e in doc["errors"]] == [s.name] and "CRC-32C" in doc["errors"][0]["error"]
    assert f"skipped {s}" in res.stderr


def test_list_without_path_scans_attached_volumes() -> None:
    """No PATH: every mounted volume is looked at; the host has no backups, so an empty list, exit 0."""
    doc = rk_json("winbackup", "list")
    assert isinstance(doc["backups"], list)
    assert "no Windows system image backups" in rk("winbackup", "list").stdout or doc["backups"]


def test_partitionless_and_gpt_virtual_disks_accepted(win7: dict, copy_set, tmp_path: Path) -> None:
    """Any table (or none) inside a virtual disk: a Win7 volume re-packed as a bare volume VHDX is found."""
    import subprocess

    s = copy_set(win7)
    c = next(g for g, v in win7["volumes"].items() if v["letter"] == "C:")
    vhd = s / f"{c}.vhd"
    with open_vdisk(vhd) as d:
        raw = tmp_path / "bare.raw"
        with open(raw, "wb") as f:
            f.write(d.read(128 * 512, win7["volumes"][c]["size"]))
    vhd.unlink()
    subprocess.run(["qemu-img", "convert", "-f", "raw", "-O", "vhdx", str(raw), str(s / f"{c.upper()}.VHDX")],
                   check=True, capture_output=True)
    (v,) = [v for v in rk_json("winbackup", "list", s)["backups"][0]["volumes"] if v["guid"] == c]
    assert (v["partition"], v["offset"], v["format"], v["windows"], v["label"]) == (None, 0, "vhdx", True, "Win7OS")

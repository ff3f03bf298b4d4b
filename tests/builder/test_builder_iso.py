"""ISO mastering: El Torito as oscdimg makes it, three file systems, reproducible bytes, atomic output."""
from __future__ import annotations

import hashlib
import io
import os
from pathlib import Path

import pycdlib
import pytest

from builder import iso as isomod
from builder.iso import master_iso
from rescuekit.errors import RescueError, UsageError
from rk_build_helpers import el_torito, write


@pytest.fixture()
def tree(tmp_path):
    root = tmp_path / "media"
    files = {
        "bootmgr": write(root / "bootmgr", "bootmgr\n"),
        "EFI/Boot/bootx64.efi": write(root / "EFI/Boot/bootx64.efi", "efi\n"),
        "en-us/bootmgr.efi.mui": write(root / "en-us/bootmgr.efi.mui", "mui\n"),
        "Boot/Fonts/A Very Long Font File Name For Joliet And UDF.ttf":
            write(root / "Boot/Fonts/A Very Long Font File Name For Joliet And UDF.ttf", "ttf\n"),
        "boot/fonts/a very long font file name for joliet and udf.TTF2":
            write(root / "x.ttf2", "ttf2\n"),
        "sources/boot.wim": write(root / "sources/boot.wim", os.urandom(300_000)),
        "Boot/bcd": write(root / "Boot/bcd", "bcd\n"),
        "Boot/boot.sdi": write(root / "Boot/boot.sdi", b"\0" * 3000),
        "Boot/bootfix.bin": write(root / "Boot/bootfix.bin", "fix\n"),
        "EFI/Microsoft/Boot/BCD": write(root / "EFI/Microsoft/Boot/BCD", "bcd\n"),
    }
    return files


def _tmp_outputs(monkeypatch) -> list:
    """Record the temporary files master_iso opens for its output (its exclusive "xb" open), so a test can
    check that exactly those are gone, whatever naming scheme the code uses."""
    made: list = []
    real_open = open

    def spy(file, mode="r", *args, **kwargs):
        if "x" in mode:
            made.append(Path(file))
        return real_open(file, mode, *args, **kwargs)

    monkeypatch.setattr(isomod, "open", spy, raising=False)
    return made


def _leftovers(out: Path) -> list[str]:
    """Entries next to ``out`` that belong to it but are not it (temporary outputs of any name)."""
    return sorted(p.name for p in out.parent.iterdir() if out.name in p.name and p.name != out.name)


def _read(iso: pycdlib.PyCdlib, **kw) -> bytes:
    buf = io.BytesIO()
    iso.get_file_from_iso_fp(buf, **kw)
    return buf.getvalue()


def test_el_torito_like_oscdimg(kit, tree, tmp_path, monkeypatch):
    out = tmp_path / "out.iso"
    made = _tmp_outputs(monkeypatch)
    res = master_iso(tree, out, bios_image=kit.etfs, efi_image=kit.efi["efisys.bin"], label="RescueKit")
    assert res.boot_entries == ["BIOS etfsboot.com", "UEFI efisys.bin"]
    ents = el_torito(out)
    assert [(e["platform"], e["emul"], e["bootable"]) for e in ents] == [("BIOS", "none", "y"), ("UEFI", "none", "y")]
    assert ents[0]["load_size"] == 8  # 8 x 512 = 4 KiB, as etfsboot.com is loaded
    assert ents[1]["load_size"] == 1  # as Microsoft's media; UEFI reads the FAT image to its end
    efisize = kit.efi["efisys.bin"].stat().st_size
    data = out.read_bytes()
    # The images are on disc byte for byte: no boot info table was patched into etfsboot.com.
    assert data[ents[0]["lba"] * 2048:][:4096] == kit.etfs.read_bytes()
    assert data[ents[1]["lba"] * 2048:][:efisize] == kit.efi["efisys.bin"].read_bytes()
    # the ISO was written to a temporary file next to it and renamed: that file is gone
    assert len(made) == 1 and made[0].parent == tmp_path and made[0] != out and not made[0].exists()
    assert _leftovers(out) == []


def test_uefi_only(kit, tree, tmp_path):
    out = tmp_path / "u.iso"
    master_iso(tree, out, efi_image=kit.efi["efisys_noprompt.bin"])
    ents = el_torito(out)
    assert [e["platform"] for e in ents] == ["UEFI"]


def test_three_file_systems(kit, tree, tmp_path):
    out = tmp_path / "fs.iso"
    master_iso(tree, out, bios_image=kit.etfs, efi_image=kit.efi["efisys.bin"], label="rk_test",
               extra={"rescuekit/build.json": b"{}\n"})
    iso = pycdlib.PyCdlib()
    iso.open(str(out))
    try:
        assert iso.pvd.volume_identifier.rstrip() == b"RK_TEST"
        long = "Boot/Fonts/A Very Long Font File Name For Joliet And UDF.ttf"
        assert _read(iso, udf_path="/" + long) == b"ttf\n"
        assert _read(iso, joliet_path="/" + long) == b"ttf\n"
        assert _read(iso, udf_path="/en-us/bootmgr.efi.mui") == b"mui\n"
        assert _read(iso, iso_path="/EN_US/BOOTMGR_EFI.MUI") == b"mui\n"
        assert _read(iso, iso_path="/BOOTMGR") == b"bootmgr\n"  # no ";1", no lone dot: as oscdimg, for etfsboot
        assert _read(iso, iso_path="/BOOT/BOOTFIX.BIN") == b"fix\n"
        assert _read(iso, udf_path="/sources/boot.wim") == tree["sources/boot.wim"].read_bytes()
        assert _read(iso, udf_path="/rescuekit/build.json") == b"{}\n"
        # Two names that differ only in case land in one folder, both kept.
        udf_fonts = sorted(c.file_identifier() for c in iso.list_children(udf_path="/Boot/Fonts") if c)
        assert len(udf_fonts) == 2
        # The boot images and catalog are not visible files (as with oscdimg).
        udf_root = {c.file_identifier() for c in iso.list_children(udf_path="/") if c}
        jol_root = {c.file_identifier().decode("utf-16_be") for c in iso.list_children(joliet_path="/")}
        assert udf_root == {b"bootmgr", b"EFI", b"en-us", b"Boot", b"sources", b"rescuekit"}
        # the long name keeps its whole name in ISO 9660 (level 3), not an 8.3 mangling
        iso_fonts = {c.file_identifier() for c in iso.list_children(iso_path="/BOOT/FONTS") if c and c.is_file()}
        assert b"A_VERY_LONG_FONT_FILE_NAME.TTF" in iso_fonts
        assert "boot.cat" not in jol_root and "EFISYS.IMG" not in jol_root
        hidden = {c.file_identifier() for c in iso.list_children(iso_path="/") if c.file_flags & 1}
        assert hidden == {b"BOOT.CAT", b"ETFSBOOT.IMG", b"EFISYS.IMG"}
    finally:
        iso.close()


def test_reproducible(kit, tree, tmp_path, monkeypatch):
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")
    sums = []
    for n in range(2):
        out = tmp_path / f"r{n}.iso"
        master_iso(tree, out, bios_image=kit.etfs, efi_image=kit.efi["efisys.bin"])
        sums.append(hashlib.sha256(out.read_bytes()).hexdigest())
    assert sums[0] == sums[1]
    # and the clock really was pinned: the PVD creation date is the epoch (2023-11-14 22:13:20 UTC)
    assert out.read_bytes()[16 * 2048 + 813:][:14] == b"20231114221320"
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "yesterday")
    with pytest.raises(UsageError, match="SOURCE_DATE_EPOCH"):
        master_iso(tree, tmp_path / "bad.iso", efi_image=kit.efi["efisys.bin"])
    # beyond what ISO 9660 dates (or the platform's time_t) hold: a usage error, not an internal one
    for far in ("5869584000", "253402300800", "99999999999999999999"):
        monkeypatch.setenv("SOURCE_DATE_EPOCH", far)
        with pytest.raises(UsageError, match="SOURCE_DATE_EPOCH is after 2155"):
            master_iso(tree, tmp_path / "bad.iso", efi_image=kit.efi["efisys.bin"])
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "5869583999")  # the last second of 2155 still works
    master_iso(tree, tmp_path / "last.iso", efi_image=kit.efi["efisys.bin"])


def test_labels():
    assert isomod.normalize_label("winpe_x64") == "WINPE_X64"
    for bad in ("", "with space", "a" * 33, "dash-ed", "é"):
        with pytest.raises(UsageError, match="bad volume label"):
            isomod.normalize_label(bad)


def test_failure_leaves_nothing(kit, tree, tmp_path, monkeypatch):
    out = tmp_path / "fail.iso"
    made = _tmp_outputs(monkeypatch)
    deep = dict(tree)
    deep["a/b/c/d/e/f/g/h/deep.txt"] = tree["bootmgr"]
    with pytest.raises(RescueError, match="too deep for ISO 9660"):
        master_iso(deep, out, efi_image=kit.efi["efisys.bin"])
    assert not out.exists() and _leftovers(out) == []
    # an existing output is replaced only when the new one is complete
    out.write_bytes(b"old")
    missing = dict(tree)
    missing["gone.txt"] = tmp_path / "gone.txt"
    with pytest.raises((RescueError, OSError)):
        master_iso(missing, out, efi_image=kit.efi["efisys.bin"])
    assert out.read_bytes() == b"old" and _leftovers(out) == []
    # a failure while the ISO is being written (disk full): the partial temporary output is removed
    import errno

    def full(self, fp, *args, **kwargs):
        fp.write(b"partial ISO")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(pycdlib.PyCdlib, "write_fp", full)
    with pytest.raises(OSError):
        master_iso(tree, out, efi_image=kit.efi["efisys.bin"])
    monkeypatch.undo()
    assert made and all(p.parent == tmp_path for p in made) and not any(p.exists() for p in made)
    assert out.read_bytes() == b"old" and _leftovers(out) == []
    clash = dict(tree)
    clash["BOOTMGR"] = tree["bootmgr"]
    with pytest.raises(RescueError, match="two files differ only in case: BOOTMGR and bootmgr"):
        master_iso(clash, out, efi_image=kit.efi["efisys.bin"])
    assert out.read_bytes() == b"old"


def test_udf_is_1_02_like_oscdimg(kit, tree, tmp_path):
    """pycdlib's ``udf="2.60"`` writes UDF 1.02 structures (what oscdimg -udfver102 makes): check with udfinfo."""
    from rk_build_helpers import require_tools, run

    require_tools("udfinfo")
    out = tmp_path / "udf.iso"
    master_iso(tree, out, bios_image=kit.etfs, efi_image=kit.efi["efisys.bin"], label="RK_UDF")
    info = dict(line.split("=", 1) for line in run(["udfinfo", str(out)]).stdout.splitlines() if "=" in line)
    assert info["udfrev"] == "1.02" and info["udfwriterev"] == "1.02"
    assert info["label"] == "RK_UDF" and info["integrity"] == "closed"
    assert int(info["numfiles"]) == len(tree)


def test_progress_bar_counts_every_byte(kit, tree, tmp_path, monkeypatch):
    seen = []

    import contextlib

    @contextlib.contextmanager
    def fake_progress(desc, total, *, enabled=None):
        seen.append((desc, total, enabled))
        yield lambda n: seen.append(n)

    monkeypatch.setattr(isomod, "byte_progress", fake_progress)
    out = tmp_path / "p.iso"
    master_iso(tree, out, efi_image=kit.efi["efisys.bin"], progress=True)
    (desc, total, enabled), *steps = seen
    assert desc == "writing p.iso" and enabled is True
    assert total == out.stat().st_size == sum(steps)


def test_users_tmp_file_next_to_output_is_left_alone(kit, tree, tmp_path):
    """The ISO is written to a fresh temp name: a file called OUTPUT.tmp is someone's data, never overwritten or
    deleted (neither by a successful build nor by a failed one)."""
    out = tmp_path / "out" / "rescue.iso"
    mine = write(out.with_name("rescue.iso.tmp"), b"my notes\n")
    master_iso(tree, out, bios_image=kit.etfs, efi_image=kit.efi["efisys.bin"])
    assert mine.read_bytes() == b"my notes\n"
    missing = {**tree, "gone.txt": tmp_path / "gone.txt"}
    with pytest.raises((RescueError, OSError)):
        master_iso(missing, out, efi_image=kit.efi["efisys.bin"])
    assert mine.read_bytes() == b"my notes\n"
    assert sorted(p.name for p in out.parent.iterdir()) == ["rescue.iso", "rescue.iso.tmp"]


def test_file_name_not_in_utf8_is_a_one_line_error(kit, tree, tmp_path):
    """A host name in another encoding (Latin-1 bytes on Linux) cannot be written as Joliet/UDF: say which."""
    name = os.fsdecode(b"caf\xe9.txt")
    host = tmp_path / "media" / name
    host.write_bytes(b"x")
    out = tmp_path / "o" / "x.iso"
    out.parent.mkdir()
    with pytest.raises(RescueError, match=r"file name is not valid UTF-8, so it cannot go on the ISO: docs/caf\\xe9\.txt"):
        master_iso({**tree, f"docs/{name}": host}, out, efi_image=kit.efi["efisys.bin"])
    assert list(out.parent.iterdir()) == []


def test_name_too_long_for_udf_names_the_file(kit, tree, tmp_path):
    name = "x" * 250 + ".txt"
    host = write(tmp_path / "media" / name, "x\n")
    out = tmp_path / "o" / "x.iso"
    out.parent.mkdir()
    with pytest.raises(RescueError, match=rf"cannot put docs/{name} on the ISO: UDF filename too long"):
        master_iso({**tree, f"docs/{name}": host}, out, efi_image=kit.efi["efisys.bin"])
    assert list(out.parent.iterdir()) == []


@pytest.mark.parametrize("name", ["boot.cat", "efisys.img", "etfsboot.img", "boot.cat/inside.txt"])
def test_media_file_named_like_a_hidden_boot_entry(kit, tree, tmp_path, name):
    """A media file boot.cat made a broken UDF tree (the catalog's Joliet/UDF links were removed by name); one
    called efisys.img became the UEFI boot image. Both boot images and the user's file must come out right."""
    host = write(tmp_path / "extra" / name, "mine\n")
    out = tmp_path / "o.iso"
    master_iso({**tree, name: host}, out, bios_image=kit.etfs, efi_image=kit.efi["efisys.bin"])
    iso = pycdlib.PyCdlib()
    iso.open(str(out))  # raised PyCdlibInvalidISO for boot.cat
    try:
        assert _read(iso, udf_path=f"/{name}") == b"mine\n" and _read(iso, joliet_path=f"/{name}") == b"mine\n"
    finally:
        iso.close()
    ents = el_torito(out)
    assert [(e["platform"], e["load_size"]) for e in ents] == [("BIOS", 8), ("UEFI", 1)]
    with open(out, "rb") as f:
        f.seek(ents[1]["lba"] * 2048)
        assert f.read(2048) == kit.efi["efisys.bin"].read_bytes()[:2048]
        f.seek(ents[0]["lba"] * 2048)
        assert f.read(4096) == kit.etfs.read_bytes()


@pytest.mark.parametrize("names", [("bootmgr", "BOOTMGR/a.txt"), ("docs/x", "docs/X/y.txt"), ("rescuekit", None)])
def test_file_and_folder_of_one_name_is_a_one_line_error(kit, tree, tmp_path, names):
    """Written as is, such a pair gave an ISO whose UDF tree no reader can parse."""
    files = dict(tree)
    for n in names:
        if n is not None:
            files[n] = write(tmp_path / "extra" / n.replace("/", "_"), "x\n")
    out = tmp_path / "o" / "x.iso"
    out.parent.mkdir()
    with pytest.raises(RescueError, match="a file and a folder have the same name"):
        master_iso(files, out, efi_image=kit.efi["efisys.bin"], extra={"rescuekit/build.json": b"{}\n"})
    assert list(out.parent.iterdir()) == []

"""builder.isocheck: the boot-chain walk of an ISO (UDF anchor -> file set -> boot files; ISO 9660; El Torito).

Cross-checked on ISOs written by tools we did not write (genisoimage -udf, xorriso), and on ours broken on purpose."""
from __future__ import annotations

from pathlib import Path

import pytest
from rk_build_helpers import (
    make_copype,
    make_iso_genisoimage_boot,
    make_iso_plain,
    patch_sector,
    split_udf_extent,
    write,
)

from builder import isocheck
from builder.iso import master_iso

BOOT = ["bootmgr", "boot/bootfix.bin", "boot/bcd", "boot/boot.sdi", "sources/boot.wim", "efi/boot/bootx64.efi",
        "efi/microsoft/boot/bcd"]


@pytest.fixture(scope="module")
def media(kit, tmp_path_factory) -> Path:
    base = make_copype(kit, tmp_path_factory.mktemp("isocheck") / "winpe")
    write(base / "media/boot/bootfix.bin", "bootfix\n")
    return base / "media"


@pytest.fixture(scope="module")
def ours(kit, media, tmp_path_factory) -> Path:
    files = {p.relative_to(media).as_posix(): p for p in media.rglob("*") if p.is_file()}
    out = tmp_path_factory.mktemp("ours") / "ours.iso"
    master_iso(files, out, bios_image=kit.etfs, efi_image=kit.efi["efisys.bin"])
    return out


@pytest.fixture(scope="module")
def genisoimage_udf(kit, media, tmp_path_factory) -> Path:
    """The same tree by genisoimage -udf, the recipe people use on Linux (BIOS + UEFI El Torito)."""
    return make_iso_genisoimage_boot(media, kit.etfs, kit.efi["efisys.bin"], tmp_path_factory.mktemp("gen") / "gen.iso")


def test_our_iso_passes_every_check(ours):
    rep = isocheck.check_iso(ours)
    assert rep.ok, isocheck.format_report(rep)
    names = {c.name for c in rep.checks}
    for rel in BOOT:
        assert f"udf:{rel}" in names and f"iso9660~{rel}" in names
    assert {"udf.anchor", "udf.revision", "udf.early", "iso9660:BOOTMGR", "iso9660:BOOT/BOOTFIX.BIN",
            "eltorito.bios", "eltorito.uefi", "eltorito.validation_id", "iso9660.names"} <= names


def test_udf_walk_reads_genisoimage_iso(genisoimage_udf, media):
    """Our UDF reader on another writer's UDF 1.02: every boot file is found and its bytes are the source's."""
    rep = isocheck.check_iso(genisoimage_udf)
    for name in ["udf.anchor", "udf.revision", "udf.early", *(f"udf:{r}" for r in BOOT)]:
        assert rep.get(name).ok, rep.get(name)
    with open(genisoimage_udf, "rb") as f:
        disc = isocheck.Disc(f, genisoimage_udf.stat().st_size, "gen.iso")
        udf = isocheck.Udf.open(disc)
        for rel in BOOT:
            chain = udf.lookup(rel.upper())  # case-insensitive, as etfsboot.com and bootmgr look names up
            host = next(p for p in media.rglob("*") if p.relative_to(media).as_posix().lower() == rel)
            assert udf.read(chain[-1]) == host.read_bytes(), rel
    # What that recipe gets wrong for Microsoft's boot chain, and the checker says so:
    assert not rep.get("iso9660:BOOTMGR").ok and "'BOOTMGR.;1'" in rep.get("iso9660:BOOTMGR").detail
    assert not rep.get("iso9660.names").ok
    assert not rep.get("eltorito.uefi").ok and "2880 sector(s)" in rep.get("eltorito.uefi").detail
    assert not rep.get("eltorito.validation_id").ok


def test_iso9660_only_disc(kit, media, tmp_path):
    """No UDF (xorriso has none): the UDF walk fails, the ISO 9660 names are what xorriso makes of them."""
    out = make_iso_plain(media, tmp_path / "plain.iso")
    rep = isocheck.check_iso(out)
    assert not rep.udf and not rep.get("udf.anchor").ok
    assert rep.get("iso9660~sources/boot.wim").ok  # reachable after case folding
    assert not rep.get("iso9660.names").ok  # xorriso writes ";1"


def test_broken_anchor_is_a_failed_check(ours, tmp_path):
    bad = patch_sector(ours, tmp_path / "anchor.iso", 256, lambda b: b.__setitem__(20, b[20] ^ 0xFF))
    rep = isocheck.check_iso(bad)
    assert not rep.get("udf.anchor").ok and "bad descriptor CRC at sector 256" in rep.get("udf.anchor").detail


def test_boot_file_in_two_extents_is_a_failed_check(ours, tmp_path):
    """Split BOOTMGR's one short_ad into two: etfsboot.com wants one extent, the check fails."""
    bad = split_udf_extent(ours, tmp_path / "split.iso", "bootmgr")
    rep = isocheck.check_iso(bad)
    assert not rep.get("udf:bootmgr").ok and "in 2 extents" in rep.get("udf:bootmgr").detail
    assert rep.get("udf:boot/bcd").ok


def test_versioned_bootmgr_is_a_failed_check(ours, tmp_path):
    """Rename the ISO 9660 record BOOTMGR to BOOTMGZ (same length): the exact name is gone, UDF still has it."""
    with open(ours, "rb") as f:
        iso = isocheck.Iso9660(isocheck.Disc(f, ours.stat().st_size, "ours.iso"), isocheck.read_pvd(f))
        (root_lba, _), = iso.root.extents
    data = ours.read_bytes()
    pos = data.index(b"\x07BOOTMGR", root_lba * 2048)
    bad = tmp_path / "renamed.iso"
    bad.write_bytes(data[:pos + 1] + b"BOOTMGZ" + data[pos + 8:])
    rep = isocheck.check_iso(bad)
    assert not rep.get("iso9660:BOOTMGR").ok and rep.get("udf:bootmgr").ok
    assert not rep.get("iso9660~bootmgr").ok


def test_not_an_iso(tmp_path):
    junk = write(tmp_path / "junk.iso", b"\0" * 40000)
    with pytest.raises(isocheck.IsoFormatError, match="not an ISO 9660 image"):
        isocheck.check_iso(junk)


def test_big_boot_wim_says_it_cannot_be_one_extent(tmp_path):
    """A boot.wim over ~1 GiB cannot be one UDF extent (30-bit lengths): the build says so (sparse file, no ISO)."""
    from builder.iso import _single_extent_notes

    big = tmp_path / "boot.wim"
    with open(big, "wb") as f:
        f.truncate(isocheck.UDF_MAX_EXTENT + 1)
    small = write(tmp_path / "bcd", "x")
    notes = _single_extent_notes({"sources/boot.wim": big, "boot/bcd": small, "other/big.bin": big})
    assert len(notes) == 1 and notes[0].startswith("sources/boot.wim is 1073739777 bytes") and "2 extents" in notes[0]


def _rk(*args: str):
    import subprocess

    return subprocess.run(["rescuekit", *args], capture_output=True, text=True)


def test_inspect_check_cli(ours, genisoimage_udf, tmp_path):
    good = _rk("inspect", "--check", str(ours))
    assert good.returncode == 0, good.stderr
    assert "ok   udf:sources/boot.wim" in good.stdout and good.stdout.strip().endswith("checks pass")
    bad = _rk("inspect", "--check", "--json", str(genisoimage_udf))
    assert bad.returncode == 1
    import json

    failed = {c["check"] for c in json.loads(bad.stdout)["checks"] if not c["ok"]}
    assert "iso9660:BOOTMGR" in failed and "eltorito.uefi" in failed
    assert bad.stderr.count("\n") == 1 and bad.stderr.startswith("rescuekit: error: ") and "boot-chain checks failed" in bad.stderr
    cut = tmp_path / "cut.iso"
    cut.write_bytes(ours.read_bytes()[:300 * 2048])
    r = _rk("inspect", "--check", str(cut))
    assert r.returncode == 1 and "iso9660.size" in r.stdout and r.stderr.count("\n") == 1, r.stderr
    folder = _rk("inspect", "--check", str(tmp_path))
    assert folder.returncode == 2 and "--check needs an ISO file" in folder.stderr

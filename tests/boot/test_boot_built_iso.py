"""End to end: ``rescuekit build`` masters an ISO from the stand-in base (both ADK layouts) and firmware boots it.

Passes only when SeaBIOS / OVMF really ran the boot program the ISO's El Torito catalog names and it read the
base's nonce from the disc.  The catalog is cross-checked with xorriso, a tool we did not write."""
from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from builder import isocheck
from boot_media import BOOT_TIMEOUT, el_torito_entries, fw_dir, require_tools, usb_image
from make_standin_base import read_nonce
from qemu_boot import boot
from tests.conftest import RK_HOST

pytestmark = pytest.mark.qemu

# name -> (base fixture, extra `rescuekit build` options, efisys variant OVMF must run, EFI/Boot/bootx64.efi variant)
BUILDS = {
    "fwfiles": ("standin_fwfiles", [], "VARIANT=efisys.bin CA2011 PROMPT", "VARIANT=bootmgfw.efi CA2011"),
    "fwfiles-noprompt": ("standin_fwfiles", ["--no-prompt"], "VARIANT=efisys_noprompt.bin CA2011 NOPROMPT",
                         "VARIANT=bootmgfw.efi CA2011"),
    "bootbins": ("standin_bootbins", [], "VARIANT=efisys.bin CA2011 PROMPT", "VARIANT=bootmgfw.efi CA2011"),
    "bootbins-2023-noprompt": ("standin_bootbins", ["--uefi-ca", "2023", "--no-prompt"],
                               "VARIANT=efisys_noprompt_EX.bin CA2023 NOPROMPT", "VARIANT=bootmgfw_EX.efi CA2023"),
}


def rescuekit_build(source: Path, output: Path, *options: str) -> subprocess.CompletedProcess:
    return subprocess.run([*RK_HOST, "build", "--source", str(source), "--output", str(output), *options],
                          capture_output=True, text=True)


@pytest.fixture(scope="session")
def built_iso(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory):
    """Built ISOs by BUILDS name (each built once per session): (iso path, base)."""
    cache: dict[str, tuple[Path, Path]] = {}

    def get(name: str) -> tuple[Path, Path]:
        if name not in cache:
            base_fixture, options, _, _ = BUILDS[name]
            base = request.getfixturevalue(base_fixture)
            iso = tmp_path_factory.mktemp("built") / f"{name}.iso"
            proc = rescuekit_build(base, iso, *options)
            assert proc.returncode == 0, proc.stderr
            cache[name] = (iso, base)
        return cache[name]

    return get


@pytest.mark.parametrize("name", list(BUILDS))
def test_el_torito_has_bios_and_uefi_entries(name: str, built_iso) -> None:
    iso, _ = built_iso(name)
    entries = el_torito_entries(iso)
    assert [(e["Pltf"], e["Emul"]) for e in entries] == [("BIOS", "none"), ("UEFI", "none")]
    assert entries[0]["Ldsiz"] == "8"  # etfsboot.com loads as 8 x 512 bytes
    assert entries[1]["Ldsiz"] == "1"  # as Microsoft's media
    rep = isocheck.check_iso(iso)  # the boot-chain walk: UDF, exact ISO 9660 names, El Torito
    assert rep.ok, isocheck.format_report(rep)


@pytest.mark.parametrize("name", ["fwfiles", "bootbins"])
def test_etfsboot_is_not_patched(name: str, built_iso) -> None:
    """The BIOS boot image on the disc is byte-for-byte etfsboot.com: no boot info table was written into it."""
    iso, base = built_iso(name)
    lba = int(el_torito_entries(iso)[0]["LBA"])
    with open(iso, "rb") as f:
        f.seek(lba * 2048)
        on_disc = f.read(4096)
    assert on_disc == (fw_dir(base) / "etfsboot.com").read_bytes()


@pytest.mark.parametrize("name", list(BUILDS))
def test_ovmf_boots_built_iso(name: str, built_iso, qemu_tools: None) -> None:
    iso, base = built_iso(name)
    res = boot(iso, "uefi", "cdrom", expect="RESCUEKIT UEFI OK", timeout=BOOT_TIMEOUT)
    assert res.ok, res.log
    assert BUILDS[name][2] in res.text
    assert f"NONCE={read_nonce(base)}\n" in res.text


@pytest.mark.parametrize("name", ["fwfiles", "bootbins-2023-noprompt"])
def test_seabios_boots_built_iso(name: str, built_iso, qemu_tools: None) -> None:
    """Through UDF (the stand-in etfsboot takes it first when the anchor is there); --no-prompt leaves bootfix.bin off."""
    iso, base = built_iso(name)
    res = boot(iso, "bios", "cdrom", expect="RESCUEKIT BIOS OK", timeout=BOOT_TIMEOUT)
    assert res.ok, res.log
    assert "RESCUEKIT STAND-IN BIOS" in res.text
    assert "PATH=UDF" in res.text and "BOOTMGR found: one extent" in res.text
    assert ("BOOTFIX=absent" if "--no-prompt" in BUILDS[name][1] else "BOOTFIX=present") in res.text
    assert f"NONCE={read_nonce(base)}\n" in res.text


def test_seabios_refuses_bootmgr_in_two_extents(built_iso, tmp_path: Path, qemu_tools: None) -> None:
    """The built ISO with BOOTMGR's UDF File Entry split into two extents: the stand-in refuses, as etfsboot.com
    is only known to read one (and there is no ISO 9660 fallback when UDF is present)."""
    from tests.builder.rk_build_helpers import split_udf_extent

    iso, _ = built_iso("fwfiles")
    bad = split_udf_extent(iso, tmp_path / "split.iso", "bootmgr")
    res = boot(bad, "bios", "cdrom", expect="RESCUEKIT BIOS OK", timeout=BOOT_TIMEOUT)
    assert not res.ok and res.reason == "failure marker seen", res.log
    assert "RESCUEKIT BIOS FAIL UDF: not in one extent: BOOTMGR" in res.text


def test_iso_files_make_a_uefi_bootable_stick(built_iso, tmp_path: Path, qemu_tools: None) -> None:
    """The ISO's files copied to a FAT32 stick (MakeWinPEMedia /UFD shape) boot via EFI/Boot/bootx64.efi, which
    --uefi-ca 2023 must have replaced with the CA 2023 boot manager (MakeWinPEMedia /bootex)."""
    require_tools("xorriso")
    iso, base = built_iso("bootbins-2023-noprompt")
    tree = tmp_path / "tree"
    subprocess.run(["xorriso", "-osirrox", "on", "-indev", str(iso), "-extract", "/", str(tree)],
                   check=True, capture_output=True)
    subprocess.run(["chmod", "-R", "u+w", str(tree)], check=True)
    img = usb_image(tree, tmp_path / "usb.img")
    res = boot(img, "uefi", "usb", expect="RESCUEKIT UEFI OK", timeout=BOOT_TIMEOUT)
    assert res.ok, res.log
    assert BUILDS["bootbins-2023-noprompt"][3] in res.text
    assert f"NONCE={read_nonce(base)}\n" in res.text

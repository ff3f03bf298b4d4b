"""Boot the stand-in base in QEMU under SeaBIOS and OVMF, as CD (MakeWinPEMedia /ISO shape) and as USB stick.

Media here are made with xorriso/mtools (tools we did not write); a test only passes when the firmware really ran
the boot program and it read this session's nonce from the medium."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from boot_media import BOOT_TIMEOUT, el_torito_entries, usb_image, xorriso_iso
from make_standin_base import read_nonce
from qemu_boot import QemuBootError, boot

pytestmark = pytest.mark.qemu
REPO = Path(__file__).resolve().parents[2]


def test_el_torito_catalog_like_makewinpemedia(xorriso_fwfiles_iso: Path) -> None:
    entries = el_torito_entries(xorriso_fwfiles_iso)
    assert [(e["Pltf"], e["Emul"]) for e in entries] == [("BIOS", "none"), ("UEFI", "none")]
    assert entries[0]["Ldsiz"] == "8"  # etfsboot.com: 8 x 512 bytes


def test_seabios_boots_cd(xorriso_fwfiles_iso: Path, standin_fwfiles: Path, qemu_tools: None) -> None:
    """No UDF on the disc (xorriso): the stand-in etfsboot reads ISO 9660 and finds the exact identifier BOOTMGR."""
    res = boot(xorriso_fwfiles_iso, "bios", "cdrom", expect="RESCUEKIT BIOS OK", timeout=BOOT_TIMEOUT)
    assert res.ok, res.log
    assert "RESCUEKIT STAND-IN BIOS" in res.log
    assert "PATH=ISO9660" in res.text and "BOOTMGR found: one extent" in res.text
    assert "BOOTFIX=present" in res.text
    assert f"NONCE={read_nonce(standin_fwfiles)}\r\n" in res.log


def test_seabios_iso9660_needs_exact_bootmgr(standin_fwfiles: Path, tmp_path: Path, qemu_tools: None) -> None:
    """xorriso's default ISO 9660 name BOOTMGR.;1 (no UDF to fall back on): like etfsboot.com (KB931708), no boot."""
    iso = xorriso_iso(standin_fwfiles, tmp_path / "versioned.iso", exact_names=False)
    res = boot(iso, "bios", "cdrom", expect="RESCUEKIT BIOS OK", timeout=BOOT_TIMEOUT)
    assert not res.ok and res.reason == "failure marker seen", res.log
    assert "PATH=ISO9660" in res.text
    assert "RESCUEKIT BIOS FAIL BOOTMGR not found in the ISO 9660 root directory" in res.text


def test_seabios_boots_genisoimage_udf_through_udf(standin_fwfiles: Path, tmp_path: Path, qemu_tools: None) -> None:
    """genisoimage -udf writes BOOTMGR.;1 in ISO 9660, so only the UDF walk (taken first, as etfsboot.com does)
    can find it: the boot passes and says PATH=UDF."""
    from tests.builder.rk_build_helpers import make_iso_genisoimage_boot

    fw = standin_fwfiles / "fwfiles"
    iso = make_iso_genisoimage_boot(standin_fwfiles / "media", fw / "etfsboot.com", fw / "efisys.bin",
                                    tmp_path / "gen.iso")
    res = boot(iso, "bios", "cdrom", expect="RESCUEKIT BIOS OK", timeout=BOOT_TIMEOUT)
    assert res.ok, res.log
    assert "PATH=UDF" in res.text and "BOOTMGR found: one extent" in res.text
    assert f"NONCE={read_nonce(standin_fwfiles)}\n" in res.text


def test_ovmf_boots_cd(xorriso_fwfiles_iso: Path, standin_fwfiles: Path, qemu_tools: None) -> None:
    res = boot(xorriso_fwfiles_iso, "uefi", "cdrom", expect="RESCUEKIT UEFI OK", timeout=BOOT_TIMEOUT)
    assert res.ok, res.log
    assert "VARIANT=efisys.bin CA2011 PROMPT" in res.log
    assert f"NONCE={read_nonce(standin_fwfiles)}" in res.log


def test_ovmf_boots_ca2023_noprompt_cd(standin_bootbins: Path, tmp_path: Path, qemu_tools: None) -> None:
    iso = xorriso_iso(standin_bootbins, tmp_path / "ex.iso", efisys="efisys_noprompt_EX.bin")
    res = boot(iso, "uefi", "cdrom", expect="RESCUEKIT UEFI OK", timeout=BOOT_TIMEOUT)
    assert res.ok, res.log
    assert "VARIANT=efisys_noprompt_EX.bin CA2023 NOPROMPT" in res.log
    assert f"NONCE={read_nonce(standin_bootbins)}" in res.log


@pytest.mark.parametrize("media", ["usb", "disk"])
def test_ovmf_boots_usb_stick_from_media(media: str, standin_fwfiles: Path, tmp_path: Path, qemu_tools: None) -> None:
    """media/EFI/Boot/bootx64.efi on a FAT32 stick (MakeWinPEMedia /UFD shape) UEFI-boots and finds the nonce,
    attached as a USB stick or as an IDE disk."""
    img = usb_image(standin_fwfiles / "media", tmp_path / "usb.img")
    res = boot(img, "uefi", media, expect="RESCUEKIT UEFI OK", timeout=BOOT_TIMEOUT)
    assert res.ok, res.log
    assert "VARIANT=bootmgfw.efi CA2011" in res.log
    assert f"NONCE={read_nonce(standin_fwfiles)}" in res.log


@pytest.mark.parametrize("firmware", ["bios", "uefi"])
def test_missing_nonce_fails_boot(firmware: str, standin_fwfiles: Path, tmp_path: Path, qemu_tools: None) -> None:
    """Without NONCE.TXT on the disc the boot programs report failure: the OK marker can't come from elsewhere."""
    media = tmp_path / "media"
    subprocess.run(["cp", "-a", str(standin_fwfiles / "media"), str(media)], check=True)
    (media / "NONCE.TXT").unlink()
    iso = xorriso_iso(standin_fwfiles, tmp_path / "no-nonce.iso", media=media)
    res = boot(iso, firmware, "cdrom", expect=f"RESCUEKIT {firmware.upper()} OK", timeout=BOOT_TIMEOUT)
    assert not res.ok
    assert res.reason == "failure marker seen", res.log
    assert f"RESCUEKIT {firmware.upper()} FAIL NONCE.TXT not found" in res.log


@pytest.mark.parametrize("wrong", ["load_size", "boot_info_table"])
def test_bios_detects_etfsboot_loaded_wrong(wrong: str, standin_fwfiles: Path, tmp_path: Path,
                                            qemu_tools: None) -> None:
    """Loaded as 4 sectors instead of 8, or with a boot info table patched in, the stand-in refuses to pass."""
    etfsboot = standin_fwfiles / "fwfiles" / "etfsboot.com"
    before = etfsboot.read_bytes()
    kw = {"load_size": 4} if wrong == "load_size" else {"boot_info_table": True}
    iso = xorriso_iso(standin_fwfiles, tmp_path / f"{wrong}.iso", **kw)
    assert etfsboot.read_bytes() == before
    res = boot(iso, "bios", "cdrom", expect="RESCUEKIT BIOS OK", timeout=BOOT_TIMEOUT)
    assert not res.ok
    assert res.reason == "failure marker seen", res.log
    reason = "only part of the 4 KiB boot image was loaded" if wrong == "load_size" else "a boot info table was patched in"
    assert "RESCUEKIT BIOS FAIL" in res.text and reason in res.text


def test_bios_walks_multi_sector_root_directory(standin_fwfiles: Path, tmp_path: Path, qemu_tools: None) -> None:
    """NONCE.TXT sorted after hundreds of entries: the BIOS program must read further root directory sectors."""
    media = tmp_path / "media"
    subprocess.run(["cp", "-a", str(standin_fwfiles / "media"), str(media)], check=True)
    for i in range(300):
        (media / f"FILLER{i:03d}.TXT").write_text("x")
    iso = xorriso_iso(standin_fwfiles, tmp_path / "big-root.iso", media=media)
    res = boot(iso, "bios", "cdrom", expect="RESCUEKIT BIOS OK", timeout=BOOT_TIMEOUT)
    assert res.ok, res.log
    assert f"NONCE={read_nonce(standin_fwfiles)}\n" in res.text


def test_harness_cli(xorriso_fwfiles_iso: Path, standin_fwfiles: Path, qemu_tools: None) -> None:
    proc = subprocess.run([sys.executable, str(REPO / "scripts" / "qemu_boot.py"), str(xorriso_fwfiles_iso),
                           "--firmware", "bios", "--timeout", str(BOOT_TIMEOUT)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"NONCE={read_nonce(standin_fwfiles)}" in proc.stdout
    assert "qemu_boot: bios/cdrom: OK" in proc.stdout


def test_harness_errors(tmp_path: Path) -> None:
    with pytest.raises(QemuBootError, match="medium not found"):
        boot(tmp_path / "missing.iso", "bios")
    (tmp_path / "x.iso").write_bytes(b"\0" * 2048)
    with pytest.raises(QemuBootError, match="bad firmware"):
        boot(tmp_path / "x.iso", "coreboot")  # type: ignore[arg-type]

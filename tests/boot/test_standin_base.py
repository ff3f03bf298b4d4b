"""The stand-in WinPE base: copype layout, real WIM, real FAT efisys images, clear stand-in labels."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import make_standin_base as msb
from boot_media import require_tools

REPO = Path(__file__).resolve().parents[2]
MEDIA_FILES = ["bootmgr", "bootmgr.efi", "boot/bcd", "boot/boot.sdi", "boot/fonts/wgl4_boot.ttf",
               "EFI/Boot/bootx64.efi", "EFI/Microsoft/Boot/BCD", "sources/boot.wim", "NONCE.TXT",
               "RESCUEKIT-STANDIN.TXT"]


def _wim_info(wim: Path) -> str:
    require_tools("wimlib-imagex")
    return subprocess.run(["wimlib-imagex", "info", str(wim)], check=True, capture_output=True, text=True).stdout


def _mdir(img: Path, path: str) -> str:
    require_tools("mdir")
    env = dict(os.environ, MTOOLS_SKIP_CHECK="1")
    return subprocess.run(["mdir", "-b", "-i", str(img), path], check=True, capture_output=True, text=True,
                          env=env).stdout


@pytest.mark.parametrize("layout", ["fwfiles", "bootbins"])
def test_copype_layout(layout: str, standin_fwfiles: Path, standin_bootbins: Path) -> None:
    base = standin_fwfiles if layout == "fwfiles" else standin_bootbins
    for rel in MEDIA_FILES:
        assert (base / "media" / rel).is_file(), rel
    assert (base / "mount").is_dir() and not any((base / "mount").iterdir())
    other = "bootbins" if layout == "fwfiles" else "fwfiles"
    assert not (base / other).exists()
    fw = sorted(p.name for p in (base / layout).iterdir())
    if layout == "fwfiles":
        assert fw == ["efisys.bin", "efisys_noprompt.bin", "etfsboot.com"]
    else:
        assert fw == ["bootmgfw.efi", "bootmgfw_EX.efi", "efisys.bin", "efisys_EX.bin", "efisys_noprompt.bin",
                      "efisys_noprompt_EX.bin", "etfsboot.com"]


def test_labelled_as_standin(standin_fwfiles: Path) -> None:
    assert "NOT WINDOWS PE" in (standin_fwfiles / "media" / "RESCUEKIT-STANDIN.TXT").read_text()
    etfsboot = (standin_fwfiles / "fwfiles" / "etfsboot.com").read_bytes()
    assert b"RESCUEKIT STAND-IN BIOS" in etfsboot
    assert b"RESCUEKIT STAND-IN UEFI" in (standin_fwfiles / "media" / "EFI" / "Boot" / "bootx64.efi").read_bytes()
    info = _wim_info(standin_fwfiles / "media" / "sources" / "boot.wim")
    assert "rescuekit stand-in (NOT WinPE)" in info


def test_etfsboot_is_a_4k_boot_program(standin_fwfiles: Path) -> None:
    data = (standin_fwfiles / "fwfiles" / "etfsboot.com").read_bytes()
    assert len(data) == 4096  # loaded as 8 x 512-byte sectors, like the real etfsboot.com
    assert data[0] == 0xFA  # cli: code starts at the first byte (no boot info table slot to patch)


def test_boot_wim_is_real_bootable_winpe_shape(standin_fwfiles: Path, tmp_path: Path) -> None:
    wim = standin_fwfiles / "media" / "sources" / "boot.wim"
    assert wim.read_bytes()[:8] == b"MSWIM\0\0\0"
    info = _wim_info(wim)
    assert "Image Count:    1" in info
    assert "Boot Index:     1" in info
    subprocess.run(["wimlib-imagex", "verify", str(wim)], check=True, capture_output=True)
    subprocess.run(["wimlib-imagex", "extract", str(wim), "1", "/Windows/System32/startnet.cmd",
                    f"--dest-dir={tmp_path}"], check=True, capture_output=True)
    assert (tmp_path / "startnet.cmd").read_text().strip() == "wpeinit"


def test_bootbins_wim_carries_boot_files_like_winpe(standin_bootbins: Path) -> None:
    listing = subprocess.run(["wimlib-imagex", "dir", str(standin_bootbins / "media" / "sources" / "boot.wim"), "1"],
                             check=True, capture_output=True, text=True).stdout.splitlines()
    for path in ["/Windows/Boot/EFI/bootmgfw.efi", "/Windows/Boot/EFI_EX/bootmgfw_EX.efi",
                 "/Windows/Boot/DVD/PCAT/etfsboot.com", "/Windows/Boot/DVD/EFI/en-US/efisys.bin",
                 "/Windows/Boot/DVD/EFI/en-US/efisys_noprompt.bin", "/Windows/Boot/DVD_EX/EFI/en-US/efisys_EX.bin",
                 "/Windows/Boot/DVD_EX/EFI/en-US/efisys_noprompt_EX.bin"]:
        assert path in listing, path


@pytest.mark.parametrize("name", ["efisys.bin", "efisys_noprompt.bin", "efisys_EX.bin", "efisys_noprompt_EX.bin"])
def test_efisys_is_fat_with_bootx64(name: str, standin_bootbins: Path) -> None:
    require_tools("fsck.vfat")
    img = standin_bootbins / "bootbins" / name
    assert img.stat().st_size in (1474560, 2949120)
    subprocess.run(["fsck.vfat", "-n", str(img)], check=True, capture_output=True)
    assert "::/EFI/BOOT/BOOTX64.EFI" in _mdir(img, "::/EFI/BOOT")
    variant = msb.EFISYS[name]
    assert variant.marker.encode() in img.read_bytes()  # embedded grub.cfg names the variant


def test_efi_programs_are_pe_images(standin_bootbins: Path) -> None:
    for p in [standin_bootbins / "bootbins" / "bootmgfw.efi", standin_bootbins / "bootbins" / "bootmgfw_EX.efi",
              standin_bootbins / "media" / "EFI" / "Boot" / "bootx64.efi"]:
        assert p.read_bytes()[:2] == b"MZ", p
    assert b"VARIANT=bootmgfw_EX.efi CA2023" in (standin_bootbins / "bootbins" / "bootmgfw_EX.efi").read_bytes()


def test_nonce_given_and_random(tmp_path: Path) -> None:
    a = msb.make_standin_base(tmp_path / "a", nonce="TEST-NONCE-1")
    assert (a / "media" / "NONCE.TXT").read_text() == "TEST-NONCE-1\n"
    assert msb.read_nonce(a) == msb.read_nonce(a / "media") == "TEST-NONCE-1"
    b = msb.make_standin_base(tmp_path / "b")
    c = msb.make_standin_base(tmp_path / "c")
    assert msb.read_nonce(b) != msb.read_nonce(c)


def test_refuses_non_empty_destination_and_leaves_no_debris(tmp_path: Path) -> None:
    dest = tmp_path / "dest"
    dest.mkdir()
    (dest / "keep.txt").write_text("user file")
    with pytest.raises(msb.StandinError, match="not an empty folder"):
        msb.make_standin_base(dest)
    assert [p.name for p in dest.iterdir()] == ["keep.txt"]
    with pytest.raises(msb.StandinError, match="bad nonce"):
        msb.make_standin_base(tmp_path / "x", nonce="two\nlines")
    with pytest.raises(msb.StandinError, match="bad layout"):
        msb.make_standin_base(tmp_path / "y", layout="oscdimg")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dest"]


def test_cli(tmp_path: Path) -> None:
    script = REPO / "scripts" / "make_standin_base.py"
    ok = subprocess.run([sys.executable, str(script), str(tmp_path / "b"), "--layout", "bootbins", "--nonce", "N1"],
                        capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    assert "NOT WinPE" in ok.stdout and "nonce=N1" in ok.stdout
    assert (tmp_path / "b" / "bootbins" / "efisys_noprompt_EX.bin").is_file()
    bad = subprocess.run([sys.executable, str(script), str(tmp_path / "b")], capture_output=True, text=True)
    assert bad.returncode == 1
    assert bad.stderr.count("\n") == 1 and "not an empty folder" in bad.stderr

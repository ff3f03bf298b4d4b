"""Source discovery and validation for every base kind, and the bad ones."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from builder import sources
from builder.sources import resolve_source
from rescuekit.errors import RescueError, UsageError
from rk_build_helpers import (
    etfsboot, make_adk, make_copype, make_iso_plain, make_iso_udf, make_iso_udf_only, make_windows_folder,
    tree_hash, write,
)


def _same(a: Path, b: Path) -> bool:
    return a.read_bytes() == b.read_bytes()


@pytest.mark.parametrize("layout", ["fwfiles", "bootbins"])
def test_copype(kit, tmp_path, layout):
    base = make_copype(kit, tmp_path / "winpe", layout)
    before = tree_hash(base)
    src = resolve_source(base, workdir=tmp_path / "w")
    assert src.kind == f"copype-{layout}"
    assert src.boot_index == 1 and src.boot_image_name == "Microsoft Windows PE (amd64)"
    assert src.efisys == base / layout / "efisys.bin"
    assert src.etfsboot == base / layout / "etfsboot.com"
    assert src.media["sources/boot.wim"] == base / "media/sources/boot.wim"
    assert src.media["EFI/Boot/bootx64.efi"] == base / "media/EFI/Boot/bootx64.efi"
    assert "boot/bcd" in src.media and "en-us/bootmgr.efi.mui" in src.media
    noprompt = resolve_source(base, workdir=tmp_path / "w2", no_prompt=True)
    assert noprompt.efisys == base / layout / "efisys_noprompt.bin"
    assert tree_hash(base) == before


def test_bootbins_2023_uses_ex_files(kit, tmp_path):
    base = make_copype(kit, tmp_path / "winpe", "bootbins")
    src = resolve_source(base, workdir=tmp_path / "w", uefi_ca="2023")
    assert src.efisys == base / "bootbins/efisys_EX.bin"
    assert src.media["EFI/Boot/bootx64.efi"] == base / "bootbins/bootmgfw_EX.efi"
    # and the rest of Make2023BootableMedia: bootmgr_EX.efi as bootmgr.efi, Fonts_EX without _EX, from the image
    assert src.media["bootmgr.efi"].read_text() == "bootmgr 2023 (from wim)\n"
    for folder in ("boot/fonts", "EFI/Microsoft/Boot/Fonts"):
        assert src.media[f"{folder}/wgl4_boot.ttf"].read_text() == "font wgl4 2023\n"
        assert src.media[f"{folder}/segoe_slboot.ttf"].read_text() == "font segoe 2023\n"
    assert not any(k.lower().endswith("_ex.ttf") for k in src.media)
    src = resolve_source(base, workdir=tmp_path / "w2", uefi_ca="2023", no_prompt=True)
    assert src.efisys == base / "bootbins/efisys_noprompt_EX.bin"
    plain = resolve_source(base, workdir=tmp_path / "w3")
    assert plain.media["bootmgr.efi"] == base / "media/bootmgr.efi"
    assert plain.media["boot/fonts/wgl4_boot.ttf"] == base / "media/boot/fonts/wgl4_boot.ttf"


def test_fwfiles_2023_falls_back_to_boot_wim(kit, tmp_path):
    # Old copype has no _EX files; the WinPE image itself carries them (Windows/Boot/DVD_EX, EFI_EX).
    base = make_copype(kit, tmp_path / "winpe", "fwfiles")
    src = resolve_source(base, workdir=tmp_path / "w", uefi_ca="2023", no_prompt=True)
    assert _same(src.efisys, kit.efi["efisys_noprompt_EX.bin"])
    assert tmp_path / "w" in src.efisys.parents
    assert src.media["EFI/Boot/bootx64.efi"].read_text() == "bootmgfw 2023 (from wim)\n"


def test_adk_install(kit, tmp_path):
    adk = make_adk(kit, tmp_path / "pf86")
    for given in (adk, tmp_path / "pf86"):  # the ADK root, or Program Files (x86) above it
        src = resolve_source(given, workdir=tmp_path / "w")
        assert src.kind == "adk-install" and src.path == adk
        oscd = adk / "Deployment Tools/amd64/Oscdimg"
        assert src.etfsboot == oscd / "etfsboot.com" and src.efisys == oscd / "efisys.bin"
        # copype: winpe.wim becomes sources/boot.wim
        assert src.media["sources/boot.wim"] == adk / "Windows Preinstallation Environment/amd64/en-us/winpe.wim"
        assert "bootmgr" in src.media


def test_adk_missing_parts(kit, tmp_path):
    adk = make_adk(kit, tmp_path / "pf86")
    shutil.rmtree(adk / "Deployment Tools")
    with pytest.raises(RescueError, match="Oscdimg"):
        resolve_source(adk, workdir=tmp_path / "w")
    (adk / "Windows Preinstallation Environment/amd64/en-us/winpe.wim").unlink()
    with pytest.raises(RescueError, match="missing .*en-us/winpe.wim"):
        resolve_source(adk, workdir=tmp_path / "w")


def test_no_source_outside_windows(tmp_path):
    with pytest.raises(UsageError, match="no --source"):
        resolve_source(None, workdir=tmp_path / "w")


def test_windows_folder_picks_winpe_not_setup(kit, tmp_path):
    folder = make_windows_folder(kit, tmp_path / "win")
    src = resolve_source(folder, workdir=tmp_path / "w")
    assert src.kind == "windows-folder"
    assert (src.boot_index, src.boot_image_name) == (1, "Microsoft Windows PE (x64)")
    assert src.etfsboot == folder / "boot/etfsboot.com"
    assert src.efisys == folder / "efi/microsoft/boot/efisys.bin"
    assert not any("install.wim" in k or k == "setup.exe" or k.startswith("support") for k in src.media)
    assert {"bootmgr", "bootmgr.efi", "boot/bcd", "boot/boot.sdi", "sources/boot.wim"} <= set(src.media)
    # Setup can still be chosen on purpose.
    assert resolve_source(folder, workdir=tmp_path / "w2", image=2).boot_image_name == "Microsoft Windows Setup (x64)"


def test_windows_iso_udf(kit, tmp_path):
    folder = make_windows_folder(kit, tmp_path / "win")
    iso = make_iso_udf(folder, tmp_path / "win.iso")
    before = tree_hash(iso)
    src = resolve_source(iso, workdir=tmp_path / "w")
    assert src.kind == "windows-iso" and src.path == iso
    # Names come from UDF (original case), files from the ISO, and only the boot files.
    assert {"bootmgr", "bootmgr.efi", "boot/etfsboot.com", "efi/microsoft/boot/efisys.bin",
            "sources/boot.wim"} <= set(src.media)
    assert not any("install.wim" in k for k in src.media)
    assert _same(src.media["sources/boot.wim"], kit.setup_wim)
    assert _same(src.efisys, kit.efi["efisys.bin"]) and _same(src.etfsboot, kit.etfs)
    assert src.boot_index == 1
    assert tree_hash(iso) == before


def test_windows_iso_udf_only_like_real_media(kit, tmp_path):
    folder = make_windows_folder(kit, tmp_path / "win")
    iso = make_iso_udf_only(folder, tmp_path / "win11.iso")
    src = resolve_source(iso, workdir=tmp_path / "w", uefi_ca="2023")
    assert src.kind == "windows-iso"
    assert _same(src.media["sources/boot.wim"], kit.setup_wim) and _same(src.etfsboot, kit.etfs)
    # install media have no efisys_EX.bin on disc: it comes from the WinPE image
    assert _same(src.efisys, kit.efi["efisys_EX.bin"])


def test_windows_iso_without_udf(kit, tmp_path):
    folder = make_windows_folder(kit, tmp_path / "win")
    iso = make_iso_plain(folder, tmp_path / "plain.iso")
    src = resolve_source(iso, workdir=tmp_path / "w", no_prompt=True)
    assert "efi/microsoft/boot/efisys_noprompt.bin" in src.media
    assert _same(src.efisys, kit.efi["efisys_noprompt.bin"])


def test_winre(kit, tmp_path):
    base = make_copype(kit, tmp_path / "winpe")
    src = resolve_source(kit.winre_wim, workdir=tmp_path / "w", boot_files=base)
    assert src.kind == "winre" and src.boot_wim == kit.winre_wim and src.path == kit.winre_wim
    assert src.boot_image_name == "Microsoft Windows Recovery Environment (x64)"
    assert src.efisys == base / "fwfiles/efisys.bin"
    with pytest.raises(UsageError, match="needs --boot-files"):
        resolve_source(kit.winre_wim, workdir=tmp_path / "w")
    with pytest.raises(UsageError, match="only used with a WIM"):
        resolve_source(base, workdir=tmp_path / "w", boot_files=base)
    # a second WIM gives no boot files: say so instead of "not a folder, an ISO or a WIM file"
    with pytest.raises(UsageError, match=f"--boot-files {kit.winpe_wim} is a WIM: give a copype folder"):
        resolve_source(kit.winre_wim, workdir=tmp_path / "w", boot_files=kit.winpe_wim)


def test_bad_sources(kit, tmp_path):
    w = tmp_path / "w"
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(RescueError, match=f"not a WinPE base: {empty} is an empty folder"):
        resolve_source(empty, workdir=w)
    other = tmp_path / "other"
    write(other / "readme.txt", "hi")
    with pytest.raises(RescueError, match="not a WinPE base: .*no media/"):
        resolve_source(other, workdir=w)
    rnd = write(tmp_path / "random.bin", bytes(range(256)) * 200)
    with pytest.raises(RescueError, match=f"not a WinPE base: {rnd} \\(not a folder, an ISO or a WIM"):
        resolve_source(rnd, workdir=w)
    with pytest.raises(RescueError, match="source not found"):
        resolve_source(tmp_path / "nope", workdir=w)
    iso = make_iso_plain(other, tmp_path / "linux.iso")
    with pytest.raises(RescueError, match=f"not a Windows/WinPE ISO: {iso} \\(no sources/boot.wim\\)"):
        resolve_source(iso, workdir=w)
    base = make_copype(kit, tmp_path / "pe")
    with pytest.raises(RescueError, match="no images in WIM"):
        resolve_source(kit.empty_wim, workdir=w, boot_files=base)
    with pytest.raises(UsageError, match="unknown --uefi-ca"):
        resolve_source(base, workdir=w, uefi_ca="2099")


def test_bad_boot_files(kit, tmp_path):
    w = tmp_path / "w"
    base = make_copype(kit, tmp_path / "pe")
    media_only = tmp_path / "mo"
    shutil.copytree(base / "media", media_only / "media")
    with pytest.raises(RescueError, match="missing fwfiles/ or bootbins/"):
        resolve_source(media_only, workdir=w)
    big = etfsboot(base / "fwfiles/etfsboot.com")
    big.write_bytes(big.read_bytes() * 17)
    with pytest.raises(RescueError, match="BIOS boot image of the wrong size: .*69632 bytes"):
        resolve_source(base, workdir=w)
    big.write_bytes(b"")
    with pytest.raises(RescueError, match="BIOS boot image of the wrong size"):
        resolve_source(base, workdir=w)
    big.unlink()  # no etfsboot.com anywhere -> UEFI-only, like arm64 copype
    (base / "fwfiles/efisys.bin").write_bytes(b"\0" * 1474560)
    with pytest.raises(RescueError, match="UEFI boot image is not a FAT image: .*efisys.bin"):
        resolve_source(base, workdir=w)


def test_missing_efisys_and_no_bootable_image(kit, tmp_path):
    w = tmp_path / "w"
    base = make_copype(kit, tmp_path / "pe")
    (base / "fwfiles/efisys.bin").unlink()
    # Also absent from the boot image -> error naming the file
    bare = tmp_path / "bare.wim"
    pe = tmp_path / "bare"
    write(pe / "Windows/System32/startnet.cmd", "wpeinit\r\n")
    import subprocess
    subprocess.run(["wimlib-imagex", "capture", str(pe), str(bare), "Microsoft Windows PE"], check=True,
                   capture_output=True)
    shutil.copyfile(bare, base / "media/sources/boot.wim")
    with pytest.raises(RescueError, match="missing UEFI boot image efisys.bin in .*fwfiles"):
        resolve_source(base, workdir=w)
    two = tmp_path / "two.wim"
    subprocess.run(["wimlib-imagex", "capture", str(pe), str(two), "Data A"], check=True, capture_output=True)
    subprocess.run(["wimlib-imagex", "append", str(pe), str(two), "Windows Setup"], check=True, capture_output=True)
    with pytest.raises(RescueError, match="no bootable WinPE image in WIM: .*1='Data A', 2='Windows Setup'"):
        sources.choose_boot_image(two)


def test_uefi_only_when_no_etfsboot(kit, tmp_path):
    base = make_copype(kit, tmp_path / "pe")
    (base / "fwfiles/etfsboot.com").unlink()
    src = resolve_source(base, workdir=tmp_path / "w")
    # The WinPE image has no Windows/Boot/PCAT/etfsboot.com either.
    assert src.etfsboot is None and any("UEFI-only" in n for n in src.notes)


def test_output_inside_source_refused(kit, tmp_path):
    base = make_copype(kit, tmp_path / "pe")
    src = resolve_source(base, workdir=tmp_path / "w")
    with pytest.raises(UsageError, match="inside the source folder"):
        sources.check_output_outside(src, base / "media" / "x.iso")
    sources.check_output_outside(src, tmp_path / "x.iso")


def test_installed_adk_found_on_windows(kit, tmp_path, monkeypatch):
    # Only the lookup is Windows-specific: point %ProgramFiles(x86)% at a fake install.
    make_adk(kit, tmp_path / "Program Files (x86)")
    monkeypatch.setattr(sources, "_on_windows", lambda: True)
    monkeypatch.setenv("ProgramFiles(x86)", str(tmp_path / "Program Files (x86)"))
    src = resolve_source(None, workdir=tmp_path / "w")
    assert src.kind == "adk-install"
    assert src.path == tmp_path / "Program Files (x86)/Windows Kits/10/Assessment and Deployment Kit"
    monkeypatch.setenv("ProgramFiles(x86)", str(tmp_path / "nowhere"))
    with pytest.raises(UsageError, match="no --source given and no Windows ADK"):
        resolve_source(None, workdir=tmp_path / "w")


@pytest.mark.parametrize("maker", [make_iso_udf, make_iso_plain])
def test_truncated_iso(kit, tmp_path, maker):
    folder = make_windows_folder(kit, tmp_path / "win")
    iso = maker(folder, tmp_path / "win.iso")
    data = iso.read_bytes()
    for n in (20, 40, 300, len(data) // 2048 - 200, len(data) // 2048 - 2):
        cut = tmp_path / f"cut{n}.iso"
        cut.write_bytes(data[: n * 2048])
        with pytest.raises(RescueError, match=f"(cannot read|truncated) ISO {cut}"):
            resolve_source(cut, workdir=tmp_path / f"w{n}")


def test_crafted_iso_names_cannot_write_outside_the_workdir(kit, tmp_path):
    """Joliet records carry no checksum: a hostile disc can name a file "../../../x". Reading it must not create
    (or truncate) anything outside the work folder."""
    from rk_build_helpers import run

    folder = make_windows_folder(kit, tmp_path / "win")
    placeholder = "Z" * 30 + ".txt"
    write(folder / "boot" / placeholder, "x\n")
    iso = tmp_path / "evil.iso"
    run(["xorriso", "-as", "mkisofs", "-quiet", "-J", "-V", "EVIL", "-o", str(iso), str(folder)])
    data = iso.read_bytes()
    evil = "../../../../escaped.txt".ljust(len(placeholder), "x")
    assert data.count(placeholder.encode("utf-16-be")) == 1
    iso.write_bytes(data.replace(placeholder.encode("utf-16-be"), evil.encode("utf-16-be")))
    victim = write(tmp_path / evil.split("/")[-1], "user data\n")  # where the crafted name points
    work = tmp_path / "b" / "w"  # the crafted name climbs from work/iso-media/boot to tmp_path
    with pytest.raises(RescueError, match=f"unsafe file name in ISO {iso}: '/boot/../../../../escaped"):
        resolve_source(iso, workdir=work)
    assert victim.read_text() == "user data\n"

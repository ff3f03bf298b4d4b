"""Helpers for the builder tests: small but real WinPE-shaped bases (real WIMs, FAT images, ISOs)."""
from __future__ import annotations

import hashlib
import io
import os
import re
import shutil
import struct
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import RK_HOST


def require_tools(*tools: str) -> None:
    """Fail (not skip) when a system tool that .ci/run installs is missing."""
    missing = [t for t in tools if shutil.which(t) is None]
    if missing:
        pytest.fail(f"missing system tools {missing}: run .ci/run or install them (see README)")


TOOLS = ("wimlib-imagex", "mkfs.vfat", "mcopy", "genisoimage", "xorriso")
EPOCH = "1700000000"


def rk_build(*args: str, env=None) -> subprocess.CompletedProcess:
    """``rescuekit build ARGS`` as a user runs it, as plain WinPE (``--no-runtime``): these tests are about the
    base, the boot files and the ISO; the runtime overlay is tested in tests/overlay and tests/boot."""
    return subprocess.run([*RK_HOST, "build", "--no-runtime", *args], capture_output=True, text=True, env=env)


def run(cmd: list[str], **kw) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, check=True, capture_output=True, text=True, **kw)


def write(path: Path, data: bytes | str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data.encode() if isinstance(data, str) else data)
    return path


def fat_image(path: Path, tag: str) -> Path:
    """A 1.44 MB FAT12 image (like efisys.bin) holding EFI/BOOT/BOOTX64.EFI and a TAG.TXT naming it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    run(["mkfs.vfat", "-C", "-i", "12345678", "-n", "EFISYS", str(path), "1440"])
    src = path.parent / f".{path.name}.tag"
    src.write_text(tag + "\n")
    run(["mmd", "-i", str(path), "::/EFI", "::/EFI/BOOT"])
    run(["mcopy", "-i", str(path), str(src), "::/TAG.TXT"])
    run(["mcopy", "-i", str(path), str(src), "::/EFI/BOOT/BOOTX64.EFI"])
    src.unlink()
    return path


def etfsboot(path: Path, tag: str = "etfsboot") -> Path:
    """A 4 KiB stand-in for etfsboot.com (distinct bytes, so a patched boot info table would show)."""
    data = (f"RKBIOS:{tag}:".encode() * 400)[:4096]
    return write(path, data)


def tree_hash(root: Path) -> str:
    """Hash of every path, mode-independent, and content under root (or of one file)."""
    h = hashlib.sha256()
    paths = [root] if root.is_file() else sorted(root.rglob("*"))
    for p in paths:
        h.update(str(p.relative_to(root) if p != root else p.name).encode())
        if p.is_file():
            h.update(p.read_bytes())
            h.update(str(p.stat().st_mtime_ns).encode())
    return h.hexdigest()


@dataclass
class Kit:
    """Session-wide ingredients built once."""

    root: Path
    pe_tree: Path
    winpe_wim: Path  # 1 image, boot index 1
    setup_wim: Path  # 2 images: 1 = Windows PE, 2 = Windows Setup (boot index 2)
    winre_wim: Path  # 1 image named like WinRE
    empty_wim: Path  # valid header, 0 images
    efi: dict[str, Path]  # efisys variants by file name
    etfs: Path


def _media(media: Path, boot_wim: Path | None) -> None:
    write(media / "bootmgr", "bootmgr (test)\n")
    write(media / "bootmgr.efi", "bootmgr.efi (test)\n")
    write(media / "boot/bcd", "BCD\n")
    write(media / "boot/boot.sdi", b"\0" * 3000)
    write(media / "boot/fonts/wgl4_boot.ttf", "font\n")
    write(media / "boot/en-us/bootsect.exe.mui", "mui\n")
    write(media / "EFI/Boot/bootx64.efi", "bootx64 2011 (media)\n")
    write(media / "EFI/Microsoft/Boot/BCD", "BCD\n")
    write(media / "en-us/bootmgr.efi.mui", "mui\n")
    write(media / "A Long File Name With Spaces And More Than Thirty Characters.txt", "long\n")
    if boot_wim is not None:
        (media / "sources").mkdir(parents=True, exist_ok=True)
        shutil.copyfile(boot_wim, media / "sources/boot.wim")


def make_copype(kit: Kit, dest: Path, layout: str = "fwfiles") -> Path:
    """What ``copype amd64 DIR`` makes: media/, mount/, fwfiles/ (or bootbins/ on ADK 10.1.26100+)."""
    _media(dest / "media", kit.winpe_wim)
    (dest / "mount").mkdir()
    bins = dest / layout
    bins.mkdir()
    shutil.copyfile(kit.etfs, bins / "etfsboot.com")
    names = ["efisys.bin", "efisys_noprompt.bin"]
    if layout == "bootbins":
        names += ["efisys_EX.bin", "efisys_noprompt_EX.bin"]
        write(bins / "bootmgfw.efi", "bootmgfw 2011 (bootbins)\n")
        write(bins / "bootmgfw_EX.efi", "bootmgfw 2023 (bootbins)\n")
    for n in names:
        shutil.copyfile(kit.efi[n], bins / n)
    return dest


def make_adk(kit: Kit, dest: Path) -> Path:
    """An installed ADK + WinPE add-on (Program Files (x86)/Windows Kits/10/...); returns the ADK root."""
    adk = dest / "Windows Kits/10/Assessment and Deployment Kit"
    pe = adk / "Windows Preinstallation Environment/amd64"
    _media(pe / "Media", None)
    (pe / "en-us").mkdir(parents=True)
    shutil.copyfile(kit.winpe_wim, pe / "en-us/winpe.wim")
    oscd = adk / "Deployment Tools/amd64/Oscdimg"
    oscd.mkdir(parents=True)
    shutil.copyfile(kit.etfs, oscd / "etfsboot.com")
    for n in kit.efi:
        shutil.copyfile(kit.efi[n], oscd / n)
    return adk


def make_windows_folder(kit: Kit, dest: Path) -> Path:
    """An extracted Windows 10/11 install ISO (lower-case names as on real media)."""
    write(dest / "bootmgr", "bootmgr (win)\n")
    write(dest / "bootmgr.efi", "bootmgr.efi (win)\n")
    write(dest / "setup.exe", "setup\n")
    write(dest / "autorun.inf", "[autorun]\n")
    shutil.copyfile(kit.etfs, write(dest / "boot/etfsboot.com", b""))
    write(dest / "boot/bcd", "BCD\n")
    write(dest / "boot/boot.sdi", b"\0" * 3000)
    write(dest / "efi/boot/bootx64.efi", "bootx64 (win)\n")
    write(dest / "efi/microsoft/boot/bcd", "BCD\n")
    for n in ("efisys.bin", "efisys_noprompt.bin"):
        shutil.copyfile(kit.efi[n], write(dest / "efi/microsoft/boot" / n, b""))
    shutil.copyfile(kit.setup_wim, write(dest / "sources/boot.wim", b""))
    write(dest / "sources/install.wim", b"not needed on rescue media\n" * 100)
    write(dest / "support/logging/x.txt", "x\n")
    return dest


def make_iso_udf(tree: Path, iso: Path) -> Path:
    """A UDF+ISO 9660 ISO like Windows install media (ISO 9660 names are 8.3-ish, real names only in UDF)."""
    run(["genisoimage", "-quiet", "-udf", "-V", "WINTEST", "-o", str(iso), str(tree)])
    return iso


def make_iso_udf_only(tree: Path, iso: Path) -> Path:
    """Like a real Windows install ISO: every file only in UDF; the ISO 9660 tree holds a README stub."""
    import pycdlib

    out = pycdlib.PyCdlib()
    out.new(interchange_level=3, udf="2.60", vol_ident="CCCOMA_X64FRE")
    readme = b"This disc contains a \"UDF\" file system and requires an operating system that supports it.\r\n"
    out.add_fp(io.BytesIO(readme), len(readme), iso_path="/README.TXT;1")
    for p in sorted(tree.rglob("*")):
        rel = "/" + p.relative_to(tree).as_posix()
        if p.is_dir():
            out.add_directory(udf_path=rel)
        else:
            out.add_file(str(p), udf_path=rel)
    out.write(str(iso))
    out.close()
    return iso


def make_iso_plain(tree: Path, iso: Path) -> Path:
    """An ISO with Rock Ridge + Joliet and no UDF (xorriso)."""
    run(["xorriso", "-as", "mkisofs", "-quiet", "-R", "-J", "-V", "PLAIN", "-o", str(iso), str(tree)])
    return iso


def make_iso_genisoimage_boot(tree: Path, etfsboot: Path, efisys: Path, iso: Path) -> Path:
    """``tree`` mastered by genisoimage -udf, the recipe people use on Linux: UDF 1.02 + ISO 9660 (``BOOTMGR.;1``)
    + Joliet, BIOS (8 sectors) and UEFI (``-e``, whole image) El Torito entries, boot images hidden."""
    require_tools("genisoimage")
    work = iso.parent / f".{iso.name}.tree"
    shutil.copytree(tree, work)
    try:
        shutil.copyfile(etfsboot, work / "etfsboot.com")
        shutil.copyfile(efisys, work / "efisys.bin")
        run(["genisoimage", "-quiet", "-udf", "-iso-level", "3", "-J", "-V", "GEN", "-b", "etfsboot.com",
             "-no-emul-boot", "-boot-load-size", "8", "-hide", "etfsboot.com", "-hide", "efisys.bin",
             "-hide", "boot.catalog", "-eltorito-alt-boot", "-e", "efisys.bin", "-no-emul-boot",
             "-o", str(iso), str(work)])
    finally:
        shutil.rmtree(work)
    return iso


def patch_sector(iso: Path, out: Path, lba: int, edit) -> Path:
    """A copy of ``iso`` at ``out`` with sector ``lba`` changed in place by ``edit(bytearray)``."""
    data = bytearray(iso.read_bytes())
    sector = bytearray(data[lba * 2048:(lba + 1) * 2048])
    edit(sector)
    data[lba * 2048:(lba + 1) * 2048] = sector
    out.write_bytes(bytes(data))
    return out


def split_udf_extent(iso: Path, out: Path, rel: str) -> Path:
    """A copy of ``iso`` whose UDF File Entry for ``rel`` has two short_ads (1 byte + the rest, both from the file's
    first block, so the bytes read are wrong but the layout is what matters): a file that is not in one extent."""
    from builder import isocheck

    with open(iso, "rb") as f:
        udf = isocheck.Udf.open(isocheck.Disc(f, iso.stat().st_size, iso.name))
        ent = udf.lookup(rel)[-1]
    assert ent.single_extent and ent.size > 1 and ent.tag == 261 and ent.ad_type == 0

    def split(b: bytearray) -> None:
        (l_ea,) = struct.unpack_from("<I", b, 168)
        off = 176 + l_ea
        length, pos = struct.unpack_from("<II", b, off)
        struct.pack_into("<IIII", b, off, 1, pos, length - 1, pos)
        struct.pack_into("<I", b, 172, 16)
        (crc_len,) = struct.unpack_from("<H", b, 10)
        crc_len += 8  # ECMA-167 3/7.2: the CRC covers the descriptor after the tag; recompute CRC and checksum
        struct.pack_into("<HH", b, 8, isocheck._crc_itu(bytes(b[16:16 + crc_len])), crc_len)
        b[4] = (sum(b[:4]) + sum(b[5:16])) & 0xFF

    return patch_sector(iso, out, ent.icb, split)


def el_torito(iso: Path) -> list[dict]:
    """Boot entries as xorriso reports them (a tool we did not write)."""
    out = run(["xorriso", "-indev", str(iso), "-report_el_torito", "plain"]).stdout
    entries = []
    for line in out.splitlines():
        m = re.match(r"El Torito boot img :\s+(\d+)\s+(\S+)\s+(\S)\s+(\S+)\s+(\S+)\s+(\S+)\s+(\d+)\s+(\d+)", line)
        if m:
            entries.append({"n": int(m[1]), "platform": m[2], "bootable": m[3], "emul": m[4],
                            "load_size": int(m[7]), "lba": int(m[8])})
    return entries


def make_kit(root: Path) -> Kit:
    """Build the shared ingredients in root."""
    require_tools(*TOOLS)
    efi = {n: fat_image(root / "efi" / n, n) for n in
           ("efisys.bin", "efisys_noprompt.bin", "efisys_EX.bin", "efisys_noprompt_EX.bin")}
    pe = root / "pe"
    write(pe / "Windows/System32/startnet.cmd", "wpeinit\r\n")
    write(pe / "Windows/Boot/EFI/bootmgfw.efi", "bootmgfw 2011\n")
    write(pe / "Windows/Boot/EFI_EX/bootmgfw_EX.efi", "bootmgfw 2023 (from wim)\n")
    write(pe / "Windows/Boot/PCAT/bootmgr", "bootmgr\n")
    write(pe / "Windows/Boot/EFI_EX/bootmgr_EX.efi", "bootmgr 2023 (from wim)\n")
    write(pe / "Windows/Boot/Fonts_EX/wgl4_boot_EX.ttf", "font wgl4 2023\n")
    write(pe / "Windows/Boot/Fonts_EX/segoe_slboot_EX.ttf", "font segoe 2023\n")
    for name, img in efi.items():
        sub = "DVD_EX" if "_EX" in name else "DVD"
        dst = pe / f"Windows/Boot/{sub}/EFI/en-US/{name}"
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(img, dst)
    env = {**os.environ, "WIMLIB_IMAGEX_IGNORE_CASE": "1"}
    winpe = root / "winpe.wim"
    run(["wimlib-imagex", "capture", str(pe), str(winpe), "Microsoft Windows PE (amd64)", "--boot"], env=env)
    setup = root / "setup-boot.wim"
    run(["wimlib-imagex", "capture", str(pe), str(setup), "Microsoft Windows PE (x64)"], env=env)
    write(pe / "sources/setup.exe", "setup\n")
    run(["wimlib-imagex", "append", str(pe), str(setup), "Microsoft Windows Setup (x64)", "--boot"], env=env)
    (pe / "sources/setup.exe").unlink()
    (pe / "sources").rmdir()
    winre = root / "winre.wim"
    write(pe / "Windows/System32/winpeshl.ini", "[LaunchApps]\r\nrecenv.exe\r\n")
    run(["wimlib-imagex", "capture", str(pe), str(winre), "Microsoft Windows Recovery Environment (x64)"], env=env)
    (pe / "Windows/System32/winpeshl.ini").unlink()
    # 0 images: wimlib refuses to delete the last image, so cut a 2-image WIM's header instead.
    empty = root / "empty.wim"
    data = bytearray(setup.read_bytes())
    data[0x2C:0x30] = (0).to_bytes(4, "little")
    data[0x78:0x7C] = (0).to_bytes(4, "little")
    empty.write_bytes(bytes(data))
    return Kit(root, pe, winpe, setup, winre, empty, efi, etfsboot(root / "etfsboot.com"))

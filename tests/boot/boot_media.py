"""Helpers for the boot tests: media shaped like MakeWinPEMedia output, made with tools we did not write."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

sys.path.append(str(Path(__file__).resolve().parents[2]))  # repo root (after site-packages), for tests.conftest
from tests.conftest import require_tools  # noqa: E402

# QEMU under TCG on a loaded 2-core machine: a generous bound, not a timing assertion (boots take ~1-10 s).
BOOT_TIMEOUT = 240.0


def fw_dir(base: Path) -> Path:
    """The firmware boot files folder of a copype-style base: fwfiles (old ADK) or bootbins (new)."""
    return next(d for d in (base / "fwfiles", base / "bootbins") if d.is_dir())


def xorriso_iso(base: Path, out: Path, efisys: str = "efisys.bin", *, media: Path | None = None,
                load_size: int = 8, boot_info_table: bool = False, exact_names: bool = True) -> Path:
    """An ISO shaped like ``MakeWinPEMedia /ISO`` (oscdimg -bootdata:2#p0,e,b<etfsboot.com>#pEF,e,b<efisys.bin>),
    made with xorriso: BIOS no-emulation entry loading 8 x 512 bytes with NO boot info table, UEFI no-emulation
    entry, ISO 9660 level 3 + Joliet, and NO UDF (xorriso has none).  Boot images and catalog are hidden from the
    directory tree, like oscdimg.  ``exact_names``: ISO 9660 names as oscdimg writes them (``-N -d``: ``BOOTMGR``,
    not xorriso's default ``BOOTMGR.;1``).  ``load_size``/``boot_info_table``/``exact_names=False`` make it wrong on
    purpose (what etfsboot.com must not get)."""
    require_tools("xorriso")
    fw = fw_dir(base)
    media = media or base / "media"
    cmd = ["xorriso", "-as", "mkisofs", "-quiet", "-iso-level", "3", *(["-N", "-d"] if exact_names else []),
           "-J", "-joliet-long", "-V", "STANDIN",
           "-o", str(out), "-graft-points",
           "-b", "/.bootimg/etfsboot.com", "-no-emul-boot", "-boot-load-size", str(load_size),
           *(["-boot-info-table"] if boot_info_table else []), "-c", "/.bootimg/boot.cat",
           "-eltorito-alt-boot", "-e", f"/.bootimg/{efisys}", "-no-emul-boot",
           "-hide", "/.bootimg", "-hide-joliet", "/.bootimg",
           f"/={media}", f"/.bootimg/etfsboot.com={fw / 'etfsboot.com'}", f"/.bootimg/{efisys}={fw / efisys}"]
    subprocess.run(cmd, check=True, capture_output=True)
    return out


def usb_image(media: Path, out: Path, size_mib: int = 48) -> Path:
    """A USB-stick image like ``MakeWinPEMedia /UFD``: MBR, one active FAT32 partition at 1 MiB, media files copied
    (sfdisk + mkfs.vfat --offset + mcopy, no mounting)."""
    require_tools("sfdisk", "mkfs.vfat", "mcopy")
    with open(out, "wb") as f:
        f.truncate(size_mib << 20)
    subprocess.run(["sfdisk", "--quiet", str(out)], input="label: dos\nstart=2048, type=c, bootable\n",
                   text=True, check=True, capture_output=True)
    sectors = (size_mib << 20) // 512 - 2048
    subprocess.run(["mkfs.vfat", "-F", "32", "-n", "WINPE", "--offset", "2048", str(out), str(sectors // 2)],
                   check=True, capture_output=True)
    env = dict(os.environ, MTOOLS_SKIP_CHECK="1")
    subprocess.run(["mcopy", "-s", "-i", f"{out}@@1M", *[str(p) for p in sorted(media.iterdir())], "::/"],
                   check=True, capture_output=True, env=env)
    return out


def el_torito_entries(iso: Path) -> list[dict[str, str]]:
    """The El Torito boot entries as ``xorriso -report_el_torito plain`` lists them (a tool we did not write):
    one dict per entry with keys N, Pltf, B, Emul, Ld_seg, Hdpt, Ldsiz, LBA."""
    require_tools("xorriso")
    rep = subprocess.run(["xorriso", "-indev", str(iso), "-report_el_torito", "plain"],
                         check=True, capture_output=True, text=True).stdout
    keys = ["N", "Pltf", "B", "Emul", "Ld_seg", "Hdpt", "Ldsiz", "LBA"]
    return [dict(zip(keys, line.split(":", 1)[1].split()))
            for line in rep.splitlines() if line.startswith("El Torito boot img :")]

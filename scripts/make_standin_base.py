#!/usr/bin/env python3
"""Make a stand-in WinPE base in the ADK ``copype amd64 DIR`` layout (for tests and for trying rescuekit).

It is NOT WinPE and says so everywhere (``media/RESCUEKIT-STANDIN.TXT``, the WIM image name, every boot
program's output).  What it has, so that ``rescuekit build`` and real firmware can work with it:

- ``DIR/media/``: ``bootmgr`` (a NASM program, see standin/bootmgr.asm: what the BIOS chain of a USB stick
  starts), ``bootmgr.efi``, ``boot/bcd``, ``boot/boot.sdi``, ``boot/fonts/*`` ... (small labelled
  placeholders), ``EFI/Boot/bootx64.efi`` (a standalone GRUB, so a USB stick made from the media UEFI-boots),
  ``EFI/Microsoft/Boot/BCD``, ``sources/boot.wim`` (a real 1-image WIM, bootable, WinPE-shaped tree with
  ``Windows/System32/startnet.cmd``) and ``NONCE.TXT`` (a per-run nonce the boot programs read from the medium).
- ``DIR/mount/`` (empty) and the firmware boot files in ``DIR/fwfiles/`` (old ADK) or ``DIR/bootbins/`` (ADK 10.1.26100+):
  ``etfsboot.com`` (a NASM program, see standin/biosboot.asm), ``efisys.bin`` / ``efisys_noprompt.bin`` (FAT images
  holding ``EFI/BOOT/BOOTX64.EFI`` = GRUB); bootbins adds ``efisys_EX.bin``, ``efisys_noprompt_EX.bin``,
  ``bootmgfw.efi``, ``bootmgfw_EX.efi``.

Every boot program prints ``RESCUEKIT STAND-IN ...``, then ``NONCE=<nonce>`` and ``RESCUEKIT BIOS OK`` /
``RESCUEKIT UEFI OK`` on the serial port.  The UEFI ones also print ``VARIANT=<file> CA2011|CA2023 PROMPT|NOPROMPT``
so a test can tell which boot file the firmware ran.

    python3 scripts/make_standin_base.py OUTDIR [--layout fwfiles|bootbins] [--nonce TEXT]
"""
from __future__ import annotations

import argparse
import os
import re
import secrets
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
BIOS_ASM = HERE / "standin" / "biosboot.asm"
BOOTMGR_ASM = HERE / "standin" / "bootmgr.asm"
GRUB_DIR = Path("/usr/lib/grub/x86_64-efi")

WIM_NAME = "rescuekit stand-in (NOT WinPE)"
WIM_DESCRIPTION = "rescuekit stand-in (NOT WinPE): test tree shaped like WinPE, made by scripts/make_standin_base.py"
MARKER_FILE = "RESCUEKIT-STANDIN.TXT"
NONCE_FILE = "NONCE.TXT"  # 8.3 upper case: the same name in ISO 9660, Joliet and UDF
LAYOUTS = ("fwfiles", "bootbins")

BIOS_OK = "RESCUEKIT BIOS OK"
UEFI_OK = "RESCUEKIT UEFI OK"

# GRUB modules the embedded grub.cfg needs; their dependencies are added from moddep.lst.
GRUB_MODULES = [
    "normal", "configfile", "echo", "cat", "test", "sleep", "halt", "reboot", "serial", "terminal",
    "search", "search_fs_file", "part_gpt", "part_msdos", "disk",
]
GRUB_FS_MODULES = ["iso9660", "udf", "fat"]
GRUB_CFG_INSMOD = ["echo", "cat", "test", "sleep", "halt", "search", "search_fs_file", "part_gpt", "part_msdos"]

MARKER_TEXT = """\
RESCUEKIT STAND-IN - THIS IS NOT WINDOWS PE.

This folder was made by rescuekit's scripts/make_standin_base.py for tests and for trying rescuekit
without Windows files.  Its boot programs only print markers to the serial port and the screen
("RESCUEKIT STAND-IN ...") and read NONCE.TXT from the medium.  sources/boot.wim is a tiny WIM
("{name}") shaped like WinPE, with no Windows in it.
"""


@dataclass(frozen=True)
class EfiVariant:
    """One stand-in EFI program: which boot file it stands in for and what it prints."""

    file: str  # the Windows file it stands in for
    ca: str  # "CA2011" or "CA2023"
    prompt: bool  # efisys.bin prompts "Press any key"; the stand-in only says so

    @property
    def marker(self) -> str:
        return f"VARIANT={self.file} {self.ca} {'PROMPT' if self.prompt else 'NOPROMPT'}"


EFISYS = {
    "efisys.bin": EfiVariant("efisys.bin", "CA2011", True),
    "efisys_noprompt.bin": EfiVariant("efisys_noprompt.bin", "CA2011", False),
    "efisys_EX.bin": EfiVariant("efisys_EX.bin", "CA2023", True),
    "efisys_noprompt_EX.bin": EfiVariant("efisys_noprompt_EX.bin", "CA2023", False),
}
BOOTMGFW = EfiVariant("bootmgfw.efi", "CA2011", False)
BOOTMGFW_EX = EfiVariant("bootmgfw_EX.efi", "CA2023", False)


class StandinError(RuntimeError):
    """A stand-in base could not be made (missing tool, bad argument); one-line message."""


def _run(cmd: list[str], **kw) -> subprocess.CompletedProcess:
    if shutil.which(cmd[0]) is None:
        raise StandinError(f"{cmd[0]} not found: install it (bash scripts/install-deps.sh)")
    proc = subprocess.run(cmd, capture_output=True, text=True, **kw)
    if proc.returncode != 0:
        detail = (proc.stderr or proc.stdout).strip().splitlines()
        raise StandinError(f"{cmd[0]} failed (exit {proc.returncode}): {detail[-1] if detail else ''}")
    return proc


def build_bios_boot(dest: Path) -> Path:
    """Assemble the etfsboot.com stand-in (4096 bytes, no boot info table needed)."""
    _run(["nasm", "-f", "bin", "-I", f"{BIOS_ASM.parent}/", "-o", str(dest), str(BIOS_ASM)])
    size = dest.stat().st_size
    if size != 4096:
        raise StandinError(f"{dest}: BIOS boot program is {size} bytes, expected 4096")
    return dest


def build_bootmgr(dest: Path, nonce: str) -> Path:
    """Assemble the bootmgr stand-in (standin/bootmgr.asm) with the nonce built in: on a USB stick, syslinux's
    chain.c32 ``ntldr=/bootmgr`` starts it as a FAT32 boot sector starts the real bootmgr."""
    _run(["nasm", "-f", "bin", "-I", f"{BOOTMGR_ASM.parent}/", f"-DNONCE=\"{nonce}\"", "-o", str(dest),
          str(BOOTMGR_ASM)])
    return dest


def _grub_module_closure(names: list[str]) -> list[str]:
    deps: dict[str, list[str]] = {}
    for line in (GRUB_DIR / "moddep.lst").read_text().splitlines():
        mod, _, rest = line.partition(":")
        deps[mod.strip()] = rest.split()
    todo, seen = list(names), set()
    while todo:
        mod = todo.pop()
        if mod in seen:
            continue
        if mod not in deps:
            raise StandinError(f"GRUB module {mod} not in {GRUB_DIR}/moddep.lst")
        seen.add(mod)
        todo.extend(deps[mod])
    return sorted(seen)


def grub_cfg(variant: EfiVariant) -> str:
    """The embedded grub.cfg: markers to the console, find the medium by NONCE.TXT, print it, power off.

    Output goes to the EFI console only: OVMF mirrors it to COM1, real machines show it on screen.  (GRUB's own
    serial terminal as well would interleave ``cat`` output character by character with the console copy.)
    """
    mods = " ".join(GRUB_CFG_INSMOD + GRUB_FS_MODULES)
    return f"""\
for m in {mods}; do insmod $m; done
# `search` autoloads every filesystem module named in $prefix/.../fs.lst and complains about the ones we don't ship:
# with everything loaded, point prefix where there are no lists.
set prefix=(memdisk)/no-module-lists
set pager=0
echo "RESCUEKIT STAND-IN UEFI (rescuekit test boot program, NOT Windows)"
echo "{variant.marker}"
if search --no-floppy --file --set=root /{NONCE_FILE}; then
  echo -n "NONCE="
  cat /{NONCE_FILE}
  echo "{UEFI_OK}"
else
  echo "RESCUEKIT UEFI FAIL {NONCE_FILE} not found on any disk"
fi
echo "powering off in 5 s"
sleep 5
halt
"""


def build_grub_efi(dest: Path, variant: EfiVariant, work: Path) -> Path:
    """A standalone x86_64-efi GRUB with the variant's grub.cfg embedded."""
    if not (GRUB_DIR / "moddep.lst").is_file():
        raise StandinError(f"{GRUB_DIR} missing: install grub-efi-amd64-bin (bash scripts/install-deps.sh)")
    cfg = work / f"grub-{variant.file}.cfg"
    cfg.write_text(grub_cfg(variant))
    _run([
        "grub-mkstandalone", "-O", "x86_64-efi", "-o", str(dest),
        "--locales=", "--fonts=", "--themes=",
        "--install-modules=" + " ".join(_grub_module_closure(GRUB_MODULES + GRUB_FS_MODULES)),
                f"boot/grub/grub.cfg={cfg}",
    ])
    return dest


def make_efisys(dest: Path, efi_program: Path) -> Path:
    """A FAT12 floppy image (1.44 MB, or 2.88 MB if needed) holding EFI/BOOT/BOOTX64.EFI, built with mtools."""
    need_kib = efi_program.stat().st_size // 1024 + 64
    kib = 1440 if need_kib <= 1440 else 2880
    if need_kib > kib:
        raise StandinError(f"{efi_program}: {need_kib} KiB does not fit a {kib} KiB efisys image")
    _run(["mkfs.vfat", "-C", "-F", "12", "-n", "STANDIN", "-i", "52455343", str(dest), str(kib)])
    env = dict(os.environ, MTOOLS_SKIP_CHECK="1")
    _run(["mmd", "-i", str(dest), "::/EFI", "::/EFI/BOOT"], env=env)
    _run(["mcopy", "-i", str(dest), str(efi_program), "::/EFI/BOOT/BOOTX64.EFI"], env=env)
    return dest


def _placeholder(path: Path, what: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"RESCUEKIT STAND-IN placeholder for {what} (NOT a Windows file)\r\n")


def make_boot_wim(dest: Path, work: Path, bootmgfw: Path, bootmgfw_ex: Path | None, fw: Path) -> Path:
    """A real 1-image WIM (wimlib-imagex capture, marked bootable) of a tiny tree shaped like WinPE.

    Like WinPE's, it carries the boot files under Windows/Boot (EFI, EFI_EX, DVD/PCAT, DVD[_EX]/EFI/en-US):
    copype and builders that start from a bare WIM (e.g. WinRE) take them from there.
    """
    tree = work / "wimtree"
    sys32 = tree / "Windows" / "System32"
    sys32.mkdir(parents=True)
    (sys32 / "startnet.cmd").write_text("wpeinit\r\n")
    (sys32 / MARKER_FILE).write_text(MARKER_TEXT.format(name=WIM_NAME).replace("\n", "\r\n"))
    for name in ("cmd.exe", "wpeinit.exe", "wpeutil.exe", "drvload.exe", "winpeshl.exe"):
        _placeholder(sys32 / name, name)
    _placeholder(sys32 / "config" / "SYSTEM", "the SYSTEM registry hive")
    (sys32 / "drivers").mkdir()
    _placeholder(tree / "Windows" / "Boot" / "PCAT" / "bootmgr", "Windows/Boot/PCAT/bootmgr")
    efi = tree / "Windows" / "Boot" / "EFI"
    efi.mkdir(parents=True)
    shutil.copyfile(bootmgfw, efi / "bootmgfw.efi")
    if bootmgfw_ex is not None:
        efi_ex = tree / "Windows" / "Boot" / "EFI_EX"
        efi_ex.mkdir(parents=True)
        shutil.copyfile(bootmgfw_ex, efi_ex / "bootmgfw_EX.efi")
    pcat = tree / "Windows" / "Boot" / "DVD" / "PCAT"
    pcat.mkdir(parents=True)
    shutil.copyfile(fw / "etfsboot.com", pcat / "etfsboot.com")
    for name in EFISYS:
        if (fw / name).is_file():
            dvd = tree / "Windows" / "Boot" / ("DVD_EX" if name.endswith("_EX.bin") else "DVD") / "EFI" / "en-US"
            dvd.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(fw / name, dvd / name)
    (tree / "Program Files").mkdir()
    (tree / "Users").mkdir()
    _run(["wimlib-imagex", "capture", str(tree), str(dest), WIM_NAME, WIM_DESCRIPTION, "--boot"])
    return dest


def _media(media: Path, bootx64: Path, nonce: str) -> None:
    media.mkdir(parents=True)
    (media / MARKER_FILE).write_text(MARKER_TEXT.format(name=WIM_NAME).replace("\n", "\r\n"))
    (media / NONCE_FILE).write_text(nonce + "\n")
    for rel, what in [
        ("bootmgr.efi", "bootmgr.efi (UEFI boot manager)"),
        ("boot/bcd", "boot/BCD (boot configuration data)"),
        ("boot/boot.sdi", "boot/boot.sdi (RAM disk SDI)"),
        ("boot/bootfix.bin", "boot/bootfix.bin (BIOS 'press any key' prompt)"),
        ("boot/fonts/segmono_boot.ttf", "a boot font"),
        ("boot/fonts/wgl4_boot.ttf", "a boot font"),
        ("boot/en-us/bootsect.exe.mui", "a language resource"),
        ("en-us/bootmgr.efi.mui", "a language resource"),
        ("EFI/Microsoft/Boot/BCD", "EFI/Microsoft/Boot/BCD"),
        ("EFI/Microsoft/Boot/Fonts/wgl4_boot.ttf", "a boot font"),
        ("EFI/Microsoft/Boot/en-us/bootmgfw.efi.mui", "a language resource"),
    ]:
        _placeholder(media / rel, what)
    (media / "EFI" / "Boot").mkdir(parents=True)
    shutil.copyfile(bootx64, media / "EFI" / "Boot" / "bootx64.efi")
    (media / "sources").mkdir()
    build_bootmgr(media / "bootmgr", nonce)


def check_nonce(nonce: str) -> str:
    if not re.fullmatch(r"[A-Za-z0-9._:-]{1,64}", nonce):
        raise StandinError(f"bad nonce {nonce!r}: use 1-64 characters A-Z a-z 0-9 . _ : -")
    return nonce


def make_standin_base(outdir: Path, layout: str = "fwfiles", nonce: str | None = None) -> Path:
    """Make the stand-in base at ``outdir`` (must not exist, or be empty); returns ``outdir``.

    Built in a temp dir next to ``outdir`` and renamed into place, so a failure leaves nothing behind.
    The nonce (random unless given) is in ``outdir/media/NONCE.TXT``; see :func:`read_nonce`.
    """
    outdir = Path(outdir)
    if layout not in LAYOUTS:
        raise StandinError(f"bad layout {layout!r}: use one of {', '.join(LAYOUTS)}")
    nonce = check_nonce(nonce) if nonce is not None else "RK-" + secrets.token_hex(8).upper()
    if outdir.exists() and (not outdir.is_dir() or any(outdir.iterdir())):
        raise StandinError(f"destination exists and is not an empty folder: {outdir}")
    outdir.parent.mkdir(parents=True, exist_ok=True)

    tmp = Path(tempfile.mkdtemp(prefix=f".{outdir.name}.", dir=outdir.parent))
    try:
        work = tmp / "_work"
        work.mkdir()
        base = tmp / "base"
        fw = base / layout
        fw.mkdir(parents=True)
        (base / "mount").mkdir()

        build_bios_boot(fw / "etfsboot.com")
        bootmgfw = build_grub_efi(work / "bootmgfw.efi", BOOTMGFW, work)
        bootmgfw_ex = build_grub_efi(work / "bootmgfw_EX.efi", BOOTMGFW_EX, work) if layout == "bootbins" else None
        names = list(EFISYS) if layout == "bootbins" else ["efisys.bin", "efisys_noprompt.bin"]
        for name in names:
            prog = build_grub_efi(work / f"{name}.efi", EFISYS[name], work)
            make_efisys(fw / name, prog)
        if layout == "bootbins":
            shutil.copyfile(bootmgfw, fw / "bootmgfw.efi")
            shutil.copyfile(bootmgfw_ex, fw / "bootmgfw_EX.efi")

        media = base / "media"
        _media(media, bootmgfw, nonce)
        make_boot_wim(media / "sources" / "boot.wim", work, bootmgfw, bootmgfw_ex, fw)

        shutil.rmtree(work)
        if outdir.exists():
            outdir.rmdir()  # empty (checked above)
        os.replace(base, outdir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return outdir


def read_nonce(base_or_media: Path) -> str:
    """The nonce of a stand-in base (accepts the base dir or its media dir)."""
    p = Path(base_or_media)
    f = p / NONCE_FILE if (p / NONCE_FILE).is_file() else p / "media" / NONCE_FILE
    return f.read_text().strip()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("outdir", type=Path, help="folder to create (like copype's DIR); must not exist or be empty")
    ap.add_argument("--layout", choices=LAYOUTS, default="fwfiles",
                    help="fwfiles (old ADK) or bootbins (ADK 10.1.26100+, with the CA 2023 _EX files)")
    ap.add_argument("--nonce", help="text for media/NONCE.TXT (default: random)")
    args = ap.parse_args(argv)
    try:
        out = make_standin_base(args.outdir, args.layout, args.nonce)
    except (StandinError, OSError) as exc:
        print(f"make_standin_base: error: {exc}", file=sys.stderr)
        return 1
    print(f"stand-in WinPE base (NOT WinPE) at {out} layout={args.layout} nonce={read_nonce(out)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

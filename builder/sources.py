"""Find and validate a WinPE base: copype folder, installed ADK, Windows ISO/folder, or WinRE image.

:func:`resolve_source` turns what the user points at into a :class:`BaseSource`: the media files
to put on the ISO (host paths, never modified), the El Torito boot images and the boot.wim image
to export.  Anything missing or wrong is named in a one-line :class:`RescueError`.
"""
from __future__ import annotations

import os
import re
import struct
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import pycdlib
from pycdlib.pycdlibexception import PyCdlibException

from builder import isocheck, wim
from rescuekit.errors import RescueError, UsageError

UEFI_CAS = ("2011", "2023")
ADK_SUBDIR = Path("Windows Kits/10/Assessment and Deployment Kit")
# etfsboot.com is loaded as 8 x 512-byte sectors; anything this big is certainly not a BIOS boot sector program.
MAX_BIOS_BOOT_IMAGE = 64 * 1024
# The El Torito sector count is 16 bits of 512-byte sectors.
MAX_EFI_BOOT_IMAGE = 0xFFFF * 512
BOOT_WIM = "sources/boot.wim"
EFI_FALLBACK_LOADER = "EFI/Boot/bootx64.efi"
# Where Windows keeps the boot files inside a WinPE/Setup image (used when the base folder lacks them).
_WIM_BOOT_DIRS = {"2011": "/Windows/Boot/DVD/EFI/en-US", "2023": "/Windows/Boot/DVD_EX/EFI/en-US"}
_WIM_ETFSBOOT = "/Windows/Boot/DVD/PCAT/etfsboot.com"
_WIM_BOOTMGFW_EX = "/Windows/Boot/EFI_EX/bootmgfw_EX.efi"
_WIM_BOOTMGR_EX = "/Windows/Boot/EFI_EX/bootmgr_EX.efi"
_WIM_FONTS_EX = "/Windows/Boot/Fonts_EX"
_FONT_DIRS = ("boot/fonts", "EFI/Microsoft/Boot/Fonts")
# Windows install media: only these top-level entries are needed to boot (install.wim/esd are not).
_WINDOWS_BOOT_ENTRIES = ("bootmgr", "bootmgr.efi", "boot", "efi", BOOT_WIM)


@dataclass
class BaseSource:
    """A validated WinPE base, ready for staging and mastering."""

    kind: str  # copype-fwfiles | copype-bootbins | adk-install | windows-iso | windows-folder | winre
    path: Path  # what the user gave (or the ADK root found)
    media: dict[str, Path]  # ISO path (posix, relative, original case) -> host file
    boot_wim: Path  # WIM to export the bootable image from
    boot_index: int  # image index in boot_wim to export
    boot_image_name: str
    etfsboot: Path | None  # BIOS El Torito image; None = UEFI-only medium
    efisys: Path  # UEFI El Torito image (FAT)
    uefi_ca: str = "2011"
    no_prompt: bool = False
    boot_wim_key: str = BOOT_WIM  # the media key that the staged boot.wim replaces
    notes: list[str] = field(default_factory=list)


# ---------------------------------------------------------------- helpers

def find_ci(root: Path, rel: str) -> Path | None:
    """Find ``rel`` (posix) under ``root`` matching each component case-insensitively."""
    cur = root
    for part in PurePosixPath(rel).parts:
        exact = cur / part
        if exact.exists():
            cur = exact
            continue
        try:
            match = [c for c in cur.iterdir() if c.name.lower() == part.lower()]
        except (NotADirectoryError, FileNotFoundError, PermissionError):
            return None
        if not match:
            return None
        cur = sorted(match)[0]
    return cur


def _walk_files(top: Path, prefix: str = "") -> Iterator[tuple[str, Path]]:
    """Yield (relative posix path, file) under ``top``, sorted for reproducible ISOs."""
    for dirpath, dirnames, filenames in os.walk(top):
        dirnames.sort()
        rel_dir = Path(dirpath).relative_to(top).as_posix()
        for name in sorted(filenames):
            p = Path(dirpath, name)
            if p.is_file():
                yield "/".join(x for x in (prefix, "" if rel_dir == "." else rel_dir, name) if x), p


def _key_ci(media: dict[str, Path], key: str) -> str | None:
    low = key.lower()
    return next((k for k in media if k.lower() == low), None)


def check_bios_image(path: Path) -> None:
    size = path.stat().st_size
    if size == 0 or size > MAX_BIOS_BOOT_IMAGE:
        raise RescueError(
            f"BIOS boot image of the wrong size: {path} ({size} bytes; etfsboot.com is 4096 bytes, loaded as 8 sectors)"
        )


def check_fat_image(path: Path) -> None:
    """A UEFI El Torito image must be a FAT file system image (efisys.bin is a FAT12 floppy image)."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        bs = f.read(512)
    ok = len(bs) == 512 and bs[510:512] == b"\x55\xaa"
    if ok:
        (bps,) = struct.unpack_from("<H", bs, 11)
        ok = bps in (512, 1024, 2048, 4096) and (b"FAT" in bs[0x36:0x3E] or b"FAT" in bs[0x52:0x5A])
    if not ok:
        raise RescueError(f"UEFI boot image is not a FAT image: {path}")
    if size > MAX_EFI_BOOT_IMAGE:
        raise RescueError(f"UEFI boot image too large for El Torito: {path} ({size} bytes, max {MAX_EFI_BOOT_IMAGE})")


def is_iso(path: Path) -> bool:
    with open(path, "rb") as f:
        return isocheck.read_pvd(f) is not None


def is_wim(path: Path) -> bool:
    with open(path, "rb") as f:
        return f.read(8) == wim.WIM_MAGIC


def choose_boot_image(wim_path: Path, index: int | None = None) -> tuple[int, str]:
    """Pick the image to boot: explicit index; else the only image; else a plain WinPE image; else the
    header's boot index unless it is Windows Setup (a rescue medium must never start Setup)."""
    info = wim.wim_info(wim_path)
    if index is not None:
        return index, info.image(index).name
    if len(info.images) == 1:
        img = info.images[0]
        return img.index, img.name

    def is_setup(name: str) -> bool:
        return "setup" in name.lower()

    pe = [i for i in info.images if "windows pe" in i.name.lower() and not is_setup(i.name)]
    if pe:
        return pe[0].index, pe[0].name
    if info.boot_index and not is_setup(info.image(info.boot_index).name):
        img = info.image(info.boot_index)
        return img.index, img.name
    names = ", ".join(f"{i.index}={i.name!r}" for i in info.images)
    raise RescueError(f"no bootable WinPE image in WIM: {wim_path} (images: {names}; pick one with --image)")


def _from_wim(boot_wim: Path, index: int, image_path: str, workdir: Path) -> Path | None:
    """Extract one file from the boot image into ``workdir`` (None if the image lacks it)."""
    dest = workdir / "from-wim" / image_path.strip("/").replace("/", "_")
    try:
        wim.extract(boot_wim, index, [image_path], dest)
    except RescueError:
        return None
    out = dest / PurePosixPath(image_path).name
    return out if out.is_file() else None


# ---------------------------------------------------------------- layouts

@dataclass
class _Layout:
    kind: str
    path: Path
    media: dict[str, Path]
    boot_files: list[Path]  # folders holding etfsboot.com / efisys*.bin / bootmgfw_EX.efi, in preference order
    boot_wim_key: str = BOOT_WIM


def _copype(root: Path) -> _Layout | None:
    media = find_ci(root, "media")
    bins = find_ci(root, "bootbins") or find_ci(root, "fwfiles")
    if media is None or not media.is_dir() or bins is None:
        return None
    kind = "copype-bootbins" if bins.name.lower() == "bootbins" else "copype-fwfiles"
    return _Layout(kind, root, dict(_walk_files(media)), [bins])


def _adk_root(path: Path) -> Path | None:
    for cand in (path, path / "Assessment and Deployment Kit", path / ADK_SUBDIR):
        if find_ci(cand, "Windows Preinstallation Environment") is not None:
            return cand
    return None


def _adk(path: Path, arch: str = "amd64") -> _Layout | None:
    root = _adk_root(path)
    if root is None:
        return None
    pe = find_ci(root, f"Windows Preinstallation Environment/{arch}")
    if pe is None:
        raise RescueError(f"ADK at {root}: WinPE add-on for {arch} not installed (no Windows Preinstallation Environment/{arch})")
    media = find_ci(pe, "Media")
    winpe = find_ci(pe, "en-us/winpe.wim")
    oscd = find_ci(root, f"Deployment Tools/{arch}/Oscdimg")
    for what, p in (("Media", media), ("en-us/winpe.wim", winpe)):
        if p is None:
            raise RescueError(f"ADK at {root}: missing {pe}/{what}")
    if oscd is None:
        raise RescueError(f"ADK at {root}: missing Deployment Tools/{arch}/Oscdimg (install the Deployment Tools feature)")
    files = dict(_walk_files(media))
    files[BOOT_WIM] = winpe  # what copype does: winpe.wim becomes sources/boot.wim
    return _Layout("adk-install", root, files, [oscd])


def _windows_folder(root: Path, kind: str = "windows-folder") -> _Layout | None:
    boot_wim = find_ci(root, BOOT_WIM)
    if boot_wim is None:
        return None
    files: dict[str, Path] = {}
    for entry in _WINDOWS_BOOT_ENTRIES:
        p = find_ci(root, entry)
        if p is None:
            continue
        rel = p.relative_to(root).as_posix()
        if p.is_dir():
            files.update(_walk_files(p, rel))
        else:
            files[rel] = p
    bins = [d for d in (find_ci(root, "efi/microsoft/boot"), find_ci(root, "boot")) if d is not None]
    key = boot_wim.relative_to(root).as_posix()
    return _Layout(kind, root, files, bins, key)


def _iso_children(iso: pycdlib.PyCdlib, facade: str, path: str) -> Iterator[tuple[str, bool]]:
    for rec in iso.list_children(**{facade: path}):
        if rec is None:
            continue
        if facade == "iso_path" and (rec.is_dot() or rec.is_dotdot()):
            continue
        name = rec.file_identifier()
        name = name.decode("utf-16_be") if facade == "joliet_path" else name.decode("utf-8", "replace")
        if facade == "iso_path":
            name = name.split(";")[0].rstrip(".")
        if facade == "rr_path":
            name = rec.rock_ridge.name().decode("utf-8", "replace") if rec.rock_ridge else name
        if name in ("", ".", ".."):
            continue
        yield name, rec.is_dir()


# What pycdlib raises on truncated or corrupt structures besides its own exception.
ISO_READ_ERRORS = (PyCdlibException, struct.error, ValueError, EOFError)


def open_iso(iso_path: Path) -> pycdlib.PyCdlib:
    """Open an ISO with pycdlib; a corrupt or truncated image is a one-line RescueError naming it."""
    actual = Path(iso_path).stat().st_size
    iso = pycdlib.PyCdlib()
    try:
        iso.open(str(iso_path))
    except ISO_READ_ERRORS as exc:
        declared = _pvd_size(iso_path)
        if declared is not None and actual < declared:
            raise RescueError(f"truncated ISO {iso_path}: {actual} of {declared} bytes") from None
        raise RescueError(f"cannot read ISO {iso_path}: {exc or type(exc).__name__}") from None
    # pycdlib reads past the end of a truncated image quietly (short files): compare with the PVD's size.
    declared = iso.pvd.space_size * iso.logical_block_size
    if actual < declared:
        iso.close()
        raise RescueError(f"truncated ISO {iso_path}: {actual} of {declared} bytes")
    return iso


def _pvd_size(iso_path: Path) -> int | None:
    """Volume size in bytes from the primary volume descriptor at sector 16 (Ecma-119 8.4), None if absent."""
    with open(iso_path, "rb") as f:
        pvd = isocheck.read_pvd(f)
    return None if pvd is None else isocheck.pvd_size(pvd)


def _extract_iso(iso_path: Path, workdir: Path) -> Path:
    """Copy the boot files of a Windows ISO (UDF first, as real ones carry files only there) to workdir."""
    return extract_iso(iso_path, workdir / "iso-media", _WINDOWS_BOOT_ENTRIES, require=BOOT_WIM)


def extract_iso(iso_path: Path, out: Path, entries: Sequence[str] | None = None, *,
                require: str | None = None) -> Path:
    """Copy the files under ``entries`` (top-level names, matched ignoring case; None: every file) of an ISO to
    ``out``, read from UDF first, else Joliet, Rock Ridge, ISO 9660.  ``require``: a path that must be there."""
    iso = open_iso(iso_path)
    try:
        if iso.has_udf():
            facade = "udf_path"
        elif iso.has_joliet():
            facade = "joliet_path"
        elif iso.has_rock_ridge():
            facade = "rr_path"
        else:
            facade = "iso_path"

        def find(path: str) -> tuple[str, bool] | None:
            cur, is_dir = "", True
            for part in PurePosixPath(path).parts:
                hit = [(n, d) for n, d in _iso_children(iso, facade, cur or "/") if n.lower() == part.lower()]
                if not hit:
                    return None
                cur, is_dir = f"{cur}/{hit[0][0]}", hit[0][1]
            return cur, is_dir

        def walk(path: str) -> Iterator[str]:
            for name, is_dir in sorted(_iso_children(iso, facade, path)):
                sub = f"{path}/{name}"
                if is_dir:
                    yield from walk(sub)
                else:
                    yield sub

        if require is not None and find(require) is None:
            raise RescueError(f"not a Windows/WinPE ISO: {iso_path} (no {require})")
        out.mkdir(parents=True, exist_ok=True)
        wanted: list[str] = []
        for entry in entries if entries is not None else [n for n, _d in _iso_children(iso, facade, "/")]:
            hit = find(entry)
            if hit is None:
                continue
            wanted += list(walk(hit[0])) if hit[1] else [hit[0]]
        for src in wanted:
            # Names come from the disc: a crafted one ("../../x", "..\\x", "C:x") must not write outside ``out``.
            parts = src.lstrip("/").split("/")
            if any(p in ("", ".", "..") or any(c in p for c in "\\:\0") for p in parts):
                raise RescueError(f"unsafe file name in ISO {iso_path}: {src!r}")
            dst = out.joinpath(*parts)
            dst.parent.mkdir(parents=True, exist_ok=True)
            with open(dst, "wb") as f:  # streamed by pycdlib, not read whole into memory
                iso.get_file_from_iso_fp(f, blocksize=1 << 20, **{facade: src})
        return out
    except ISO_READ_ERRORS as exc:
        raise RescueError(f"cannot read ISO {iso_path}: {exc or type(exc).__name__}") from None
    finally:
        iso.close()


def _swap_2023_extras(media: dict[str, Path], boot_wim: Path, index: int, workdir: Path) -> list[str]:
    """The rest of Make2023BootableMedia.ps1, when the image carries the files: ``bootmgr_EX.efi`` as
    ``\\bootmgr.efi`` and ``Fonts_EX\\*_EX.ttf`` as ``boot\\fonts`` / ``EFI\\Microsoft\\Boot\\Fonts`` (without _EX)."""
    notes = []
    mgr = _from_wim(boot_wim, index, _WIM_BOOTMGR_EX, workdir)
    if mgr is not None:
        media[_key_ci(media, "bootmgr.efi") or "bootmgr.efi"] = mgr
    else:
        notes.append(f"no {_WIM_BOOTMGR_EX} in boot image {index}: bootmgr.efi left as is")
    fonts_dir = workdir / "fonts-ex"
    try:
        wim.extract(boot_wim, index, [_WIM_FONTS_EX], fonts_dir)
    except RescueError:
        notes.append(f"no {_WIM_FONTS_EX} in boot image {index}: boot fonts left as is")
        return notes
    for font in sorted(p for d in fonts_dir.iterdir() for p in d.iterdir()):
        if not font.is_file():
            continue
        name = re.sub(r"_EX(\.[^.]*)$", r"\1", font.name, flags=re.IGNORECASE)
        for folder in _FONT_DIRS:
            existing = _key_ci(media, f"{folder}/{name}")
            if existing is None:
                # keep the media's own spelling of the folder if it has one
                prefix = next((k[: len(folder)] for k in media if k.lower().startswith(folder.lower() + "/")), folder)
                existing = f"{prefix}/{name}"
            media[existing] = font
    return notes


# ---------------------------------------------------------------- public

def _on_windows() -> bool:
    return sys.platform == "win32"


def default_adk_root() -> Path | None:
    """The standard ADK install location on Windows (None elsewhere or when absent)."""
    if not _on_windows():
        return None
    base = os.environ.get("ProgramFiles(x86)") or os.environ.get("ProgramFiles")
    if not base:
        return None
    root = Path(base) / ADK_SUBDIR
    return root if root.is_dir() else None


def _layout_for(path: Path, workdir: Path) -> _Layout:
    if not path.exists():
        raise RescueError(f"source not found: {path}")
    if path.is_dir():
        if not any(path.iterdir()):
            raise RescueError(f"not a WinPE base: {path} is an empty folder")
        layout = _copype(path) or _adk(path) or _windows_folder(path)
        if layout is None:
            media = find_ci(path, "media")
            if media is not None and media.is_dir():
                raise RescueError(f"copype folder {path}: missing fwfiles/ or bootbins/ (etfsboot.com, efisys.bin)")
            raise RescueError(
                f"not a WinPE base: {path} (no media/ + fwfiles/|bootbins/ from copype, no sources/boot.wim "
                "of Windows media, no Windows Preinstallation Environment/ of an ADK)"
            )
        return layout
    if not path.is_file():
        raise RescueError(f"not a WinPE base: {path} (not a file or folder)")
    if is_iso(path):
        layout = _windows_folder(_extract_iso(path, workdir), "windows-iso")
        assert layout is not None  # _extract_iso checked sources/boot.wim
        layout.path = path
        return layout
    raise RescueError(f"not a WinPE base: {path} (not a folder, an ISO or a WIM file)")


def resolve_source(
    path: Path | None,
    *,
    workdir: Path,
    uefi_ca: str = "2011",
    no_prompt: bool = False,
    boot_files: Path | None = None,
    image: int | None = None,
) -> BaseSource:
    """Discover and validate a WinPE base.

    ``workdir`` receives files that must be extracted first (from an ISO or from boot.wim);
    it belongs to the caller, who deletes it.  A WIM file as ``path`` (WinRE) needs
    ``boot_files``: any other base kind, whose boot.wim it replaces.
    """
    if uefi_ca not in UEFI_CAS:
        raise UsageError(f"unknown --uefi-ca {uefi_ca!r} (use 2011 or 2023)")
    workdir.mkdir(parents=True, exist_ok=True)
    if path is None:
        path = default_adk_root()
        if path is None:
            raise UsageError("no --source given and no Windows ADK with the WinPE add-on found at its standard path")
    path = Path(path)

    winre: Path | None = None
    if path.is_file() and is_wim(path):
        winre = path
        if boot_files is None:
            raise UsageError(f"a WIM source ({path}) needs --boot-files: a copype folder, ADK, or Windows ISO/folder")
        if Path(boot_files).is_file() and is_wim(Path(boot_files)):
            raise UsageError(f"--boot-files {boot_files} is a WIM: give a copype folder, ADK, or Windows ISO/folder")
        layout = _layout_for(Path(boot_files), workdir)
    else:
        if boot_files is not None:
            raise UsageError("--boot-files is only used with a WIM (WinRE) --source")
        layout = _layout_for(path, workdir)

    key = _key_ci(layout.media, layout.boot_wim_key) or layout.boot_wim_key
    boot_wim = winre or layout.media.get(key)
    if boot_wim is None:
        raise RescueError(f"{layout.kind} {layout.path}: missing {BOOT_WIM}")
    try:
        index, name = choose_boot_image(boot_wim, image)
    except RescueError as exc:
        if layout.kind == "windows-iso" and winre is None:  # the WIM path is a temp copy: say where it came from
            raise RescueError(f"{exc} (extracted from {layout.path})") from None
        raise
    notes: list[str] = []
    if "setup" in name.lower():
        notes.append(f"booting image {index} {name!r}: it may start Windows Setup")

    def boot_file(name: str, wim_dir: str | None) -> Path | None:
        for d in layout.boot_files:
            p = find_ci(d, name)
            if p is not None and p.is_file():
                return p
        if wim_dir is not None:
            return _from_wim(boot_wim, index, f"{wim_dir}/{name}", workdir)
        return None

    ex = "_EX" if uefi_ca == "2023" else ""
    efi_name = f"efisys{'_noprompt' if no_prompt else ''}{ex}.bin"
    efisys = boot_file(efi_name, _WIM_BOOT_DIRS[uefi_ca])
    if efisys is None:
        where = ", ".join(str(d) for d in layout.boot_files) or str(layout.path)
        raise RescueError(f"missing UEFI boot image {efi_name} in {where} (nor in {boot_wim} image {index})")
    check_fat_image(efisys)

    etfsboot = boot_file("etfsboot.com", None) or _from_wim(boot_wim, index, _WIM_ETFSBOOT, workdir)
    if etfsboot is not None:
        check_bios_image(etfsboot)
    else:
        notes.append("no etfsboot.com: UEFI-only medium")

    media = dict(layout.media)
    if uefi_ca == "2023":
        # MakeWinPEMedia /bootex: the 2023-CA-signed boot manager becomes the removable-media loader.
        loader = boot_file("bootmgfw_EX.efi", None) or _from_wim(boot_wim, index, _WIM_BOOTMGFW_EX, workdir)
        if loader is None:
            raise RescueError(f"--uefi-ca 2023 needs bootmgfw_EX.efi: not in {layout.path} nor in {boot_wim} image {index}")
        media[_key_ci(media, EFI_FALLBACK_LOADER) or EFI_FALLBACK_LOADER] = loader
        notes += _swap_2023_extras(media, boot_wim, index, workdir)

    return BaseSource(
        kind="winre" if winre else layout.kind,
        path=winre or layout.path,
        media=media,
        boot_wim=boot_wim,
        boot_index=index,
        boot_image_name=name,
        etfsboot=etfsboot,
        efisys=efisys,
        uefi_ca=uefi_ca,
        no_prompt=no_prompt,
        boot_wim_key=key,
        notes=notes,
    )


def check_output_outside(source: BaseSource | Path, output: Path, *extra: Path) -> None:
    """Refuse an output inside the source tree (it would be read while written, or pollute the source)."""
    out = Path(output).resolve()
    for root in (source.path if isinstance(source, BaseSource) else source, *extra):
        r = Path(root).resolve()
        if r.is_dir() and (out == r or r in out.parents):
            raise UsageError(f"output {output} is inside the source folder {root}")
        if out == r:
            raise UsageError(f"output {output} is the source itself")


__all__ = [
    "BaseSource",
    "UEFI_CAS",
    "check_bios_image",
    "check_fat_image",
    "check_output_outside",
    "choose_boot_image",
    "default_adk_root",
    "extract_iso",
    "find_ci",
    "open_iso",
    "resolve_source",
]

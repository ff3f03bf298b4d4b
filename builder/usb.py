"""``rescuekit usb``: the media file set of ``build`` on a USB stick (or a disk image), like ``MakeWinPEMedia /UFD``.

Layout (MBR, 1 MiB aligned): partition 1 FAT32 (type 0x0C), active, holding the media files, label = ``--label``;
partition 2 (optional, default exFAT, type 0x07; FAT32 0x0C) for image repositories, holding an empty rescuekit
repository in ``Images/``; without it FAT32 fills the stick.  UEFI boots ``EFI/Boot/bootx64.efi`` (the removable-
media path).  BIOS: the base supplies its :class:`BiosBoot` (:data:`BIOS_BOOT`); every method runs from syslinux,
which Debian packages and which installs onto an unmounted FAT32 through mtools: MBR boot code (``mbr.bin``:
starts the active partition) -> syslinux's FAT32 boot sector -> ``ldlinux.sys`` -> the base's ``syslinux.cfg``
(WinPE: ``chain.c32 fs ntldr=/bootmgr``, which loads ``bootmgr`` at 2000:0000 with the partition's BPB at 7C00,
as the Windows boot sector of ``bootsect /nt60`` does).

Everything is written into an image file without mounting (sfdisk, mkfs.vfat --offset + mtools, syslinux --offset,
mkfs.exfat on a partition-sized temp file + :mod:`builder.exfat_write`, mkntfs + wimlib-imagex apply): ``--image``
gets that file (temp name next to it, renamed at the end); ``--device`` gets its written extents copied onto the
device (:mod:`builder.usb_device`).
"""
from __future__ import annotations

import json
import os
import subprocess
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from rescuekit.errors import RescueError, UsageError
from rescuekit.imaging.units import human
from rescuekit.repo.repository import Repository

from builder import isocheck, sources, tools
from builder.build import BUILD_INFO_PATH, BuildOptions, check_source_outside, stage_media

MIB = 1 << 20
ALIGN = MIB  # partitions start on 1 MiB boundaries, like diskpart
SECTOR = 512
FAT32_MAX_FILE = (1 << 32) - 1  # the FAT directory entry's 32-bit size field
FAT32_MIN = 64 * MIB  # FAT32 needs >= 65525 clusters; 64 MiB leaves room with 512-byte clusters
DATA_MIN = 16 * MIB
MBR_MAX = (1 << 32) * SECTOR  # MBR LBAs and lengths are 32-bit
DATA_FS = ("exfat", "ntfs", "fat32")
DATA_TYPE = {"exfat": "7", "ntfs": "7", "fat32": "c"}
REPO_DIR = "Images"  # the data partition's repository folder: X:\Images
DATA_LABEL = "IMAGES"
SYSLINUX_DIR = "syslinux"
SYSLINUX_MODULES = Path("/usr/lib/syslinux/modules/bios")
SYSLINUX_MBR = Path("/usr/lib/syslinux/mbr/mbr.bin")
_ENV = dict(os.environ, MTOOLS_SKIP_CHECK="1", MTOOLS_NO_VFAT="0")


@dataclass(frozen=True)
class BiosBoot:
    """How a base starts under BIOS from the stick's FAT32 partition, after syslinux: its ``syslinux.cfg`` and the
    syslinux BIOS modules (``.c32`` from :data:`SYSLINUX_MODULES`) that config needs."""

    name: str
    syslinux_cfg: str
    modules: tuple[str, ...] = ()


def _has(files: Mapping[str, Path | bytes], key: str) -> bool:
    return any(k.lower() == key.lower() for k in files)


def winpe_bios_boot(files: Mapping[str, Path | bytes]) -> BiosBoot | None:
    """WinPE: chain.c32 loads ``\\bootmgr`` as a Windows FAT32 boot sector does (None: UEFI-only base)."""
    if not _has(files, "bootmgr"):
        return None
    cfg = ("# rescuekit: BIOS boot of a WinPE stick. chain.c32 loads \\bootmgr at 2000:0000 with this partition's\n"
           "# boot sector at 0000:7C00, as the FAT32 boot sector of bootsect /nt60 does.\n"
           "SERIAL 0 115200\nPROMPT 0\nTIMEOUT 0\nDEFAULT bootmgr\n"
           f"LABEL bootmgr\n  COM32 /{SYSLINUX_DIR}/chain.c32\n  APPEND fs ntldr=/bootmgr\n")
    return BiosBoot("syslinux chain.c32 ntldr=/bootmgr", cfg, ("chain.c32", "libcom32.c32", "libutil.c32"))


LINUX_KERNEL, LINUX_INITRD, LINUX_GRUB_CFG = "boot/vmlinuz", "boot/initrd.img", "boot/grub/grub.cfg"


def linux_bios_boot(files: Mapping[str, Path | bytes]) -> BiosBoot | None:
    """The Linux base (issue 10): syslinux starts its kernel + initramfs itself, with the command line and initrd
    list of the first ``linux /boot/vmlinuz ...`` entry of the disc's GRUB menu (the ISO and the stick agree)."""
    if not (_has(files, LINUX_KERNEL) and _has(files, LINUX_INITRD)):
        return None
    cmdline, initrds = "", [f"/{LINUX_INITRD}"]
    key = next((k for k in files if k.lower() == LINUX_GRUB_CFG), None)
    if key is not None:
        raw = files[key]
        text = raw.decode(errors="replace") if isinstance(raw, bytes) else Path(raw).read_text(errors="replace")
        in_entry = False
        for line in text.splitlines():
            words = line.split()
            if len(words) >= 2 and words[0] == "linux" and words[1].lstrip("/").lower() == LINUX_KERNEL:
                cmdline, in_entry = " ".join(words[2:]), True
            elif in_entry and words[:1] == ["initrd"] and len(words) > 1:
                initrds = words[1:]
                break
            elif in_entry and words[:1] == ["}"]:
                break
    cfg = ("# rescuekit: BIOS boot of the Linux-based stick: syslinux loads the kernel and initramfs itself.\n"
           "SERIAL 0 115200\nPROMPT 0\nTIMEOUT 0\nDEFAULT rescuekit\n"
           f"LABEL rescuekit\n  LINUX /{LINUX_KERNEL}\n  INITRD {','.join(initrds)}\n  APPEND {cmdline}\n")
    return BiosBoot("syslinux linux /boot/vmlinuz", cfg)


# Base kind (BaseSource.kind, build.json "source_kind", or "base" of the Linux base's build.json) -> its BIOS boot
# method; every kind not listed is WinPE.
BIOS_BOOT: dict[str, Callable[[Mapping[str, Path | bytes]], BiosBoot | None]] = {"linux": linux_bios_boot}


def bios_boot_for(kind: str, files: Mapping[str, Path | bytes]) -> BiosBoot | None:
    return BIOS_BOOT.get(kind, winpe_bios_boot)(files)


@dataclass(frozen=True)
class UsbLayout:
    size: int
    boot_start: int
    boot_size: int
    data_fs: str | None
    data_start: int = 0
    data_size: int = 0

    @property
    def boot_end(self) -> int:
        return self.boot_start + self.boot_size


def _align_up(n: int, a: int = ALIGN) -> int:
    return -(-n // a) * a


def media_bytes(files: Mapping[str, Path], extra: Mapping[str, bytes]) -> int:
    """Space the files take on FAT32 (4 KiB clusters or less, so rounding each up to 4 KiB is an upper bound)."""
    sizes = [p.stat().st_size for p in files.values()] + [len(b) for b in extra.values()]
    return sum(_align_up(s, 4096) for s in sizes) + 4096 * (len(sizes) + 64)


def plan_layout(size: int, need: int, data_fs: str | None, boot_size: int | None = None,
                where: str = "the stick") -> UsbLayout:
    """Partitions for a stick of ``size`` bytes whose boot partition must hold ``need`` bytes of files."""
    if data_fs is not None and data_fs not in DATA_FS:
        raise UsageError(f"unknown data partition file system {data_fs!r} (use {', '.join(DATA_FS)})")
    usable = min(size, MBR_MAX) // ALIGN * ALIGN
    want = boot_size if boot_size is not None else max(FAT32_MIN, _align_up(need + need // 20 + 16 * MIB))
    want = _align_up(want)
    if boot_size is not None and boot_size < max(FAT32_MIN, need):
        raise UsageError(f"--boot-size {human(boot_size)} is too small: the media files need "
                         f"{human(max(FAT32_MIN, need))}")
    if data_fs is None:
        if ALIGN + want > usable:
            raise RescueError(f"{where} is too small: {human(size)}, the media need {human(ALIGN + want)}")
        return UsbLayout(size, ALIGN, usable - ALIGN if boot_size is None else want, None)
    data_start = ALIGN + want
    if data_start + DATA_MIN > usable:
        raise RescueError(f"{where} is too small: {human(size)}, the media need {human(data_start + DATA_MIN)} "
                          f"({human(want)} boot partition + {human(DATA_MIN)} {data_fs} data partition; "
                          "--no-data-partition needs less)")
    return UsbLayout(size, ALIGN, want, data_fs, data_start, usable - data_start)


def check_fat32_files(files: Mapping[str, Path]) -> None:
    """FAT32 holds at most 4 GiB - 1 byte per file; a split WIM (.swm) does not boot, so refuse.  FAT names ignore
    case, so two media paths that differ only in case are refused too."""
    seen: dict[str, str] = {}
    for key in sorted(files):
        for part in [str(p) for p in reversed(PurePosixPath(key).parents) if str(p) != "."] + [key]:
            other = seen.setdefault(part.lower(), part)
            if other != part:
                raise RescueError(f"two media paths differ only in case: {other} and {part} (FAT ignores case)")
    for key, path in files.items():
        size = path.stat().st_size
        if size > FAT32_MAX_FILE:
            raise RescueError(f"{key} is {human(size)} ({path}): too big for the FAT32 boot partition (at most "
                              "4 GiB - 1 byte per file; a split WIM does not boot). Make it smaller, e.g. fewer "
                              "drivers or wimlib-imagex optimize --solid")


def _run(cmd: list[str], what: str, **kw) -> subprocess.CompletedProcess:
    return tools.run(cmd, what, env=_ENV, **kw)


def fat_label(label: str) -> str:
    up = label.upper()
    if not 1 <= len(up) <= 11:
        raise UsageError(f"bad volume label {label!r}: a FAT label holds 1-11 characters")
    return up


def _partition_table(image: Path, lay: UsbLayout) -> None:
    parts = [f"start={lay.boot_start // SECTOR}, size={lay.boot_size // SECTOR}, type=c, bootable"]
    if lay.data_fs:
        parts.append(f"start={lay.data_start // SECTOR}, size={lay.data_size // SECTOR}, type={DATA_TYPE[lay.data_fs]}")
    _run(["sfdisk", "--quiet", "--no-reread", "--no-tell-kernel", str(image)], "write the partition table",
         input="label: dos\n" + "\n".join(parts) + "\n")


def _mkfat32(image: Path, start: int, size: int, label: str) -> None:
    _run(["mkfs.vfat", "-F", "32", "-n", label, "-h", str(start // SECTOR), "-D", "0x80",
          "--offset", str(start // SECTOR), str(image), str(size // 1024)], "make the FAT32 file system")


def _fat_copy(image: Path, start: int, files: Mapping[str, Path], what: str) -> None:
    """Copy ``files`` (media path -> host file) into the FAT at ``start`` with mtools: folders first, then one
    mcopy per folder for files whose host name is their media name (thousands of .mui files), the rest one by one."""
    img = f"{image}@@{start}"
    dirs = sorted({str(p) for k in files for p in PurePosixPath(k).parents if str(p) != "."},
                  key=lambda d: (d.count("/"), d.lower()))
    # mmd refuses a folder that exists; names differing only in case are one FAT folder
    seen: set[str] = set()
    todo = [d for d in dirs if not (d.lower() in seen or seen.add(d.lower()))]
    for i in range(0, len(todo), 200):
        _run(["mmd", "-i", img, *[f"::/{d}" for d in todo[i:i + 200]]], f"make folders for {what}")
    by_dir: dict[str, list[str]] = {}
    for key, host in sorted(files.items()):
        parent = str(PurePosixPath(key).parent)
        if host.name == PurePosixPath(key).name:
            by_dir.setdefault(parent, []).append(str(host))
        else:
            _run(["mcopy", "-i", img, str(host), f"::/{key}"], f"copy {key}")
    for parent, hosts in by_dir.items():
        dest = "::/" if parent == "." else f"::/{parent}/"
        for i in range(0, len(hosts), 200):
            _run(["mcopy", "-i", img, *hosts[i:i + 200], dest], f"copy {what} into {dest}")


def _install_syslinux(image: Path, start: int, bios: BiosBoot, scratch: Path) -> None:
    for name in bios.modules:
        if not (SYSLINUX_MODULES / name).is_file():
            raise RescueError(f"{SYSLINUX_MODULES / name} not found: install syslinux-common")
    if not SYSLINUX_MBR.is_file():
        raise RescueError(f"{SYSLINUX_MBR} not found: install syslinux-common")
    cfg = scratch / "syslinux.cfg"
    cfg.write_text(bios.syslinux_cfg)
    files = {f"{SYSLINUX_DIR}/syslinux.cfg": cfg}
    files.update({f"{SYSLINUX_DIR}/{m}": SYSLINUX_MODULES / m for m in bios.modules})
    _fat_copy(image, start, files, "syslinux")
    _run(["syslinux", "--install", "--directory", f"/{SYSLINUX_DIR}", "--offset", str(start), str(image)],
         "install the syslinux boot sector")
    mbr = SYSLINUX_MBR.read_bytes()[:440]  # boot code only: the disk signature and table stay
    with open(image, "r+b") as f:
        f.write(mbr)
        # syslinux rewrote the boot sector; FAT32 keeps a backup copy (BPB_BkBootSec) that must match it
        vbr = os.pread(f.fileno(), SECTOR, start)
        backup = int.from_bytes(vbr[0x32:0x34], "little")
        if 0 < backup < 32:
            os.pwrite(f.fileno(), vbr, start + backup * SECTOR)


def _repository_tree(scratch: Path) -> Path:
    """A folder holding ``Images/``: an empty repository made by the runtime's own code."""
    tree = scratch / "data-tree"
    Repository.open_or_create(tree / REPO_DIR)
    return tree


def copy_extents(src: Path, dst_fd: int, dst_offset: int) -> None:
    """Copy the written (non-hole) parts of ``src`` into ``dst_fd`` at ``dst_offset``."""
    with open(src, "rb") as f:
        fd, size, pos = f.fileno(), os.fstat(f.fileno()).st_size, 0
        while pos < size:
            try:
                pos = os.lseek(fd, pos, os.SEEK_DATA)
            except OSError:  # ENXIO: only a hole is left
                break
            end = os.lseek(fd, pos, os.SEEK_HOLE)
            while pos < end:
                n = min(end - pos, 8 * MIB)
                os.pwrite(dst_fd, os.pread(fd, n, pos), dst_offset + pos)
                pos += n


def _data_partition(image: Path, lay: UsbLayout, scratch: Path) -> None:
    tree = _repository_tree(scratch)
    if lay.data_fs == "fat32":
        _run(["mkfs.vfat", "-F", "32", "-n", DATA_LABEL, "-h", str(lay.data_start // SECTOR), "-D", "0x80",
              "--offset", str(lay.data_start // SECTOR), str(image), str(lay.data_size // 1024)],
             "make the FAT32 data partition")
        files = {p.relative_to(tree).as_posix(): p for p in tree.rglob("*") if p.is_file()}
        dirs = {p.relative_to(tree).as_posix(): p for p in tree.rglob("*") if p.is_dir()}
        _fat_copy(image, lay.data_start, files, "the repository")
        img = f"{image}@@{lay.data_start}"
        empty = [d for d in sorted(dirs) if not any(k.startswith(d + "/") for k in files)]
        if empty:  # folders without files (data/, index/, ...) that _fat_copy did not make
            _run(["mmd", "-i", img, *[f"::/{d}" for d in empty]], "make the repository folders")
        return
    part = scratch / "data.part"
    with open(part, "wb") as f:
        f.truncate(lay.data_size)
    if lay.data_fs == "exfat":
        _run(["mkfs.exfat", "-L", DATA_LABEL, str(part)], "make the exFAT data partition")
        from builder.exfat_write import add_tree

        add_tree(part, tree)
    else:
        _run(["mkntfs", "-F", "-Q", "-L", DATA_LABEL, "-p", str(lay.data_start // SECTOR), "-H", "255", "-S", "63",
              str(part)], "make the NTFS data partition")
        wimf = scratch / "repo.wim"
        _run(["wimlib-imagex", "capture", str(tree), str(wimf), "repository", "--no-acls"], "capture the repository")
        _run(["wimlib-imagex", "apply", str(wimf), "1", str(part)], "write the repository onto NTFS")
    with open(image, "r+b") as out:
        copy_extents(part, out.fileno(), lay.data_start)
    part.unlink()


@dataclass
class UsbImage:
    layout: UsbLayout
    bios: BiosBoot | None
    uefi: bool  # EFI/Boot/bootx64.efi is on the stick
    files: int
    notes: list[str] = field(default_factory=list)


def write_usb_image(image: Path, files: Mapping[str, Path], extra: Mapping[str, bytes], lay: UsbLayout, *,
                    label: str, bios: BiosBoot | None, scratch: Path) -> UsbImage:
    """Write the whole stick into ``image`` (a new sparse file of ``lay.size`` bytes)."""
    check_fat32_files(files)
    notes: list[str] = []
    with open(image, "wb") as f:
        f.truncate(lay.size)
    _partition_table(image, lay)
    _mkfat32(image, lay.boot_start, lay.boot_size, fat_label(label))
    all_files = dict(files)
    for key, data in extra.items():
        host = scratch / "extra" / key
        host.parent.mkdir(parents=True, exist_ok=True)
        host.write_bytes(data)
        all_files[key] = host
    if _has(all_files, SYSLINUX_DIR + "/syslinux.cfg"):
        raise RescueError(f"the media already have {SYSLINUX_DIR}/syslinux.cfg: rescuekit writes its own")
    _fat_copy(image, lay.boot_start, all_files, "the media files")
    if bios is not None:
        _install_syslinux(image, lay.boot_start, bios, scratch)
    else:
        notes.append("no BIOS boot method for this base (no bootmgr, no kernel): the stick does not boot under BIOS")
    if not _has(all_files, sources.EFI_FALLBACK_LOADER):
        notes.append(f"no {sources.EFI_FALLBACK_LOADER}: the stick does not boot under UEFI")
    if lay.data_fs:
        _data_partition(image, lay, scratch)
    return UsbImage(lay, bios, _has(all_files, sources.EFI_FALLBACK_LOADER), len(all_files), notes)


# ---------------------------------------------------------------- the media: built, or read from an ISO

@dataclass
class UsbMedia:
    files: dict[str, Path]
    extra: dict[str, bytes]
    kind: str  # base kind: picks the BIOS boot method
    label: str
    source: Path
    notes: list[str]


def media_from_iso(iso_path: Path, scratch: Path, label: str | None) -> UsbMedia:
    """Every file of a built rescue ISO (UDF / Joliet names), its build.json telling the base kind."""
    if not Path(iso_path).is_file():
        raise UsageError(f"--from-iso {iso_path}: no such file")
    if not sources.is_iso(Path(iso_path)):
        raise UsageError(f"--from-iso {iso_path}: not an ISO 9660 image")
    out = sources.extract_iso(Path(iso_path), scratch / "iso-media")
    files = {p.relative_to(out).as_posix(): p for p in sorted(out.rglob("*")) if p.is_file()}
    kind, iso_label = "windows-iso", None
    info_key = next((k for k in files if k.lower() == BUILD_INFO_PATH), None)
    if info_key is not None:
        try:
            info = json.loads(files[info_key].read_text())
            # WinPE builds say source_kind; the Linux base's build.json (issue 10) says "base": "linux"
            kind, iso_label = str(info.get("source_kind") or info.get("base") or kind), info.get("label")
        except (ValueError, UnicodeDecodeError):
            pass
    notes = []
    if label is None and iso_label and len(iso_label) > 11:
        notes.append(f"the ISO's label {iso_label} is cut to {iso_label[:11]} (a FAT label holds 11 characters)")
    if not _has(files, sources.EFI_FALLBACK_LOADER):
        extra_efi = uefi_files_from_el_torito(Path(iso_path), scratch / "eltorito-efi")
        if extra_efi:
            files.update(extra_efi)
            notes.append(f"UEFI boot files ({', '.join(sorted(extra_efi))}) taken from the ISO's El Torito UEFI image")
    return UsbMedia(files, {}, kind, label or (iso_label or "RESCUEKIT")[:11], Path(iso_path), notes)


def uefi_files_from_el_torito(iso_path: Path, out: Path) -> dict[str, Path]:
    """The ``EFI/`` folder of the ISO's El Torito UEFI (FAT) image: a disc whose tree lacks the removable-media
    loader (the Linux base keeps shim + GRUB only there) still UEFI-boots from a stick."""
    from rescuekit.disk.fat import parse_fat_boot

    with open(iso_path, "rb") as f:
        disc = isocheck.Disc(f, os.fstat(f.fileno()).st_size, str(iso_path))
        try:
            cat = isocheck._el_torito(disc)  # the one El Torito catalog parser
        except RescueError:
            return {}
        entry = next((e for e in (cat.entries if cat else ()) if e.platform == 0xEF and e.media == 0), None)
        if entry is None:
            return {}
        boot = parse_fat_boot(disc.read(entry.lba, 512))
        if boot is None:
            return {}
        size = boot.total_sectors * boot.bytes_per_sector
        out.mkdir(parents=True)
        img = out / "efi.img"
        with open(img, "wb") as dst:
            dst.write(disc.read(entry.lba, size))
    tree = out / "tree"
    tree.mkdir()
    listing = _run(["mdir", "-/", "-a", "-b", "-i", str(img), "::/"], "list the El Torito UEFI image").stdout
    if not any(line.strip().lower() == "::/efi/" for line in listing.splitlines()):
        return {}
    _run(["mcopy", "-s", "-i", str(img), "::/EFI", str(tree)], "copy the El Torito UEFI image's EFI folder")
    return {p.relative_to(tree).as_posix(): p for p in sorted(tree.rglob("*")) if p.is_file()}


def media_from_build(opts: BuildOptions, scratch: Path, label: str, epoch: int | None) -> UsbMedia:
    check_source_outside(opts, opts.output)
    staged = stage_media(opts, scratch, label=label, epoch=epoch)
    return UsbMedia(staged.files, staged.extra, staged.src.kind, label, staged.src.path, staged.notes)


def temp_dir_for(output: Path | None) -> Path:
    """Scratch space: next to an image file (same file system: atomic rename), else the system temp folder."""
    base = Path(output).parent if output is not None else Path(tempfile.gettempdir())
    return Path(tempfile.mkdtemp(prefix=f".{output.name if output else 'rescuekit'}.usb-", dir=base))

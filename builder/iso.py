"""Master a dual BIOS+UEFI El Torito ISO with pycdlib, shaped like ``MakeWinPEMedia /ISO``.

``oscdimg -bootdata:2#p0,e,b<etfsboot.com>#pEF,e,b<efisys.bin> -u1 -udfver102`` makes:
an El Torito catalog whose default entry is BIOS (platform 0x00, no emulation, 8 x 512-byte
sectors loaded, no boot info table) plus a section for UEFI (platform 0xEF, no emulation,
the FAT image efisys.bin), and ISO 9660 + UDF file systems.  We add Joliet too (long names
for tools that ignore UDF).  pycdlib's only UDF option is called ``"2.60"``, but the structures
it writes are UDF 1.02 (revision fields 0x0102, plain File Entries, no metadata partition; udfinfo
reports ``udfrev=1.02``), i.e. what ``-udfver102`` asks of oscdimg.  Files over 4 GiB become
ISO 9660 multi-extent files (level 3) and single UDF files.  Files are streamed from their host paths at write time (pycdlib opens each one
only while copying it), and the result is written to a temp file next to ``<output>`` then renamed.
"""
from __future__ import annotations

import contextlib
import io
import os
import random
import re
import secrets
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import pycdlib
from pycdlib.pycdlibexception import PyCdlibException
from rescuekit.errors import RescueError, UsageError
from rescuekit.progress import byte_progress

from builder import isocheck

DEFAULT_LABEL = "RESCUEKIT"
BIOS_LOAD_SECTORS = isocheck.BIOS_LOAD_SECTORS  # etfsboot.com: 4 KiB, as oscdimg loads it
UEFI_LOAD_SECTORS = isocheck.UEFI_LOAD_SECTORS  # as on Microsoft's media; UEFI reads the FAT image to its end
# El Torito images and the catalog live in the ISO 9660 tree only, hidden, as oscdimg leaves them out of the tree.
BIOS_IMAGE_PATH = "/ETFSBOOT.IMG"
EFI_IMAGE_PATH = "/EFISYS.IMG"
BOOT_CATALOG_PATH = "/BOOT.CAT"
_BOOT_ISO_PATHS = (BIOS_IMAGE_PATH, EFI_IMAGE_PATH, BOOT_CATALOG_PATH)
_LABEL_RE = re.compile(r"^[A-Z0-9_]{1,32}$")
_D_CHARS = re.compile(r"[^A-Z0-9_]")
_JOLIET_MAX = 64
_ISO_FILE_MAX = 30  # Ecma-119 7.5.2: name + extension
_ISO_DIR_MAX = 31
_ISO_DEPTH_MAX = 7  # below the root (Ecma-119 6.8.2.1)
_WRITE_BLOCK = 1 << 20
ISO_CHECK_ENV = "RESCUEKIT_ISO_CHECK"  # "strict": a failed boot-chain check of the written ISO is an error
# ISO 9660 directory records store the year as 1900 + one byte (Ecma-119 9.1.5): 2156-01-01T00:00:00Z is too late.
_EPOCH_MAX = 5869584000


@dataclass(frozen=True)
class BiosEntry:
    """How the El Torito BIOS image is loaded: etfsboot.com (WinPE) or GRUB's cdboot image (Linux base)."""

    load_sectors: int = BIOS_LOAD_SECTORS
    info_table: bool = False
    validation_id: bytes = isocheck.VALIDATION_ID


WINPE_BIOS = BiosEntry()
# GRUB's i386-pc-eltorito: 4 sectors loaded (as grub-mkrescue/xorriso), then it reads itself via the info table.
GRUB_BIOS = BiosEntry(load_sectors=4, info_table=True, validation_id=b"RESCUEKIT")


@dataclass(frozen=True)
class IsoResult:
    path: Path
    size: int
    files: int
    boot_entries: list[str]
    notes: list[str]


def normalize_label(label: str) -> str:
    """Volume label as ISO 9660 wants it: d-characters (A-Z 0-9 _), at most 32."""
    up = label.upper()
    if not _LABEL_RE.match(up):
        raise UsageError(f"bad volume label {label!r}: use 1-32 of A-Z, 0-9 and _")
    return up


def source_date_epoch() -> int | None:
    """``SOURCE_DATE_EPOCH`` as an int (None when unset); a bad value is a usage error."""
    raw = os.environ.get("SOURCE_DATE_EPOCH")
    if raw is None or raw == "":
        return None
    try:
        value = int(raw)
    except ValueError:
        raise UsageError(f"SOURCE_DATE_EPOCH is not an integer: {raw!r}") from None
    if value < 0:
        raise UsageError(f"SOURCE_DATE_EPOCH is negative: {raw!r}")
    if value >= _EPOCH_MAX:
        raise UsageError(f"SOURCE_DATE_EPOCH is after 2155, the last year ISO 9660 can record: {raw!r}")
    return value


class _FrozenTime:
    """Stands in for the ``time`` module inside pycdlib: a fixed clock, UTC as local time."""

    def __init__(self, epoch: int) -> None:
        self._epoch = float(epoch)

    def time(self) -> float:
        return self._epoch

    def localtime(self, secs: float | None = None) -> time.struct_time:
        return time.gmtime(self._epoch if secs is None else secs)

    def __getattr__(self, name: str):
        return getattr(time, name)


@contextlib.contextmanager
def _reproducible(epoch: int | None) -> Iterator[None]:
    """Pin every clock and random source pycdlib uses (dates, UDF IDs) while building and writing.

    pycdlib has no option for this, so its module globals are swapped for the duration.
    """
    if epoch is None:
        yield
        return
    import pycdlib.dates
    import pycdlib.headervd
    import pycdlib.inplaceeditor
    import pycdlib.pycdlib
    import pycdlib.udf
    import pycdlib.utils

    frozen = _FrozenTime(epoch)
    mods = [pycdlib.pycdlib, pycdlib.headervd, pycdlib.udf, pycdlib.dates, pycdlib.inplaceeditor, pycdlib.utils]
    saved = [(m, "time", m.time) for m in mods if hasattr(m, "time")]
    saved.append((pycdlib.udf, "random", pycdlib.udf.random))
    try:
        for m, attr, _ in saved:
            setattr(m, attr, frozen if attr == "time" else random.Random(epoch))
        yield
    finally:
        for m, attr, orig in saved:
            setattr(m, attr, orig)


class _Namer:
    """Unique ISO 9660 (level 3) and Joliet names per directory, for any host name."""

    def __init__(self) -> None:
        self._used: dict[tuple[str, str], set[str]] = {}

    def _unique(self, space: str, parent: str, base: str, ext: str, limit: int) -> str:
        used = self._used.setdefault((space, parent), set())
        dot = bool(ext)
        n = 0
        while True:
            suffix = (f"~{n}" if space == "joliet" else f"_{n}") if n else ""
            room = limit - len(ext) - len(suffix) - (1 if dot else 0)
            cand = base[:max(room, 1)] + suffix + (f".{ext}" if dot else "")
            key = cand.upper() if space == "iso" else cand.lower()
            if key not in used:
                used.add(key)
                return cand
            n += 1

    def iso_name(self, parent: str, name: str, is_dir: bool) -> str:
        up = name.upper()
        if is_dir:
            return self._unique("iso", parent, _D_CHARS.sub("_", up) or "_", "", _ISO_DIR_MAX)
        stem, dot, ext = up.rpartition(".")
        if not dot:
            stem, ext = up, ""
        stem, ext = _D_CHARS.sub("_", stem), _D_CHARS.sub("_", ext)[:8]
        # As oscdimg -u1 writes them: no ";1" version and no lone dot ("BOOTMGR", "BOOTFIX.BIN"), because etfsboot.com
        # compares the root identifier byte-exact (KB931708). Ecma-119 7.5.1 asks for both; readers don't need them.
        # 8.3 names stay 8.3; longer ones keep up to 30 characters (not mangled to 8.3: the boot library's ETFS
        # driver compares whole names after case folding, so only the full name is reachable).
        return self._unique("iso", parent, stem or "_", ext, _ISO_FILE_MAX)

    def joliet_name(self, parent: str, name: str, is_dir: bool) -> str:
        name = re.sub(r"[*/:;?\\]", "_", name)
        if is_dir or len(name) <= _JOLIET_MAX:
            stem, ext = name, ""
        else:
            stem, dot, ext = name.rpartition(".")
            if not dot or len(ext) > 16:
                stem, ext = name, ""
        return self._unique("joliet", parent, stem, ext, _JOLIET_MAX)


class IsoTree:
    """Accumulates directories and files with their three names (ISO 9660, Joliet, UDF)."""

    def __init__(self, iso: pycdlib.PyCdlib) -> None:
        self.iso = iso
        self.namer = _Namer()
        # udf path (lower-cased) -> (iso path, joliet path, udf path)
        self.dirs: dict[str, tuple[str, str, str]] = {"": ("", "", "")}
        self.files = 0
        self.claimed: dict[str, str] = {}
        # The hidden El Torito entries own these root names in ISO 9660: a media file called boot.cat or
        # efisys.img gets another ISO 9660 name instead of being taken for (or clashing with) them.
        self.namer._used[("iso", "")] = {PurePosixPath(p).name.upper() for p in _BOOT_ISO_PATHS}

    def catalog_name(self) -> str:
        """A root name for the boot catalog's (removed again) Joliet/UDF entries that no media file uses."""
        taken = set(self.claimed) | set(self.dirs) | self.namer._used.get(("joliet", ""), set())
        name, n = "boot.cat", 0
        while name in taken:
            n += 1
            name = f"boot{n}.cat"
        return name

    def _dir(self, rel: PurePosixPath) -> tuple[str, str, str]:
        key = rel.as_posix().lower() if rel.parts else ""
        if key in self.dirs:
            return self.dirs[key]
        if len(rel.parts) > _ISO_DEPTH_MAX:
            raise RescueError(f"folder too deep for ISO 9660 (max {_ISO_DEPTH_MAX} levels): {rel}")
        if key in self.claimed:  # one name as a file and a folder: the UDF tree would be corrupt
            raise RescueError(f"a file and a folder have the same name: {self.claimed[key]} and {rel}/")
        piso, pjol, pudf = self._dir(rel.parent) if len(rel.parts) > 1 else self.dirs[""]
        name = rel.name
        d = (
            f"{piso}/{self.namer.iso_name(piso, name, True)}",
            f"{pjol}/{self.namer.joliet_name(pjol, name, True)}",
            f"{pudf}/{name}",
        )
        self.iso.add_directory(d[0], joliet_path=d[1], udf_path=d[2])
        self.dirs[key] = d
        return d

    def _claim(self, rel: str) -> None:
        # Windows (and UDF/Joliet readers on it) match names case-insensitively: two such files would clash.
        key = rel.lower()
        if key in self.claimed:
            raise RescueError(f"two files differ only in case: {self.claimed[key]} and {rel}")
        if key in self.dirs:
            raise RescueError(f"a file and a folder have the same name: {rel} and {self.dirs[key][2].lstrip('/')}/")
        self.claimed[key] = rel

    def _names(self, rel: str) -> dict[str, str]:
        """Claim ``rel`` and return its three paths (pycdlib keyword arguments)."""
        try:
            rel.encode("utf-8")
        except UnicodeEncodeError:  # a host name in another encoding (surrogate-escaped bytes)
            shown = rel.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
            raise RescueError(f"file name is not valid UTF-8, so it cannot go on the ISO: {shown}") from None
        self._claim(rel)
        p = PurePosixPath(rel)
        piso, pjol, pudf = self._dir(p.parent) if p.parent.parts else self.dirs[""]
        return {
            "iso_path": f"{piso}/{self.namer.iso_name(piso, p.name, False)}",
            "joliet_path": f"{pjol}/{self.namer.joliet_name(pjol, p.name, False)}",
            "udf_path": f"{pudf}/{p.name}",
        }

    def add_file(self, rel: str, host: Path) -> None:
        try:
            self.iso.add_file(str(host), **self._names(rel))
        except PyCdlibException as exc:  # e.g. a name too long for UDF: say which file
            raise RescueError(f"cannot put {rel} on the ISO: {exc}") from None
        self.files += 1

    def add_bytes(self, rel: str, data: bytes) -> None:
        self.iso.add_fp(io.BytesIO(data), len(data), **self._names(rel))
        self.files += 1


def master_iso(
    files: Mapping[str, Path],
    output: Path,
    *,
    efi_image: Path | None,
    bios_image: Path | None = None,
    label: str = DEFAULT_LABEL,
    extra: Mapping[str, bytes] | None = None,
    progress: bool | None = None,
    bios: BiosEntry | None = None,
    boot_check: bool = True,
    pad_sectors: int = 0,
) -> IsoResult:
    """Write an ISO holding ``files`` (ISO path -> host file) and El Torito boot entries.

    The BIOS entry (if any) is the catalog's default entry; the UEFI entry is a section
    with platform 0xEF.  ``extra`` adds small generated files (ISO path -> bytes).
    ``bios`` says how the BIOS image is loaded (default: etfsboot.com's 8 sectors, no boot info table);
    ``boot_check`` walks the result as Microsoft's boot chain reads it (WinPE media only); ``pad_sectors`` of
    zeros follow the volume (GRUB under SeaBIOS reads past a file in the image's last sectors).
    """
    bios = bios or WINPE_BIOS
    output = Path(output)
    vol = normalize_label(label)
    epoch = source_date_epoch()
    if bios_image is None and efi_image is None:
        raise RescueError("no El Torito boot image given (need etfsboot.com and/or efisys.bin)")
    iso = pycdlib.PyCdlib()
    entries: list[str] = []
    # A fresh name next to the output (same file system, so the rename is atomic); never a fixed
    # "<output>.tmp", which may be a file of the user's (or of a concurrent build) that we would overwrite and delete.
    tmp = output.with_name(f".{output.name}.{secrets.token_hex(8)}.tmp")  # opened "xb": exclusive, umask mode
    try:
        with _reproducible(epoch):
            iso.new(
                interchange_level=3,
                vol_ident=vol,
                sys_ident="",
                app_ident_str="RESCUEKIT",
                joliet=3,
                udf="2.60",
            )
            tree = IsoTree(iso)
            for rel in sorted(files, key=lambda k: (k.lower(), k)):
                tree.add_file(rel, files[rel])
            for rel, data in sorted((extra or {}).items()):
                tree.add_bytes(rel, data)
            boot = [(BIOS_IMAGE_PATH, bios_image, 0x00), (EFI_IMAGE_PATH, efi_image, 0xEF)]
            catalog = "/" + tree.catalog_name()
            first = True
            for iso_path, image, platform in boot:
                if image is None:
                    continue
                iso.add_file(str(image), iso_path=iso_path)
                iso.set_hidden(iso_path=iso_path)
                iso.add_eltorito(
                    iso_path,
                    bootcatfile=BOOT_CATALOG_PATH,
                    joliet_bootcatfile=catalog,
                    udf_bootcatfile=catalog,
                    # BIOS: exactly 8 sectors, as oscdimg; UEFI: 1, as on Microsoft's media.
                    boot_load_size=bios.load_sectors if platform == 0 else UEFI_LOAD_SECTORS,
                    platform_id=platform,
                    efi=platform == 0xEF and not first,
                    # etfsboot.com must not get one; GRUB's cdboot image needs it to find the rest of itself
                    boot_info_table=platform == 0 and bios.info_table,
                    media_name="noemul",
                )
                entries.append(f"{'BIOS' if platform == 0 else 'UEFI'} {Path(image).name}")
                first = False
            _hide_boot_catalog(iso, catalog)
            _validation_id(iso, bios.validation_id)
            total = iso.pvd.space_size * 2048 if iso.pvd else None
            with open(tmp, "xb") as f, byte_progress(f"writing {output.name}", total, enabled=progress) as adv:
                last = [0]

                def cb(done: int, _total: int, _opaque: object) -> None:
                    adv(done - last[0])
                    last[0] = done

                iso.write_fp(f, blocksize=_WRITE_BLOCK, progress_cb=cb)
                f.flush()
                if pad_sectors:
                    _pad(tmp, pad_sectors)
                os.fsync(f.fileno())
        notes = _single_extent_notes(files)
        if boot_check:
            notes += _boot_check(tmp, output, notes)
        os.replace(tmp, output)
        _fsync_dir(output.parent)
    except PyCdlibException as exc:
        raise RescueError(f"cannot master ISO {output}: {exc}") from None
    finally:
        with contextlib.suppress(Exception):
            iso.close()
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
    return IsoResult(output, output.stat().st_size, tree.files, entries, notes)


def _pad(path: Path, sectors: int) -> None:
    """Append ``sectors`` zero sectors after the volume (as a tail: the volume size and UDF's closing anchor stay
    where readers look for them), so no file's data ends in the image's last sectors."""
    with open(path, "ab") as f:
        f.write(b"\0" * (sectors * 2048))


def _validation_id(iso: pycdlib.PyCdlib, ident: bytes = isocheck.VALIDATION_ID) -> None:
    """Write the catalog validation entry's ID string as oscdimg does (pycdlib leaves it zero; cosmetic)."""
    val = iso.eltorito_boot_catalog.validation_entry
    val.id_string = ident.ljust(24, b"\0")
    val.checksum = 0
    val.checksum = val._checksum(val._record())


def _boot_check(written: Path, output: Path, known: list[str]) -> list[str]:
    """Read the written ISO back as the boot chain does (builder.isocheck); each failed check is a note.

    With ``RESCUEKIT_ISO_CHECK=strict`` (the test suite sets it) a failed check is an error instead, so every ISO the
    tests build is walked this way.  Files already named by a single-extent note are not reported twice.
    """
    report = isocheck.check_iso(written)
    seen = {n.split(" ", 1)[0].lower() for n in known}
    failed = [c for c in report.failed if not (c.name.startswith("udf:") and c.name[4:] in seen)]
    notes = [f"boot check {c.name}: {c.detail}" for c in failed]
    if notes and os.environ.get(ISO_CHECK_ENV) == "strict":
        raise RescueError(f"{output}: the ISO fails its boot-chain check ({len(notes)} failed): {notes[0]}")
    return notes


def _single_extent_notes(files: Mapping[str, Path]) -> list[str]:
    """Boot-path files that UDF cannot hold in one extent (30-bit extent lengths: ~1 GiB)."""
    notes = []
    for rel, host in files.items():
        if rel.lower() in isocheck.BOOT_FILES:
            size = Path(host).stat().st_size
            if size > isocheck.UDF_MAX_EXTENT:
                notes.append(f"{rel} is {size} bytes: over {isocheck.UDF_MAX_EXTENT}, UDF stores it in "
                             f"{-(-size // isocheck.UDF_MAX_EXTENT)} extents (Microsoft's boot code is only known to "
                             "read boot files in one extent)")
    return notes


def _hide_boot_catalog(iso: pycdlib.PyCdlib, catalog: str) -> None:
    """Keep the catalog out of the Joliet/UDF trees and hidden in ISO 9660 (oscdimg shows no boot.cat)."""
    for kw in ({"joliet_path": catalog}, {"udf_path": catalog}):
        with contextlib.suppress(PyCdlibException):
            iso.rm_hard_link(**kw)
    with contextlib.suppress(PyCdlibException):
        iso.set_hidden(iso_path=BOOT_CATALOG_PATH)


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

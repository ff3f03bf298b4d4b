"""Read a built ISO the way Microsoft's boot chain reads it, and check what that chain needs.

One reader for the on-disc structures rescuekit writes (pycdlib writes them; this module reads them back
independently, raw, so a check does not trust the writer):

- ISO 9660 (Ecma-119): the Primary Volume Descriptor at sector 16 and the directory records, by exact
  identifier (what etfsboot.com compares: ``BOOTMGR``, no ``;1``) or folded (``;version`` and a trailing dot
  stripped, case ignored: what the boot library's ETFS driver does);
- UDF (ECMA-167 3rd ed. / OSTA UDF 1.02): Anchor Volume Descriptor Pointer at sector 256 -> Main Volume
  Descriptor Sequence (Partition and Logical Volume Descriptors) -> File Set Descriptor -> root File Entry ->
  File Identifier Descriptors, names compared case-insensitively (what etfsboot.com and bootmgr do first);
- El Torito (boot record, catalog: validation entry, default entry, section headers and entries).

:func:`check_iso` walks the boot path (BIOS: etfsboot -> BOOTMGR [-> \\boot\\bootfix.bin] -> \\boot\\bcd ->
\\boot\\boot.sdi + \\sources\\boot.wim; UEFI: efisys.bin -> \\EFI\\Boot\\bootx64.efi -> \\EFI\\Microsoft\\Boot\\BCD
-> ...) and returns one :class:`Check` per property (``rescuekit inspect --check`` and the tests use it).
What it does not prove: that Microsoft's binaries accept the disc (none of them run here).
"""
from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from rescuekit.errors import RescueError

SECTOR = 2048
PVD_SECTOR = 16
UDF_ANCHOR_SECTOR = 256
BIOS_LOAD_SECTORS = 8  # etfsboot.com: 4 KiB
UEFI_LOAD_SECTORS = 1  # as on Microsoft's media (UEFI reads 0 or 1 as "to the end")
VALIDATION_ID = b"Microsoft Corporation"  # what oscdimg writes into the catalog's validation entry
UDF_REVISION = 0x0102
# A UDF extent's length has 30 bits; pycdlib/cdrkit split files into extents of at most this many bytes.
UDF_MAX_EXTENT = 0x3FFFF800
# The files of the boot path (lower case, "/"), and which firmware needs each.
BOOT_FILES: dict[str, str] = {
    "bootmgr": "bios",
    "boot/bootfix.bin": "bios-optional",  # the "Press any key" prompt; absent with --no-prompt
    "boot/bcd": "bios",
    "boot/boot.sdi": "any",
    "sources/boot.wim": "any",
    "efi/boot/bootx64.efi": "uefi",
    "efi/microsoft/boot/bcd": "uefi",
}
ISO_EXACT = ("BOOTMGR", "BOOT/BOOTFIX.BIN")  # compared byte-exact by etfsboot.com when it reads ISO 9660

_TAG_AVDP, _TAG_PD, _TAG_LVD, _TAG_TD = 2, 5, 6, 8
_TAG_FSD, _TAG_FID, _TAG_FE, _TAG_EFE = 256, 257, 261, 266


class IsoFormatError(RescueError):
    """A structure on the disc is missing or malformed (the message says which and where)."""


# ---------------------------------------------------------------- low level

def _crc_itu(data: bytes) -> int:
    """CRC-16/CCITT (x^16 + x^12 + x^5 + 1, initial 0), as ECMA-167 7.2.6 uses for descriptor CRCs."""
    crc = 0
    for b in data:
        crc ^= b << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) & 0xFFFF if crc & 0x8000 else (crc << 1) & 0xFFFF
    return crc


class Disc:
    """Random access to an image file in 2048-byte sectors."""

    def __init__(self, f: BinaryIO, size: int, name: str) -> None:
        self.f, self.size, self.name = f, size, name

    def read(self, lba: int, length: int = SECTOR) -> bytes:
        if lba < 0 or lba * SECTOR + length > self.size:
            raise IsoFormatError(f"{self.name}: sector {lba} (+{length} bytes) is past the end of the image")
        self.f.seek(lba * SECTOR)
        return self.f.read(length)


def read_pvd(f: BinaryIO) -> bytes | None:
    """The 2048-byte Primary Volume Descriptor at sector 16 (Ecma-119 8.4), None when there is none."""
    f.seek(PVD_SECTOR * SECTOR)
    pvd = f.read(SECTOR)
    return pvd if len(pvd) == SECTOR and pvd[:6] == b"\x01CD001" else None


def pvd_size(pvd: bytes) -> int:
    """Volume size in bytes that a PVD declares (space size x logical block size)."""
    (blocks,) = struct.unpack_from("<I", pvd, 80)
    (block_size,) = struct.unpack_from("<H", pvd, 128)
    return blocks * block_size


# ---------------------------------------------------------------- ISO 9660

@dataclass(frozen=True)
class IsoRecord:
    """One ISO 9660 directory record (for a multi-extent file: its extents in order)."""

    identifier: bytes
    is_dir: bool
    extents: tuple[tuple[int, int], ...]  # (sector, bytes)
    hidden: bool

    @property
    def size(self) -> int:
        return sum(n for _, n in self.extents)

    @property
    def folded(self) -> str:
        """The identifier as the boot library's ETFS driver compares it: no ``;version``, no trailing dot, lower case."""
        return self.identifier.split(b";")[0].rstrip(b".").decode("latin-1").lower()


class Iso9660:
    """The primary ISO 9660 tree (the boot code never uses Joliet)."""

    def __init__(self, disc: Disc, pvd: bytes) -> None:
        self.disc = disc
        self.pvd = pvd
        (block_size,) = struct.unpack_from("<H", pvd, 128)
        if block_size != SECTOR:
            raise IsoFormatError(f"{disc.name}: ISO 9660 logical block size {block_size}, expected 2048")
        self.root = self._record(pvd[156:190])

    @staticmethod
    def _record(rec: bytes) -> IsoRecord:
        lba, size = struct.unpack_from("<I", rec, 2)[0], struct.unpack_from("<I", rec, 10)[0]
        flags, ident_len = rec[25], rec[32]
        return IsoRecord(bytes(rec[33:33 + ident_len]), bool(flags & 2), ((lba, size),), bool(flags & 1))

    def children(self, d: IsoRecord) -> list[IsoRecord]:
        """The records of directory ``d`` without ``.``/``..``, multi-extent files joined (Ecma-119 6.5.1)."""
        (lba, size), = d.extents
        data = self.disc.read(lba, -(-size // SECTOR) * SECTOR)[:size]
        out: list[IsoRecord] = []
        pending: list[tuple[int, int]] = []
        pos = 0
        while pos < len(data):
            n = data[pos]
            if n == 0:  # records never cross a sector: skip to the next one
                pos = (pos // SECTOR + 1) * SECTOR
                continue
            if n < 34 or pos + n > len(data):
                raise IsoFormatError(f"{self.disc.name}: bad ISO 9660 directory record at sector {lba + pos // SECTOR}")
            raw = data[pos:pos + n]
            pos += n
            rec = self._record(raw)
            if rec.identifier in (b"\x00", b"\x01"):
                continue
            pending += rec.extents
            if raw[25] & 0x80:  # multi-extent: more records of this file follow
                continue
            out.append(IsoRecord(rec.identifier, rec.is_dir, tuple(pending), rec.hidden))
            pending = []
        return out

    def lookup(self, path: str, *, exact: bool) -> IsoRecord | None:
        """``exact``: each component byte for byte (etfsboot.com); else folded (bootmgr's ETFS driver)."""
        cur = self.root
        for part in path.strip("/").split("/"):
            if not cur.is_dir:
                return None
            want = part.encode("latin-1", "replace") if exact else part.lower()
            cur = next((c for c in self.children(cur) if (c.identifier if exact else c.folded) == want), None)
            if cur is None:
                return None
        return cur

    def walk(self, d: IsoRecord | None = None, prefix: str = "") -> Iterator[tuple[str, IsoRecord]]:
        for c in self.children(d or self.root):
            path = f"{prefix}{c.identifier.decode('latin-1')}"
            yield path, c
            if c.is_dir:
                yield from self.walk(c, path + "/")


# ---------------------------------------------------------------- UDF

def _tag(buf: bytes, where: str, lba: int, want: int | tuple[int, ...], *, rel_lba: int | None = None) -> int:
    """Check a descriptor tag (ECMA-167 3/7.2): checksum, CRC, location; return its identifier."""
    if len(buf) < 16:
        raise IsoFormatError(f"{where}: no descriptor tag at sector {lba}")
    ident, _ver, csum, _res, _serial, crc, crc_len, loc = struct.unpack_from("<HHBBHHHI", buf, 0)
    wants = want if isinstance(want, tuple) else (want,)
    if ident not in wants:
        raise IsoFormatError(f"{where}: sector {lba} holds descriptor {ident}, expected {'/'.join(map(str, wants))}")
    if (sum(buf[:4]) + sum(buf[5:16])) & 0xFF != csum:
        raise IsoFormatError(f"{where}: bad tag checksum at sector {lba}")
    if 16 + crc_len > len(buf) or _crc_itu(buf[16:16 + crc_len]) != crc:
        raise IsoFormatError(f"{where}: bad descriptor CRC at sector {lba}")
    if loc != (lba if rel_lba is None else rel_lba):
        raise IsoFormatError(f"{where}: descriptor at sector {lba} says it is at {loc}")
    return ident


def _dstring(raw: bytes) -> str:
    """An OSTA compressed unicode string (UDF 1.02 2.1.1): compression ID 8 (one byte) or 16 (UTF-16BE)."""
    if not raw:
        return ""
    if raw[0] == 8:
        return raw[1:].decode("latin-1")
    if raw[0] == 16:
        return raw[1:].decode("utf-16-be", "replace")
    raise IsoFormatError(f"UDF name with unknown compression ID {raw[0]}")


@dataclass
class UdfEntry:
    """A file or directory found through UDF File Identifier Descriptors."""

    name: str
    is_dir: bool
    icb: int  # absolute sector of its (Extended) File Entry
    tag: int  # 261 File Entry / 266 Extended File Entry
    ad_type: int  # ICB flags & 7: 0 short_ad, 1 long_ad, 2 ext_ad, 3 data embedded in the entry
    size: int  # information length
    extents: list[tuple[int, int]]  # (absolute sector, bytes), recorded extents in order
    unrecorded: int = 0  # extents that are not "recorded and allocated" (or further AD extents)

    @property
    def single_extent(self) -> bool:
        """All bytes in one recorded extent of short/long ADs (or an empty file with none)."""
        if self.ad_type not in (0, 1) or self.unrecorded:
            return False
        if self.size == 0:
            return len(self.extents) <= 1
        return len(self.extents) == 1 and self.extents[0][1] == self.size


@dataclass
class Udf:
    """A UDF volume: the structures the walk passed through (for the checks) and a case-insensitive lookup."""

    disc: Disc
    part_start: int
    part_len: int
    block_size: int
    lvd_revision: int
    fsd_revision: int
    fsd_lba: int
    root: UdfEntry
    metadata: set[int] = field(default_factory=set)  # sectors of every descriptor / directory read

    @classmethod
    def open(cls, disc: Disc) -> Udf:
        where = f"{disc.name}: UDF"
        avdp = disc.read(UDF_ANCHOR_SECTOR)
        _tag(avdp, f"{where} anchor", UDF_ANCHOR_SECTOR, _TAG_AVDP)
        vds_len, vds_lba = struct.unpack_from("<II", avdp, 16)
        meta = {UDF_ANCHOR_SECTOR}
        pd = lvd = None
        for i in range(max(vds_len // SECTOR, 1)):
            buf = disc.read(vds_lba + i)
            meta.add(vds_lba + i)
            (ident,) = struct.unpack_from("<H", buf, 0)
            if ident == 0:
                break
            ident = _tag(buf, f"{where} volume descriptor", vds_lba + i, (1, 4, 5, 6, 7, 8, 9))
            if ident == _TAG_TD:
                break
            if ident == _TAG_PD and pd is None:
                pd = buf
            elif ident == _TAG_LVD and lvd is None:
                lvd = buf
        if pd is None or lvd is None:
            raise IsoFormatError(f"{where}: no {'Partition' if pd is None else 'Logical Volume'} Descriptor in the main sequence at sector {vds_lba}")
        part_start, part_len = struct.unpack_from("<II", pd, 188)
        (block_size,) = struct.unpack_from("<I", lvd, 212)
        if block_size != SECTOR:
            raise IsoFormatError(f"{where}: logical block size {block_size}, expected 2048")
        if not lvd[217:240].startswith(b"*OSTA UDF Compliant"):
            raise IsoFormatError(f"{where}: logical volume domain is not *OSTA UDF Compliant")
        (lvd_rev,) = struct.unpack_from("<H", lvd, 240)
        (_fsd_len, fsd_lbn, _fsd_part) = struct.unpack_from("<IIH", lvd, 248)
        udf = cls(disc, part_start, part_len, block_size, lvd_rev, 0, part_start + fsd_lbn,
                  UdfEntry("", True, 0, 0, 0, 0, []), meta)
        fsd = disc.read(udf.fsd_lba)
        _tag(fsd, f"{where} file set descriptor", udf.fsd_lba, _TAG_FSD, rel_lba=fsd_lbn)
        meta.add(udf.fsd_lba)
        (udf.fsd_revision,) = struct.unpack_from("<H", fsd, 416 + 24)
        (_root_len, root_lbn, _root_part) = struct.unpack_from("<IIH", fsd, 400)
        udf.root = udf._entry("", True, root_lbn)
        return udf

    def _entry(self, name: str, is_dir: bool, lbn: int) -> UdfEntry:
        """Read the (Extended) File Entry at partition block ``lbn`` (ECMA-167 4/14.9, 4/14.17)."""
        lba = self.part_start + lbn
        buf = self.disc.read(lba)
        self.metadata.add(lba)
        tag = _tag(buf, f"{self.disc.name}: UDF file entry of {name or '/'}", lba, (_TAG_FE, _TAG_EFE), rel_lba=lbn)
        (flags,) = struct.unpack_from("<H", buf, 34)
        (size,) = struct.unpack_from("<Q", buf, 56)
        ea_off = 168 if tag == _TAG_FE else 208
        l_ea, l_ad = struct.unpack_from("<II", buf, ea_off)
        ads = buf[ea_off + 8 + l_ea: ea_off + 8 + l_ea + l_ad]
        ad_type = flags & 7
        entry = UdfEntry(name, is_dir, lba, tag, ad_type, size, [])
        if ad_type in (0, 1):
            step = 8 if ad_type == 0 else 16
            for off in range(0, len(ads) - step + 1, step):
                length, pos = struct.unpack_from("<II", ads, off)
                kind, length = length >> 30, length & 0x3FFFFFFF
                if length == 0:
                    break
                if kind != 0:
                    entry.unrecorded += 1
                    continue
                entry.extents.append((self.part_start + pos, length))
        elif ad_type == 3:
            entry.extents.append((lba, size))  # embedded: the bytes are inside the entry itself
        return entry

    def read(self, entry: UdfEntry, limit: int | None = None) -> bytes:
        """The bytes of ``entry`` (directories, small files; ``limit`` caps how many)."""
        want = entry.size if limit is None else min(limit, entry.size)
        if entry.ad_type == 3:
            buf = self.disc.read(entry.icb)
            ea_off = 168 if entry.tag == _TAG_FE else 208
            (l_ea,) = struct.unpack_from("<I", buf, ea_off)
            return buf[ea_off + 8 + l_ea:][:want]
        out = bytearray()
        for lba, length in entry.extents:
            if len(out) >= want:
                break
            out += self.disc.read(lba, min(length, want - len(out)))
        return bytes(out[:want])

    def children(self, d: UdfEntry) -> list[UdfEntry]:
        """The File Identifier Descriptors of directory ``d`` (ECMA-167 4/14.4), without the parent entry."""
        data = self.read(d)
        for lba, length in d.extents:
            self.metadata.update(range(lba, lba + -(-length // SECTOR)))
        out: list[UdfEntry] = []
        pos = 0
        while pos + 38 <= len(data):
            (ident,) = struct.unpack_from("<H", data, pos)
            if ident != _TAG_FID:
                raise IsoFormatError(f"{self.disc.name}: UDF directory {d.name or '/'}: descriptor {ident} "
                                     f"where a File Identifier Descriptor belongs (offset {pos})")
            chars, l_fi = data[pos + 18], data[pos + 19]
            (_len, lbn, _part) = struct.unpack_from("<IIH", data, pos + 20)
            (l_iu,) = struct.unpack_from("<H", data, pos + 36)
            name_raw = data[pos + 38 + l_iu: pos + 38 + l_iu + l_fi]
            pos += (38 + l_iu + l_fi + 3) & ~3
            if chars & 0x0C:  # parent (8) or deleted (4)
                continue
            out.append(self._entry(_dstring(name_raw), bool(chars & 2), lbn))
        return out

    def lookup(self, path: str) -> list[UdfEntry] | None:
        """The entries from the root to ``path``, each name matched case-insensitively; None if absent."""
        chain = [self.root]
        for part in path.strip("/").split("/"):
            if not chain[-1].is_dir:
                return None
            hit = next((c for c in self.children(chain[-1]) if c.name.lower() == part.lower()), None)
            if hit is None:
                return None
            chain.append(hit)
        return chain


# ---------------------------------------------------------------- El Torito

@dataclass(frozen=True)
class BootEntry:
    platform: int  # 0 = x86 BIOS, 0xEF = UEFI
    bootable: bool
    media: int  # 0 = no emulation
    load_segment: int
    sectors: int  # virtual 512-byte sectors to load
    lba: int


@dataclass(frozen=True)
class Catalog:
    lba: int
    validation_platform: int
    validation_id: bytes
    entries: tuple[BootEntry, ...]


def _el_torito(disc: Disc) -> Catalog | None:
    """The El Torito catalog named by the boot record among the volume descriptors (None when absent)."""
    for lba in range(PVD_SECTOR, PVD_SECTOR + 64):
        vd = disc.read(lba)
        if vd[1:6] != b"CD001":
            return None
        if vd[0] == 255:
            return None
        if vd[0] == 0 and vd[7:30] == b"EL TORITO SPECIFICATION":
            (cat_lba,) = struct.unpack_from("<I", vd, 0x47)
            break
    else:
        return None
    cat = disc.read(cat_lba)
    if cat[0] != 1 or cat[30:32] != b"\x55\xaa" or sum(struct.unpack_from("<16H", cat, 0)) & 0xFFFF:
        raise IsoFormatError(f"{disc.name}: El Torito validation entry at sector {cat_lba} is invalid")
    entries = []

    def entry(raw: bytes, platform: int) -> BootEntry:
        seg, _systype, _unused, count, lba = struct.unpack_from("<HBBHI", raw, 2)
        return BootEntry(platform, raw[0] == 0x88, raw[1] & 0x0F, seg, count, lba)

    entries.append(entry(cat[32:64], cat[1]))
    pos = 64
    while pos + 32 <= SECTOR and cat[pos] in (0x90, 0x91):
        header_last, platform = cat[pos] == 0x91, cat[pos + 1]
        (count,) = struct.unpack_from("<H", cat, pos + 2)
        pos += 32
        for _ in range(count):
            if pos + 32 > SECTOR:
                break
            entries.append(entry(cat[pos:pos + 32], platform))
            pos += 32
            while pos + 32 <= SECTOR and cat[pos] == 0x44:  # section entry extensions
                pos += 32
        if header_last:
            break
    return Catalog(cat_lba, cat[1], cat[4:28].rstrip(b"\0"), tuple(entries))


# ---------------------------------------------------------------- the checks

@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str

    def as_dict(self) -> dict:
        return {"check": self.name, "ok": self.ok, "detail": self.detail}


@dataclass
class Report:
    path: Path
    checks: list[Check]
    udf: bool
    bios: bool
    uefi: bool

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.checks)

    @property
    def failed(self) -> list[Check]:
        return [c for c in self.checks if not c.ok]

    def get(self, name: str) -> Check:
        return next(c for c in self.checks if c.name == name)

    def as_dict(self) -> dict:
        return {"iso": str(self.path), "ok": self.ok, "checks": [c.as_dict() for c in self.checks]}


def _fat_image(disc: Disc, lba: int) -> bool:
    bs = disc.read(lba, 512)
    return bs[510:512] == b"\x55\xaa" and (b"FAT" in bs[0x36:0x3E] or b"FAT" in bs[0x52:0x5A])


def check_iso(path: Path) -> Report:
    """Walk ``path`` as etfsboot.com / bootmgr / UEFI firmware would and report each property.

    Structures that cannot be parsed at all are a failed check naming the spot, never an exception;
    a file that is not an ISO is an :class:`IsoFormatError`.
    """
    path = Path(path)
    size = path.stat().st_size
    checks: list[Check] = []

    def add(name: str, ok: bool, detail: str) -> None:
        checks.append(Check(name, ok, detail))

    with open(path, "rb") as f:
        disc = Disc(f, size, str(path))
        pvd = read_pvd(f)
        if pvd is None:
            raise IsoFormatError(f"not an ISO 9660 image: {path} (no primary volume descriptor at sector 16)")
        declared = pvd_size(pvd)
        add("iso9660.size", size >= declared, f"image {size} bytes, volume {declared} bytes")

        # El Torito
        try:
            cat = _el_torito(disc)
        except IsoFormatError as exc:
            cat, _ = None, add("eltorito.catalog", False, str(exc))
        bios = [e for e in cat.entries if e.platform == 0] if cat else []
        uefi = [e for e in cat.entries if e.platform == 0xEF] if cat else []
        if cat is not None:
            add("eltorito.catalog", True, f"catalog at sector {cat.lba}, {len(cat.entries)} entries")
            add("eltorito.validation_id", cat.validation_id == VALIDATION_ID,
                f"validation entry ID {cat.validation_id.decode('latin-1')!r} (oscdimg: {VALIDATION_ID.decode()!r})")
        elif not any(c.name == "eltorito.catalog" for c in checks):
            add("eltorito.catalog", False, "no El Torito boot record")
        if bios:
            e = bios[0]
            add("eltorito.bios", e is cat.entries[0] and e.bootable and e.media == 0 and e.sectors == BIOS_LOAD_SECTORS
                and e.load_segment in (0, 0x7C0),
                f"default entry platform 0x00, {'no emulation' if e.media == 0 else f'media {e.media}'}, "
                f"{e.sectors} sectors at {e.lba} (etfsboot.com: no emulation, {BIOS_LOAD_SECTORS} sectors)")
        if uefi:
            e = uefi[0]
            fat = _fat_image(disc, e.lba)
            add("eltorito.uefi", e.bootable and e.media == 0 and e.sectors == UEFI_LOAD_SECTORS and fat,
                f"platform 0xEF, {'no emulation' if e.media == 0 else f'media {e.media}'}, {e.sectors} sector(s) "
                f"at {e.lba}, {'a FAT image' if fat else 'NOT a FAT image'} (Microsoft's media: 1 sector)")
        if cat is not None and not bios and not uefi:
            add("eltorito.entries", False, "no BIOS (0x00) or UEFI (0xEF) boot entry")

        # UDF, as etfsboot.com and bootmgr read it first
        udf: Udf | None = None
        udf_files: dict[str, UdfEntry] = {}
        try:
            udf = Udf.open(disc)
        except IsoFormatError as exc:
            add("udf.anchor", False, f"no usable UDF: {exc}")
        need = {p for p, fw in BOOT_FILES.items()
                if fw == "any" or (fw == "bios" and bios) or (fw == "uefi" and uefi)}
        if udf is not None:
            add("udf.anchor", True, f"anchor at {UDF_ANCHOR_SECTOR}, partition at {udf.part_start}, "
                                    f"file set at {udf.fsd_lba}")
            add("udf.revision", udf.lvd_revision == UDF_REVISION and udf.fsd_revision == UDF_REVISION,
                f"logical volume UDF {udf.lvd_revision >> 8:x}.{udf.lvd_revision & 0xFF:02x}, "
                f"file set UDF {udf.fsd_revision >> 8:x}.{udf.fsd_revision & 0xFF:02x} (oscdimg -udfver102: 1.02)")
            for rel in BOOT_FILES:
                try:
                    chain = udf.lookup(rel)
                except IsoFormatError as exc:
                    add(f"udf:{rel}", False, str(exc))
                    continue
                if chain is None:
                    if rel in need:
                        add(f"udf:{rel}", False, "not found (case-insensitive)")
                    continue
                ent = chain[-1]
                udf_files[rel] = ent
                plain = all(c.tag == _TAG_FE for c in chain)
                ok = plain and not ent.is_dir and ent.single_extent
                why = [] if plain else ["an Extended File Entry on the path (UDF 1.02 writes plain File Entries)"]
                if ent.is_dir:
                    why.append("is a folder")
                elif not ent.single_extent:
                    why.append(f"in {len(ent.extents)} extents, AD type {ent.ad_type}"
                               + (f" (over {UDF_MAX_EXTENT} bytes cannot be one extent)" if ent.size > UDF_MAX_EXTENT else ""))
                add(f"udf:{rel}", ok, f"/{'/'.join(c.name for c in chain[1:])}, {ent.size} bytes"
                    + (f" at sector {ent.extents[0][0]}" if ent.extents else "") + (": " + "; ".join(why) if why else ""))
            data = [lba for e in udf_files.values() if e.ad_type != 3 for lba, _ in e.extents]
            first_data = min(data, default=size // SECTOR)
            last_meta = max(udf.metadata)
            add("udf.early", last_meta < first_data,
                f"UDF structures of the boot path end at sector {last_meta}, boot file data starts at {first_data}")

        # ISO 9660, the fallback: exact identifiers for etfsboot.com, folded names for bootmgr
        iso = Iso9660(disc, pvd)
        try:
            names = list(iso.walk())
        except IsoFormatError as exc:
            add("iso9660.tree", False, str(exc))
            names = []
        bad = [p for p, r in names if not r.is_dir and (b";" in r.identifier or r.identifier.endswith(b"."))]
        add("iso9660.names", not bad, f"{len(bad)} of {len(names)} names carry a ;version or a lone trailing dot"
            + (f", e.g. {bad[0]}" if bad else " (as oscdimg writes them)"))
        try:
            _iso_checks(iso, add, need, udf, udf_files)
        except IsoFormatError as exc:
            add("iso9660.tree", False, str(exc))
    return Report(path, checks, udf is not None, bool(bios), bool(uefi))


def _iso_checks(iso: Iso9660, add, need: set[str], udf: Udf | None, udf_files: dict[str, UdfEntry]) -> None:
    """The ISO 9660 part of :func:`check_iso`: exact identifiers for etfsboot.com, folded names for bootmgr."""
    for exact in ISO_EXACT:
        rel = exact.lower()
        if rel not in need and rel not in udf_files:
            if iso.lookup(exact, exact=False) is not None and udf is not None:
                add(f"iso9660:{exact}", False, "on the ISO 9660 tree but not in UDF")
            continue
        rec = iso.lookup(exact, exact=True)
        loose = iso.lookup(exact, exact=False) if rec is None else rec
        add(f"iso9660:{exact}", rec is not None and not rec.is_dir,
            f"exact identifier {exact!r} " + ("found" if rec else "missing")
            + (f" (there is {loose.identifier.decode('latin-1')!r}: etfsboot.com compares byte-exact)"
               if rec is None and loose is not None else ""))
    for rel in BOOT_FILES:
        if rel not in need and rel not in udf_files:
            continue
        rec = iso.lookup(rel, exact=False)
        same = ""
        ok = rec is not None and not rec.is_dir
        if ok and rel in udf_files and udf_files[rel].ad_type != 3:
            u = udf_files[rel]
            ok = rec.size == u.size and (u.size == 0 or rec.extents[0][0] == u.extents[0][0])
            same = ", same data as UDF" if ok else f", NOT the UDF file's data (sector {rec.extents[0][0]})"
        add(f"iso9660~{rel}", ok, ("found after case folding" if rec else "not reachable after case folding") + same)


def format_report(rep: Report) -> str:
    lines = [f"{'ok  ' if c.ok else 'FAIL'} {c.name}: {c.detail}" for c in rep.checks]
    lines.append(f"{rep.path}: {'all ' + str(len(rep.checks)) + ' checks pass' if rep.ok else f'{len(rep.failed)} of {len(rep.checks)} checks FAIL'}")
    return "\n".join(lines)


__all__ = [
    "BOOT_FILES",
    "Check",
    "Iso9660",
    "IsoFormatError",
    "Report",
    "Udf",
    "check_iso",
    "format_report",
    "pvd_size",
    "read_pvd",
]

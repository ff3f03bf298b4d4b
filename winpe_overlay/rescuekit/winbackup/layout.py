"""The disk a restore (or an import) builds from a backup's volumes: a new partition table that boots, each
volume at a 1 MiB-aligned offset, its boot sector's hidden-sectors field set to the new start.

BIOS: MBR; the boot-manager volume (``\\Boot\\BCD``, "System Reserved") first and active, then the Windows
volume, then the other volumes. UEFI: GPT; the ESP (FAT, ``\\EFI\\Microsoft\\Boot\\BCD``), a 16 MiB MSR, the
Windows volume, the others. Volumes keep their size (file systems are not resized); the disk needs at least
the sum of the aligned volumes plus the table.
"""
from __future__ import annotations

import random
import struct
from dataclasses import dataclass, field

from rescuekit.disk import fat, ntfs
from rescuekit.disk.partitions import NewPartition, build_gpt, build_mbr, read_table
from rescuekit.errors import RescueError, UsageError
from rescuekit.imaging.units import human
from rescuekit.vdisk import ReadOnlyDevice, SliceDevice
from rescuekit.winbackup.volumes import Volume

MiB = 1 << 20
ALIGN = MiB
MSR_SIZE = 16 * MiB
GPT_TAIL = MiB  # room for the backup GPT (33 sectors), kept aligned
ESP_TYPE = "C12A7328-F81F-11D2-BA4B-00A0C93EC93B"
MSR_TYPE = "E3C9E316-0B5C-4DB8-817D-F92DF00215AE"
BASIC_TYPE = "EBD0A0A2-B9E5-4433-87C0-68B6B72699C7"
MBR_TYPES = {"ntfs": 0x07, "exfat": 0x07, "bitlocker": 0x07, "fat32": 0x0C, "fat16": 0x0E, "fat12": 0x01}


@dataclass
class Slot:
    volume: Volume | None  # None: the MSR (zeros)
    part: NewPartition
    role: str  # "boot", "windows", "msr", "data"


@dataclass
class Layout:
    kind: str  # "bios" | "uefi"
    slots: list[Slot]
    min_size: int  # the smallest disk that holds it
    warnings: list[str] = field(default_factory=list)

    def describe(self) -> list[str]:
        out = []
        for i, s in enumerate(self.slots, 1):
            v = s.volume
            what = "Microsoft reserved (empty)" if v is None else \
                f"{v.letter or '--'} {v.fs.kind} {repr(v.fs.label) if v.fs.label else ''} ({v.spec.guid})"
            out.append(f"  {i}  {human(s.part.size):>10}  at {s.part.start:>12}  {s.role:<8} {what}")
        return out


def select(vols: list[Volume], wanted: tuple[str, ...]) -> list[Volume]:
    """The volumes named by GUID (with or without braces) or drive letter; all when none is named."""
    if not wanted:
        return list(vols)
    out = []
    for w in wanted:
        key = w.strip().strip("{}").lower().rstrip("\\").rstrip(":")
        hit = [v for v in vols if v.spec.guid == key or (v.letter and v.letter.lower().rstrip(":") == key)]
        if not hit:
            have = ", ".join(f"{v.letter or '--'} {v.spec.guid}" for v in vols)
            raise UsageError(f"the backup has no volume {w!r} (volumes: {have})")
        if hit[0] not in out:
            out.append(hit[0])
    return out


def _up(n: int) -> int:
    return -(-n // ALIGN) * ALIGN


def plan_layout(vols: list[Volume], kind: str = "auto") -> Layout:
    """Order the volumes into a bootable layout for ``kind`` (bios, uefi or auto: what the boot volume is)."""
    boots = [v for v in vols if v.boot]
    wins = [v for v in vols if v.windows]
    uefi_boot = next((v for v in boots if v.boot == "uefi" and v.fs.kind.startswith("fat")), None)
    bios_boot = next((v for v in boots if v.boot == "bios"), None)
    if kind == "auto":
        kind = "uefi" if uefi_boot else "bios" if bios_boot else ""
        if not kind:
            raise RescueError("none of the selected volumes holds a boot manager (\\Boot\\BCD or "
                              "\\EFI\\Microsoft\\Boot\\BCD on a FAT volume); give --layout bios|uefi or select "
                              "the System Reserved / EFI volume too")
    warnings = []
    if not wins:
        warnings.append("none of the selected volumes holds \\Windows\\System32: the disk will not start Windows")
    order: list[tuple[Volume | None, str]] = []
    if kind == "uefi":
        if uefi_boot is None:
            raise RescueError("--layout uefi needs an EFI system partition (FAT with \\EFI\\Microsoft\\Boot\\BCD) "
                              "and the backup's selected volumes have none (it was made on a BIOS machine?)")
        order = [(uefi_boot, "boot"), (None, "msr")]
    else:
        if bios_boot is None:
            raise RescueError("--layout bios needs a volume with \\Boot\\BCD (System Reserved, or Windows' own "
                              "volume on a single-partition install) and the selected volumes have none "
                              "(a UEFI backup: use --layout uefi)")
        order = [(bios_boot, "boot")]
    for v in wins:
        if all(v is not o for o, _r in order):
            order.append((v, "windows"))
    for v in vols:
        if all(v is not o for o, _r in order):
            order.append((v, "data"))
    if kind == "bios" and len(order) > 4:
        raise RescueError(f"a BIOS (MBR) layout holds 4 partitions; {len(order)} volumes were selected "
                          "(choose fewer with --volume)")
    if kind == "bios" and not _mbr_code(bios_boot):
        warnings.append("the boot volume's virtual disk carries no MBR boot code, so the new MBR has none: make the "
                        "disk bootable with `bootsect /nt60 SYS /mbr` (or `bootrec /fixmbr`) from a Windows rescue "
                        "disc")
    slots, pos = [], ALIGN
    for v, role in order:
        size = MSR_SIZE if v is None else v.size
        if v is None:
            part = NewPartition(pos, size, gpt_type=MSR_TYPE, name="Microsoft reserved partition")
        elif kind == "uefi" and role == "boot":
            part = NewPartition(pos, size, gpt_type=ESP_TYPE, name="EFI system partition")
        else:
            part = NewPartition(pos, size, mbr_type=MBR_TYPES.get(v.fs.kind, 0x07), gpt_type=BASIC_TYPE,
                                name="Basic data partition", bootable=kind == "bios" and role == "boot")
        slots.append(Slot(v, part, role))
        pos = _up(pos + size)
    end = slots[-1].part.start + slots[-1].part.size
    return Layout(kind, slots, _up(end) + (GPT_TAIL if kind == "uefi" else 0), warnings)


def grow_last(layout: Layout, disk_size: int) -> Slot:
    """Make the last partition reach the end of a ``disk_size``-byte disk (less the GPT backup area). Only
    the partition grows: its file system keeps its size (Windows: ``diskpart`` > ``extend filesystem``)."""
    last = layout.slots[-1]
    if last.volume is None:
        raise UsageError("--grow: the last partition is the MSR; there is nothing to grow")
    end = (disk_size - (GPT_TAIL if layout.kind == "uefi" else 0)) // ALIGN * ALIGN
    if layout.kind == "bios":
        end = min(end, 0xFFFFFFFF * 512 // ALIGN * ALIGN)  # an MBR entry counts 2^32-1 sectors at most
    if end > last.part.start + last.part.size:
        last.part.size = end - last.part.start
        v = last.volume
        layout.warnings.append(f"partition {len(layout.slots)} ({v.letter or v.spec.guid}) was grown to "
                               f"{human(last.part.size)}; its {v.fs.kind} file system keeps its {human(v.size)}: "
                               "extend it in Windows (diskpart: select volume, extend filesystem)")
    return last


def shrink_volume(v: Volume, new_size: int) -> tuple[Volume, object]:
    """``v`` with its file system shrunk to ``new_size`` bytes (NTFS: ``ntfs_resize``, FAT: ``fat_resize``), read
    through ``imaging.layout.ShrunkView`` over its virtual disk (its table and MBR code stay readable), and the
    plan (``VolumeShrink``); RescueError when it cannot be shrunk that far."""
    from dataclasses import replace

    from rescuekit.disk import fat_resize, ntfs_resize
    from rescuekit.imaging.layout import FAT_KINDS, ShrunkView, VolumeShrink

    if v.fs.kind != "ntfs" and v.fs.kind not in FAT_KINDS:
        raise RescueError(f"only NTFS and FAT volumes can be shrunk (this one is {v.fs.kind})")
    planner = ntfs_resize.plan if v.fs.kind == "ntfs" else fat_resize.plan
    sh = planner(v.device, 0, v.size, new_size)
    vs = VolumeShrink(0, sh)
    return replace(v, disk=ShrunkView(v.disk, v.offset, vs), size=new_size), vs


def shrink_last(layout: Layout, disk_size: int) -> tuple[Slot, object]:
    """Make the layout fit a ``disk_size``-byte disk smaller than ``layout.min_size``: the last partition ends at
    the disk's last 1 MiB boundary (less the GPT backup area) and its file system shrinks; the others keep their
    place and size. RescueError (naming what is needed) when it cannot."""
    last = layout.slots[-1]
    v = last.volume
    if v is None:
        raise RescueError("the last partition is the MSR; there is nothing to shrink")
    end = (disk_size - (GPT_TAIL if layout.kind == "uefi" else 0)) // ALIGN * ALIGN
    new_size = end - last.part.start
    if new_size <= 0:
        raise RescueError(f"partition {len(layout.slots)} ({v.letter or v.spec.guid}) starts at byte "
                          f"{last.part.start}, past the new end")
    shrunk, vs = shrink_volume(v, new_size)
    last.volume, last.part.size = shrunk, new_size
    layout.min_size = disk_size
    return last, vs


def _boot_patches(dev: ReadOnlyDevice, vol: Volume, start: int) -> list[tuple[int, bytes]]:
    """(offset in the volume, bytes): the hidden-sectors field (BPB offset 0x1C) of the boot sector and its
    copies (NTFS: the backup at the end of the volume; FAT32: the backup at BPB_BkBootSec) set to ``start``."""
    boot = dev.read(vol.offset, 512)
    out: list[tuple[int, int]] = []
    if (nb := ntfs.parse_boot(boot)) is not None:
        hidden = start // nb.bytes_per_sector
        for pos in {0, nb.total_sectors * nb.bytes_per_sector, vol.size - nb.bytes_per_sector}:
            if 0 <= pos <= vol.size - 512 and dev.read(vol.offset + pos + 3, 8) == ntfs.NTFS_OEM:
                out.append((pos, hidden))
    elif (fb := fat.parse_fat_boot(boot)) is not None:
        hidden = start // fb.bytes_per_sector
        out.append((0, hidden))
        if fb.kind == "fat32":
            bk = struct.unpack_from("<H", boot, 0x32)[0]
            if 0 < bk < fb.reserved and fat.parse_fat_boot(dev.read(vol.offset + bk * fb.bytes_per_sector, 512)):
                out.append((bk * fb.bytes_per_sector, hidden))
    return [(pos + 0x1C, struct.pack("<I", min(h, 0xFFFFFFFF))) for pos, h in out]


class AssembledDisk(ReadOnlyDevice):
    """The disk of ``size`` bytes that ``layout`` describes, read on demand from the virtual disks."""

    def __init__(self, layout: Layout, size: int, *, name: str = "winbackup") -> None:
        from rescuekit.disk.device import DiskInfo

        if size < layout.min_size:
            raise RescueError(f"a disk of {size} bytes cannot hold the layout ({layout.min_size} bytes needed)")
        self.size, self.path, self.sector_size = size, name, 512
        self.info = DiskInfo(path=name, size=size, sector_size=512, kind="file", model="assembled from a backup")
        parts = [s.part for s in layout.slots]
        if layout.kind == "uefi":
            self._fixed = build_gpt(size, parts)
        else:
            self._fixed = [(0, build_mbr(parts, _signature(layout), boot_code=_boot_code(layout)))]
        self._sources: list[tuple[int, int, SliceDevice]] = []  # (disk offset, length, source)
        self._patches: list[tuple[int, bytes]] = []
        for s in layout.slots:
            if s.volume is None:
                continue
            v = s.volume
            self._sources.append((s.part.start, v.size, v.device))
            self._patches += [(s.part.start + p, b) for p, b in _boot_patches(v.disk, v, s.part.start)]
            nb = ntfs.parse_boot(v.disk.read(v.offset, 512))
            if nb is not None and s.part.size > v.size:
                # a grown partition: NTFS looks for the backup boot sector in the partition's last sector
                bps = nb.bytes_per_sector
                sector = bytearray(v.disk.read(v.offset, bps))
                sector[0x1C:0x20] = struct.pack("<I", s.part.start // bps)
                self._patches.append((s.part.start + s.part.size - bps, bytes(sector)))

    def _read_into(self, offset: int, view: memoryview) -> None:
        n = len(view)
        end = offset + n
        view[:] = bytes(n)
        for start, length, src in self._sources:
            a, b = max(offset, start), min(end, start + length)
            if a < b:
                src.readinto(a - start, view[a - offset:b - offset])
        for start, data in self._fixed + self._patches:
            a, b = max(offset, start), min(end, start + len(data))
            if a < b:
                view[a - offset:b - offset] = data[a - start:b - start]


class PlacedVolume(ReadOnlyDevice):
    """One volume of a backup as it will sit at byte ``start`` of a disk: its boot sectors' hidden-sectors
    fields set to ``start`` (unchanged when ``start`` is None: where the target lies on its disk is unknown)."""

    def __init__(self, vol: Volume, start: int | None) -> None:
        from rescuekit.disk.device import DiskInfo

        self._src = vol.device
        self.size, self.sector_size, self.path = vol.size, 512, str(vol.file)
        self.info = DiskInfo(path=self.path, size=self.size, sector_size=512, kind="partition",
                             model="volume from a backup")
        self._patches = [] if start is None else _boot_patches(vol.disk, vol, start)

    def _read_into(self, offset: int, view: memoryview) -> None:
        self._src.readinto(offset, view)
        end = offset + len(view)
        for start, data in self._patches:
            a, b = max(offset, start), min(end, start + len(data))
            if a < b:
                view[a - offset:b - offset] = data[a - start:b - start]


def _signature(layout: Layout) -> int:
    """The MBR disk signature: the Windows volume's virtual disk's, else random (see docs/winbackup.md)."""
    for s in layout.slots:
        if s.role == "windows" and s.volume is not None:
            t = read_table(s.volume.disk, strict=False)
            if t.kind == "mbr" and t.disk_signature:
                return t.disk_signature
    return random.getrandbits(32) or 1


def _boot_code(layout: Layout) -> bytes:
    """MBR boot code from the boot volume's virtual disk (Windows writes its loader there; empty if none)."""
    return next((_mbr_code(s.volume) for s in layout.slots if s.role == "boot" and s.volume is not None), b"")


def _mbr_code(vol: Volume) -> bytes:
    """The 440 bytes of MBR loader of ``vol``'s virtual disk; b"" when none (or no MBR: a partitionless disk's
    first sector is the volume's own boot sector)."""
    if vol.partition is None:
        return b""
    code = vol.disk.read(0, 440)
    return code if code.strip(b"\0") else b""

#!/usr/bin/env python3
"""Build real WindowsImageBackup folders in both shapes the reference (docs/winbackup.md) describes.

* Windows 7 (BIOS): ``WIN7-PC\\Backup 2019-02-22 124351\\`` with one dynamic VHD per volume (qemu-img
  ``-O vpc -o subformat=dynamic``), each an MBR disk whose partition 1 (at sector 128) is the volume: a
  "System Reserved" NTFS volume with ``\\Boot\\BCD`` and C: (NTFS, a Windows tree with ``Windows\\System32``).
  BackupSpecs.xml in the Windows 7 shape (no Version, no ComponentSpecs).
* Windows 10 (UEFI): ``WIN10-PC\\Backup 2024-05-01 083000\\`` with one dynamic VHDX per volume (qemu-img
  ``-O vhdx``), each a GPT disk whose partition 2 is the volume (partition 1: 1 MiB MSR): the ESP (FAT32,
  ``\\EFI\\Microsoft\\Boot\\BCD``) and C: (NTFS). BackupSpecs.xml in the newer shape (Version=, ComponentSpecs)
  plus an element no Windows writes (must be ignored).

BackupSpecs.xml is written byte-exact: UTF-16LE, no BOM, one line, ending in a UTF-16 NUL.
NTFS by mkntfs + ``wimlib-imagex apply``, FAT by mkfs.vfat + mcopy; no mounting.

    python3 scripts/make_winbackup.py win7|win10 OUTDIR
"""
from __future__ import annotations

import random
import sys
import tempfile
from pathlib import Path

import make_test_disks as mtd

MiB = mtd.MiB
WIN7_SR_GUID = "9b9cfbc3-369e-11e9-a17c-806e6f6e6963"
WIN7_C_GUID = "9b9cfbc4-369e-11e9-a17c-806e6f6e6963"
WIN10_ESP_GUID = "3f2a4b10-8c1d-4e2f-9a0b-1c2d3e4f5a6b"
WIN10_C_GUID = "06fedb78-0000-0000-0000-500600000000"
MBR_CODE = b"\x33\xc0" + random.Random(440).randbytes(438)
EXTRA_FILES = ("MediaId", "Catalog/GlobalCatalog", "Catalog/BackupGlobalCatalog")


def specs_xml(volumes: list[tuple[str, str]], *, version: int | None = None, extra: str = "") -> bytes:
    """BackupSpecs.xml bytes as wbengine writes them: [(volume GUID, drive letter or "")]."""
    out = f'<BackupSpecs Version="{version}">' if version is not None else "<BackupSpecs>"
    out += "<FileSpecs>"
    for guid, letter in volumes:
        name = f"\\\\?\\Volume{{{guid}}}\\"
        out += (f'<Volume Name="{name}" AccessPath="{letter}" OriginalAccessPath="{letter}" Label="" '
                f'OriginalLabel="" ><FileSpec FilePath="{letter + chr(92) if letter else name}" FileName="*" '
                'IsRecursive="true" IsInclude="true" /></Volume>')
    out += '</FileSpecs><SystemState IsPresent="false" /><AllCritical IsPresent="false" />'
    if version is not None:
        out += ('<ComponentSpecs><ComponentSpec WriterId="{e8132975-6f93-4464-a53e-1050253ae220}" '
                'InstanceId="{a1b2c3d4-0000-0000-0000-000000000001}" ComponentName="System Files" '
                'LogicalPath="" Caption="" /></ComponentSpecs>')
    out += extra + "</BackupSpecs>"
    return out.encode("utf-16-le") + b"\0\0"


def _vhd_disk(raw: Path, vol: Path, start: int, table: str) -> None:
    size = vol.stat().st_size
    total = start + size + (MiB if table == "gpt" else 0)
    with open(raw, "wb") as f:
        f.truncate(total)
    if table == "mbr":
        mtd._run("sfdisk", "-q", raw, stdin=f"label: dos\nlabel-id: 0x1234abcd\nstart={start // 512}, "
                 f"size={size // 512}, type=7, bootable\n")
    else:
        mtd._run("sgdisk", "-n", "1:2048:4095", "-t", "1:0C01", "-c", "1:Microsoft reserved partition",
                 "-n", f"2:{start // 512}:{(start + size) // 512 - 1}", "-t", "2:0700", "-c", "2:Basic data partition",
                 raw)
    mtd._dd_into(vol, raw, start)


def _set_folder(root: Path, machine: str, folder: str) -> Path:
    pc = root / "WindowsImageBackup" / machine
    bset = pc / folder
    bset.mkdir(parents=True)
    for name in EXTRA_FILES:
        (pc / name).parent.mkdir(parents=True, exist_ok=True)
        (pc / name).write_bytes(random.Random(name).randbytes(16))
    return bset


def make_win7(root: str | Path) -> dict:
    """Windows 7 shape; returns {"set": folder, "volumes": {guid: {"hashes", "fs", "letter"}}}."""
    root = Path(root)
    bset = _set_folder(root, "WIN7-PC", "Backup 2019-02-22 124351")
    with tempfile.TemporaryDirectory(dir=root) as tmp:
        t = Path(tmp)
        srt = t / "srtree"
        (srt / "Boot").mkdir(parents=True)
        (srt / "Boot/BCD").write_bytes(random.Random(7).randbytes(24576))
        (srt / "bootmgr").write_bytes(random.Random(8).randbytes(383786))
        sr, sr_h = mtd.make_ntfs_volume(t / "sr.img", 24 * MiB, srt, label="System Reserved", part_start_sector=128)
        c, c_h = mtd.make_ntfs_volume(t / "c.img", 72 * MiB, seed=11, tree_bytes=5 * MiB, label="Win7OS",
                                      part_start_sector=128)
        for guid, vol in ((WIN7_SR_GUID, sr), (WIN7_C_GUID, c)):
            raw = t / f"{guid}.raw"
            _vhd_disk(raw, vol, 128 * 512, "mbr")
            with open(raw, "r+b") as f:  # stand-in MBR loader (Windows' starts with 33 C0: xor ax,ax)
                f.write(MBR_CODE)
            mtd._run("qemu-img", "convert", "-f", "raw", "-O", "vpc", "-o", "subformat=dynamic", raw,
                     bset / f"{guid}.vhd")
    (bset / "BackupSpecs.xml").write_bytes(specs_xml([(WIN7_SR_GUID, ""), (WIN7_C_GUID, "C:")]))
    (bset / "cd113385-65ff-4ea2-8ced-5630f6feca8f_Components.xml").write_bytes(
        '<BACKUP_COMPONENTS xmlns="x-schema:#VssComponentMetadata"/>'.encode("utf-16-le"))
    return {"set": bset, "root": root, "volumes": {
        WIN7_SR_GUID: {"hashes": sr_h, "fs": "ntfs", "letter": "", "label": "System Reserved", "size": 24 * MiB},
        WIN7_C_GUID: {"hashes": c_h, "fs": "ntfs", "letter": "C:", "label": "Win7OS", "size": 72 * MiB}}}


def make_win10(root: str | Path) -> dict:
    """Windows 10 shape (UEFI: ESP + C:, VHDX, GPT, volume = partition 2)."""
    root = Path(root)
    bset = _set_folder(root, "WIN10-PC", "Backup 2024-05-01 083000")
    start = 2 * MiB
    with tempfile.TemporaryDirectory(dir=root) as tmp:
        t = Path(tmp)
        et = t / "esptree"
        (et / "EFI/Microsoft/Boot").mkdir(parents=True)
        (et / "EFI/Boot").mkdir(parents=True)
        (et / "EFI/Microsoft/Boot/BCD").write_bytes(random.Random(9).randbytes(32768))
        (et / "EFI/Microsoft/Boot/bootmgfw.efi").write_bytes(random.Random(10).randbytes(1_500_000))
        (et / "EFI/Boot/bootx64.efi").write_bytes(random.Random(12).randbytes(1_500_000))
        esp, esp_h = mtd.make_fat_volume(t / "esp.img", 40 * MiB, et, bits=32, label="SYSTEM",
                                         part_start_sector=start // 512)
        c, c_h = mtd.make_ntfs_volume(t / "c.img", 80 * MiB, seed=21, tree_bytes=6 * MiB, label="Windows",
                                      part_start_sector=start // 512)
        for guid, vol in ((WIN10_ESP_GUID, esp), (WIN10_C_GUID, c)):
            raw = t / f"{guid}.raw"
            _vhd_disk(raw, vol, start, "gpt")
            mtd._run("qemu-img", "convert", "-f", "raw", "-O", "vhdx", raw, bset / f"{guid}.vhdx")
    (bset / "BackupSpecs.xml").write_bytes(specs_xml([(WIN10_ESP_GUID, ""), (WIN10_C_GUID, "C:")], version=1,
                                                     extra='<FutureElement Foo="bar"><Child /></FutureElement>'))
    return {"set": bset, "root": root, "volumes": {
        WIN10_ESP_GUID: {"hashes": esp_h, "fs": "fat32", "letter": "", "label": "SYSTEM", "size": 40 * MiB},
        WIN10_C_GUID: {"hashes": c_h, "fs": "ntfs", "letter": "C:", "label": "Windows", "size": 80 * MiB}}}


if __name__ == "__main__":
    if len(sys.argv) != 3 or sys.argv[1] not in ("win7", "win10"):
        sys.exit(__doc__)
    out = Path(sys.argv[2])
    out.mkdir(parents=True, exist_ok=True)
    info = (make_win7 if sys.argv[1] == "win7" else make_win10)(out)
    print(info["set"])

"""Linux x86 bzImage: its setup header and xz payload, and the Linux base's BIOS kernel image made from them.

A bzImage is real-mode setup sectors (with the setup header, boot protocol 2.x) and a protected-mode part: the
kernel's decompressor plus vmlinux compressed (Debian: xz).  Under QEMU TCG that xz decoder takes ~6 s of a ~20 s
boot (0.2 s on a PC).  The signed kernel of the Secure Boot path cannot change, but the BIOS path can boot another
file: the same setup sectors, then ``asm/flat_entry.asm`` and vmlinux already laid out at its physical addresses,
lzop-wrapped so the disc holds ~13 MB instead of ~58 MB; GRUB's lzopio inflates it as ``linux`` reads it (LZO
decodes many times faster than xz).  Reference: the kernel's Documentation/arch/x86/boot.rst.
"""
from __future__ import annotations

import lzma
import os
import struct
import tempfile
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from builder import elf, tools
from rescuekit.errors import UsageError

_HDR_MAGIC = b"HdrS"
_MIN_VERSION = 0x020C            # payload_offset (2.08), pref_address/init_size (2.10), 64-bit fields (2.12)
_STUB = 0x1000                   # the entry stub's page in front of the image
_SLACK = 0x200000                # room to move the image up to a 2 MiB boundary (a loader that ignored pref_address)
_TABLES = 6 * 0x1000             # PML4 + PDPT + 4 page directories, after the image
_ALIGN = 0x200000

# Setup header fields (offsets in the file, i.e. in the boot sector + setup sectors).
_SETUP_SECTS, _SYSSIZE, _BOOT_FLAG, _HEADER, _VERSION = 0x1F1, 0x1F4, 0x1FE, 0x202, 0x206
_LOADFLAGS, _CODE32_START, _XLOADFLAGS = 0x211, 0x214, 0x236
_PAYLOAD_OFFSET, _PAYLOAD_LENGTH, _PREF_ADDRESS, _INIT_SIZE = 0x248, 0x24C, 0x258, 0x260
_HANDOVER_OFFSET, _KERNEL_INFO_OFFSET = 0x264, 0x268
_KASLR_FLAG = 0x02


@dataclass(frozen=True)
class BzImage:
    """The parts of a bzImage this module needs."""
    setup: bytes                 # boot sector + setup sectors, header included
    version: int                 # boot protocol
    payload: bytes               # the compressed vmlinux (xz for Debian)


def parse(data: bytes, where: str = "kernel") -> BzImage:
    """Split a bzImage; UsageError naming *where* if it is not one (or its payload is not xz)."""
    if len(data) < 0x270 or data[_BOOT_FLAG:_BOOT_FLAG + 2] != b"\x55\xaa" or data[_HEADER:_HEADER + 4] != _HDR_MAGIC:
        raise UsageError(f"not a Linux bzImage (no setup header): {where}")
    version, = struct.unpack_from("<H", data, _VERSION)
    if version < _MIN_VERSION:
        raise UsageError(f"Linux boot protocol {version >> 8}.{version & 0xFF} is too old (need 2.12+): {where}")
    setup_len = ((data[_SETUP_SECTS] or 4) + 1) * 512
    off, length = struct.unpack_from("<II", data, _PAYLOAD_OFFSET)
    payload = data[setup_len + off:setup_len + off + length]
    if len(payload) != length or not payload.startswith(b"\xfd7zXZ\x00"):
        raise UsageError(f"kernel payload is not xz (or is truncated): {where}")
    return BzImage(data[:setup_len], version, payload)


def vmlinux(bz: BzImage, where: str = "kernel") -> bytes:
    """The decompressed payload: one xz stream followed by its size (32-bit LE), as the kernel's build appends it."""
    dec = lzma.LZMADecompressor(lzma.FORMAT_XZ)
    try:
        out = dec.decompress(bz.payload)
    except lzma.LZMAError as e:
        raise UsageError(f"kernel payload does not decompress ({e}): {where}") from None
    if not dec.eof or len(dec.unused_data) != 4 or struct.unpack("<I", dec.unused_data)[0] != len(out) & 0xFFFFFFFF:
        raise UsageError(f"kernel payload is truncated or not as the kernel's build writes it: {where}")
    return out


def flat_image(data: bytes, where: str = "vmlinux") -> tuple[bytes, int, int]:
    """vmlinux's PT_LOAD segments at their physical addresses: (image, its base address, entry offset).

    The decompressor copies the same p_filesz bytes to the same places; Debian's vmlinux has p_memsz == p_filesz
    (.bss is in the file), and the kernel clears .bss itself."""
    if not elf.is_elf64le(data):
        raise UsageError(f"kernel payload is not a 64-bit little-endian ELF: {where}")
    entry, loads = elf.load_segments(data)
    if not loads:
        raise UsageError(f"vmlinux has no loadable segments: {where}")
    base = min(p[0] for p in loads)
    end = max(p[0] + p[3] for p in loads)
    if base % _ALIGN or not base <= entry < end:
        raise UsageError(f"vmlinux layout not understood (base {base:#x}, entry {entry:#x}): {where}")
    image = bytearray((end - base + 0xFFF) & ~0xFFF)
    for paddr, offset, filesz, _memsz in loads:
        if offset + filesz > len(data):
            raise UsageError(f"vmlinux is truncated: {where}")
        image[paddr - base:paddr - base + filesz] = data[offset:offset + filesz]
    return bytes(image), base, entry - base


def entry_stub(flat_len: int, entry_off: int, work: Path) -> bytes:
    """asm/flat_entry.asm assembled for an image of *flat_len* bytes entered at *entry_off*."""
    src = resources.files("builder").joinpath("asm/flat_entry.asm")
    out = work / "flat_entry.bin"
    with resources.as_file(src) as path:
        tools.run(["nasm", "-f", "bin", f"-DFLAT_LEN={flat_len:#x}", f"-DENTRY_OFF={entry_off:#x}", "-o", str(out),
                   str(path)], "assemble the BIOS kernel's entry stub")
    stub = out.read_bytes()
    if len(stub) != _STUB:
        raise UsageError(f"entry stub is {len(stub)} bytes, expected {_STUB}: {src}")
    return stub


def bios_kernel(kernel: bytes, work: Path, where: str = "kernel") -> bytes:
    """The uncompressed BIOS kernel image (boot protocol unchanged, 32-bit entry only) for a Debian bzImage."""
    bz = parse(kernel, where)
    flat, base, entry_off = flat_image(vmlinux(bz, where), where)
    stub = entry_stub(len(flat), entry_off, work)
    setup = bytearray(bz.setup)
    prot_len = len(stub) + len(flat)
    struct.pack_into("<I", setup, _SYSSIZE, (prot_len + 15) // 16)
    setup[_LOADFLAGS] &= ~_KASLR_FLAG & 0xFF
    struct.pack_into("<I", setup, _CODE32_START, 0x100000)       # the stub is the first byte of the part
    struct.pack_into("<H", setup, _XLOADFLAGS, 0)                # no 64-bit entry, no EFI handover, below 4 GiB
    struct.pack_into("<II", setup, _PAYLOAD_OFFSET, 0, 0)
    struct.pack_into("<Q", setup, _PREF_ADDRESS, base - _STUB)   # the image itself lands on *base*
    struct.pack_into("<I", setup, _INIT_SIZE, prot_len + _SLACK + _TABLES)
    struct.pack_into("<I", setup, _HANDOVER_OFFSET, 0)
    if bz.version >= 0x020F:
        struct.pack_into("<I", setup, _KERNEL_INFO_OFFSET, 0)    # kernel_info lived in the decompressor's part
    setup[0:2] = b"\0\0"                                        # no "MZ": the EFI stub's PE header is void here
    return bytes(setup) + stub + flat


def write_bios_kernel(vmlinuz: Path, out: Path, mtime: int = 0) -> None:
    """Write the lzop-wrapped BIOS kernel image for *vmlinuz* to *out* (via a temporary file beside it).  lzop
    records its input's name and mtime: a fixed name and *mtime* keep the file the same for the same kernel."""
    with tempfile.TemporaryDirectory(prefix="rk-bzimage-") as tmp:
        work = Path(tmp)
        raw = work / "vmlinuz.flat"
        raw.write_bytes(bios_kernel(vmlinuz.read_bytes(), work, str(vmlinuz)))
        os.utime(raw, (mtime, mtime))
        part = out.with_name(out.name + ".part")
        # -9: lzo1x_999 packs ~25 % smaller than -1 at the same decoding speed; GRUB reads the disc slowly.
        try:
            tools.run(["lzop", "-9", "-q", "-f", "-o", str(part), str(raw)], "pack the BIOS kernel image")
        except BaseException:
            part.unlink(missing_ok=True)
            raise
        part.replace(out)

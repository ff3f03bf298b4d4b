"""builder/bzimage.py: the BIOS kernel image (no xz decompressor) from a bzImage, on a small synthetic kernel and
on the disc's real one.  That it boots is the SeaBIOS end-to-end test's job (the ready line names the image)."""
from __future__ import annotations

import lzma
import struct
import subprocess
import time
from pathlib import Path

import pytest

from builder import bzimage
from rescuekit.errors import UsageError
from tests.conftest import require_tools

BASE = 0x1000000


def _elf(segments: list[tuple[int, bytes]], entry: int) -> bytes:
    """An ELF64 executable with one PT_LOAD per (physical address, bytes)."""
    phoff, n = 64, len(segments)
    head = bytearray(64)
    head[:16] = b"\x7fELF\x02\x01\x01" + bytes(9)
    struct.pack_into("<HHIQQQIHHHHHH", head, 16, 2, 0x3E, 1, entry, phoff, 0, 0, 64, 56, n, 64, 0, 0)
    body, phdrs, off = b"", b"", phoff + 56 * n
    for paddr, data in segments:
        phdrs += struct.pack("<IIQQQQQQ", 1, 5, off + len(body), paddr | 0xFFFFFFFF80000000, paddr, len(data),
                             len(data), 0x200000)
        body += data
    return bytes(head) + phdrs + body


def _bzimage(elf: bytes, version: int = 0x020F) -> bytes:
    """Boot sector + 1 setup sector with a 2.x header, then a dummy decompressor and the xz payload + its size."""
    setup = bytearray(1024)
    setup[0:2] = b"MZ"
    setup[0x1F1] = 1
    setup[0x1FE:0x200] = b"\x55\xaa"
    setup[0x202:0x206] = b"HdrS"
    struct.pack_into("<H", setup, 0x206, version)
    setup[0x211] = 0x01
    struct.pack_into("<H", setup, 0x236, 0x7F)
    payload = lzma.compress(elf, format=lzma.FORMAT_XZ, check=lzma.CHECK_CRC32) + struct.pack("<I", len(elf))
    decompressor = b"\x90" * 512
    struct.pack_into("<II", setup, 0x248, len(decompressor), len(payload))
    return bytes(setup) + decompressor + payload


def test_bios_image_lays_vmlinux_out_behind_the_stub(tmp_path: Path) -> None:
    require_tools("nasm")
    text, data = b"T" * 5000, b"D" * 3000
    kernel = _bzimage(_elf([(BASE, text), (BASE + 0x400000, data)], BASE + 0x10))
    out = bzimage.bios_kernel(kernel, tmp_path)
    setup, prot = out[:1024], out[1024:]
    stub, flat = prot[:0x1000], prot[0x1000:]
    assert setup[:2] == b"\0\0" and setup[0x202:0x206] == b"HdrS"  # no PE header claims an EFI stub any more
    assert struct.unpack_from("<I", setup, 0x214)[0] == 0x100000  # code32_start: the stub, first byte of the part
    assert struct.unpack_from("<H", setup, 0x236)[0] == 0  # no 64-bit entry, no EFI handover
    assert struct.unpack_from("<II", setup, 0x248) == (0, 0)
    assert struct.unpack_from("<Q", setup, 0x258)[0] == BASE - 0x1000  # the image itself on 16 MiB
    assert struct.unpack_from("<I", setup, 0x260)[0] == len(prot) + 0x200000 + 6 * 0x1000
    assert struct.unpack_from("<I", setup, 0x1F4)[0] == (len(prot) + 15) // 16
    assert stub[:1] == b"\xfa"  # cli
    assert len(flat) == 0x401000 and flat[:5000] == text and flat[0x400000:0x400000 + 3000] == data
    assert flat[5000:0x400000] == bytes(0x400000 - 5000)


@pytest.mark.parametrize("damage, fragment", [
    (lambda b: b[:0x200], "not a Linux bzImage"),
    (lambda b: b[:0x202] + b"XXXX" + b[0x206:], "not a Linux bzImage"),
    (lambda b: b[:-40], r"not xz \(or is truncated\): vmlinuz-test"),
    (lambda b: b[:0x206] + struct.pack("<H", 0x0204) + b[0x208:], "too old"),
])
def test_damaged_kernels_are_refused(damage, fragment: str, tmp_path: Path) -> None:
    kernel = damage(_bzimage(_elf([(BASE, b"x" * 100)], BASE)))
    with pytest.raises(UsageError, match=fragment):
        bzimage.bios_kernel(kernel, tmp_path, "vmlinuz-test")


def test_a_payload_that_is_not_vmlinux_is_refused(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="not a 64-bit little-endian ELF: vmlinuz-test"):
        bzimage.bios_kernel(_bzimage(b"not an ELF file" * 10), tmp_path, "vmlinuz-test")
    unaligned = _bzimage(_elf([(BASE + 0x1000, b"x" * 100)], BASE + 0x1000))
    with pytest.raises(UsageError, match="layout not understood"):
        bzimage.bios_kernel(unaligned, tmp_path, "vmlinuz-test")


def test_the_discs_bios_kernel_is_debians_vmlinux(linux_iso: Path, tmp_path: Path) -> None:
    """On the real disc: /boot/vmlinuz.bios is lzop, and inside it Debian's own vmlinux at its physical addresses
    behind the same setup sectors as the signed /boot/vmlinuz."""
    require_tools("lzop")
    from test_linux_base import _iso_file

    signed = _iso_file(linux_iso, "/boot/vmlinuz")
    packed = tmp_path / "vmlinuz.bios"
    packed.write_bytes(_iso_file(linux_iso, "/boot/vmlinuz.bios"))
    assert subprocess.run(["lzop", "-t", str(packed)], capture_output=True).returncode == 0
    raw = subprocess.run(["lzop", "-d", "-c", str(packed)], capture_output=True, check=True).stdout
    bz = bzimage.parse(signed)
    flat, base, entry_off = bzimage.flat_image(bzimage.vmlinux(bz))
    assert raw[len(bz.setup) + 0x1000:] == flat and base == 0x1000000
    assert raw[0x202:0x206] == b"HdrS" and raw[2:0x1F1] == bz.setup[2:0x1F1]
    assert len(packed.read_bytes()) < len(flat) // 3  # what keeps the disc under 60 MB


def test_the_packed_file_is_the_same_for_the_same_kernel(tmp_path: Path) -> None:
    """lzop stores its input's name and mtime; the build fixes both (SOURCE_DATE_EPOCH or 0)."""
    require_tools("nasm", "lzop")
    kernel = tmp_path / "vmlinuz"
    kernel.write_bytes(_bzimage(_elf([(BASE, b"T" * 5000)], BASE)))
    a, b = tmp_path / "a", tmp_path / "b"
    bzimage.write_bios_kernel(kernel, a, mtime=1_700_000_000)
    time.sleep(1.1)  # a later second: lzop would record it if the build did not fix the mtime
    bzimage.write_bios_kernel(kernel, b, mtime=1_700_000_000)
    assert a.read_bytes() == b.read_bytes() and not list(tmp_path.glob("*.part"))
    raw = subprocess.run(["lzop", "-d", "-c", str(a)], capture_output=True, check=True).stdout
    assert raw == bzimage.bios_kernel(kernel.read_bytes(), tmp_path)


@pytest.mark.qemu
def test_a_16_bit_loader_at_1_mib_gets_the_image_moved_to_2_mib(linux_iso: Path, tmp_path: Path) -> None:
    """QEMU's own -kernel loader takes the 16-bit route (the real-mode setup code, then code32_start) and puts the
    protected-mode part at 1 MiB, not on pref_address: the stub must move the image up to 2 MiB before
    startup_64.  With no initramfs the kernel then stops at the root mount, which proves it ran that far."""
    require_tools("lzop", "qemu-system-x86_64")
    from test_linux_base import _iso_file

    packed = tmp_path / "vmlinuz.bios"
    packed.write_bytes(_iso_file(linux_iso, "/boot/vmlinuz.bios"))
    raw = tmp_path / "bzimage"
    raw.write_bytes(subprocess.run(["lzop", "-d", "-c", str(packed)], capture_output=True, check=True).stdout)
    log = tmp_path / "serial.log"
    proc = subprocess.run(["qemu-system-x86_64", "-accel", "tcg", "-m", "256", "-display", "none", "-monitor", "none",
                           "-net", "none", "-no-reboot", "-kernel", str(raw), "-append", "console=ttyS0 panic=-1",
                           "-serial", f"file:{log}"], capture_output=True, text=True, timeout=300)
    text = log.read_text(errors="replace")
    assert proc.returncode == 0, proc.stderr
    assert "Linux version 6." in text and "Unable to mount root fs" in text, text[-3000:]


def test_a_missing_tool_is_one_line_naming_its_package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from rescuekit.errors import RescueError

    kernel = tmp_path / "vmlinuz"
    kernel.write_bytes(_bzimage(_elf([(BASE, b"T" * 100)], BASE)))
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    with pytest.raises(RescueError, match=r"^nasm not found \(needed to assemble the BIOS kernel's entry stub\): "
                                          r"install nasm"):
        bzimage.write_bios_kernel(kernel, tmp_path / "out")
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob("out*"))

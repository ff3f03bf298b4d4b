"""VHDX / VHD readers against images qemu-img writes: byte-identical to the raw source; damage refused."""
from __future__ import annotations

import random
import struct
import subprocess
import uuid
from pathlib import Path

import pytest

from rescuekit.errors import RescueError
from rescuekit.vdisk import FileView, SliceDevice, open_vdisk
from rescuekit.vdisk.crc32c import crc32c

MiB = 1 << 20


@pytest.fixture(scope="module")
def raw(tmp_path_factory) -> Path:
    """A 37 MiB + 512 B raw disk: random data at the start, in the middle (crossing blocks), at the end, and
    zero stretches in between (dynamic formats leave those out)."""
    p = tmp_path_factory.mktemp("vdisk") / "raw.img"
    rng = random.Random(5)
    size = 37 * MiB + 512
    with open(p, "wb") as f:
        f.truncate(size)
        for pos, n in ((0, 3 * MiB + 7), (9 * MiB - 4096, 2 * MiB + 8192), (size - 70000, 70000)):
            f.seek(pos)
            f.write(rng.randbytes(n))
    return p


def _convert(raw: Path, fmt: str, opts: str | None, out: Path) -> Path:
    cmd = ["qemu-img", "convert", "-f", "raw", "-O", fmt] + (["-o", opts] if opts else []) + [str(raw), str(out)]
    subprocess.run(cmd, check=True, capture_output=True)
    return out


FORMATS = [("vhdx", None), ("vhdx", "subformat=fixed"), ("vhdx", "block_size=1M,log_size=1M"),
           ("vpc", "subformat=dynamic"), ("vpc", "subformat=fixed"), ("vpc", "subformat=dynamic,force_size=on")]


def test_crc32c_check_value() -> None:
    assert crc32c(b"123456789") == 0xE3069283  # the CRC-32C catalogue check value


@pytest.mark.parametrize("fmt,opts", FORMATS, ids=[f"{f}-{o}" for f, o in FORMATS])
def test_reads_back_byte_identical(raw: Path, tmp_path: Path, fmt: str, opts: str | None) -> None:
    img = _convert(raw, fmt, opts, tmp_path / f"d.{fmt}")
    src = raw.read_bytes()
    with open_vdisk(img) as d:
        assert d.size >= len(src)  # VHD without force_size rounds up to its CHS geometry
        got = d.read(0, d.size)
        assert got[:len(src)] == src and got[len(src):].count(0) == d.size - len(src)
        # unaligned reads across block boundaries
        for pos, n in ((MiB - 3, 10), (9 * MiB - 4097, 2 * MiB + 9000), (len(src) - 513, 513)):
            assert d.read(pos, n) == src[pos:pos + n]
        assert sum(n for _s, n in d.allocated_ranges()) <= d.size
        with pytest.raises(RescueError):
            d.read(d.size - 1, 2)
        f = FileView(SliceDevice(d, MiB, 4 * MiB))
        f.seek(100)
        assert f.read(50) == src[MiB + 100:MiB + 150] and f.tell() == 150


def _vhdx(raw: Path, tmp_path: Path) -> bytearray:
    return bytearray(_convert(raw, "vhdx", None, tmp_path / "d.vhdx").read_bytes())


def _refused(tmp_path: Path, data: bytes, *words: str) -> str:
    p = tmp_path / "bad.img"
    p.write_bytes(data)
    with pytest.raises(RescueError) as ei:
        with open_vdisk(p) as d:
            d.read(0, d.size)
    msg = str(ei.value)
    assert "\n" not in msg and str(p) in msg and all(w in msg for w in words), msg
    return msg


def _fix_crc(buf: bytearray, start: int, length: int) -> None:
    buf[start + 4:start + 8] = b"\0\0\0\0"
    struct.pack_into("<I", buf, start + 4, crc32c(buf[start:start + length]))


def test_vhdx_truncated_refused(raw: Path, tmp_path: Path) -> None:
    data = _vhdx(raw, tmp_path)
    _refused(tmp_path, data[:200 * 1024], "truncated")  # cut inside the region tables
    _refused(tmp_path, data[:len(data) - 3 * MiB], "truncated")  # cut inside the data blocks


def test_vhdx_bit_flips_refused(raw: Path, tmp_path: Path) -> None:
    data = _vhdx(raw, tmp_path)
    both = bytearray(data)
    both[64 * 1024 + 40] ^= 1
    both[128 * 1024 + 40] ^= 1
    _refused(tmp_path, both, "CRC-32C")
    regions = bytearray(data)
    regions[192 * 1024 + 20] ^= 0x10
    regions[256 * 1024 + 20] ^= 0x10
    _refused(tmp_path, regions, "region table", "CRC-32C")
    # one damaged header: the other copy is used (that is what two copies are for)
    one = bytearray(data)
    one[64 * 1024 + 40] ^= 1
    p = tmp_path / "one.vhdx"
    p.write_bytes(one)
    with open_vdisk(p) as d:
        assert d.read(0, 4096) == raw.read_bytes()[:4096]


def test_vhdx_log_and_parent_refused(raw: Path, tmp_path: Path) -> None:
    data = _vhdx(raw, tmp_path)
    logged = bytearray(data)
    for off in (64 * 1024, 128 * 1024):
        logged[off + 48:off + 64] = uuid.uuid4().bytes_le
        _fix_crc(logged, off, 4096)
    _refused(tmp_path, logged, "non-empty log")
    # HasParent in the file parameters item (metadata has no checksum)
    parent = bytearray(data)
    from rescuekit.vdisk import vhdx

    regions = parent[192 * 1024:256 * 1024]
    count = struct.unpack_from("<I", regions, 8)[0]
    for i in range(count):
        g, foff, _ln, _rq = struct.unpack_from("<16sQII", regions, 16 + 32 * i)
        if uuid.UUID(bytes_le=g) == vhdx.METADATA_GUID:
            n = struct.unpack_from("<H", parent, foff + 10)[0]
            for j in range(n):
                ig, ioff, _il, _fl = struct.unpack_from("<16sIII", parent, foff + 32 + 32 * j)
                if uuid.UUID(bytes_le=ig) == vhdx.FILE_PARAMETERS:
                    parent[foff + ioff + 4] |= 2
    _refused(tmp_path, parent, "differencing")


def _vhd(raw: Path, tmp_path: Path, sub: str) -> bytearray:
    return bytearray(_convert(raw, "vpc", f"subformat={sub}", tmp_path / f"{sub}.vhd").read_bytes())


def _vhd_fix(buf: bytearray, start: int, length: int, at: int) -> None:
    buf[start + at:start + at + 4] = b"\0\0\0\0"
    struct.pack_into(">I", buf, start + at, (~sum(buf[start:start + length])) & 0xFFFFFFFF)


def test_vhd_damage_refused(raw: Path, tmp_path: Path) -> None:
    dyn = _vhd(raw, tmp_path, "dynamic")
    _refused(tmp_path, dyn[:len(dyn) - 512 - 3 * MiB], "truncated")
    flipped = bytearray(dyn)
    flipped[-512 + 50] ^= 4  # current size byte in the footer
    _refused(tmp_path, flipped, "checksum")
    hdr = bytearray(dyn)
    hdr[512 + 30] ^= 1  # dynamic header TableOffset
    _refused(tmp_path, hdr, "dynamic disk header", "checksum")
    diff = bytearray(dyn)
    struct.pack_into(">I", diff, len(diff) - 512 + 60, 4)
    _vhd_fix(diff, len(diff) - 512, 512, 64)
    _refused(tmp_path, diff, "differencing")
    fixed = _vhd(raw, tmp_path, "fixed")
    _refused(tmp_path, fixed[:len(fixed) - 512 - 4096] + fixed[-512:], "truncated")


def test_vhd_sector_bitmap_honoured(raw: Path, tmp_path: Path) -> None:
    """A sector whose bit is clear in its block's bitmap reads as zeros (the spec: not present)."""
    dyn = _vhd(raw, tmp_path, "dynamic")
    table_off = struct.unpack_from(">Q", dyn, 512 + 16)[0]
    first_block = struct.unpack_from(">I", dyn, table_off)[0] * 512
    dyn[first_block] &= 0x7F  # sector 0 of block 0
    dyn[first_block + 1] &= 0xFE  # sector 15
    p = tmp_path / "bm.vhd"
    p.write_bytes(dyn)
    src = raw.read_bytes()
    with open_vdisk(p) as d:
        got = d.read(0, 64 * 512)
    assert got[:512] == bytes(512) and got[15 * 512:16 * 512] == bytes(512)
    assert got[512:15 * 512] == src[512:15 * 512] and got[16 * 512:] == src[16 * 512:64 * 512]

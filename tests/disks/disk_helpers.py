"""Helpers shared by the disk-layer tests."""
from __future__ import annotations

import struct
import subprocess

MiB = 1 << 20


def run(*cmd, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run([str(c) for c in cmd], capture_output=True, text=True, check=check)


def copy_sparse(src, dst, size: int | None = None) -> None:
    run("cp", "--sparse=always", src, dst)
    if size is not None:
        with open(dst, "r+b") as f:
            f.truncate(size)


def _seal(rec: bytearray) -> bytes:
    """Re-apply the update sequence: sector ends go into the USA, the USN into the sector ends."""
    usa_ofs, usa_count = struct.unpack_from("<HH", rec, 4)
    usn = bytes(rec[usa_ofs:usa_ofs + 2])
    for i in range(1, usa_count):
        pos = i * 512 - 2
        rec[usa_ofs + 2 * i:usa_ofs + 2 * i + 2] = rec[pos:pos + 2]
        rec[pos:pos + 2] = usn
    return bytes(rec)


def _a8(n: int) -> int:
    return (n + 7) & ~7


def ntfs_move_bitmap_data(vol, ext_no: int = 17) -> None:
    """Move $Bitmap's $DATA into extension record ``ext_no`` behind an $ATTRIBUTE_LIST in record 6
    (what a very fragmented $Bitmap looks like); ntfs-3g reads the result."""
    from rescuekit.disk import device, ntfs

    with device.open_source(vol) as d:
        nb = ntfs.parse_boot(d.read(0, 512))
        rec6 = ntfs.read_mft_record(d, 0, nb, 6)
        recx = ntfs.read_mft_record_any(d, 0, nb, ext_no)
    attrs = [(t, bytes(rec6[p:p + struct.unpack_from("<I", rec6, p + 4)[0]]))
             for t, p in ntfs.iter_attributes(rec6)]
    data = next(b for t, b in attrs if t == ntfs.AT_DATA and b[9] == 0)
    keep = [(t, b) for t, b in attrs if b is not data]
    seq6 = struct.unpack_from("<H", rec6, 16)[0]
    seqx = struct.unpack_from("<H", recx, 16)[0] or 1

    def entry(t: int, b: bytes, num: int, seq: int) -> bytes:
        """ATTR_LIST_ENTRY: type, length, name length/offset, lowest VCN, MFT reference, instance, name."""
        name_len, name_off = b[9], struct.unpack_from("<H", b, 10)[0]
        name = b[name_off:name_off + 2 * name_len]
        lowest = struct.unpack_from("<q", b, 16)[0] if b[8] else 0
        rl = _a8(26 + len(name))
        e = bytearray(rl)
        instance = struct.unpack_from("<H", b, 14)[0]
        struct.pack_into("<IHBBqQH", e, 0, t, rl, name_len, 26, lowest, num | seq << 48, instance)
        e[26:26 + len(name)] = name
        return bytes(e)

    data0 = bytearray(data)
    struct.pack_into("<H", data0, 14, 0)  # instance 0 in the extension record
    entries = sorted([(t, entry(t, b, 6, seq6)) for t, b in keep]
                     + [(ntfs.AT_DATA, entry(ntfs.AT_DATA, data0, ext_no, seqx))])
    value = b"".join(e for _t, e in entries)
    inst = struct.unpack_from("<H", rec6, 40)[0]
    al = bytearray(_a8(24 + len(value)))
    struct.pack_into("<IIBBHHHIHBB", al, 0, ntfs.AT_ATTRIBUTE_LIST, len(al), 0, 0, 0x18, 0, inst, len(value), 24,
                     0, 0)  # resident attribute header
    al[24:24 + len(value)] = value
    new_attrs = sorted(keep + [(ntfs.AT_ATTRIBUTE_LIST, bytes(al))], key=lambda x: x[0])
    aoff = struct.unpack_from("<H", rec6, 20)[0]
    body = b"".join(b for _t, b in new_attrs) + b"\xff\xff\xff\xff" + bytes(4)
    r6 = bytearray(rec6)
    r6[aoff:] = bytes(len(r6) - aoff)
    r6[aoff:aoff + len(body)] = body
    struct.pack_into("<I", r6, 24, aoff + len(body))
    struct.pack_into("<H", r6, 40, inst + 1)
    # extension record
    rx = bytearray(len(rec6))
    rx[:aoff] = rec6[:aoff]
    struct.pack_into("<H", rx, 16, seqx)
    struct.pack_into("<HHH", rx, 18, 0, aoff, 1)  # link count 0, attrs offset, flags in-use
    struct.pack_into("<QH", rx, 32, 6 | seq6 << 48, 1)
    struct.pack_into("<I", rx, 44, ext_no)
    body = bytes(data0) + b"\xff\xff\xff\xff" + bytes(4)
    rx[aoff:aoff + len(body)] = body
    struct.pack_into("<I", rx, 24, aoff + len(body))
    base = nb.mft_lcn * nb.cluster_size
    with open(vol, "r+b") as f:
        f.seek(base + 6 * nb.mft_record_size)
        f.write(_seal(r6))
        f.seek(base + ext_no * nb.mft_record_size)
        f.write(_seal(rx))

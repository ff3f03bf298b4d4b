"""LZNT1 decompression (MS-XCA 2.5), the algorithm of NTFS-compressed files.

A buffer is a sequence of chunks, each holding at most 4096 bytes of output: a 16-bit header (bits 0-11:
chunk data size - 1, bits 12-14: signature 3, bit 15: compressed), then either the bytes as they are or
groups of a flag byte and eight tokens (bit clear: one literal byte; bit set: a 16-bit copy token whose
offset/length split depends on how far into the chunk the output is). A zero header ends the buffer.
"""
from __future__ import annotations

from rescuekit.errors import RescueError

CHUNK = 4096


def _chunk(src: bytes, pos: int, end: int, out: bytearray, where: str) -> None:
    start = len(out)
    while pos < end:
        flags = src[pos]
        pos += 1
        if flags == 0:  # eight literals (common in poorly compressible data): one slice, not eight appends
            out += src[pos:min(pos + 8, end)]
            pos += 8
            continue
        for bit in range(8):
            if pos >= end:
                break
            if not flags >> bit & 1:
                out.append(src[pos])
                pos += 1
                continue
            if pos + 2 > end:
                raise RescueError(f"LZNT1 data in {where} ends inside a copy token")
            token = src[pos] | src[pos + 1] << 8
            pos += 2
            done = len(out) - start
            if done == 0:
                raise RescueError(f"LZNT1 copy token at the start of a chunk in {where}")
            shift = 12
            d = done - 1
            while d >= 0x10:  # the offset field grows as the chunk fills (MS-XCA 2.5.1.1)
                shift -= 1
                d >>= 1
            back = (token >> shift) + 1
            length = (token & ((1 << shift) - 1)) + 3
            if back > done or done + length > CHUNK:
                raise RescueError(f"LZNT1 copy token points outside its chunk in {where}")
            s = len(out) - back
            if back >= length:
                out += out[s:s + length]
            else:  # overlapping copy: repeats the last ``back`` bytes
                for i in range(length):
                    out.append(out[s + i])


def decompress(src: bytes, limit: int, where: str = "a compressed file") -> bytes:
    """Up to ``limit`` bytes decoded from ``src``; a chunk shorter than 4096 bytes (not the last) is padded
    with zeros as Windows does, so that chunk boundaries keep their 4 KiB positions."""
    out = bytearray()
    pos = 0
    while pos + 2 <= len(src) and len(out) < limit:
        hdr = src[pos] | src[pos + 1] << 8
        if hdr == 0:
            break
        size = (hdr & 0x0FFF) + 1
        if hdr >> 12 & 7 != 3 or pos + 2 + size > len(src):
            raise RescueError(f"corrupt LZNT1 chunk header 0x{hdr:04X} at byte {pos} in {where}")
        begin = len(out)
        if hdr & 0x8000:
            _chunk(src, pos + 2, pos + 2 + size, out, where)
        else:
            out += src[pos + 2:pos + 2 + size]
        pos += 2 + size
        if len(out) - begin < CHUNK and len(out) < limit:
            out += bytes(CHUNK - (len(out) - begin))
    if len(out) < limit:
        out += bytes(limit - len(out))
    return bytes(out[:limit])

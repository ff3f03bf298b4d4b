"""A captured image read back as a read-only block device (through the repository).

Restore uses it to parse the image's own partition table before anything is written (GPT rebuild,
sector size): the one parser in ``rescuekit.disk.partitions`` then reads the image exactly as it read the
source. Bytes the image does not store (unallocated space, free space) read as zeros.
"""
from __future__ import annotations

from bisect import bisect_right
from collections import OrderedDict

from rescuekit.disk.device import DiskInfo
from rescuekit.errors import RescueError
from rescuekit.repo.index import Index
from rescuekit.repo.manifest import iter_chunks
from rescuekit.repo.packs import PackReader
from rescuekit.repo.repository import chunk_of, decode_blob


class ImageView:
    """``BlockDevice`` over image ``doc`` (size: the source's; sector size: the one its table was read with)."""

    writable = False
    CACHE_BYTES = 64 << 20  # decompressed chunks kept (least recently used dropped first)

    def __init__(self, doc: dict, index: Index, reader: PackReader, cache_bytes: int | None = None) -> None:
        self.path = f"image {doc['id'][:12]}"
        self.size = doc["source"]["size"]
        self.sector_size = doc["table"].get("sector_size") or doc["source"].get("sector_size") or 512
        self.info = DiskInfo(path=self.path, size=self.size, sector_size=self.sector_size)
        self._chunks = list(iter_chunks(doc, doc["chunk_size"]))
        self._starts = [off for off, _n, _cid in self._chunks]
        self._index, self._reader = index, reader
        # A small LRU of decompressed chunks: browsing a multi-GB image must not keep it all in memory.
        self._cache: OrderedDict[str, bytes] = OrderedDict()
        self._cache_bytes, self._cache_max = 0, self.CACHE_BYTES if cache_bytes is None else cache_bytes
        self.chunks_read = 0  # chunks fetched from packs and decompressed (tests assert what a read costs)
        # The last decoded group: chunks are stored in groups (one blob), and a file's chunks usually sit
        # side by side in one, so reading them in turn must not read and decode the blob once per chunk.
        self._group: tuple[tuple[str, int], bytes] | None = None

    def _chunk(self, cid: str) -> memoryview:
        data = self._cache.get(cid)
        if data is not None:
            self._cache.move_to_end(cid)
            return memoryview(data)
        entry = self._index.entries.get(cid)
        if entry is None:
            raise RescueError(f"chunk {cid[:16]} of {self.path} is missing from the repository index")
        self.chunks_read += 1
        key = (entry.pack, entry.offset)
        if self._group is None or self._group[0] != key:
            self._group = (key, decode_blob(self._reader.read_blob(entry), entry))
        data = bytes(chunk_of(self._group[1], entry, cid))
        self._cache[cid] = data
        self._cache_bytes += len(data)
        while self._cache_bytes > self._cache_max and len(self._cache) > 1:
            self._cache_bytes -= len(self._cache.popitem(last=False)[1])
        return memoryview(data)

    def readinto(self, offset: int, buf: memoryview) -> int:
        buf = memoryview(buf).cast("B")
        n = len(buf)
        if offset < 0 or offset + n > self.size:
            raise RescueError(f"read of {n} bytes at offset {offset} is past the end ({self.size} bytes) of "
                              f"{self.path}")
        pos = offset  # bytes before ``pos`` are filled; stored chunks are copied, the rest zeroed
        i = max(0, bisect_right(self._starts, offset) - 1)
        while i < len(self._chunks) and self._chunks[i][0] < offset + n:
            off, m, cid = self._chunks[i]
            a, b = max(off, offset), min(off + m, offset + n)
            if cid is not None and a < b:
                if a > pos:
                    buf[pos - offset:a - offset] = bytes(a - pos)
                buf[a - offset:b - offset] = self._chunk(cid)[a - off:b - off]
                pos = b
            i += 1
        if pos < offset + n:
            buf[pos - offset:] = bytes(offset + n - pos)
        return n

    def read(self, offset: int, n: int) -> bytes:
        buf = bytearray(n)
        self.readinto(offset, memoryview(buf))
        return bytes(buf)

    def write(self, offset: int, data: object) -> None:
        raise RescueError(f"{self.path} is read-only")

    def flush(self) -> None:
        pass

    def close(self) -> None:
        self._cache.clear()
        self._cache_bytes, self._group = 0, None

    def __enter__(self) -> "ImageView":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

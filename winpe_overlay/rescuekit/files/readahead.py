"""An ``ImageView`` that reads ahead along a plan: while a file is written out, a worker thread fetches,
decodes (zstd) and verifies (BLAKE3) the next chunks of the byte ranges the file occupies, and nothing else.

pread, zstd and BLAKE3 release the GIL, so the worker runs beside the writes of the main thread. The plan is
exactly the chunks under the file's runs (``plan(ranges)``), in the order they will be read; the worker keeps
at most ``AHEAD_BYTES`` of them decoded and unread, and stops when the plan ends or is cancelled. Planned
chunks bypass the LRU of ``ImageView`` (they are read once), so a large file does not evict the MFT and
directory chunks that browsing needs. Anything unplanned, or anything the worker did not get to (a corrupt
chunk, a missing pack), is read by the ``ImageView`` path itself, which raises its usual errors.
"""
from __future__ import annotations

import threading
from bisect import bisect_right
from collections import Counter, defaultdict, deque
from contextlib import contextmanager

from rescuekit.imaging.imageview import ImageView
from rescuekit.repo.repository import chunk_of, decode_blob


class _Plan:
    def __init__(self, order: list[str]) -> None:
        self.order = order  # chunk ids in reading order (a deduplicated id may come several times)
        self.need = Counter(order)  # planned reads not yet consumed or skipped, per id
        self.at: dict[str, deque[int]] = defaultdict(deque)
        for i, cid in enumerate(order):
            self.at[cid].append(i)
        self.ready: dict[str, memoryview] = {}  # fetched and verified, not yet consumed
        self.held = 0  # bytes in ``ready``
        self.pos = 0  # the consumer has passed order[:pos]
        self.last: tuple[str, memoryview] | None = None  # one chunk may serve two adjacent reads
        self.fetched = 0  # chunks the worker fetched (counted into ImageView.chunks_read)
        self.stop = self.done = False
        self.blocked = False  # the worker waits for the consumer to use what it holds


class ReadAheadView(ImageView):
    AHEAD_BYTES = 32 << 20  # decoded chunks kept ahead of the writer (per plan)
    MIN_PLAN = 2  # chunks: a smaller file is not worth a thread

    def __init__(self, *args, **kwargs) -> None:
        self._cv = threading.Condition()
        self._plan: _Plan | None = None
        self._worker: threading.Thread | None = None
        super().__init__(*args, **kwargs)

    def plan_chunks(self, ranges: list[tuple[int, int]]) -> list[str]:
        """The stored chunks under ``ranges`` ((offset, length) in the image), in order, each chunk once per
        run of adjacent reads."""
        out: list[str] = []
        last = -1
        for offset, n in ranges:
            i = max(0, bisect_right(self._starts, offset) - 1)
            while i < len(self._chunks) and self._chunks[i][0] < offset + n:
                off, m, cid = self._chunks[i]
                if cid is not None and off + m > offset and i != last:
                    out.append(cid)
                    last = i
                i += 1
        return out

    @contextmanager
    def plan(self, ranges: list[tuple[int, int]]):
        """Read ahead over ``ranges`` while the block runs (plans do not nest: an inner one is ignored)."""
        order = self.plan_chunks(ranges)
        if self._plan is not None or len(order) < self.MIN_PLAN:
            yield
            return
        p = _Plan(order)
        worker = threading.Thread(target=self._work, args=(p,), name="rescuekit-readahead", daemon=True)
        self._plan, self._worker = p, worker
        worker.start()
        try:
            yield
        finally:
            with self._cv:
                p.stop = True
                self._cv.notify_all()
            worker.join()
            self.chunks_read += p.fetched  # counted when the plan ends: one thread writes the counter
            self._plan = None

    def _work(self, p: _Plan) -> None:
        key = group = None
        try:
            for i, cid in enumerate(p.order):
                with self._cv:
                    while not p.stop and p.held >= self.AHEAD_BYTES:
                        p.blocked = True
                        self._cv.wait()
                    p.blocked = False
                    if p.stop:
                        return
                    if i < p.pos or p.need[cid] == 0 or cid in p.ready:
                        continue  # passed, or already here for an earlier read of the same id
                entry = self._index.entries.get(cid)
                if entry is None:
                    return  # the consumer's own read reports it
                if (entry.pack, entry.offset) != key:
                    group = decode_blob(self._reader.read_blob(entry), entry)
                    key = (entry.pack, entry.offset)
                data = chunk_of(group, entry, cid)
                with self._cv:
                    p.fetched += 1
                    if p.need[cid] > 0:
                        p.ready[cid] = data
                        p.held += len(data)
                    self._cv.notify_all()
        except Exception:  # noqa: BLE001 - a bad chunk: the consumer reads it itself and gets the error
            return
        finally:
            with self._cv:
                p.done = True
                self._cv.notify_all()

    def _chunk(self, cid: str) -> memoryview:
        p = self._plan
        if p is None:
            return super()._chunk(cid)
        if p.last is not None and p.last[0] == cid:
            return p.last[1]
        where = p.at.get(cid)
        while where and where[0] < p.pos:
            where.popleft()
        if not where:
            return super()._chunk(cid)  # not part of the plan (metadata, or a read the plan did not foresee)
        k = where[0]
        with self._cv:
            self._release(p, k)  # reads the plan foresaw but that did not come: their chunks are not kept
            # a full window of chunks needed later (a deduplicated id) must not stall both threads
            while cid not in p.ready and not p.done and not (p.blocked and p.held >= self.AHEAD_BYTES):
                self._cv.wait()
            data = p.ready.get(cid)
            self._release(p, k + 1)
        if data is None:
            data = super()._chunk(cid)  # the worker stopped short of it: read it here (and raise its error)
        p.last = (cid, data)
        return data

    def _release(self, p: _Plan, upto: int) -> None:
        """The consumer has passed order[:upto] (called holding the lock)."""
        for j in range(p.pos, upto):
            c = p.order[j]
            p.need[c] -= 1
            if p.need[c] == 0 and c in p.ready:
                p.held -= len(p.ready.pop(c))
        p.pos = max(p.pos, upto)
        self._cv.notify_all()

    def close(self) -> None:
        p, worker = self._plan, self._worker
        if p is not None and worker is not None:  # before the pack reader closes its files under it
            with self._cv:
                p.stop = True
                self._cv.notify_all()
            worker.join()
        super().close()

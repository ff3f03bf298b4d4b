"""Windows' own states of an NTFS volume, seen offline, and the files whose data a capture may leave out.

* Hibernated / Fast Startup: ``\\hiberfil.sys`` whose first 4 bytes are ``HIBR``/``hibr`` (a saved session; Fast
  Startup saves the kernel session the same way) or ``WAKE``/``wake`` (a resume from it began and did not
  finish). ntfs-3g (``ntfs_volume_check_hiberfile``) refuses ``hibr``/``HIBR`` the same way.
* Journal not clean: the newest ``RSTR`` restart page of ``$LogFile`` has log clients in use and lacks
  RESTART_VOLUME_IS_CLEAN (ntfs-3g ``ntfs_is_logfile_clean``); a ``CHKD`` page means chkdsk was interrupted.
  A $LogFile whose first page is all 0xFF was reset (mkntfs, ntfs-3g, chkdsk) and is clean.
* Dirty: $Volume's VOLUME_IS_DIRTY flag (``ntfs.volume_state``).
* ``pagefile.sys``, ``swapfile.sys``, ``hiberfil.sys`` in the root directory: their $DATA clusters, which
  Windows rewrites before it reads them (the files' MFT records stay in the image).
"""
from __future__ import annotations

import struct
from dataclasses import dataclass, field

from rescuekit.disk import ntfs
from rescuekit.disk.device import BlockDevice
from rescuekit.errors import RescueError

FILE_LOGFILE = 2
HIBER_SIGNATURES = {b"hibr": "HIBR", b"HIBR": "HIBR", b"wake": "WAKE", b"WAKE": "WAKE"}
SYSTEM_FILES = ("pagefile.sys", "swapfile.sys", "hiberfil.sys")
RESTART_VOLUME_IS_CLEAN = 0x0002
LOGFILE_NO_CLIENT = 0xFFFF


@dataclass
class WinState:
    """What one NTFS volume says about how Windows left it (None: could not be read)."""

    hiberfil: str | None = None  # "HIBR" / "WAKE" when hiberfil.sys holds (or began resuming) a session
    journal_clean: bool | None = None
    dirty: bool | None = None
    # name -> [(lcn, clusters)] of its $DATA (allocated, not sparse); files that are absent are left out
    system_files: dict[str, list[tuple[int, int]]] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)  # what could not be read (the capture says so)

    @property
    def hibernated(self) -> bool:
        """The capture must refuse (unless allowed): a saved session or a journal with open transactions."""
        return self.hiberfil is not None or self.journal_clean is False

    def flags(self) -> list[str]:
        """The manifest's ``windows_state`` list."""
        out = []
        if self.hiberfil is not None:
            out.append("hibernated")
        if self.journal_clean is False:
            out.append("journal-unclean")
        if self.dirty:
            out.append("dirty")
        return out


def _runs(vol: ntfs.NtfsVolume, number: int) -> tuple[list[tuple[int | None, int]], int, bytes | None]:
    """(runs, data size, resident value or None) of the unnamed $DATA of file ``number``."""
    ext = ntfs.attribute_records(vol.dev, vol.offset, vol.boot, number, ntfs.AT_DATA)
    if not ext:
        return [], 0, b""
    rec, apos = ext[0]
    if rec[apos + 8] == 0:
        value = ntfs._resident_value(rec, apos)
        return [], len(value), value
    runs, size = ntfs.extents_runs(ext, f"$DATA of MFT record {number} on {vol.dev.path} at {vol.offset}")
    return runs, size, None


def _head(vol: ntfs.NtfsVolume, number: int, n: int) -> bytes:
    runs, size, value = _runs(vol, number)
    if value is not None:
        return value[:n]
    return ntfs.read_stream(vol.dev, vol.offset, runs, vol.boot.cluster_size, 0, min(n, size))


def journal_clean(vol: ntfs.NtfsVolume) -> bool:
    """Is $LogFile clean (no transactions that Windows still has to replay)? RescueError if unreadable."""
    head = _head(vol, FILE_LOGFILE, 8192)
    where = f"$LogFile of {vol.dev.path} at {vol.offset}"
    if len(head) < 512:
        raise RescueError(f"{where} is too short")
    if head[:4] == b"\xff\xff\xff\xff":
        return True  # reset: empty
    if head[:4] == b"CHKD":
        return False
    best: tuple[int, int, int] | None = None  # (current LSN, client in use list, flags)
    page = struct.unpack_from("<I", head, 16)[0] if head[:4] == b"RSTR" else 4096
    if page not in (512, 1024, 2048, 4096, 8192) or len(head) < page:
        raise RescueError(f"{where}: implausible restart page size {page}")
    for at in (0, page):
        buf = bytearray(head[at:at + page])
        if len(buf) < page or buf[:4] != b"RSTR":
            continue
        ntfs.apply_fixups(buf, f"restart page at {at} of {where}")
        ra = struct.unpack_from("<H", buf, 24)[0]
        if ra + 16 > page:
            raise RescueError(f"{where}: restart area offset {ra} outside its page")
        lsn, _clients, _free, in_use, flags = struct.unpack_from("<QHHHH", buf, ra)
        if best is None or lsn > best[0]:
            best = (lsn, in_use, flags)
    if best is None:
        raise RescueError(f"{where} has no restart page")
    return best[1] == LOGFILE_NO_CLIENT or bool(best[2] & RESTART_VOLUME_IS_CLEAN)


def probe(dev: BlockDevice, offset: int, boot: ntfs.NtfsBoot | None = None) -> WinState:
    """Read the volume's Windows state; parts that cannot be read are listed in ``problems``, not raised."""
    st = WinState()
    try:
        vol = ntfs.NtfsVolume(dev, offset, boot)
    except RescueError as exc:
        st.problems.append(str(exc))
        return st
    st.dirty = ntfs.volume_state(dev, offset, vol.boot)[1]
    try:
        st.journal_clean = journal_clean(vol)
    except RescueError as exc:
        st.problems.append(f"journal state unknown ({exc})")
    nr = vol.boot.nr_clusters
    for name in SYSTEM_FILES:
        try:
            entry = vol.find(ntfs.FILE_ROOT, name)
            if entry is None or entry.is_dir:
                continue
            runs, _size, value = _runs(vol, entry.record)
            if name == "hiberfil.sys":
                sig = value[:4] if value is not None else _head(vol, entry.record, 4)
                st.hiberfil = HIBER_SIGNATURES.get(bytes(sig))
            st.system_files[name] = [(lcn, n) for lcn, n in runs if lcn is not None and lcn + n <= nr]
        except RescueError as exc:
            st.problems.append(f"{name}: {exc}")
    return st


def message(part: str, st: WinState, anyway: str = "capture anyway with --allow-hibernated, the image then holds "
            "the hibernated session") -> str:
    """The refusal for a hibernated volume or one whose journal is not clean (what to do, in one line; ``anyway``:
    how to go on regardless, e.g. for a restore of a Windows backup)."""
    why = ("Windows was hibernated or shut down with Fast Startup" if st.hiberfil is not None else
           "Windows was hibernated, shut down with Fast Startup or lost power (its NTFS journal has "
           "unfinished transactions)")
    return f"{part}: {why}: boot it and choose Restart, or shut down with Shift held; or {anyway}"

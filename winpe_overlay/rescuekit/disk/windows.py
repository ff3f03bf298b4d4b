"""Windows raw disk access via ctypes: CreateFileW + DeviceIoControl + positional ReadFile/WriteFile.

Every kernel32 call goes through :class:`Kernel32`, whose ``lib`` tests replace with a fake that records the
calls (IOCTL codes, access/share flags, buffer sizes). Raw disk handles need sector-aligned offsets and
lengths; :class:`WinDevice` hides that by bouncing through aligned buffers (read-modify-write at the edges).
"""
from __future__ import annotations

import ctypes
import ntpath
import os
import struct
import sys
from dataclasses import dataclass

from rescuekit.disk.device import DiskInfo
from rescuekit.errors import RescueError

GENERIC_READ = 0x80000000
GENERIC_WRITE = 0x40000000
FILE_SHARE_READ = 0x1
FILE_SHARE_WRITE = 0x2
OPEN_EXISTING = 3
INVALID_HANDLE_VALUE = (1 << (8 * ctypes.sizeof(ctypes.c_void_p))) - 1

IOCTL_DISK_GET_LENGTH_INFO = 0x7405C
IOCTL_DISK_GET_DRIVE_GEOMETRY_EX = 0x700A0
IOCTL_DISK_GET_DRIVE_LAYOUT_EX = 0x70050
IOCTL_DISK_UPDATE_PROPERTIES = 0x70140
IOCTL_DISK_IS_WRITABLE = 0x70024  # fails with ERROR_WRITE_PROTECT on a write-protected medium
IOCTL_STORAGE_QUERY_PROPERTY = 0x2D1400
IOCTL_VOLUME_GET_VOLUME_DISK_EXTENTS = 0x560000
FSCTL_LOCK_VOLUME = 0x90018
FSCTL_DISMOUNT_VOLUME = 0x90020

ERROR_FILE_NOT_FOUND = 2
ERROR_ACCESS_DENIED = 5
ERROR_INSUFFICIENT_BUFFER = 122
ERROR_MORE_DATA = 234
ERROR_NO_MORE_FILES = 18
ERROR_WRITE_PROTECT = 19

# GetDriveTypeW results (fileapi.h); labels are looked for on local drives only (a network drive is named by path)
DRIVE_REMOVABLE, DRIVE_FIXED, DRIVE_REMOTE, DRIVE_CDROM, DRIVE_RAMDISK = 2, 3, 4, 5, 6
LOCAL_DRIVES = (DRIVE_REMOVABLE, DRIVE_FIXED, DRIVE_CDROM, DRIVE_RAMDISK)
SEM_FAILCRITICALERRORS = 0x1  # an empty card reader fails the call instead of asking to insert a disk
LABEL_BUFFER = 261  # MAX_PATH + 1, as GetVolumeInformationW documents for both name buffers

GEOMETRY_EX_SIZE = 256  # DISK_GEOMETRY_EX + partition/detection info
DESCRIPTOR_SIZE = 1024  # STORAGE_DEVICE_DESCRIPTOR + its strings
EXTENTS_SIZE = 8 + 24 * 32  # VOLUME_DISK_EXTENTS with room for 32 DISK_EXTENTs
LAYOUT_HEADER = 48  # DRIVE_LAYOUT_INFORMATION_EX up to PartitionEntry[0]
LAYOUT_ENTRY = 144  # PARTITION_INFORMATION_EX
MAX_DRIVES = 64
BOUNCE = 4 << 20  # aligned bounce buffer per I/O call

BUS_TYPES = {1: "scsi", 2: "atapi", 3: "ata", 4: "1394", 5: "ssa", 6: "fibre", 7: "usb", 8: "raid", 9: "iscsi",
             10: "sas", 11: "sata", 12: "sd", 13: "mmc", 14: "virtual", 15: "file-backed", 16: "spaces",
             17: "nvme", 18: "scm", 19: "ufs"}


class OVERLAPPED(ctypes.Structure):
    """Only Offset/OffsetHigh are used: a positional read/write on a synchronous handle."""

    _fields_ = [("Internal", ctypes.c_void_p), ("InternalHigh", ctypes.c_void_p),
                ("Offset", ctypes.c_uint32), ("OffsetHigh", ctypes.c_uint32), ("hEvent", ctypes.c_void_p)]


def _winerror(code: int) -> str:
    try:
        return ctypes.FormatError(code).strip()  # type: ignore[attr-defined]
    except Exception:  # noqa: BLE001 - not on Windows (tests)
        return f"Windows error {code}"


class WinError(RescueError):
    def __init__(self, what: str, code: int) -> None:
        super().__init__(f"{what}: {_winerror(code)} (error {code})")
        self.code = code


class Kernel32:
    """The kernel32 calls rescuekit makes, with Python-level arguments and results."""

    def __init__(self, lib=None) -> None:
        if lib is None:
            lib = ctypes.WinDLL("kernel32", use_last_error=True)  # type: ignore[attr-defined]
            _set_prototypes(lib)
        self.lib = lib

    def last_error(self) -> int:
        get = getattr(self.lib, "last_error", None)
        return get() if get else ctypes.get_last_error()  # type: ignore[attr-defined]

    def create_file(self, path: str, access: int, share: int = FILE_SHARE_READ | FILE_SHARE_WRITE) -> int:
        h = self.lib.CreateFileW(path, access, share, None, OPEN_EXISTING, 0, None)
        if h is None or h in (INVALID_HANDLE_VALUE, -1):
            raise WinError(f"cannot open {path}", self.last_error())
        return h

    def close(self, handle: int) -> None:
        self.lib.CloseHandle(handle)

    def ioctl(self, handle: int, code: int, in_data: bytes | None = None, out_size: int = 0,
              what: str = "") -> bytes:
        """DeviceIoControl; returns the bytes the driver wrote."""
        inbuf = ctypes.create_string_buffer(in_data, len(in_data)) if in_data else None
        outbuf = ctypes.create_string_buffer(out_size) if out_size else None
        returned = ctypes.c_uint32(0)
        ok = self.lib.DeviceIoControl(handle, code, inbuf, len(in_data) if in_data else 0, outbuf, out_size,
                                      ctypes.byref(returned), None)
        if not ok:
            raise WinError(what or f"DeviceIoControl 0x{code:X} failed", self.last_error())
        return outbuf.raw[:returned.value] if outbuf is not None else b""

    def read_at(self, handle: int, offset: int, buf, n: int) -> int:
        ov = OVERLAPPED(Offset=offset & 0xFFFFFFFF, OffsetHigh=offset >> 32)
        got = ctypes.c_uint32(0)
        if not self.lib.ReadFile(handle, buf, n, ctypes.byref(got), ctypes.byref(ov)):
            raise WinError(f"read of {n} bytes at offset {offset} failed", self.last_error())
        return got.value

    def write_at(self, handle: int, offset: int, buf, n: int) -> int:
        ov = OVERLAPPED(Offset=offset & 0xFFFFFFFF, OffsetHigh=offset >> 32)
        done = ctypes.c_uint32(0)
        if not self.lib.WriteFile(handle, buf, n, ctypes.byref(done), ctypes.byref(ov)):
            raise WinError(f"write of {n} bytes at offset {offset} failed", self.last_error())
        return done.value

    def flush(self, handle: int) -> None:
        if not self.lib.FlushFileBuffers(handle):
            raise WinError("flush failed", self.last_error())

    def volumes(self) -> list[str]:
        """Volume GUID paths (``\\\\?\\Volume{...}``, no trailing backslash) of all volumes."""
        buf = ctypes.create_unicode_buffer(260)
        h = self.lib.FindFirstVolumeW(buf, 260)
        if h is None or h in (INVALID_HANDLE_VALUE, -1):
            return []
        out = []
        try:
            while True:
                out.append(buf.value.rstrip("\\"))
                if not self.lib.FindNextVolumeW(h, buf, 260):
                    break
        finally:
            self.lib.FindVolumeClose(h)
        return out

    def volume_path_name(self, path: str) -> str | None:
        """The mount point (``C:\\`` or a folder) of the volume holding ``path``."""
        buf = ctypes.create_unicode_buffer(1024)
        if not self.lib.GetVolumePathNameW(path, buf, 1024):
            return None
        return buf.value

    def logical_drives(self) -> list[str]:
        """Drive roots (``C:\\``, ``R:\\`` ...): GetLogicalDriveStringsW; a return value larger than the buffer is
        the size needed, so the buffer grows once."""
        size = 128
        while True:
            buf = ctypes.create_unicode_buffer(size + 1)
            n = self.lib.GetLogicalDriveStringsW(size, buf)
            if n == 0:
                raise WinError("cannot list the drive letters", self.last_error())
            if n <= size:
                return [d for d in buf[:n].split("\0") if d]
            size = n

    def drive_type(self, root: str) -> int:
        return self.lib.GetDriveTypeW(root)

    def volume_information(self, root: str) -> tuple[str, str] | None:
        """(label, file system name) of the volume at ``root`` (``R:\\``); None when it cannot be read (no
        medium in a removable drive, an unformatted volume)."""
        label = ctypes.create_unicode_buffer(LABEL_BUFFER)
        fs = ctypes.create_unicode_buffer(LABEL_BUFFER)
        old = ctypes.c_uint32(0)
        self.lib.SetThreadErrorMode(SEM_FAILCRITICALERRORS, ctypes.byref(old))
        try:
            if not self.lib.GetVolumeInformationW(root, label, LABEL_BUFFER, None, None, None, fs, LABEL_BUFFER):
                return None
        finally:
            self.lib.SetThreadErrorMode(old.value, None)
        return label.value, fs.value

    def volume_name_for_mount_point(self, mount: str) -> str | None:
        buf = ctypes.create_unicode_buffer(260)
        if not self.lib.GetVolumeNameForVolumeMountPointW(mount, buf, 260):
            return None
        return buf.value


def _set_prototypes(lib) -> None:
    H, D, P = ctypes.c_void_p, ctypes.c_uint32, ctypes.c_void_p
    B = ctypes.c_int
    W = ctypes.c_wchar_p
    protos = {
        "CreateFileW": (H, [W, D, D, P, D, D, H]),
        "CloseHandle": (B, [H]),
        "DeviceIoControl": (B, [H, D, P, D, P, D, P, P]),
        "ReadFile": (B, [H, P, D, P, P]),
        "WriteFile": (B, [H, P, D, P, P]),
        "FlushFileBuffers": (B, [H]),
        "FindFirstVolumeW": (H, [W, D]),
        "FindNextVolumeW": (B, [H, W, D]),
        "FindVolumeClose": (B, [H]),
        "GetVolumePathNameW": (B, [W, W, D]),
        "GetVolumeNameForVolumeMountPointW": (B, [W, W, D]),
        "GetLogicalDriveStringsW": (D, [D, W]),
        "GetDriveTypeW": (ctypes.c_uint, [W]),
        "GetVolumeInformationW": (B, [W, W, D, P, P, P, W, D]),
        "SetThreadErrorMode": (B, [D, P]),
    }
    for name, (res, args) in protos.items():
        fn = getattr(lib, name)
        fn.restype, fn.argtypes = res, args


_default: Kernel32 | None = None


def kernel32() -> Kernel32:
    global _default
    if _default is None:
        _default = Kernel32()
    return _default


# ---------------------------------------------------------------- IOCTL decoding

def get_length(k: Kernel32, h: int, path: str) -> int:
    return struct.unpack("<q", k.ioctl(h, IOCTL_DISK_GET_LENGTH_INFO, None, 8, f"cannot get the size of {path}")[:8])[0]


def get_sector_size(k: Kernel32, h: int) -> int:
    try:
        out = k.ioctl(h, IOCTL_DISK_GET_DRIVE_GEOMETRY_EX, None, GEOMETRY_EX_SIZE)
    except WinError:
        return 512
    # DISK_GEOMETRY: Cylinders(8) MediaType(4) TracksPerCylinder(4) SectorsPerTrack(4) BytesPerSector(4)
    bps = struct.unpack_from("<I", out, 20)[0] if len(out) >= 24 else 512
    return bps if bps in (512, 1024, 2048, 4096) else 512


def query_descriptor(k: Kernel32, h: int) -> dict:
    """STORAGE_DEVICE_DESCRIPTOR: vendor, model, serial, bus, removable."""
    query = struct.pack("<II4x", 0, 0)  # StorageDeviceProperty, PropertyStandardQuery, AdditionalParameters
    try:
        out = k.ioctl(h, IOCTL_STORAGE_QUERY_PROPERTY, query, DESCRIPTOR_SIZE)
    except WinError:
        return {}
    if len(out) < 36:
        return {}
    removable = out[10] != 0
    vendor_off, product_off, _rev_off, serial_off, bus = struct.unpack_from("<IIIII", out, 12)

    def s(off: int) -> str | None:
        if not off or off >= len(out):
            return None
        end = out.find(b"\0", off)
        return out[off:end if end >= 0 else len(out)].decode("ascii", "replace").strip() or None

    return {"vendor": s(vendor_off), "model": s(product_off), "serial": s(serial_off),
            "bus": BUS_TYPES.get(bus), "removable": removable}


@dataclass
class LayoutEntry:
    number: int
    start: int
    length: int


def drive_layout(k: Kernel32, h: int) -> tuple[str, list[LayoutEntry]]:
    """IOCTL_DISK_GET_DRIVE_LAYOUT_EX: ("mbr"|"gpt"|"raw", partitions with a non-zero number)."""
    size = LAYOUT_HEADER + LAYOUT_ENTRY * 128
    while True:
        try:
            out = k.ioctl(h, IOCTL_DISK_GET_DRIVE_LAYOUT_EX, None, size)
            break
        except WinError as exc:
            if exc.code in (ERROR_INSUFFICIENT_BUFFER, ERROR_MORE_DATA) and size < (1 << 20):
                size *= 4
                continue
            raise
    style, count = struct.unpack_from("<II", out, 0)
    entries = []
    for i in range(count):
        off = LAYOUT_HEADER + i * LAYOUT_ENTRY
        if off + 32 > len(out):
            break
        _st, start, length, number = struct.unpack_from("<I4xqqI", out, off)
        if number:
            entries.append(LayoutEntry(number, start, length))
    return {0: "mbr", 1: "gpt"}.get(style, "raw"), entries


def disk_extents(k: Kernel32, h: int) -> list[tuple[int, int, int]]:
    """IOCTL_VOLUME_GET_VOLUME_DISK_EXTENTS: [(disk number, start, length)]."""
    out = k.ioctl(h, IOCTL_VOLUME_GET_VOLUME_DISK_EXTENTS, None, EXTENTS_SIZE)
    n = struct.unpack_from("<I", out, 0)[0]
    return [struct.unpack_from("<I4xqq", out, 8 + 24 * i) for i in range(n) if 8 + 24 * (i + 1) <= len(out)]


def disk_number(path: str) -> int | None:
    p = path.replace("/", "\\").lower()
    prefix = "\\\\.\\physicaldrive"
    return int(p[len(prefix):]) if p.startswith(prefix) and p[len(prefix):].isdigit() else None


# ---------------------------------------------------------------- the device

class WinDevice:
    """A raw Windows disk (``\\\\.\\PhysicalDriveN``) or volume (``\\\\.\\X:``) as a BlockDevice."""

    def __init__(self, path: str, *, writable: bool = False, k32: Kernel32 | None = None) -> None:
        self.k = k32 or kernel32()
        self.path = path
        self.writable = writable
        access = GENERIC_READ | (GENERIC_WRITE if writable else 0)
        self._locked: list[int] = []
        try:
            self._h = self.k.create_file(path, access)
        except WinError as exc:
            if exc.code == ERROR_ACCESS_DENIED:
                raise RescueError(f"access denied opening {path}: run as administrator") from None
            raise
        try:
            self.size = get_length(self.k, self._h, path)
            self.sector_size = get_sector_size(self.k, self._h)
            num = disk_number(path)
            desc = query_descriptor(self.k, self._h)
            self.info = DiskInfo(path=path, size=self.size, sector_size=self.sector_size,
                                 kind="disk" if num is not None else "partition", **desc)
            if writable:
                self._refuse_write_protected()  # before any volume is locked or dismounted
                if num is not None:
                    self._lock_disk_volumes(num)
                else:
                    self._lock_volume(self._h, path)
        except BaseException:
            self.close()
            raise

    def _refuse_write_protected(self) -> None:
        try:
            self.k.ioctl(self._h, IOCTL_DISK_IS_WRITABLE, None, 0, f"cannot check whether {self.path} is writable")
        except WinError as exc:
            if exc.code == ERROR_WRITE_PROTECT:
                self.writable = False  # nothing to flush or update on close
                raise RescueError(f"{self.path} is write-protected (read-only medium); nothing was written") from None
            # another error (a driver without this IOCTL): the writes themselves will tell

    # -- locking
    def _lock_volume(self, h: int, name: str) -> None:
        self.k.ioctl(h, FSCTL_LOCK_VOLUME, None, 0, f"cannot lock volume {name} (files open on it?)")
        self.k.ioctl(h, FSCTL_DISMOUNT_VOLUME, None, 0, f"cannot dismount volume {name}")

    def _lock_disk_volumes(self, num: int) -> None:
        """Lock + dismount every volume with an extent on disk ``num``; the locks last until close()."""
        for vol in self.k.volumes():
            try:
                vh = self.k.create_file(vol, GENERIC_READ | GENERIC_WRITE)
            except WinError:
                continue
            try:
                on_disk = any(d == num for d, _s, _n in disk_extents(self.k, vh))
            except WinError:
                on_disk = False
            if not on_disk:
                self.k.close(vh)
                continue
            self._locked.append(vh)
            self._lock_volume(vh, vol)

    # -- I/O
    def _check(self, offset: int, n: int) -> None:
        if offset < 0 or offset + n > self.size:
            raise RescueError(f"I/O of {n} bytes at offset {offset} is past the end ({self.size} bytes) of {self.path}")

    def _bounce(self, n: int):
        """A ctypes buffer of ``n`` bytes whose address is aligned to 4096."""
        raw = ctypes.create_string_buffer(n + 4096)
        addr = ctypes.addressof(raw)
        pad = (-addr) % 4096
        buf = (ctypes.c_char * n).from_buffer(raw, pad)
        return buf

    def _read_aligned(self, offset: int, n: int, buf) -> None:
        got = self.k.read_at(self._h, offset, buf, n)
        if got != n:
            raise RescueError(f"short read at offset {offset} of {self.path} ({got} of {n} bytes)")

    def _pieces(self, offset: int, n: int):
        """Split [offset, offset + n) into sector-aligned bounce pieces: (done, aligned start, skip into it,
        bytes wanted, aligned length)."""
        ss = self.sector_size
        done = 0
        while done < n:
            pos = offset + done
            a = pos - pos % ss
            want = min(n - done, BOUNCE - (pos - a))
            yield done, a, pos - a, want, -(-(pos - a + want) // ss) * ss
            done += want

    def readinto(self, offset: int, buf: memoryview) -> int:
        mv = memoryview(buf).cast("B")
        n = len(mv)
        self._check(offset, n)
        for done, a, skip, want, alen in self._pieces(offset, n):
            b = self._bounce(alen)
            self._read_aligned(a, alen, b)
            mv[done:done + want] = memoryview(b).cast("B")[skip:skip + want]
        return n

    def read(self, offset: int, n: int) -> bytes:
        out = bytearray(n)
        self.readinto(offset, memoryview(out))
        return bytes(out)

    def write(self, offset: int, data) -> None:
        if not self.writable:
            raise RescueError(f"{self.path} is open read-only")
        mv = memoryview(data).cast("B")
        n = len(mv)
        self._check(offset, n)
        ss = self.sector_size
        for done, a, skip, want, alen in self._pieces(offset, n):
            b = self._bounce(alen)
            bm = memoryview(b).cast("B")
            if skip or want != alen:  # partial sectors at the edges: read-modify-write
                if skip:
                    self._read_aligned(a, ss, self._sub(b, 0, ss))
                if (skip + want) % ss:
                    last = alen - ss
                    self._read_aligned(a + last, ss, self._sub(b, last, ss))
            bm[skip:skip + want] = mv[done:done + want]
            put = self.k.write_at(self._h, a, b, alen)
            if put != alen:
                raise RescueError(f"short write at offset {a} of {self.path} ({put} of {alen} bytes)")

    @staticmethod
    def _sub(buf, off: int, n: int):
        return (ctypes.c_char * n).from_buffer(buf, off)

    def current_size(self) -> int:
        """The size now (``size`` is the size at open; media can change under an open handle)."""
        return get_length(self.k, self._h, self.path)

    def flush(self) -> None:
        if self.writable:
            self.k.flush(self._h)

    def close(self) -> None:
        h = getattr(self, "_h", None)
        if h is None:
            return
        self._h = None
        try:
            if self.writable:
                self.k.flush(h)
                if disk_number(self.path) is not None:
                    # Make Windows re-read the (new) partition table.
                    try:
                        self.k.ioctl(h, IOCTL_DISK_UPDATE_PROPERTIES, None, 0)
                    except WinError:
                        pass
        finally:
            self.k.close(h)
            for vh in self._locked:  # closing the handle releases the lock
                self.k.close(vh)
            self._locked = []

    def __enter__(self) -> "WinDevice":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_device(path: str, *, writable: bool, k32: Kernel32 | None = None) -> WinDevice:
    """Open ``\\\\.\\PhysicalDriveN`` or ``\\\\.\\X:`` (writable: its volumes locked + dismounted)."""
    return WinDevice(path, writable=writable, k32=k32)


# ---------------------------------------------------------------- inventory

def list_disks(k32: Kernel32 | None = None) -> list[DiskInfo]:
    k = k32 or kernel32()
    system = system_disk_paths(k)
    out = []
    for n in range(MAX_DRIVES):
        path = f"\\\\.\\PhysicalDrive{n}"
        try:
            h = k.create_file(path, GENERIC_READ)
        except WinError:
            continue
        try:
            size = get_length(k, h, path)
            info = DiskInfo(path=path, size=size, sector_size=get_sector_size(k, h), kind="disk",
                            **query_descriptor(k, h))
        except WinError:
            continue
        finally:
            k.close(h)
        info.is_system = path in system
        out.append(info)
    _add_drive_letters(k, out)
    return out


def _add_drive_letters(k: Kernel32, disks: list[DiskInfo]) -> None:
    by_num = {disk_number(d.path): d for d in disks}
    for letter in "CDEFGHIJKLMNOPQRSTUVWXYZ":
        root = f"{letter}:\\"
        if not os.path.exists(root):
            continue
        num = _disk_of_volume(k, f"\\\\.\\{letter}:")
        if num is not None and num in by_num:
            by_num[num].mounts.append(f"{letter}:")


def _disk_of_volume(k: Kernel32, volume: str) -> int | None:
    try:
        h = k.create_file(volume, 0)
    except WinError:
        return None
    try:
        ext = disk_extents(k, h)
    except WinError:
        return None
    finally:
        k.close(h)
    return ext[0][0] if ext else None


def disk_holding(path: str, k32: Kernel32 | None = None) -> str | None:
    """``\\\\.\\PhysicalDriveN`` holding ``path`` (None: RAM disk, network share, unknown)."""
    k = k32 or kernel32()
    # GetVolumePathNameW also resolves paths that do not exist yet (a repository about to be created).
    mount = k.volume_path_name(ntpath.abspath(path))
    if not mount or mount.startswith("\\\\") and not mount.startswith("\\\\?\\"):
        return None  # UNC path: a network share
    if len(mount) <= 3 and mount[1:2] == ":":
        volume = f"\\\\.\\{mount[0]}:"
    else:
        name = k.volume_name_for_mount_point(mount if mount.endswith("\\") else mount + "\\")
        if not name:
            return None
        volume = name.rstrip("\\")
    num = _disk_of_volume(k, volume)
    return None if num is None else f"\\\\.\\PhysicalDrive{num}"


def is_rescue_medium(root: str, exists=None) -> bool:
    """Whether the drive ``root`` holds a rescuekit medium (``\\rescuekit\\build.json`` next to
    ``\\sources\\boot.wim``: the disc or stick rescuekit build/usb made)."""
    exists = exists or os.path.exists
    return exists(root + "rescuekit\\build.json") and exists(root + "sources\\boot.wim")


def boot_media_roots(exists=None) -> list[str]:
    """In WinPE (system drive X:): drive roots holding a rescuekit medium, i.e. what this rescue system booted
    from."""
    if os.environ.get("SystemDrive", "").upper() != "X:":
        return []  # a normal Windows: a rescue stick that is merely plugged in is a fair target
    return [f"{c}:\\" for c in "CDEFGHIJKLMNOPQRSTUVWYZ" if is_rescue_medium(f"{c}:\\", exists)]  # not X: itself


def labelled_drives(k32: Kernel32 | None = None) -> list[tuple[str, str, str]]:
    """(root, label, file system) of every local drive letter whose volume has a label. The system drive is left
    out (WinPE's X: is its RAM disk; on a Windows host it is the running Windows), and so are network drives."""
    k = k32 or kernel32()
    system = os.environ.get("SystemDrive", "").upper()
    out = []
    for root in k.logical_drives():
        if root[:2].upper() == system or k.drive_type(root) not in LOCAL_DRIVES:
            continue
        info = k.volume_information(root)
        if info and info[0].strip():
            out.append((root, info[0], info[1]))
    return out


def system_disk_paths(k32: Kernel32 | None = None) -> set[str]:
    """Disks holding the system drive, the Windows directory, the running Python and the rescuekit medium
    this WinPE booted from (overwriting it would destroy the running rescue system's medium); WinPE's X:
    is a RAM disk and maps to no disk."""
    k = k32 or kernel32()
    places = [os.environ.get("SystemDrive", "C:") + "\\", os.environ.get("SystemRoot", ""), sys.executable,
              *boot_media_roots()]
    out = set()
    for p in places:
        if p:
            d = disk_holding(p, k)
            if d:
                out.add(d)
    return out

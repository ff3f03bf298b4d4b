"""The Windows ctypes layer against a fake kernel32: exact IOCTL codes, access flags, buffer sizes, and
sector-aligned I/O on a disk that rejects unaligned requests."""
from __future__ import annotations

import ctypes
import random
import struct

import pytest

from rescuekit.disk import windows as W
from rescuekit.errors import RescueError

SS = 512


class FakeVolume:
    def __init__(self, disk: int, start: int, length: int) -> None:
        self.disk, self.start, self.length = disk, start, length


class FakeKernel32:
    """Records every call; PhysicalDrive0 is a 1 MiB disk that only accepts sector-aligned I/O."""

    def __init__(self) -> None:
        self.calls: list[tuple] = []
        self.disk = bytearray(random.Random(1).randbytes(1 << 20))
        self.handles: dict[int, str] = {}
        self.next_handle = 100
        self.err = 0
        self.volumes = {"\\\\?\\Volume{aaaa}": FakeVolume(0, 1 << 19, 1 << 18),
                        "\\\\?\\Volume{bbbb}": FakeVolume(1, 0, 1 << 20),
                        "\\\\.\\C:": FakeVolume(0, 1 << 19, 1 << 18),
                        "\\\\.\\E:": FakeVolume(2, 1 << 20, 1 << 30)}
        self.layout_calls = 0
        self.write_protected = False

    def last_error(self) -> int:
        return self.err

    # -- kernel32 entry points (argument conventions as with real ctypes prototypes)
    def CreateFileW(self, path, access, share, sa, disposition, flags, template):
        self.calls.append(("CreateFileW", path, access, share, sa, disposition, flags, template))
        if path not in ("\\\\.\\PhysicalDrive0",) and path not in self.volumes:
            self.err = W.ERROR_FILE_NOT_FOUND
            return W.INVALID_HANDLE_VALUE
        h = self.next_handle
        self.next_handle += 4
        self.handles[h] = path
        return h

    def CloseHandle(self, h):
        self.calls.append(("CloseHandle", self.handles.pop(h)))
        return 1

    def DeviceIoControl(self, h, code, inbuf, insize, outbuf, outsize, returned, overlapped):
        path = self.handles[h]
        indata = bytes(inbuf.raw[:insize]) if inbuf is not None else None
        self.calls.append(("DeviceIoControl", path, code, indata, insize, outsize, overlapped))
        if code == W.IOCTL_DISK_GET_LENGTH_INFO:
            out = struct.pack("<q", len(self.disk) if "Physical" in path else self.volumes[path].length)
        elif code == W.IOCTL_DISK_GET_DRIVE_GEOMETRY_EX:
            out = struct.pack("<qIIII", 2, 12, 255, 63, SS) + struct.pack("<q", len(self.disk))
        elif code == W.IOCTL_STORAGE_QUERY_PROPERTY:
            strings = b"ACME\0Rescue SSD 1TB\0SN12345\0"
            hdr = struct.pack("<IIBBBBIIIIIII", 1, 36 + len(strings), 0, 0, 1, 0, 36, 41, 0, 56, 7, 0, 0)
            out = hdr[:36] + strings
        elif code == W.IOCTL_VOLUME_GET_VOLUME_DISK_EXTENTS:
            v = self.volumes[path]
            out = struct.pack("<I4xI4xqq", 1, v.disk, v.start, v.length)
        elif code == W.IOCTL_DISK_GET_DRIVE_LAYOUT_EX:
            self.layout_calls += 1
            if outsize < W.LAYOUT_HEADER + 200 * W.LAYOUT_ENTRY:  # pretend 200 entries: too small first
                self.err = W.ERROR_INSUFFICIENT_BUFFER
                return 0
            out = bytearray(W.LAYOUT_HEADER + 2 * W.LAYOUT_ENTRY)
            struct.pack_into("<II", out, 0, 1, 2)
            struct.pack_into("<I4xqqI", out, 48, 1, 1 << 20, 100 << 20, 1)
            struct.pack_into("<I4xqqI", out, 48 + 144, 1, 101 << 20, 200 << 20, 2)
            out = bytes(out)
        elif code == W.IOCTL_DISK_IS_WRITABLE:
            if self.write_protected:
                self.err = W.ERROR_WRITE_PROTECT
                return 0
            out = b""
        elif code in (W.FSCTL_LOCK_VOLUME, W.FSCTL_DISMOUNT_VOLUME, W.IOCTL_DISK_UPDATE_PROPERTIES):
            out = b""
        else:
            self.err = 1
            return 0
        assert len(out) <= outsize
        if out:
            ctypes.memmove(outbuf, out, len(out))
        returned._obj.value = len(out)
        return 1

    def _io(self, name, h, buf, n, done, ov):
        off = ov._obj.Offset | ov._obj.OffsetHigh << 32
        self.calls.append((name, self.handles[h], off, n))
        if off % SS or n % SS or ctypes.addressof(buf) % SS:
            self.err = 87  # ERROR_INVALID_PARAMETER, as a raw disk handle does
            return 0
        return off

    def ReadFile(self, h, buf, n, got, ov):
        off = self._io("ReadFile", h, buf, n, got, ov)
        if self.err == 87:
            return 0
        ctypes.memmove(buf, bytes(self.disk[off:off + n]), n)
        got._obj.value = n
        return 1

    def WriteFile(self, h, buf, n, done, ov):
        off = self._io("WriteFile", h, buf, n, done, ov)
        if self.err == 87:
            return 0
        self.disk[off:off + n] = ctypes.string_at(buf, n)
        done._obj.value = n
        return 1

    def FlushFileBuffers(self, h):
        self.calls.append(("FlushFileBuffers", self.handles[h]))
        return 1

    def FindFirstVolumeW(self, buf, n):
        self._vols = [v + "\\" for v in self.volumes if v.startswith("\\\\?\\")]
        buf.value = self._vols.pop(0)
        self.calls.append(("FindFirstVolumeW", n))
        return 7

    def FindNextVolumeW(self, h, buf, n):
        if not self._vols:
            self.err = W.ERROR_NO_MORE_FILES
            return 0
        buf.value = self._vols.pop(0)
        return 1

    def FindVolumeClose(self, h):
        self.calls.append(("FindVolumeClose", h))
        return 1

    def GetVolumePathNameW(self, path, buf, n):
        self.calls.append(("GetVolumePathNameW", path, n))
        buf.value = path[:3] if path[1:2] == ":" else ""
        return 1 if buf.value else 0

    def GetVolumeNameForVolumeMountPointW(self, mount, buf, n):
        return 0

    # drive letters (volumes.py's LABEL:\\folder): root -> (GetDriveTypeW, label, file system or None: unreadable)
    drives = {"C:\\": (3, "Windows", "NTFS"), "D:\\": (5, "RESCUEKIT", "UDF"), "E:\\": (2, "RKREPO", "exFAT"),
              "F:\\": (2, "", "FAT32"), "G:\\": (2, "x", None), "N:\\": (4, "rkrepo", "NTFS"),
              "R:\\": (3, "rkRepo", "NTFS"), "X:\\": (3, "Boot", "NTFS")}
    error_mode = 0

    def GetLogicalDriveStringsW(self, n, buf):
        self.calls.append(("GetLogicalDriveStringsW", n))
        text = "".join(d + "\0" for d in self.drives)
        if len(text) > n:
            return len(text) + 1  # the size needed
        buf[:len(text) + 1] = text + "\0"
        return len(text)

    def GetDriveTypeW(self, root):
        self.calls.append(("GetDriveTypeW", root))
        return self.drives.get(root, (1,))[0]  # DRIVE_NO_ROOT_DIR

    def GetVolumeInformationW(self, root, label, nlabel, serial, maxlen, flags, fs, nfs):
        self.calls.append(("GetVolumeInformationW", root, nlabel, serial, maxlen, flags, nfs, self.error_mode))
        _t, lab, fsname = self.drives[root]
        if fsname is None:
            self.err = 21  # ERROR_NOT_READY: no medium in the drive
            return 0
        label.value, fs.value = lab, fsname
        return 1

    def SetThreadErrorMode(self, mode, old):
        self.calls.append(("SetThreadErrorMode", mode))
        if old is not None:
            old._obj.value = self.error_mode
        self.error_mode = mode
        return 1


@pytest.fixture()
def fake():
    return FakeKernel32()


def _dev(fake, writable=False):
    return W.open_device("\\\\.\\PhysicalDrive0", writable=writable, k32=W.Kernel32(fake))


def test_open_read_only_exact_calls(fake):
    with _dev(fake) as d:
        assert d.size == 1 << 20 and d.sector_size == 512
        assert (d.info.vendor, d.info.model, d.info.serial, d.info.bus, d.info.removable) == (
            "ACME", "Rescue SSD 1TB", "SN12345", "usb", True)
    c = fake.calls
    assert c[0] == ("CreateFileW", "\\\\.\\PhysicalDrive0", W.GENERIC_READ, W.FILE_SHARE_READ | W.FILE_SHARE_WRITE,
                    None, W.OPEN_EXISTING, 0, None)
    assert c[0][2] == 0x80000000 and c[0][3] == 3 and c[0][5] == 3
    ioctls = [(x[2], x[3], x[4], x[5]) for x in c if x[0] == "DeviceIoControl"]
    query = struct.pack("<III", 0, 0, 0)  # StorageDeviceProperty, PropertyStandardQuery
    assert ioctls == [(0x7405C, None, 0, 8), (0x700A0, None, 0, 256), (0x2D1400, query, 12, 1024)]
    assert c[-1] == ("CloseHandle", "\\\\.\\PhysicalDrive0")
    assert not any(x[0] == "WriteFile" for x in c)


def test_current_size_asks_the_disk_again(fake):
    """Capture re-checks the size after reading (a medium that changed under the handle is refused)."""
    with _dev(fake) as d:
        fake.disk.extend(bytes(1 << 20))
        assert d.size == 1 << 20 and d.current_size() == 2 << 20
    assert [x[2] for x in fake.calls if x[0] == "DeviceIoControl"].count(W.IOCTL_DISK_GET_LENGTH_INFO) == 2


@pytest.mark.parametrize("bounce", [W.BOUNCE, 4096])
def test_unaligned_reads_bounce(fake, monkeypatch, bounce):
    monkeypatch.setattr(W, "BOUNCE", bounce)  # small: many bounce rounds per call
    with _dev(fake) as d:
        for off, n in ((0, 512), (1, 1), (511, 2), (1000, 70000), (3, (1 << 20) - 3), (123457, 4 << 20 >> 3)):
            assert d.read(off, n) == bytes(fake.disk[off:off + n]), (off, n)
        reads = [x for x in fake.calls if x[0] == "ReadFile"]
        assert all(off % 512 == 0 and n % 512 == 0 for _f, _p, off, n in reads)
        with pytest.raises(RescueError, match="past the end"):
            d.read((1 << 20) - 10, 11)


def test_write_locks_dismounts_and_updates(fake, monkeypatch):
    monkeypatch.setattr(W, "BOUNCE", 1024)
    before = bytes(fake.disk)
    with _dev(fake, writable=True) as d:
        d.write(700, b"hello")  # inside one sector
        d.write(1020, b"x" * 1030)  # spans 4 sectors, both edges partial
        d.write(4096, b"y" * 512)  # aligned
        d.flush()
    want = bytearray(before)
    want[700:705] = b"hello"
    want[1020:2050] = b"x" * 1030
    want[4096:4608] = b"y" * 512
    assert fake.disk == want
    c = fake.calls
    assert c[0][2] == W.GENERIC_READ | W.GENERIC_WRITE == 0xC0000000
    writes = [x for x in c if x[0] == "WriteFile"]
    assert all(off % 512 == 0 and n % 512 == 0 for _f, _p, off, n in writes)
    # Volume {aaaa} lives on disk 0: locked then dismounted; {bbbb} (disk 1) only queried.
    vol_ioctls = [(x[1], x[2]) for x in c if x[0] == "DeviceIoControl" and x[1].startswith("\\\\?\\")]
    assert vol_ioctls == [("\\\\?\\Volume{aaaa}", 0x560000), ("\\\\?\\Volume{aaaa}", 0x90018),
                          ("\\\\?\\Volume{aaaa}", 0x90020), ("\\\\?\\Volume{bbbb}", 0x560000)]
    ext = [x for x in c if x[0] == "DeviceIoControl" and x[2] == 0x560000]
    assert all(x[5] == W.EXTENTS_SIZE for x in ext)
    # On close: flush, IOCTL_DISK_UPDATE_PROPERTIES, then the disk and the locked volume handles closed.
    tail = c[-4:]
    assert tail[0] == ("FlushFileBuffers", "\\\\.\\PhysicalDrive0")
    assert tail[1][:3] == ("DeviceIoControl", "\\\\.\\PhysicalDrive0", 0x70140)
    assert tail[2:] == [("CloseHandle", "\\\\.\\PhysicalDrive0"), ("CloseHandle", "\\\\?\\Volume{aaaa}")]
    assert ("CloseHandle", "\\\\?\\Volume{bbbb}") in c


def test_write_protected_disk_refused_before_locking(fake):
    """IOCTL_DISK_IS_WRITABLE fails with ERROR_WRITE_PROTECT: refused, no volume locked or dismounted."""
    fake.write_protected = True
    with pytest.raises(RescueError, match="write-protected"):
        _dev(fake, writable=True)
    codes = [x[2] for x in fake.calls if x[0] == "DeviceIoControl"]
    assert W.IOCTL_DISK_IS_WRITABLE == 0x70024 and 0x70024 in codes
    assert W.FSCTL_LOCK_VOLUME not in codes and W.FSCTL_DISMOUNT_VOLUME not in codes
    assert not any(x[0] == "WriteFile" for x in fake.calls)
    assert fake.calls[-1][0] == "CloseHandle"


def test_read_only_device_refuses_writes(fake):
    with _dev(fake) as d, pytest.raises(RescueError, match="read-only"):
        d.write(0, b"x")


def test_open_missing_drive(fake):
    with pytest.raises(RescueError, match="PhysicalDrive7"):
        W.open_device("\\\\.\\PhysicalDrive7", writable=False, k32=W.Kernel32(fake))


def test_volume_target_locks_itself(fake):
    with W.open_device("\\\\.\\C:", writable=True, k32=W.Kernel32(fake)) as d:
        assert d.size == 1 << 18 and d.info.kind == "partition"
    codes = [x[2] for x in fake.calls if x[0] == "DeviceIoControl" and x[1] == "\\\\.\\C:"]
    assert codes[-2:] == [0x90018, 0x90020]
    assert 0x70140 not in codes


def test_drive_layout_grows_buffer(fake):
    k = W.Kernel32(fake)
    h = k.create_file("\\\\.\\PhysicalDrive0", W.GENERIC_READ)
    style, parts = W.drive_layout(k, h)
    assert style == "gpt" and [(p.number, p.start, p.length) for p in parts] == [
        (1, 1 << 20, 100 << 20), (2, 101 << 20, 200 << 20)]
    sizes = [x[5] for x in fake.calls if x[0] == "DeviceIoControl" and x[2] == 0x70050]
    assert sizes == [48 + 144 * 128, 4 * (48 + 144 * 128)]


def test_disk_holding_and_inventory(fake, monkeypatch):
    k = W.Kernel32(fake)
    assert W.disk_holding("C:\\repo\\images", k) == "\\\\.\\PhysicalDrive0"
    assert W.disk_holding("\\\\server\\share\\repo", k) is None
    monkeypatch.setenv("SystemDrive", "C:")
    monkeypatch.setenv("SystemRoot", "C:\\Windows")
    assert W.system_disk_paths(k) == {"\\\\.\\PhysicalDrive0"}
    disks = W.list_disks(k)
    assert [(d.path, d.size, d.model, d.is_system) for d in disks] == [
        ("\\\\.\\PhysicalDrive0", 1 << 20, "Rescue SSD 1TB", True)]
    opened = [x[1] for x in fake.calls if x[0] == "CreateFileW" and "PhysicalDrive" in x[1]]
    assert len(opened) == W.MAX_DRIVES


def test_linux_refuses_windows_paths():
    from rescuekit.disk import device

    if W.sys.platform == "win32":
        pytest.skip("Linux/macOS host behaviour")
    with pytest.raises(RescueError, match="not Windows"):
        device.open_source("\\\\.\\PhysicalDrive0")


def test_winpe_boot_medium_is_a_system_disk(fake, monkeypatch):
    """In WinPE (X: RAM disk) the stick we booted from (E:, holding \\rescuekit\\build.json) is protected."""
    k = W.Kernel32(fake)
    medium = {"E:\\rescuekit\\build.json", "E:\\sources\\boot.wim"}
    monkeypatch.setenv("SystemDrive", "X:")
    monkeypatch.setenv("SystemRoot", "X:\\Windows")
    assert W.boot_media_roots(exists=medium.__contains__) == ["E:\\"]
    monkeypatch.setattr(W, "boot_media_roots", lambda: ["E:\\"])
    assert W.system_disk_paths(k) == {"\\\\.\\PhysicalDrive2"}
    monkeypatch.undo()
    monkeypatch.setenv("SystemDrive", "C:")  # a normal Windows: a plugged-in rescue stick is not protected
    assert W.boot_media_roots(exists=medium.__contains__) == []


def test_labelled_drives_exact_calls(fake, monkeypatch):
    """GetLogicalDriveStringsW (grown once: 128 characters suffice here, so no second call), then per drive
    GetDriveTypeW and, for local ones, GetVolumeInformationW with MAX_PATH+1 buffers, critical-error dialogs off
    around it; the system drive (WinPE's X: RAM disk), network drives, unlabelled and unreadable ones are left out."""
    monkeypatch.setenv("SystemDrive", "X:")
    k = W.Kernel32(fake)
    assert W.labelled_drives(k) == [("C:\\", "Windows", "NTFS"), ("D:\\", "RESCUEKIT", "UDF"),
                                    ("E:\\", "RKREPO", "exFAT"), ("R:\\", "rkRepo", "NTFS")]
    assert fake.calls[0] == ("GetLogicalDriveStringsW", 128)
    info = [c for c in fake.calls if c[0] == "GetVolumeInformationW"]
    assert [c[1] for c in info] == ["C:\\", "D:\\", "E:\\", "F:\\", "G:\\", "R:\\"]  # not N: (network), X:
    assert all(c[2:7] == (261, None, None, None, 261) and c[7] == W.SEM_FAILCRITICALERRORS for c in info)
    assert fake.error_mode == 0  # restored
    assert [c[1] for c in fake.calls if c[0] == "GetDriveTypeW"] == ["C:\\", "D:\\", "E:\\", "F:\\", "G:\\",
                                                                     "N:\\", "R:\\"]


def test_logical_drives_grows_the_buffer(fake):
    fake.drives = {f"{chr(65 + i)}:\\": (3, "L", "NTFS") for i in range(26)} | {
        f"\\\\?\\Volume{{{i:032}}}\\": (3, "", "NTFS") for i in range(4)}  # > 128 characters
    k = W.Kernel32(fake)
    roots = k.logical_drives()
    assert len(roots) == 30 and roots[0] == "A:\\"
    sizes = [c[1] for c in fake.calls if c[0] == "GetLogicalDriveStringsW"]
    assert sizes[0] == 128 and sizes[1] > 128 and len(sizes) == 2


def test_windows_label_resolution_rules(fake, monkeypatch):
    """The shared resolver over the fake drives: case-insensitive, two volumes refused, the boot medium skipped."""
    from rescuekit import volumes

    monkeypatch.setenv("SystemDrive", "X:")
    monkeypatch.setattr(W, "_default", W.Kernel32(fake))
    monkeypatch.setattr(volumes.sys, "platform", "win32")
    medium = {"D:\\rescuekit\\build.json", "D:\\sources\\boot.wim", "R:\\rescuekit\\build.json",
              "R:\\sources\\boot.wim"}
    monkeypatch.setattr(W.os.path, "exists", medium.__contains__)
    assert volumes.resolve("rkrepo:\\images\\pc", writable=True, wait=0)[:1] == ("E:\\images\\pc",)
    with pytest.raises(RescueError, match="RESCUEKIT is only on the boot medium"):
        volumes.resolve("RESCUEKIT:\\x", writable=True, wait=0)
    monkeypatch.setattr(W.os.path, "exists", lambda p: False)
    with pytest.raises(RescueError, match=r"RKREPO is on 2 volumes \(E:\\, R:\\\)"):
        volumes.resolve("RKREPO:\\images", writable=False, wait=0)
    with pytest.raises(RescueError, match="no volume labelled NOPE on the drive letters"):
        volumes.resolve("NOPE:\\images", writable=False, wait=0)


class FakeConsole:
    """kernel32's console calls for tui/wincon.py: a 120x300 screen buffer, cursor somewhere down, grey on blue."""

    def __init__(self) -> None:
        self.calls: list[tuple] = []

    def GetStdHandle(self, n):
        self.calls.append(("GetStdHandle", n))
        return 44

    def GetConsoleScreenBufferInfo(self, h, info):
        self.calls.append(("GetConsoleScreenBufferInfo", h))
        i = info._obj
        i.dwSize.X, i.dwSize.Y, i.dwCursorPosition.Y, i.wAttributes = 120, 300, 250, 0x17
        return 1

    def FillConsoleOutputCharacterW(self, h, ch, n, at, written):
        self.calls.append(("FillConsoleOutputCharacterW", h, ch, n, (at.X, at.Y)))
        written._obj.value = n
        return 1

    def FillConsoleOutputAttribute(self, h, attr, n, at, written):
        self.calls.append(("FillConsoleOutputAttribute", h, attr, n, (at.X, at.Y)))
        return 1

    def SetConsoleCursorPosition(self, h, at):
        self.calls.append(("SetConsoleCursorPosition", h, (at.X, at.Y)))
        return 1


def test_console_clear_exact_calls():
    """Microsoft's "Clearing the screen": the whole buffer blanked in its colours, then the cursor home."""
    from rescuekit.tui import wincon

    con = FakeConsole()
    assert wincon.clear_screen(con) is True
    assert con.calls == [("GetStdHandle", 0xFFFFFFF5), ("GetConsoleScreenBufferInfo", 44),
                         ("FillConsoleOutputCharacterW", 44, " ", 36000, (0, 0)),
                         ("FillConsoleOutputAttribute", 44, 0x17, 36000, (0, 0)),
                         ("SetConsoleCursorPosition", 44, (0, 0))]
    con = FakeConsole()
    con.GetConsoleScreenBufferInfo = lambda h, info: 0  # output redirected: not a screen buffer
    assert wincon.clear_screen(con) is False and [c[0] for c in con.calls] == ["GetStdHandle"]


def test_a_missing_label_is_looked_for_again_until_the_wait_ends(monkeypatch):
    """A USB disk that appears late is found; one that never appears is refused once the wait is over."""
    from rescuekit import volumes

    clock = {"now": 0.0}
    monkeypatch.setattr(volumes.time, "monotonic", lambda: clock["now"])
    monkeypatch.setattr(volumes.time, "sleep", lambda s: clock.__setitem__("now", clock["now"] + s))
    late = volumes.Volume("RKREPO", "E:\\\\", None, "exfat")
    seen = iter([[], [], [late]])
    assert volumes.find_volume("rkrepo", 10, lambda: next(seen)) is late and clock["now"] == 2
    clock["now"] = 0.0
    calls = []
    with pytest.raises(RescueError, match="no volume labelled RKREPO"):
        volumes.find_volume("RKREPO", 10, lambda: calls.append(1) or [])
    assert len(calls) == 11 and clock["now"] == 10  # looked at once a second for the whole wait

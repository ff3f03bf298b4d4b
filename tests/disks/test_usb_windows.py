"""``rescuekit usb --device \\\\.\\PhysicalDriveN``: the Windows path through the runtime's ctypes layer, against the
fake kernel32 of test_disk_windows (model/removable/system from the IOCTLs, volumes locked and dismounted before
the write, sector-aligned writes, flush)."""
from __future__ import annotations

import random
import sys
from pathlib import Path

import pytest

from builder import usb_device
from builder.usb import UsbLayout
from rescuekit.disk import windows as W
from rescuekit.errors import RescueError
from tests.disks.test_disk_windows import FakeKernel32

DRIVE = "\\\\.\\PhysicalDrive0"


@pytest.fixture()
def fake(monkeypatch: pytest.MonkeyPatch) -> FakeKernel32:
    fake = FakeKernel32()
    monkeypatch.setattr(W, "_default", W.Kernel32(fake))
    monkeypatch.setattr(sys, "platform", "win32")
    monkeypatch.setenv("SystemDrive", "C:")
    monkeypatch.setenv("SystemRoot", "C:\\Windows")
    return fake


def test_windows_disk_shown_and_system_disk_refused(fake: FakeKernel32) -> None:
    view = usb_device.inspect_device(DRIVE)
    assert (view.info.model, view.info.bus, view.info.removable, view.info.size) == ("Rescue SSD 1TB", "usb", True,
                                                                                     1 << 20)
    assert view.info.is_system  # C: lives on PhysicalDrive0 in the fake
    assert view.lines()[0].startswith(f"{DRIVE}: ACME Rescue SSD 1TB, 1.0 MiB (1048576 bytes), bus usb, removable, "
                                      "SYSTEM DISK")
    with pytest.raises(RescueError, match=r"holds the running system: refusing \(--force overrides\)"):
        usb_device.check_device(view, force=False, protect=[])
    usb_device.check_device(view, force=True, protect=[])
    assert not any(c[0] == "WriteFile" for c in fake.calls)


def test_windows_disk_written_after_locking_its_volumes(fake: FakeKernel32, tmp_path: Path) -> None:
    img = tmp_path / "stick.img"
    data = bytearray(1 << 20)
    rnd = random.Random(7)
    for off in (0, 300 << 10, 700 << 10):  # written extents; the rest are holes (zeros on the stick)
        data[off:off + 5000] = rnd.randbytes(5000)
    with open(img, "wb") as f:
        f.truncate(1 << 20)
        for off in (0, 300 << 10, 700 << 10):
            f.seek(off)
            f.write(data[off:off + 5000])
    lay = UsbLayout(size=1 << 20, boot_start=64 << 10, boot_size=(1 << 20) - (64 << 10), data_fs=None)
    usb_device.write_device(img, DRIVE, lay, progress=False)
    assert fake.disk == data  # first MiB written whole (old MBR/GPT/signatures gone), the extents, the last MiB
    c = fake.calls
    first_write = next(i for i, x in enumerate(c) if x[0] == "WriteFile")
    locks = [i for i, x in enumerate(c) if x[0] == "DeviceIoControl" and x[2] in (0x90018, 0x90020)]
    assert locks and max(locks) < first_write  # FSCTL_LOCK_VOLUME + FSCTL_DISMOUNT_VOLUME before writing
    assert all(off % 512 == 0 and n % 512 == 0 for name, _p, off, n in (x for x in c if x[0] == "WriteFile"))
    assert ("FlushFileBuffers", DRIVE) in c

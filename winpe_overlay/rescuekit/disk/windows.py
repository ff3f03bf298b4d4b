"""Windows raw disk access via ctypes (kernel32 CreateFileW/DeviceIoControl/ReadFile/WriteFile)."""
from __future__ import annotations

from rescuekit.disk.device import BlockDevice


def open_device(path: str, *, writable: bool) -> BlockDevice:
    """Open ``\\\\.\\PhysicalDriveN`` or ``\\\\.\\X:`` (writable: volumes locked + dismounted)."""
    raise NotImplementedError

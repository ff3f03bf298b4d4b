"""Clearing a Windows console screen buffer through the Console API (the legacy conhost path).

rich draws on a console without virtual-terminal processing (WinPE's conhost, Wine's console) through Win32 calls,
but its ``Console.clear()`` only moves the cursor home there (Textualize/rich#3107): every page was written over the
previous one, and a typed confirmation landed among the old page's characters, so it did not look echoed. This is
Microsoft's documented way ("Clearing the screen", docs.microsoft.com/windows/console/clearing-the-screen):
FillConsoleOutputCharacterW + FillConsoleOutputAttribute over the whole buffer, then the cursor to (0, 0).
The kernel32 functions are reached through ``lib`` so tests can check the exact calls against a fake.
"""
from __future__ import annotations

import ctypes

STD_OUTPUT_HANDLE = -11


class COORD(ctypes.Structure):
    _fields_ = [("X", ctypes.c_short), ("Y", ctypes.c_short)]


class SMALL_RECT(ctypes.Structure):
    _fields_ = [("Left", ctypes.c_short), ("Top", ctypes.c_short), ("Right", ctypes.c_short),
                ("Bottom", ctypes.c_short)]


class CONSOLE_SCREEN_BUFFER_INFO(ctypes.Structure):
    _fields_ = [("dwSize", COORD), ("dwCursorPosition", COORD), ("wAttributes", ctypes.c_ushort),
                ("srWindow", SMALL_RECT), ("dwMaximumWindowSize", COORD)]


def _kernel32():
    lib = ctypes.WinDLL("kernel32", use_last_error=True)  # type: ignore[attr-defined]
    H, D, B = ctypes.c_void_p, ctypes.c_uint32, ctypes.c_int
    for name, res, args in (
            ("GetStdHandle", H, [D]),
            ("GetConsoleScreenBufferInfo", B, [H, ctypes.POINTER(CONSOLE_SCREEN_BUFFER_INFO)]),
            ("FillConsoleOutputCharacterW", B, [H, ctypes.c_wchar, D, COORD, ctypes.POINTER(D)]),
            ("FillConsoleOutputAttribute", B, [H, ctypes.c_ushort, D, COORD, ctypes.POINTER(D)]),
            ("SetConsoleCursorPosition", B, [H, COORD])):
        fn = getattr(lib, name)
        fn.restype, fn.argtypes = res, args
    return lib


def clear_screen(lib=None) -> bool:
    """Blank the whole screen buffer of standard output (its current colours) and home the cursor; False when
    standard output is not a console screen buffer (then nothing was changed)."""
    lib = lib or _kernel32()
    h = lib.GetStdHandle(STD_OUTPUT_HANDLE & 0xFFFFFFFF)
    info = CONSOLE_SCREEN_BUFFER_INFO()
    if not h or not lib.GetConsoleScreenBufferInfo(h, ctypes.byref(info)):
        return False
    cells = info.dwSize.X * info.dwSize.Y
    home = COORD(0, 0)
    written = ctypes.c_uint32(0)
    ok = lib.FillConsoleOutputCharacterW(h, " ", cells, home, ctypes.byref(written))
    ok = ok and lib.FillConsoleOutputAttribute(h, info.wAttributes, cells, home, ctypes.byref(written))
    return bool(ok and lib.SetConsoleCursorPosition(h, home))

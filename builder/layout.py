"""Where the overlay puts things on X: (the WinPE RAM disk) and inside boot.wim.

``X:\\`` is the root of boot.wim image 1, so ``X:\\rescuekit\\python`` is ``/rescuekit/python`` in the WIM.
"""
from __future__ import annotations

X_ROOT = "X:\\rescuekit"
X_PYTHON_DIR = X_ROOT + "\\python"
X_PYTHON_EXE = X_PYTHON_DIR + "\\python.exe"
X_SITE_PACKAGES = X_PYTHON_DIR + "\\Lib\\site-packages"
X_LIB_DIR = X_ROOT + "\\lib"  # the runtime package: X:\rescuekit\lib\rescuekit\
X_DRIVERS_DIR = X_ROOT + "\\drivers"  # one numbered folder per --driver DIR
X_LAUNCHER = X_ROOT + "\\launch.cmd"
X_CONFIG = X_ROOT + "\\config.toml"
X_MANIFEST = X_ROOT + "\\manifest.json"
X_TEMP = X_ROOT + "\\temp"
X_APPDATA = X_ROOT + "\\appdata"

# Lines added to pythonXY._pth (relative to X:\rescuekit\python, where the ._pth lives).
PTH_EXTRA_LINES = ["Lib\\site-packages", "..\\lib"]

# The same places as paths relative to the staging tree / image root.
REL_ROOT = "rescuekit"
REL_PYTHON_DIR = "rescuekit/python"
REL_SITE_PACKAGES = "rescuekit/python/Lib/site-packages"
REL_LIB_DIR = "rescuekit/lib"
REL_DRIVERS_DIR = "rescuekit/drivers"
REL_LAUNCHER = "rescuekit/launch.cmd"
REL_CONFIG = "rescuekit/config.toml"
REL_MANIFEST = "rescuekit/manifest.json"
REL_STARTNET = "Windows/System32/startnet.cmd"
REL_WINPESHL = "Windows/System32/winpeshl.ini"


def x_path(rel: str) -> str:
    """``rescuekit/drivers/1/a.inf`` -> ``X:\\rescuekit\\drivers\\1\\a.inf``."""
    return "X:\\" + rel.replace("/", "\\")

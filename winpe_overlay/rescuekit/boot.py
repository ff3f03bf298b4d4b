"""What a console session of the Linux-based rescue disc runs (``python3 -m rescuekit.boot --console ttyS0``).

Prints one ready line (the boot tests wait for it), then the unattended action or the menu.
"""
from __future__ import annotations

import argparse
import platform
import sys
import time
from pathlib import Path

READY = "RESCUEKIT LINUX READY"


def uptime() -> float:
    try:
        return float(Path("/proc/uptime").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 0.0


def lockdown() -> str:
    try:
        return Path("/sys/kernel/security/lockdown").read_text().strip()
    except OSError:
        return "unknown"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="rescuekit.boot")
    ap.add_argument("--console", default="console")
    args = ap.parse_args(argv)
    print(f"{READY} on {args.console}: kernel {platform.release()}, python {platform.python_version()}, "
          f"lockdown {lockdown()}, uptime {uptime():.1f} s", flush=True)
    from rescuekit.config import load_settings
    from rescuekit.menu import menu

    return menu(load_settings())


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""Boot-to-menu time of the Linux-based disc under QEMU (TCG): QEMU start -> the runtime's ready line on ttyS0.

    python3 scripts/bench_linux_boot.py out/rescue.iso [--firmware bios uefi uefi-sb] [--runs 1]

Prints per boot the total, the kernel's uptime at the ready line (kernel + initramfs unpack + drivers + Python
start) and the difference (firmware + GRUB + reading kernel and initramfs from the disc).
"""
from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import qemu_boot

READY = "RESCUEKIT LINUX READY on ttyS0"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("iso", type=Path)
    ap.add_argument("--firmware", nargs="+", default=["bios", "uefi"], choices=["bios", "uefi", "uefi-sb"])
    ap.add_argument("--runs", type=int, default=1)
    ap.add_argument("--memory", type=int, default=512)
    args = ap.parse_args(argv)
    print(f"{'firmware':<9} {'total s':>8} {'kernel s':>9} {'before kernel s':>16}")
    rc = 0
    for fw in args.firmware:
        for _ in range(args.runs):
            res = qemu_boot.boot(args.iso, fw, "cdrom", READY, timeout=600, memory_mb=args.memory)
            m = re.search(r"uptime ([0-9.]+) s", res.text)
            if not res.ok or not m:
                print(f"{fw:<9} FAILED: {res}")
                rc = 1
                continue
            up = float(m.group(1))
            print(f"{fw:<9} {res.seconds:8.1f} {up:9.1f} {res.seconds - up:16.1f}", flush=True)
    return rc


if __name__ == "__main__":
    sys.exit(main())

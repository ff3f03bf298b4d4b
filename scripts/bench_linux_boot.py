#!/usr/bin/env python3
"""Boot-to-menu time of the Linux-based disc under QEMU (TCG): QEMU start -> the runtime's ready line on ttyS0.

    python3 scripts/bench_linux_boot.py out/rescue.iso [--firmware bios uefi uefi-sb] [--runs 1] [--smp 1]
        [--cpu qemu64,+rdrand]

Prints per boot the total, the kernel's uptime at the ready line (kernel + initramfs + finding the medium +
drivers + Python start), the difference (firmware + GRUB + reading kernel and initramfs from the disc + the kernel's
decompressor, ~6 s of it under TCG: Debian's kernel is xz-compressed), the time
until the menu is drawn (the runtime imported, disks scanned) and the machine's load average (other processes
on the host slow TCG down).  ``--cpu qemu64,+rdrand``: QEMU's default CPU model with RDRAND, which every PC of the
last decade has and qemu64 lacks (without it the kernel's random pool is not ready when Python first reads
/dev/urandom at start, and the kernel spends ~1 s under TCG generating entropy).
"""
from __future__ import annotations

import argparse
import os
import re
import sys
from pathlib import Path

import qemu_boot

READY = "RESCUEKIT LINUX READY on ttyS0"
MENU = "Main menu"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("iso", type=Path)
    ap.add_argument("--firmware", nargs="+", default=["bios", "uefi"], choices=["bios", "uefi", "uefi-sb"])
    ap.add_argument("--runs", type=int, default=1)
    ap.add_argument("--memory", type=int, default=512)
    ap.add_argument("--smp", type=int, default=1, help="vCPUs (default 1, what the tests use)")
    ap.add_argument("--cpu", help="QEMU -cpu model (default: QEMU's, qemu64)")
    args = ap.parse_args(argv)
    print(f"{'firmware':<9} {'total s':>8} {'kernel s':>9} {'before kernel s':>16} {'menu s':>7} {'load':>5}")
    rc = 0
    for fw in args.firmware:
        for _ in range(args.runs):
            load = os.getloadavg()[0]
            extra = (("-smp", str(args.smp)) if args.smp > 1 else ()) + (("-cpu", args.cpu) if args.cpu else ())
            res = qemu_boot.boot(args.iso, fw, "cdrom", MENU, timeout=600, memory_mb=args.memory, marks=(READY,),
                                 extra_args=extra)
            m = re.search(r"uptime ([0-9.]+) s", res.text)
            if not res.ok or not m or READY not in res.marks:
                print(f"{fw:<9} FAILED: {res}")
                rc = 1
                continue
            up, ready = float(m.group(1)), res.marks[READY]
            print(f"{fw:<9} {ready:8.1f} {up:9.1f} {ready - up:16.1f} {res.seconds:7.1f} {load:5.1f}", flush=True)
    return rc


if __name__ == "__main__":
    sys.exit(main())

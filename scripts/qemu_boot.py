#!/usr/bin/env python3
"""Boot a medium (ISO or disk image) in QEMU under SeaBIOS or OVMF and capture the serial log.

QEMU runs headless (``-display none``, COM1 to a file, ``-no-reboot``), TCG by default, and is stopped as soon
as the expected text (e.g. ``RESCUEKIT BIOS OK``) or a failure marker appears in the serial log, or at the
timeout.  QEMU is always killed.  The medium is never written (CD-ROM read-only, disks ``snapshot=on``).

    python3 scripts/qemu_boot.py out/rescue.iso --firmware uefi [--media cdrom|disk|usb] [--expect TEXT]
"""
from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

Firmware = Literal["bios", "uefi", "uefi-sb"]
Media = Literal["cdrom", "disk", "usb"]

QEMU = "qemu-system-x86_64"
OVMF_DIRS = [Path("/usr/share/OVMF"), Path("/usr/share/edk2/ovmf"), Path("/usr/share/qemu")]
# (code, vars) pairs, preferred first; plain (no Secure Boot enrolment) builds: the stand-in GRUB is unsigned.
OVMF_PAIRS = [("OVMF_CODE_4M.fd", "OVMF_VARS_4M.fd"), ("OVMF_CODE.fd", "OVMF_VARS.fd")]
SECBOOT_PAIRS = [("OVMF_CODE_4M.secboot.fd", "OVMF_VARS_4M.ms.fd")]  # Debian's ovmf package
EXPECT = {"bios": "RESCUEKIT BIOS OK", "uefi": "RESCUEKIT UEFI OK"}
FAIL_MARKERS = ("RESCUEKIT BIOS FAIL", "RESCUEKIT UEFI FAIL")
_ANSI = re.compile(r"\x1b\[[0-9;=?]*[A-Za-z]")


class QemuBootError(RuntimeError):
    """QEMU or its firmware is missing, or the medium does not exist."""


@dataclass
class BootResult:
    """What a boot produced: the serial log, whether ``expect`` appeared, how long it ran."""

    log: str
    ok: bool
    seconds: float
    reason: str  # "expected text seen", "failure marker seen", "timeout", "qemu exited (N)"
    command: list[str] = field(default_factory=list)
    marks: dict[str, float] = field(default_factory=dict)  # text -> seconds after QEMU's start it first appeared

    @property
    def text(self) -> str:
        """The serial log without the firmware console's ANSI escapes and carriage returns."""
        return _ANSI.sub("", self.log).replace("\r", "")

    def __str__(self) -> str:
        return f"{'OK' if self.ok else 'FAILED'}: {self.reason} after {self.seconds:.1f} s"


def find_ovmf(pairs: list[tuple[str, str]] = OVMF_PAIRS) -> tuple[Path, Path]:
    """(OVMF code, OVMF vars template) that exist on this machine."""
    for d in OVMF_DIRS:
        for code, vars_ in pairs:
            if (d / code).is_file() and (d / vars_).is_file():
                return d / code, d / vars_
    raise QemuBootError("OVMF firmware not found (install the ovmf package: bash scripts/install-deps.sh)")


def kvm_usable() -> bool:
    return os.access("/dev/kvm", os.R_OK | os.W_OK)


def qemu_command(medium: Path, firmware: Firmware, media: Media, serial_log: Path, workdir: Path,
                 accel: str = "tcg", memory_mb: int = 256, extra_args: tuple[str, ...] = ()) -> list[str]:
    """The QEMU command line (no side effects except copying the OVMF vars template into ``workdir``)."""
    if accel == "auto":
        accel = "kvm" if kvm_usable() else "tcg"
    cmd = [QEMU, "-accel", accel, "-m", str(memory_mb), "-display", "none", "-monitor", "none",
           "-parallel", "none", "-net", "none", "-no-reboot", "-serial", f"file:{serial_log}"]
    if firmware == "uefi-sb":
        # Secure Boot on, Microsoft's keys enrolled (what a PC ships with); needs SMM, so q35
        code, vars_template = find_ovmf(SECBOOT_PAIRS)
        vars_copy = workdir / "OVMF_VARS.fd"
        shutil.copyfile(vars_template, vars_copy)
        cmd += ["-machine", "q35,smm=on", "-global", "driver=cfi.pflash01,property=secure,value=on",
                "-drive", f"if=pflash,format=raw,unit=0,readonly=on,file={code}",
                "-drive", f"if=pflash,format=raw,unit=1,file={vars_copy}"]
    elif firmware == "uefi":
        code, vars_template = find_ovmf()
        vars_copy = workdir / "OVMF_VARS.fd"
        shutil.copyfile(vars_template, vars_copy)
        cmd += ["-drive", f"if=pflash,format=raw,unit=0,readonly=on,file={code}",
                "-drive", f"if=pflash,format=raw,unit=1,file={vars_copy}"]
    elif firmware != "bios":
        raise QemuBootError(f"bad firmware {firmware!r}: use bios, uefi or uefi-sb")
    if media == "cdrom":
        cmd += ["-drive", f"file={medium},format=raw,media=cdrom,readonly=on,if=none,id=boot",
                "-device", "ide-cd,drive=boot,bootindex=0"]
    elif media == "disk":
        cmd += ["-drive", f"file={medium},format=raw,if=none,id=boot,snapshot=on",
                "-device", "ide-hd,drive=boot,bootindex=0"]
    elif media == "usb":
        cmd += ["-drive", f"file={medium},format=raw,if=none,id=boot,snapshot=on",
                "-device", "qemu-xhci,id=xhci", "-device", "usb-storage,bus=xhci.0,drive=boot,bootindex=0"]
    else:
        raise QemuBootError(f"bad media {media!r}: use cdrom, disk or usb")
    return cmd + list(extra_args)


def boot(medium: Path, firmware: Firmware = "bios", media: Media = "cdrom", expect: str | None = None,
         timeout: float = 60, accel: str | None = None, memory_mb: int = 256,
         fail_markers: tuple[str, ...] = FAIL_MARKERS, extra_args: tuple[str, ...] = (),
         send: tuple[str, str] | None = None, marks: tuple[str, ...] = ()) -> BootResult:
    """Boot ``medium`` and return the serial log.

    ``ok`` is True when ``expect`` appeared in the serial log (when ``expect`` is None: when QEMU exited by itself
    with status 0 before the timeout).  A line containing one of ``fail_markers`` stops the boot early.
    ``accel``: "tcg" (default; env RESCUEKIT_QEMU_ACCEL overrides), "kvm" or "auto".
    ``extra_args`` are appended to the QEMU command (e.g. more disks).  ``send=(marker, text)``: COM1 is also
    QEMU's stdin, and ``text`` is typed once ``marker`` is in the serial log (a test drives a console with it).
    ``marks``: texts whose first appearance is timed (``BootResult.marks``, polled every 0.1 s).
    """
    medium = Path(medium)
    if not medium.is_file():
        raise QemuBootError(f"medium not found: {medium}")
    if shutil.which(QEMU) is None:
        raise QemuBootError(f"{QEMU} not found (install qemu-system-x86: bash scripts/install-deps.sh)")
    accel = accel or os.environ.get("RESCUEKIT_QEMU_ACCEL", "tcg")
    with tempfile.TemporaryDirectory(prefix="rescuekit-qemu-") as tmp:
        work = Path(tmp)
        serial_log = work / "serial.log"
        serial_log.touch()
        cmd = qemu_command(medium.resolve(), firmware, media, serial_log, work, accel, memory_mb, extra_args)
        if send is not None:  # COM1 from stdin too; its output still logged to the file
            i = cmd.index(f"file:{serial_log}")
            cmd[i - 1:i + 1] = ["-chardev", f"stdio,id=com1,signal=off,logfile={serial_log}", "-serial", "chardev:com1"]
        start = time.monotonic()
        proc = subprocess.Popen(cmd, stdin=subprocess.PIPE if send else subprocess.DEVNULL,
                                stdout=subprocess.DEVNULL if send else subprocess.PIPE, stderr=subprocess.STDOUT
                                if not send else subprocess.PIPE)
        pending = send
        seen: dict[str, float] = {}
        reason = "timeout"
        ok = False
        try:
            while True:
                log = serial_log.read_bytes().decode("utf-8", "replace")
                for m in marks:
                    if m not in seen and m in log:
                        seen[m] = time.monotonic() - start
                if pending and pending[0] in log and proc.stdin is not None:
                    proc.stdin.write(pending[1].encode())
                    proc.stdin.flush()
                    pending = None
                if expect and expect in log:
                    ok, reason = True, "expected text seen"
                    break
                if any(_complete_line_with(log, m) for m in fail_markers):
                    reason = "failure marker seen"
                    break
                rc = proc.poll()
                if rc is not None:
                    log = serial_log.read_bytes().decode("utf-8", "replace")
                    ok = (expect in log) if expect else rc == 0
                    reason = "expected text seen" if expect and ok else f"qemu exited ({rc})"
                    break
                if time.monotonic() - start > timeout:
                    break
                time.sleep(0.1)
        finally:
            if proc.poll() is None:
                proc.kill()
            out, err = proc.communicate()
            qemu_out = (out or err or b"").decode("utf-8", "replace")
        seconds = time.monotonic() - start
        log = serial_log.read_bytes().decode("utf-8", "replace")
    if not ok and qemu_out.strip():
        log += f"\n--- qemu stdout/stderr ---\n{qemu_out}"
    return BootResult(log=log, ok=ok, seconds=seconds, reason=reason, command=cmd, marks=seen)


def _complete_line_with(log: str, marker: str) -> bool:
    """``marker`` appears in a line that has been terminated (so its reason is fully printed)."""
    i = log.find(marker)
    return i >= 0 and "\n" in log[i:]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Boot a medium in QEMU and show its serial log.")
    ap.add_argument("medium", type=Path, help="ISO or raw disk image")
    ap.add_argument("--firmware", choices=["bios", "uefi", "uefi-sb"], default="bios", help="SeaBIOS or OVMF (default bios)")
    ap.add_argument("--media", choices=["cdrom", "disk", "usb"], default="cdrom",
                    help="attach as CD-ROM, IDE disk or USB stick (default cdrom)")
    ap.add_argument("--expect", default=None,
                    help="stop when this appears in the serial log (default: RESCUEKIT BIOS OK / RESCUEKIT UEFI OK; '' = none)")
    ap.add_argument("--timeout", type=float, default=60, help="seconds (default 60)")
    ap.add_argument("--accel", default=None, help="tcg (default), kvm or auto")
    ap.add_argument("--memory", type=int, default=256, help="MiB of RAM (default 256)")
    args = ap.parse_args(argv)
    expect = EXPECT.get(args.firmware, EXPECT["uefi"]) if args.expect is None else (args.expect or None)
    try:
        res = boot(args.medium, args.firmware, args.media, expect, args.timeout, args.accel, args.memory)
    except (QemuBootError, OSError) as exc:
        print(f"qemu_boot: error: {exc}", file=sys.stderr)
        return 2
    sys.stdout.write(res.log if res.log.endswith("\n") else res.log + "\n")
    print(f"qemu_boot: {args.firmware}/{args.media}: {res}")
    return 0 if res.ok else 1


if __name__ == "__main__":
    sys.exit(main())

"""Command lines the menu runs on WinPE (bcdboot, diskpart, drvload, net use, wpeutil) and on Linux, built by
pure functions (unit-tested) and run by ``run`` (argument lists, never a shell string)."""
from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

WINLOAD = ("winload.efi", "winload.exe")


def windows_dirs(roots: list[str]) -> list[str]:
    """``X:\\Windows`` folders that can boot: ``\\Windows\\System32\\winload.*`` exists on the volume."""
    out = []
    for r in roots:
        sys32 = Path(r) / "Windows" / "System32"
        if any((sys32 / w).is_file() for w in WINLOAD):
            out.append(str(Path(r) / "Windows"))
    return out


def bcdboot_command(windows_dir: str, system_letter: str, firmware: str) -> list[str]:
    """``bcdboot C:\\Windows /s S: /f UEFI`` (firmware: UEFI, BIOS or ALL)."""
    firmware = firmware.upper()
    if firmware not in ("UEFI", "BIOS", "ALL"):
        raise ValueError(f"firmware must be UEFI, BIOS or ALL, not {firmware!r}")
    letter = system_letter.rstrip(":\\").upper()
    if len(letter) != 1 or not letter.isalpha():
        raise ValueError(f"bad drive letter {system_letter!r}")
    return ["bcdboot", windows_dir, "/s", f"{letter}:", "/f", firmware]


def diskpart_assign_script(disk_number: int, partition_number: int, letter: str) -> str:
    """A diskpart script giving the ESP / active partition a drive letter for bcdboot's /s."""
    return f"select disk {disk_number}\nselect partition {partition_number}\nassign letter={letter.rstrip(':')}\n"


def system_partition(desc: dict) -> tuple[int, str] | None:
    """(partition number, firmware) bcdboot writes to on this disk: the ESP on GPT, the active one on MBR."""
    for p in desc.get("partitions", []):
        if desc.get("table") == "gpt" and p.get("type_name", "").lower().startswith("efi"):
            return p["number"], "UEFI"
    for p in desc.get("partitions", []):
        if desc.get("table") == "mbr" and p.get("bootable"):
            return p["number"], "BIOS"
    return None


def drvload_command(inf: str) -> list[str]:
    return ["drvload", inf]


def find_infs(roots: list[str], limit: int = 300, depth: int = 4) -> list[str]:
    """.inf files on attached volumes (a few folders deep; X:\\Windows's own are left out)."""
    out: list[str] = []

    def walk(d: Path, left: int) -> None:
        try:
            entries = sorted(d.iterdir())
        except OSError:
            return
        for e in entries:
            if len(out) >= limit:
                return
            if e.is_file() and e.suffix.lower() == ".inf":
                out.append(str(e))
            elif e.is_dir() and left > 0 and e.name.lower() not in ("windows", "$recycle.bin",
                                                                    "system volume information"):
                walk(e, left - 1)

    for r in roots:
        walk(Path(r), depth)
    return out


def net_use_command(letter: str, share: str, user: str | None, password: str | None) -> list[str]:
    r"""``net use Z: \\server\share PASSWORD /user:USER /persistent:no`` (argument list: no shell quoting)."""
    if not share.startswith("\\\\") or len(share.strip("\\").split("\\")) < 2:
        raise ValueError(f"a share looks like \\\\server\\share, not {share!r}")
    cmd = ["net", "use", f"{letter.rstrip(':').upper()}:", share]
    if password:
        cmd.append(password)
    if user:
        cmd.append(f"/user:{user}")
    return cmd + ["/persistent:no"]


def power_command(what: str) -> list[str]:
    """Reboot / shut down: wpeutil on WinPE, systemctl or the plain tools on Linux."""
    if sys.platform == "win32":
        return ["wpeutil", "reboot" if what == "reboot" else "shutdown"]
    if shutil.which("systemctl") and Path("/run/systemd/system").exists():
        return ["systemctl", "reboot" if what == "reboot" else "poweroff"]
    return ["reboot" if what == "reboot" else "poweroff"]


def shell_command() -> list[str]:
    if sys.platform == "win32":
        return [os.environ.get("COMSPEC", "cmd.exe")]
    return [os.environ.get("SHELL") or "/bin/sh"]


def available(cmd: list[str]) -> bool:
    return shutil.which(cmd[0]) is not None


def run(cmd: list[str], *, input: str | None = None, capture: bool = True) -> tuple[int, str]:
    """Run a tool; (exit code, its output); a missing tool is (127, reason)."""
    import subprocess  # here, not at the top: the menu's start-up under QEMU's TCG pays for every module

    try:
        if not capture:
            return subprocess.call(cmd), ""
        res = subprocess.run(cmd, input=input, capture_output=True, text=True, errors="replace")
    except OSError as exc:
        return 127, f"cannot run {cmd[0]}: {exc.strerror or exc}"
    return res.returncode, (res.stdout + res.stderr).strip()

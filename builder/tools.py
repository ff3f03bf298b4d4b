"""Running the host tools the builder drives (mtools, mkfs.*, syslinux, grub-mkimage, mksquashfs, nasm, lzop, ...):
one way to find them, run them and turn a failure into a one-line error."""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from rescuekit.errors import RescueError

# Tool -> the Debian package(s) that ship it, for the "not found" hint.
PACKAGES = {
    "syslinux": "syslinux syslinux-common", "mkfs.exfat": "exfatprogs", "mkntfs": "ntfs-3g", "sfdisk": "fdisk",
    "wimlib-imagex": "wimtools", "mkfs.vfat": "dosfstools", "mcopy": "mtools", "mmd": "mtools", "mdir": "mtools",
    "mksquashfs": "squashfs-tools", "grub-mkimage": "grub-common", "strip": "binutils", "nasm": "nasm",
    "lzop": "lzop",
}


def run(cmd: list[str], what: str, **kw) -> subprocess.CompletedProcess:
    """Run *cmd* (output captured, no stdin unless ``input=`` is given); RescueError "<tool> failed to <what>"
    with the tool's last line of output if it exits non-zero, or "not found ... install <package>"."""
    if shutil.which(cmd[0]) is None and not Path(cmd[0]).is_file():
        pkg = PACKAGES.get(cmd[0], cmd[0])
        raise RescueError(f"{cmd[0]} not found (needed to {what}): install {pkg} (bash scripts/install-deps.sh)")
    if "input" not in kw:
        kw.setdefault("stdin", subprocess.DEVNULL)  # mtools asks on a name clash: never wait for an answer
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False, **kw)
    if proc.returncode != 0:
        lines = [ln for ln in (proc.stderr + proc.stdout).splitlines() if ln.strip()]
        raise RescueError(f"{Path(cmd[0]).name} failed to {what} (exit {proc.returncode}): "
                          f"{lines[-1] if lines else ''}".rstrip(": "))
    return proc

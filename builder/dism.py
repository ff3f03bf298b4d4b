"""The Windows backend: put the overlay into boot.wim with DISM (mount, copy, add drivers, commit).

All DISM calls go through a ``runner`` (default: subprocess) so tests can check the exact command lines.
On any failure the image is unmounted with ``/Discard`` so no half-changed boot.wim is left behind.
"""
from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable, Sequence
from pathlib import Path

from rescuekit.errors import RescueError

Runner = Callable[[Sequence[str]], "subprocess.CompletedProcess[str]"]


def _default_runner(cmd: Sequence[str]) -> "subprocess.CompletedProcess[str]":
    return subprocess.run(list(cmd), capture_output=True, text=True, check=False)


class DismBackend:
    """``Dism /Mount-Image`` + copy + ``/Add-Driver /Recurse`` + ``/Unmount-Image /Commit``."""

    def __init__(self, runner: Runner | None = None, dism: str = "Dism.exe") -> None:
        self.runner = runner or _default_runner
        self.dism = dism

    def _dism(self, *args: str) -> None:
        cmd = [self.dism, *args]
        try:
            proc = self.runner(cmd)
        except FileNotFoundError:
            raise RescueError("Dism.exe not found: the DISM backend needs Windows (use --wim-backend wimlib)") from None
        if proc.returncode != 0:
            lines = [ln for ln in ((proc.stdout or "") + (proc.stderr or "")).splitlines() if ln.strip()]
            detail = lines[-1].strip() if lines else f"exit status {proc.returncode}"
            raise RescueError(f"DISM {args[0]} failed: {detail}")

    def apply(
        self,
        wim: Path,
        index: int,
        tree: Path,
        driver_dirs: Sequence[Path],
        mount_dir: Path,
        remove: Sequence[str] = (),
        rename: Sequence[tuple[str, str]] = (),
    ) -> None:
        """Mount image ``index`` of ``wim`` at ``mount_dir``, copy ``tree`` over it, add drivers, commit.

        ``remove``: image-relative files to delete (e.g. a winpeshl.ini that would bypass startnet.cmd);
        ``rename``: (old, new) image-relative names, applied when ``old`` exists (e.g. a setup.exe that would too).
        """
        mount_dir.mkdir(parents=True, exist_ok=True)
        self._dism("/Mount-Image", f"/ImageFile:{wim}", f"/Index:{index}", f"/MountDir:{mount_dir}")
        try:
            shutil.copytree(tree, mount_dir, dirs_exist_ok=True)
            for rel in remove:
                (mount_dir / rel).unlink(missing_ok=True)
            for old, new in rename:
                if (mount_dir / old).exists():
                    (mount_dir / old).replace(mount_dir / new)
            for d in driver_dirs:
                self._dism("/Add-Driver", f"/Image:{mount_dir}", f"/Driver:{d}", "/Recurse")
        except BaseException:
            try:
                self._dism("/Unmount-Image", f"/MountDir:{mount_dir}", "/Discard")
            except RescueError:
                pass  # report the original failure
            raise
        self._dism("/Unmount-Image", f"/MountDir:{mount_dir}", "/Commit")

"""``--driver DIR``: out-of-box driver folders (.inf + .sys + .cat ...).

wimlib backend: each folder is copied to ``X:\\rescuekit\\drivers\\<n>\\`` and every .inf is loaded at boot by
``drvload`` from startnet.cmd (works for NIC/storage drivers needed after boot, not for the boot medium's own
controller). DISM backend: ``Dism /Add-Driver /Recurse`` stages them offline instead.
"""
from __future__ import annotations

import re
import shutil
from dataclasses import dataclass
from pathlib import Path

from builder import layout
from rescuekit.errors import UsageError

# File names that go into a drvload line: refuse cmd.exe metacharacters, control and non-ASCII characters.
_SAFE_NAME = re.compile(r"^[\x20-\x7e]+$")  # ASCII only: cmd.exe reads startnet.cmd in the OEM code page
_CMD_SPECIAL = re.compile(r"[&|<>^%!\"]")


@dataclass(frozen=True)
class DriverDir:
    source: Path
    infs: list[Path]  # relative to source


def validate_driver_dir(path: Path) -> DriverDir:
    path = Path(path)
    if not path.is_dir():
        raise UsageError(f"--driver {path}: not a directory")
    infs = sorted(p.relative_to(path) for p in path.rglob("*") if p.is_file() and p.suffix.lower() == ".inf")
    if not infs:
        raise UsageError(f"--driver {path}: no .inf file in it")
    for rel in infs:
        for part in rel.parts:
            if not _SAFE_NAME.match(part) or _CMD_SPECIAL.search(part):
                raise UsageError(f"--driver {path}: file name {str(rel)!r} has characters cmd.exe cannot take")
    return DriverDir(path, infs)


def stage_drivers(drivers: list[DriverDir], tree: Path) -> list[str]:
    """Copy each driver folder to ``tree/rescuekit/drivers/<n>``; return the X: paths of their .inf files."""
    infs: list[str] = []
    for n, d in enumerate(drivers, start=1):
        rel = f"{layout.REL_DRIVERS_DIR}/{n}"
        shutil.copytree(d.source, tree / rel, dirs_exist_ok=True)
        infs += [layout.x_path(f"{rel}/{inf.as_posix()}") for inf in d.infs]
    return infs


def check_output_outside_drivers(drivers: list[Path], output: Path) -> None:
    """Refuse an output inside a driver folder: the build's staging folder (next to the output) would be made in
    the user's folder and copied into itself while the folder is staged."""
    out = Path(output).resolve()
    for d in drivers:
        root = Path(d).resolve()
        if out == root or root in out.parents:
            raise UsageError(f"output {output} is inside the --driver folder {d}")

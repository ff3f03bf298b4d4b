"""Small file helpers shared by the builder modules."""
from __future__ import annotations

import hashlib
import shutil
import zipfile
import zlib
from pathlib import Path

from rescuekit.errors import RescueError

# What reading a damaged zip member raises (bad CRC, broken deflate stream, cut short).
ZIP_READ_ERRORS = (zipfile.BadZipFile, zlib.error, EOFError)


def sha256_file(path: Path) -> str:
    """SHA-256 of a file, read in 1 MiB pieces (never whole into memory)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def copy_zip_member(zf: zipfile.ZipFile, member: zipfile.ZipInfo, target: Path, what: str) -> None:
    """Stream one member to ``target`` (never whole into memory); a damaged one is a RescueError
    ``"<what>: <member>: <why>"``."""
    try:
        with zf.open(member) as src, open(target, "wb") as out:
            shutil.copyfileobj(src, out, 1 << 20)
    except ZIP_READ_ERRORS as exc:
        raise RescueError(f"{what}: {member.filename}: {exc}") from None

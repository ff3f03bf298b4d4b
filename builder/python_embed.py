"""The bundled Windows Python: the official CPython "embeddable package" for amd64.

Taken from ``--python-embed ZIP`` (offline) or downloaded by version from python.org (base URL overridable with
``RESCUEKIT_PYTHON_MIRROR``) with a pinned SHA-256, into a per-user cache (platformdirs; overridable with
``RESCUEKIT_CACHE_DIR``). Unpacked to ``X:\\rescuekit\\python`` with its ``pythonXY._pth`` extended so the
runtime package and the bundled site-packages import.
"""
from __future__ import annotations

import hashlib
import os
import re
import tempfile
import urllib.error
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import platformdirs

from builder.files import copy_zip_member, sha256_file
from rescuekit.errors import RescueError, UsageError
from rescuekit.progress import byte_progress

DEFAULT_MIRROR = "https://www.python.org/ftp/python"
DEFAULT_VERSION = "3.12.10"

# SHA-256 of python-X.Y.Z-embed-amd64.zip, only for versions with a public source for the value
# (python.org release pages only list SHA-256 since late 2025; older ones show MD5 + GPG/Sigstore).
PINNED_SHA256 = {
    # two independent public repositories pin the same value (reference winpe-media.md §2.3)
    "3.12.10": "4acbed6dd1c744b0376e3b1cf57ce906f9dc9e95e68824584c8099a63025a3c3",
    # pinned in public build scripts next to the python.org URL (indexed public code, ids 61997226497 / 66537130330)
    "3.13.14": "90b4e5b9898b72d744650524bff92377c367f44bd5fbd09e3148656c080ad907",
    "3.13.15": "d1f04d990aee1253d8569e8e5104e30fa9f5fa830899f14843448872d936a2cf",
}

_VERSION = re.compile(r"^3\.(\d{1,2})\.(\d{1,2})$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


@dataclass(frozen=True)
class EmbedInfo:
    """What a validated embeddable zip holds."""

    path: Path
    xy: str  # "3.12"
    tag: str  # "312"
    sha256: str
    version: str | None  # "3.12.10" when known (download by version)

    @property
    def pth_name(self) -> str:
        return f"python{self.tag}._pth"


def cache_dir() -> Path:
    env = os.environ.get("RESCUEKIT_CACHE_DIR")
    return Path(env) if env else Path(platformdirs.user_cache_dir("rescuekit"))


def embed_url(version: str) -> str:
    base = os.environ.get("RESCUEKIT_PYTHON_MIRROR", DEFAULT_MIRROR).rstrip("/")
    return f"{base}/{version}/python-{version}-embed-amd64.zip"



def check_version(version: str) -> str:
    if not _VERSION.match(version):
        raise UsageError(f"invalid --python-version {version!r}: expected X.Y.Z like {DEFAULT_VERSION}")
    return version


def expected_sha256(version: str, sha256: str | None) -> str:
    if sha256 is not None:
        sha256 = sha256.strip().lower()
        if not _SHA256.match(sha256):
            raise UsageError(f"invalid --python-sha256 {sha256!r}: expected 64 hex digits")
        return sha256
    try:
        return PINNED_SHA256[version]
    except KeyError:
        pinned = ", ".join(sorted(PINNED_SHA256))
        raise UsageError(
            f"no pinned SHA-256 for Python {version} (pinned: {pinned}); pass --python-sha256 or --python-embed ZIP"
        ) from None


def fetch_embed(version: str, sha256: str | None = None) -> Path:
    """Return the cached embeddable zip for ``version``, downloading it (atomically, hash-checked) if needed."""
    check_version(version)
    want = expected_sha256(version, sha256)
    dest_dir = cache_dir() / "python"
    dest = dest_dir / f"python-{version}-embed-amd64.zip"
    if dest.is_file():
        if sha256_file(dest) == want:
            return dest
        dest.unlink()  # a stale or tampered cache entry: fetch again
    dest_dir.mkdir(parents=True, exist_ok=True)
    url = embed_url(version)
    fd, tmp_name = tempfile.mkstemp(prefix=dest.name + ".", suffix=".part", dir=dest_dir)
    tmp = Path(tmp_name)
    try:
        h = hashlib.sha256()
        with os.fdopen(fd, "wb") as out:
            try:
                with urllib.request.urlopen(url, timeout=60) as resp:
                    total = int(resp.headers.get("Content-Length") or 0) or None
                    with byte_progress(f"Python {version}", total) as advance:
                        while chunk := resp.read(1 << 16):
                            out.write(chunk)
                            h.update(chunk)
                            advance(len(chunk))
            except (urllib.error.URLError, OSError) as exc:
                reason = getattr(exc, "reason", None) or exc
                raise RescueError(
                    f"cannot download {url}: {reason} (offline: --python-embed ZIP, or --no-runtime for plain WinPE)"
                ) from None
            out.flush()
            os.fsync(out.fileno())
        got = h.hexdigest()
        if got != want:
            raise RescueError(f"checksum mismatch for {url}: expected SHA-256 {want}, got {got}")
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)
    return dest


def inspect_embed(path: Path, version: str | None = None) -> EmbedInfo:
    """Check that ``path`` is an amd64 embeddable package and derive X.Y from its pythonXY.dll."""
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"Python embeddable zip not found: {path}")
    try:
        with zipfile.ZipFile(path) as zf:
            names = {n for n in zf.namelist() if "/" not in n.rstrip("/")}
    except zipfile.BadZipFile:
        raise UsageError(f"not a zip file: {path} (expected python-X.Y.Z-embed-amd64.zip)") from None
    lower = {n.lower(): n for n in names}
    dlls = sorted(m.group(1) for n in lower if (m := re.fullmatch(r"python3(\d{1,2})\.dll", n)))
    if "python.exe" not in lower or len(dlls) != 1:
        raise UsageError(f"not a CPython embeddable package: {path} (needs python.exe and one python3XY.dll at its root)")
    minor = dlls[0]
    tag = f"3{minor}"
    for need in (f"python{tag}._pth", f"python{tag}.zip"):
        if need not in lower:
            raise UsageError(f"not a CPython embeddable package: {path} (no {need})")
    xy = f"3.{minor}"
    if version is not None and not version.startswith(xy + "."):
        raise UsageError(f"{path} holds Python {xy}, not {version}")
    if version is None:
        m = re.fullmatch(r"python-(3\.\d{1,2}\.\d{1,2})-embed-amd64\.zip", path.name)
        version = m.group(1) if m and m.group(1).startswith(xy + ".") else None
    return EmbedInfo(path=path, xy=xy, tag=tag, sha256=sha256_file(path), version=version)


def resolve_embed(zip_path: Path | None, version: str | None, sha256: str | None) -> EmbedInfo:
    """``--python-embed`` wins (its hash is checked when --python-sha256 is given); else download by version."""
    if zip_path is not None:
        info = inspect_embed(zip_path, version)
        if sha256 is not None and info.sha256 != expected_sha256(version or "", sha256):
            raise RescueError(f"checksum mismatch for {zip_path}: expected SHA-256 {sha256}, got {info.sha256}")
        return info
    version = version or DEFAULT_VERSION
    return inspect_embed(fetch_embed(version, sha256), version)


def patch_pth(text: str, extra: list[str]) -> str:
    """Keep the ._pth lines (and a commented ``import site``), add ``extra`` after the existing path lines."""
    lines = text.replace("\r\n", "\n").split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    have = {ln.strip().lower() for ln in lines}
    add = [e for e in extra if e.lower() not in have]
    # insert after the last non-comment, non-blank line (the path entries), before the comments
    at = 0
    for i, ln in enumerate(lines):
        if ln.strip() and not ln.lstrip().startswith("#") and ln.strip() != "import site":
            at = i + 1
    lines[at:at] = add
    return "\r\n".join(lines) + "\r\n"


def unpack_embed(info: EmbedInfo, dest: Path, extra_pth: list[str]) -> None:
    """Extract the zip into ``dest`` (refusing unsafe member names) and extend its ._pth."""
    dest.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(info.path) as zf:
        for member in zf.infolist():
            p = PurePosixPath(member.filename.replace("\\", "/"))
            if p.is_absolute() or ".." in p.parts or ":" in member.filename:
                raise RescueError(f"unsafe member {member.filename!r} in {info.path}")
            target = dest.joinpath(*p.parts)
            if member.is_dir():
                target.mkdir(parents=True, exist_ok=True)
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            copy_zip_member(zf, member, target, f"damaged Python embeddable zip {info.path}")
    pth = next(p for p in dest.iterdir() if p.name.lower() == info.pth_name.lower())
    pth.write_bytes(patch_pth(pth.read_bytes().decode("utf-8-sig"), extra_pth).encode("utf-8"))

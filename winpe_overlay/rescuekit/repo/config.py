"""The repository's ``config`` file: format name and version (checked by every reader), id, chunk size."""
from __future__ import annotations

import json
import secrets
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from rescuekit.errors import RescueError
from rescuekit.repo.fsutil import atomic_write

FORMAT_NAME = "rescuekit-repository"
FORMAT_VERSION = 2  # bump on any incompatible change; readers refuse newer versions (docs/format.md)
# 2: image manifests carry a per-repository sequence number ("seq") that orders them; version-1 files still read
DEFAULT_CHUNK_SIZE = 256 << 10  # measured: 1 MiB chunks store 2.4x more on small changes (docs/imaging.md)
DEFAULT_PACK_SIZE = 64 << 20  # packs stay far below FAT32's 4 GiB file limit
MAX_CHUNK_SIZE = 16 << 20  # bounds what a corrupt config or index can make a reader allocate
MAX_BLOB = 8 * MAX_CHUNK_SIZE  # a stored blob holds at most 8 chunks (imaging.capture.GROUP)
MIN_PACK_SIZE, MAX_PACK_SIZE = 64 << 10, 1 << 30  # a pack may overshoot the cap by one blob: stays < 4 GiB
HASH_NAME = "blake3-256"
COMPRESSION = "zstd"
SUBDIRS = ("data", "index", "images", "locks", "restores")


def utc_now() -> str:
    """UTC time with microseconds (informational: images are ordered by their sequence number)."""
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass
class RepoConfig:
    id: str
    chunk_size: int
    pack_size: int
    created: str
    version: int = FORMAT_VERSION

    def to_json(self) -> bytes:
        return json.dumps({
            "format": FORMAT_NAME, "version": self.version, "id": self.id, "chunk_size": self.chunk_size,
            "pack_size": self.pack_size, "hash": HASH_NAME, "compression": COMPRESSION, "created": self.created,
        }, indent=1).encode() + b"\n"


def _size_problem(chunk_size: int, pack_size: int) -> str | None:
    if chunk_size < 4096 or chunk_size > MAX_CHUNK_SIZE or chunk_size & (chunk_size - 1):
        return f"chunk size {chunk_size} must be a power of two from 4096 to {MAX_CHUNK_SIZE}"
    if not MIN_PACK_SIZE <= pack_size <= MAX_PACK_SIZE:
        return f"pack size {pack_size} must be from {MIN_PACK_SIZE} to {MAX_PACK_SIZE}"
    return None


def new_config(chunk_size: int = DEFAULT_CHUNK_SIZE, pack_size: int = DEFAULT_PACK_SIZE) -> RepoConfig:
    problem = _size_problem(chunk_size, pack_size)
    if problem:
        raise RescueError(problem)
    return RepoConfig(id=secrets.token_hex(16), chunk_size=chunk_size, pack_size=pack_size, created=utc_now())


def check_version(version: object, where: str) -> int:
    """Refuse files written by a newer (or unknown) format version."""
    if not isinstance(version, int) or version < 1:
        raise RescueError(f"{where}: missing or invalid format version {version!r}")
    if version > FORMAT_VERSION:
        raise RescueError(f"{where}: format version {version} is newer than this rescuekit supports "
                          f"({FORMAT_VERSION}); use a newer rescuekit")
    return version


def load_config(path: Path) -> RepoConfig:
    cfg_path = path / "config"
    try:
        raw = cfg_path.read_bytes()
    except FileNotFoundError:
        if not path.exists():
            raise RescueError(f"repository {path} does not exist") from None
        raise RescueError(f"{path} is not a rescuekit repository (no config file)") from None
    except IsADirectoryError:
        raise RescueError(f"{path} is not a rescuekit repository (config is a directory)") from None
    try:
        doc = json.loads(raw)
        if not isinstance(doc, dict):
            raise ValueError("not an object")
    except (ValueError, UnicodeDecodeError):
        raise RescueError(f"{cfg_path}: corrupt repository config (not JSON)") from None
    if doc.get("format") != FORMAT_NAME:
        raise RescueError(f"{path} is not a rescuekit repository (config format {doc.get('format')!r})")
    version = check_version(doc.get("version"), str(cfg_path))
    try:
        cfg = RepoConfig(id=str(doc["id"]), chunk_size=int(doc["chunk_size"]), pack_size=int(doc["pack_size"]),
                         created=str(doc.get("created", "")), version=version)
    except (KeyError, TypeError, ValueError):
        raise RescueError(f"{cfg_path}: corrupt repository config (missing fields)") from None
    problem = _size_problem(cfg.chunk_size, cfg.pack_size)
    if problem:
        raise RescueError(f"{cfg_path}: corrupt repository config ({problem})")
    return cfg


def upgrade_config(root: Path, cfg: RepoConfig) -> None:
    """Raise the config's version to FORMAT_VERSION before a writer writes files of that version, so that an
    older rescuekit refuses the repository instead of misreading it (e.g. ordering images by clock).
    Other keys are kept as they are."""
    if cfg.version >= FORMAT_VERSION:
        return
    doc = json.loads((root / "config").read_bytes())
    doc["version"] = FORMAT_VERSION
    atomic_write(root / "config", json.dumps(doc, indent=1).encode() + b"\n")
    cfg.version = FORMAT_VERSION

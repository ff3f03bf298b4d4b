"""Image manifests: ``images/<image id>.json``, one per captured image, written last and atomically.

The ``checksum`` field is the BLAKE3-256 of the canonical JSON (sorted keys, no whitespace, UTF-8) of the
manifest without that field; readers recompute it and refuse a manifest that does not match.
"""
from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import blake3

from rescuekit.errors import RescueError
from rescuekit.repo.config import check_version
from rescuekit.repo.fsutil import atomic_write

IMAGE_FORMAT = "rescuekit-image"


def canonical(doc: dict) -> bytes:
    return json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def checksum(doc: dict) -> str:
    return blake3.blake3(canonical({k: v for k, v in doc.items() if k != "checksum"})).hexdigest()


def image_path(root: Path, image_id: str) -> Path:
    return root / "images" / f"{image_id}.json"


def write_manifest(root: Path, doc: dict) -> None:
    doc = dict(doc)
    doc["checksum"] = checksum(doc)
    atomic_write(image_path(root, doc["id"]), canonical(doc))


def read_manifest(path: Path) -> dict:
    try:
        doc = json.loads(path.read_bytes())
        if not isinstance(doc, dict):
            raise TypeError
    except (ValueError, UnicodeDecodeError, TypeError):
        raise RescueError(f"{path}: corrupt image manifest (not JSON)") from None
    if doc.get("format") != IMAGE_FORMAT:
        raise RescueError(f"{path}: not a rescuekit image manifest")
    check_version(doc.get("version"), str(path))
    if doc.get("checksum") != checksum(doc):
        raise RescueError(f"{path}: corrupt image manifest (checksum mismatch)")
    if doc.get("id") != path.stem:
        raise RescueError(f"{path}: manifest id {doc.get('id')!r} does not match its file name")
    return doc


def manifest_paths(root: Path) -> list[Path]:
    return sorted(p for p in (root / "images").glob("*.json") if not p.name.startswith("."))


def iter_chunks(doc: dict, chunk_size: int) -> Iterator[tuple[int, int, str | None]]:
    """(disk offset, length, chunk id or None for all-zero) for every chunk of an image, in disk order."""
    for ext in doc["extents"]:
        off, end = ext["offset"], ext["offset"] + ext["length"]
        for cid in ext["chunks"]:
            n = min(chunk_size, end - off)
            yield off, n, cid
            off += n

"""Image manifests: ``images/<image id>.json``, one per captured image, written last and atomically.

The ``checksum`` field is the BLAKE3-256 of the canonical JSON (sorted keys, no whitespace, UTF-8) of the
manifest without that field; readers recompute it and refuse a manifest that does not match.

Images are ordered by ``seq`` (format 2): one more than the highest seq of any manifest file present, assigned
under the exclusive lock when the manifest is written, so capturing machines' clocks do not matter.
Format-1 manifests have no seq: they order before every format-2 one (a repository is raised to format 2
by the first format-2 writer, after which older rescuekit refuses it), by ``created`` among themselves.
"""
from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import blake3

from rescuekit.repo.config import MAX_CHUNK_SIZE, check_version
from rescuekit.repo.fsutil import atomic_write
from rescuekit.repo.packs import CorruptFile, is_id

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
        raise CorruptFile(f"{path}: corrupt image manifest (not JSON)") from None
    if doc.get("format") != IMAGE_FORMAT:
        raise CorruptFile(f"{path}: not a rescuekit image manifest")
    version = check_version(doc.get("version"), str(path))
    if doc.get("checksum") != checksum(doc):
        raise CorruptFile(f"{path}: corrupt image manifest (checksum mismatch)")
    if doc.get("id") != path.stem:
        raise CorruptFile(f"{path}: manifest id {doc.get('id')!r} does not match its file name")
    problem = _layout_problem(doc) or (None if version < 2 or _int(doc.get("seq"), 1) else f"seq {doc.get('seq')!r}")
    if problem:
        raise CorruptFile(f"{path}: corrupt image manifest ({problem})")
    return doc


def _int(v: object, lo: int = 0) -> bool:
    return type(v) is int and v >= lo


def _layout_problem(doc: dict) -> str | None:
    """What readers rely on, checked once here (the checksum only proves the file is as it was written)."""
    cs = doc.get("chunk_size")
    if not _int(cs, 4096) or cs > MAX_CHUNK_SIZE or cs & (cs - 1):
        return f"chunk size {cs!r}"
    src, table, totals = doc.get("source"), doc.get("table"), doc.get("totals")
    if not isinstance(src, dict) or not _int(src.get("size")):
        return "source"
    if not isinstance(table, dict) or table.get("kind") not in ("gpt", "mbr", "none"):
        return "table"
    if not isinstance(totals, dict) or not all(_int(totals.get(k)) for k in ("stored_bytes", "new_stored_bytes")):
        return "totals"
    if not isinstance(doc.get("created"), str) or not isinstance(doc.get("warnings", []), list):
        return "created/warnings"
    parts = doc.get("partitions")
    if not isinstance(parts, list) or not all(
            isinstance(p, dict) and _int(p.get("number"), 1) and _int(p.get("start")) and _int(p.get("size"))
            and p["start"] + p["size"] <= src["size"] for p in parts):
        return "partitions"
    exts = doc.get("extents")
    if not isinstance(exts, list):
        return "extents"
    for e in exts:
        if not (isinstance(e, dict) and _int(e.get("offset")) and _int(e.get("length"), 1)
                and e["offset"] % cs == 0 and e["offset"] + e["length"] <= src["size"]
                and isinstance(e.get("chunks"), list) and len(e["chunks"]) == -(-e["length"] // cs)
                and all(c is None or is_id(c) for c in e["chunks"])):
            return f"extent {e.get('offset') if isinstance(e, dict) else e!r}"
    return None


def manifest_paths(root: Path) -> list[Path]:
    return sorted(p for p in (root / "images").glob("*.json") if not p.name.startswith("."))


def image_order(doc: dict) -> tuple:
    """Sort key, oldest first: format-1 images (no seq) by creation time, then the others by seq."""
    seq = doc.get("seq")
    if type(seq) is int:
        return (1, seq, "", doc["id"])
    return (0, 0, str(doc.get("created", "")), doc["id"])


def peek(path: Path) -> dict:
    """What can be read of a manifest file that may be corrupt or of a newer version: its JSON object, or {}
    (never trusted for data: used to number new images and to see whether an unreadable one may matter)."""
    try:
        doc = json.loads(path.read_bytes())
    except (OSError, ValueError, UnicodeDecodeError):
        return {}
    return doc if isinstance(doc, dict) else {}


def peek_seq(path: Path) -> int | None:
    seq = peek(path).get("seq")
    return seq if type(seq) is int and seq >= 1 else None


def next_seq(root: Path) -> int:
    """The sequence number for a new image (call under the exclusive lock): above every manifest present."""
    return 1 + max((peek_seq(p) or 0 for p in manifest_paths(root)), default=0)


def iter_chunks(doc: dict, chunk_size: int) -> Iterator[tuple[int, int, str | None]]:
    """(disk offset, length, chunk id or None for all-zero) for every chunk of an image, in disk order."""
    for ext in doc["extents"]:
        off, end = ext["offset"], ext["offset"] + ext["length"]
        for cid in ext["chunks"]:
            n = min(chunk_size, end - off)
            yield off, n, cid
            off += n

"""Just enough ELF64 (little-endian) reading for the Linux base: a file's sections, its DT_NEEDED libraries and a
kernel module's ``.modinfo`` (``depends=``, ``softdep=``), by section headers; vmlinux's loadable segments (the
BIOS kernel image, builder/bzimage.py), by program headers."""
from __future__ import annotations

import struct
from pathlib import Path

ELF_MAGIC = b"\x7fELF"
_DT_NEEDED = 1
_PT_LOAD = 1


def is_elf(path: Path) -> bool:
    try:
        with open(path, "rb") as f:
            return f.read(4) == ELF_MAGIC
    except OSError:
        return False


def is_elf64le(data: bytes) -> bool:
    return data[:4] == ELF_MAGIC and len(data) >= 64 and data[4] == 2 and data[5] == 1


def load_segments(data: bytes) -> tuple[int, list[tuple[int, int, int, int]]]:
    """(entry point, [(p_paddr, p_offset, p_filesz, p_memsz) of each PT_LOAD]) of an ELF64 LE executable; (0, [])
    for anything else or when the program headers are cut off."""
    if not is_elf64le(data):
        return 0, []
    entry, phoff = struct.unpack_from("<QQ", data, 0x18)
    phentsize, phnum = struct.unpack_from("<HH", data, 0x36)
    if phentsize < 56 or phoff + phnum * phentsize > len(data):
        return 0, []
    loads = []
    for i in range(phnum):
        p_type, _flags, p_offset, _vaddr, p_paddr, p_filesz, p_memsz, _align = \
            struct.unpack_from("<IIQQQQQQ", data, phoff + i * phentsize)
        if p_type == _PT_LOAD:
            loads.append((p_paddr, p_offset, p_filesz, p_memsz))
    return entry, loads


def sections(data: bytes) -> dict[str, tuple[int, int, int]]:
    """{name: (file offset, size, sh_link)} of an ELF64 LE file; {} for anything else (or a truncated file)."""
    if not is_elf64le(data):
        return {}
    shoff, = struct.unpack_from("<Q", data, 0x28)
    shentsize, shnum, shstrndx = struct.unpack_from("<HHH", data, 0x3A)
    if not shoff or shoff + shnum * shentsize > len(data):
        return {}
    heads = [struct.unpack_from("<IIQQQQIIQQ", data, shoff + i * shentsize) for i in range(shnum)]
    str_off = heads[shstrndx][4]
    out: dict[str, tuple[int, int, int]] = {}
    for i, h in enumerate(heads):
        name_end = data.index(b"\0", str_off + h[0])
        name = data[str_off + h[0]:name_end].decode("ascii", "replace")
        out[name] = (h[4], h[5], h[6])
        out[f"#{i}"] = (h[4], h[5], h[6])
    return out


def needed(path: Path) -> list[str]:
    """The DT_NEEDED sonames of an ELF binary or library (empty for a static binary or a non-ELF file)."""
    data = Path(path).read_bytes()
    secs = sections(data)
    if ".dynamic" not in secs:
        return []
    off, size, link = secs[".dynamic"]
    str_off = secs[f"#{link}"][0]
    names = []
    for i in range(0, size - 15, 16):
        tag, val = struct.unpack_from("<qQ", data, off + i)
        if tag == 0:
            break
        if tag == _DT_NEEDED:
            names.append(data[str_off + val:data.index(b"\0", str_off + val)].decode())
    return names


def modinfo(path: Path) -> dict[str, list[str]]:
    """A kernel module's ``.modinfo`` strings as {key: [values]} (e.g. ``depends``, ``softdep``, ``alias``)."""
    data = Path(path).read_bytes()
    secs = sections(data)
    if ".modinfo" not in secs:
        return {}
    off, size, _ = secs[".modinfo"]
    out: dict[str, list[str]] = {}
    for item in data[off:off + size].split(b"\0"):
        key, eq, val = item.decode("utf-8", "replace").partition("=")
        if eq:
            out.setdefault(key, []).append(val)
    return out


def module_deps(path: Path) -> tuple[list[str], list[str]]:
    """(``depends=`` names, ``softdep=`` ``pre:`` names) of a module: what it needs / would like loaded first.
    A soft dependency may name an alias (``crct10dif``), not a module file."""
    info = modinfo(path)
    hard = [d for v in info.get("depends", []) for d in v.split(",") if d]
    deps: list[str] = []
    for soft in info.get("softdep", []):
        words = soft.split()
        if words and words[0] == "pre:":
            for w in words[1:]:
                if w.endswith(":"):
                    break
                deps.append(w)
    return hard, deps

"""List the DLLs a PE file (.pyd/.dll/.exe) imports: a tiny parser of the import directory.

Used to warn when a bundled extension needs msvcp140.dll, which the embeddable Python does not ship.
"""
from __future__ import annotations

import struct


def pe_imports(data: bytes) -> list[str]:
    """DLL names from the import table of a PE32/PE32+ image; [] when there is none or it is not a PE."""
    try:
        if data[:2] != b"MZ":
            return []
        (pe_off,) = struct.unpack_from("<I", data, 0x3C)
        if data[pe_off:pe_off + 4] != b"PE\0\0":
            return []
        coff = pe_off + 4
        nsections, = struct.unpack_from("<H", data, coff + 2)
        opt_size, = struct.unpack_from("<H", data, coff + 16)
        opt = coff + 20
        magic, = struct.unpack_from("<H", data, opt)
        dd = opt + (112 if magic == 0x20B else 96)  # data directories: PE32+ vs PE32
        import_rva, _ = struct.unpack_from("<II", data, dd + 8)  # entry 1 = import table
        if import_rva == 0:
            return []
        sections = []
        sec = opt + opt_size
        for i in range(nsections):
            vsize, vaddr, rawsize, rawptr = struct.unpack_from("<IIII", data, sec + 40 * i + 8)
            sections.append((vaddr, max(vsize, rawsize), rawptr))

        def off(rva: int) -> int:
            for vaddr, size, rawptr in sections:
                if vaddr <= rva < vaddr + size:
                    return rva - vaddr + rawptr
            raise ValueError(f"RVA {rva:#x} outside sections")

        names = []
        desc = off(import_rva)
        while True:
            fields = struct.unpack_from("<IIIII", data, desc)
            if not any(fields):
                break
            name_off = off(fields[3])
            end = data.index(b"\0", name_off)
            names.append(data[name_off:end].decode("ascii", "replace"))
            desc += 20
        return names
    except (struct.error, ValueError):
        return []


def needs_msvcp140(data: bytes) -> bool:
    return any(n.lower().startswith("msvcp140") for n in pe_imports(data))

#!/usr/bin/env python3
"""Benchmark: rescuekit's pycdlib ISO mastering vs ``xorriso -as mkisofs`` on the same ~700 MB media tree.

The tree is shaped like WinPE/Windows boot media: one big boot.wim-like file, a few MB-sized files,
and thousands of small files in per-language folders.  Both tools write a BIOS (8-sector, no boot
info table) + UEFI El Torito ISO with Joliet and ISO 9660 level 3; ours adds UDF (xorriso cannot).
Each is run once on a warm page cache; the ratio ours/xorriso is printed (target <= 1.5).

    python3 scripts/bench_iso.py [--workdir DIR] [--size-mb 700] [--keep]
"""
from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
LANGS = ["ar-sa", "bg-bg", "cs-cz", "da-dk", "de-de", "el-gr", "en-gb", "en-us", "es-es", "es-mx", "et-ee",
         "fi-fi", "fr-ca", "fr-fr", "he-il", "hr-hr", "hu-hu", "it-it", "ja-jp", "ko-kr", "lt-lt", "lv-lv",
         "nb-no", "nl-nl", "pl-pl", "pt-br", "pt-pt", "ro-ro", "ru-ru", "sk-sk", "sl-si", "sr-latn-rs",
         "sv-se", "th-th", "tr-tr", "uk-ua", "zh-cn", "zh-tw"]


def _fill(path: Path, size: int, rng: random.Random, block: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        off = rng.randrange(len(block) // 2)
        left = size
        while left:
            n = min(left, len(block) - off)
            f.write(block[off:off + n])
            left -= n
            off = 0


def make_tree(root: Path, size_mb: int = 700) -> tuple[Path, int, int]:
    """Write the media tree; returns (root, files, bytes)."""
    rng = random.Random(1)
    block = os.urandom(8 << 20)  # incompressible, reused: writing the tree must stay cheap
    total = size_mb << 20
    wim = int(total * 0.57)  # ~400 MB of 700, like a customised boot.wim
    _fill(root / "sources/boot.wim", wim, rng, block)
    used, files = wim, 1
    for name, size in (("boot/boot.sdi", 3 << 20), ("bootmgr", 400 << 10), ("bootmgr.efi", 1400 << 10),
                       ("EFI/Boot/bootx64.efi", 1500 << 10), ("boot/bcd", 16 << 10), ("EFI/Microsoft/Boot/BCD", 16 << 10)):
        _fill(root / name, size, rng, block)
        used, files = used + size, files + 1
    mid = 0
    while used < total * 0.85:  # fonts, drivers, tools: 0.2-8 MB
        size = rng.randrange(200 << 10, 8 << 20)
        _fill(root / f"tools/{['x64', 'drivers', 'fonts'][mid % 3]}/file{mid:04d}.bin", size, rng, block)
        used, files, mid = used + size, files + 1, mid + 1
    n = 0
    while used < total:  # thousands of small .mui-like files per language
        lang = LANGS[n % len(LANGS)]
        size = rng.randrange(2 << 10, 96 << 10)
        sub = ("boot", "EFI/Microsoft/Boot", "")[n % 3]
        _fill(root / sub / lang / f"resource_{n:05d}.dll.mui", size, rng, block)
        used, files, n = used + size, files + 1, n + 1
    return root, files, used


def boot_images(work: Path) -> tuple[Path, Path]:
    etfs = work / "etfsboot.com"
    etfs.write_bytes(b"\xeb\xfe" + b"\0" * 4094)
    efisys = work / "efisys.bin"
    subprocess.run(["mkfs.vfat", "-C", str(efisys), "1440"], check=True, capture_output=True)
    return etfs, efisys


def run_ours(tree: Path, out: Path, etfs: Path, efisys: Path) -> float:
    if str(REPO) not in sys.path:  # a checkout without an install; appended, so an installed rescuekit wins
        sys.path.append(str(REPO))
    from builder.iso import master_iso

    files = {p.relative_to(tree).as_posix(): p for p in sorted(tree.rglob("*")) if p.is_file()}
    t0 = time.perf_counter()
    master_iso(files, out, bios_image=etfs, efi_image=efisys, label="BENCH", progress=False)
    return time.perf_counter() - t0


def run_xorriso(tree: Path, out: Path, etfs: Path, efisys: Path) -> float:
    # Boot images go into the tree for xorriso (it needs them inside the image); copy to a side dir graft.
    cmd = ["xorriso", "-as", "mkisofs", "-quiet", "-iso-level", "3", "-J", "-joliet-long", "-V", "BENCH",
           "-graft-points", "-o", str(out),
           "-b", "bootimg/etfsboot.com", "-no-emul-boot", "-boot-load-size", "8", "-hide", "bootimg",
           "-hide-joliet", "bootimg",
           "-eltorito-alt-boot", "-e", "bootimg/efisys.bin", "-no-emul-boot",
           f"/={tree}", f"/bootimg/etfsboot.com={etfs}", f"/bootimg/efisys.bin={efisys}"]
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True)
    # ours fsyncs its output before the atomic rename; count the same for xorriso
    fd = os.open(out, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    return time.perf_counter() - t0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workdir", type=Path, default=None, help="where to put the tree and ISOs (default: a temp dir)")
    ap.add_argument("--size-mb", type=int, default=700)
    ap.add_argument("--keep", action="store_true", help="keep the tree and ISOs")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="rk-bench-", dir=args.workdir))
    try:
        tree, nfiles, nbytes = make_tree(work / "media", args.size_mb)
        etfs, efisys = boot_images(work)
        subprocess.run(["sh", "-c", f"cat $(find '{tree}' -type f) > /dev/null"], check=True)  # warm the cache for both
        ours = run_ours(tree, work / "ours.iso", etfs, efisys)
        xor = run_xorriso(tree, work / "xorriso.iso", etfs, efisys)
        res = {"files": nfiles, "tree_mb": round(nbytes / 2**20, 1),
               "ours_s": round(ours, 2), "xorriso_s": round(xor, 2), "ratio": round(ours / xor, 2),
               "ours_iso_mb": round((work / "ours.iso").stat().st_size / 2**20, 1),
               "xorriso_iso_mb": round((work / "xorriso.iso").stat().st_size / 2**20, 1)}
        if args.json:
            print(json.dumps(res))
        else:
            print(f"tree: {res['files']} files, {res['tree_mb']} MiB")
            print(f"rescuekit (pycdlib, ISO9660+Joliet+UDF): {res['ours_s']:.2f} s -> {res['ours_iso_mb']} MiB")
            print(f"xorriso -as mkisofs (ISO9660+Joliet):    {res['xorriso_s']:.2f} s -> {res['xorriso_iso_mb']} MiB")
            print(f"ratio rescuekit/xorriso: {res['ratio']:.2f} (target <= 1.5)")
        return 0
    finally:
        if args.keep:
            print(f"kept {work}", file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""Build real test disks: GPT (ESP FAT32 + MSR + NTFS) and MBR (primary + extended with logicals) images.

No mounting: NTFS is made with ``mkntfs -F -Q`` and populated by ``wimlib-imagex apply`` in NTFS-3G mode,
FAT with ``mkfs.vfat`` + ``mcopy``; partitions are laid out by sgdisk/sfdisk and ``dd``'d into the disk file.
Every builder returns expected file hashes ``{relative/posix/path: sha256}`` (per partition number for disks).

    python3 scripts/make_test_disks.py gpt disk.img [--size-mib 512] [--tree-mib 8] [--seed 1]
    python3 scripts/make_test_disks.py ntfs vol.img --size-mib 2048 --tree-mib 1000 --stale
"""
from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import random
import subprocess
import tempfile
from pathlib import Path

from builder.files import sha256_file

MiB = 1 << 20
Hashes = dict[str, str]

_WORDS = ("the system driver registry update service windows kernel module config value user data "
          "file volume partition boot loader network device security policy event log error warning "
          "information process thread memory cache index table record header version build release").split()


def _run(*cmd: str | os.PathLike, stdin: str | None = None) -> str:
    try:
        res = subprocess.run([str(c) for c in cmd], input=stdin, capture_output=True, text=True, check=False)
    except FileNotFoundError:
        raise RuntimeError(f"missing tool {cmd[0]!s}: install the packages in scripts/install-deps.sh") from None
    if res.returncode != 0:
        raise RuntimeError(f"{' '.join(map(str, cmd))} failed ({res.returncode}): {res.stderr.strip()[-800:]}")
    return res.stdout


def hash_tree(root: Path) -> Hashes:
    """sha256 of every regular file under ``root``, keyed by POSIX path relative to it."""
    out = {}
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            p = Path(dirpath, name)
            out[p.relative_to(root).as_posix()] = sha256_file(p)
    return dict(sorted(out.items()))


# ---------------------------------------------------------------- content

def _text(rng: random.Random, n: int) -> bytes:
    lines = [" ".join(rng.choices(_WORDS, k=rng.randint(4, 14))).encode() + b"\r\n" for _ in range(256)]
    out = bytearray()
    while len(out) < n:
        out += b"".join(rng.choices(lines, k=256))
    return bytes(out[:n])


def _binary(rng: random.Random, n: int) -> bytes:
    """PE-like: zero padding, repeated tables and random code-ish blocks."""
    out = bytearray()
    table = rng.randbytes(512)
    while len(out) < n:
        k = rng.random()
        out += rng.randbytes(4096) if k < 0.5 else table * 8 if k < 0.8 else bytes(4096)
    return bytes(out[:n])


def gen_tree(root: str | Path, *, seed: int = 1, total_bytes: int = 4 * MiB) -> Hashes:
    """A deterministic Windows-like tree of about ``total_bytes``: nested dirs, incompressible files (40%),
    text (30%), PE-like binaries (30%), tiny files, a unicode name and an empty folder."""
    root = Path(root)
    rng = random.Random(seed)
    dirs = ["Windows/System32/drivers/etc", "Windows/System32/config", "Windows/Logs/CBS",
            "Program Files/Contoso App/bin", "Program Files (x86)/Common Files", "ProgramData/Contoso",
            "Users/Admin/Documents/Projets été", "Users/Admin/Pictures", "Users/Public/Downloads"]
    for d in dirs:
        (root / d).mkdir(parents=True, exist_ok=True)
    (root / "Users/Admin/Desktop").mkdir(parents=True, exist_ok=True)  # stays empty
    files: list[tuple[str, bytes]] = [
        ("Windows/System32/drivers/etc/hosts", b"127.0.0.1 localhost\r\n::1 localhost\r\n"),
        ("Users/Admin/Documents/Projets été/résumé – ünïcode ✓.txt", "Grüße aus Zürich ✓\r\n".encode()),
        ("bootmgr", _binary(rng, 400_000)),
    ]
    budget = total_bytes - sum(len(b) for _n, b in files)
    i = 0
    while budget > 0:
        kind = rng.random()
        size = min(budget, max(1, int(rng.lognormvariate(11, 1.6))), 64 * MiB)
        d = rng.choice(dirs)
        if kind < 0.4:
            name, data = f"{d}/blob{i:04d}.{rng.choice(['jpg', 'zip', 'cab'])}", rng.randbytes(size)
        elif kind < 0.7:
            name, data = f"{d}/notes{i:04d}.{rng.choice(['txt', 'log', 'xml'])}", _text(rng, size)
        else:
            name, data = f"{d}/module{i:04d}.{rng.choice(['dll', 'sys', 'exe'])}", _binary(rng, size)
        files.append((name, data))
        budget -= size
        i += 1
        if i % 7 == 0:  # tiny (MFT-resident on NTFS) files
            files.append((f"{d}/desktop{i:04d}.ini", f"[.ShellClassInfo]\r\nIconIndex={i}\r\n".encode()))
    for name, data in files:
        (root / name).write_bytes(data)
    return hash_tree(root)


# ---------------------------------------------------------------- volumes

def _fill_stale(path: Path, size: int, seed: int) -> None:
    """Free space of a used disk is not zero: 50% random, 30% text, 20% zero MiB chunks."""
    rng = random.Random(seed ^ 0x5EED)
    text = _text(rng, MiB)
    with open(path, "r+b") as f:
        for pos in range(0, size, MiB):
            k = rng.random()
            if k < 0.5:
                f.seek(pos)
                f.write(rng.randbytes(min(MiB, size - pos)))
            elif k < 0.8:
                f.seek(pos)
                f.write(text[: size - pos])


def _new_file(path: Path, size: int) -> None:
    with open(path, "wb") as f:
        f.truncate(size)


def make_ntfs_volume(path: str | Path, size: int, tree: str | Path | None = None, *, seed: int = 1,
                     tree_bytes: int = 4 * MiB, stale_free_space: bool = False, label: str = "Windows",
                     part_start_sector: int = 0, cluster_size: int | None = None,
                     system_files: dict[str, bytes] | None = None) -> tuple[Path, Hashes]:
    """An NTFS volume file: mkntfs -F -Q, then a tree (given, or generated from ``seed``) applied by wimlib.

    ``system_files``: extra root files such as pagefile.sys/hiberfil.sys (captured with an empty wimlib config:
    its default one leaves those names out); they are in the returned hashes too."""
    path = Path(path)
    _new_file(path, size)
    if stale_free_space:
        _fill_stale(path, size, seed)
    cmd = ["mkntfs", "-F", "-Q", "-q", "-L", label, "-p", str(part_start_sector), "-H", "255", "-S", "63"]
    if cluster_size:
        cmd += ["-c", str(cluster_size)]
    _run(*cmd, path)
    with tempfile.TemporaryDirectory(dir=path.parent) as tmp:
        src = Path(tree) if tree is not None else Path(tmp, "tree")
        hashes = hash_tree(src) if tree is not None else gen_tree(src, seed=seed, total_bytes=tree_bytes)
        wim = Path(tmp, "tree.wim")
        extra: list[str] = []
        if system_files:
            for fname, data in system_files.items():
                (src / fname).write_bytes(data)
            hashes = hash_tree(src)
            Path(tmp, "empty.cfg").write_text("")
            extra = [f"--config={Path(tmp, 'empty.cfg')}"]
        _run("wimlib-imagex", "capture", src, wim, "--compress=none", "--no-acls", *extra)
        _run("wimlib-imagex", "apply", wim, "1", path)
    return path, hashes


def make_fat_volume(path: str | Path, size: int, tree: str | Path | None = None, *, bits: int = 32,
                    seed: int = 2, tree_bytes: int = 2 * MiB, label: str = "ESP",
                    part_start_sector: int = 0) -> tuple[Path, Hashes]:
    """A FAT12/16/32 volume file: mkfs.vfat, then a tree (given or generated) copied in with mcopy -s."""
    path = Path(path)
    _new_file(path, size)
    _run("mkfs.vfat", "-F", str(bits), "-n", label, "-h", str(part_start_sector), "-i", f"{seed:08X}", path)
    with tempfile.TemporaryDirectory(dir=path.parent) as tmp:
        src = Path(tree) if tree is not None else Path(tmp, "tree")
        if tree is None:
            gen_tree(src, seed=seed, total_bytes=tree_bytes)
            # An ESP-like file too.
            (src / "EFI/Boot").mkdir(parents=True)
            (src / "EFI/Boot/bootx64.efi").write_bytes(random.Random(seed).randbytes(300_000))
        hashes = hash_tree(src)
        entries = sorted(p.name for p in src.iterdir())
        if entries:
            _run("mcopy", "-s", "-Q", "-i", path, *[src / e for e in entries], "::/")
    return path, hashes


def make_exfat_volume(path: str | Path, size: int, *, label: str = "DATA", cluster_size: int | None = None,
                      stale_free_space: bool = False, seed: int = 4) -> Path:
    """An empty exFAT volume (mkfs.exfat); ``make_exfat_files`` puts files in one."""
    path = Path(path)
    _new_file(path, size)
    if stale_free_space:
        _fill_stale(path, size, seed)
    _run("mkfs.exfat", "-L", label, *(["-c", str(cluster_size)] if cluster_size else []), path)
    return path


@contextlib.contextmanager
def mounted_exfat(volume: str | Path, mnt: str | Path, *, readonly: bool = False):
    """``volume`` mounted at ``mnt`` with exfat-fuse on a loop device (root; the kernel may lack exfat, and
    exfatprogs cannot add files offline). Unmounted and detached afterwards, also on failure."""
    dev = _run("losetup", "--find", "--show", volume).strip()
    try:
        _run("mount.exfat-fuse", *(["-o", "ro"] if readonly else []), dev, mnt)
        try:
            yield Path(mnt)
        finally:
            _run("umount", mnt)
    finally:
        _run("losetup", "-d", dev)


def make_exfat_files(path: str | Path, size: int, *, seed: int = 4, tree_bytes: int = 2 * MiB,
                     label: str = "DATA", cluster_size: int | None = None,
                     stale_free_space: bool = True) -> tuple[Path, Hashes]:
    """An exFAT volume with real files: the ``gen_tree`` tree, two files written in turns (so their cluster
    chains interleave: FAT chains, not contiguous NoFatChain runs) and every third file deleted again (free
    holes between used clusters); free space holds stale data unless ``stale_free_space`` is False."""
    import shutil

    path = make_exfat_volume(path, size, label=label, cluster_size=cluster_size,
                             stale_free_space=stale_free_space, seed=seed)
    rng = random.Random(seed)
    with tempfile.TemporaryDirectory(dir=path.parent) as tmp:
        src = Path(tmp, "tree")
        gen_tree(src, seed=seed, total_bytes=tree_bytes)
        mnt = Path(tmp, "mnt")
        mnt.mkdir()
        with mounted_exfat(path, mnt) as root:
            shutil.copytree(src, root, dirs_exist_ok=True)
            with open(root / "interleaved-1.bin", "wb") as a, open(root / "interleaved-2.bin", "wb") as b:
                for _ in range(48):
                    for f in (a, b):
                        f.write(rng.randbytes(24 << 10))
                        f.flush()
            tree_files = sorted(q for q in root.rglob("*") if q.is_file() and not q.name.startswith("interleaved"))
            for p in tree_files[1::3]:
                p.unlink()
            hashes = hash_tree(root)
    return path, hashes


def file_hashes_exfat(volume: str | Path) -> Hashes:
    """sha256 of every file on an exFAT volume (mounted read-only with exfat-fuse)."""
    volume = Path(volume)
    with tempfile.TemporaryDirectory(dir=volume.parent) as tmp:
        with mounted_exfat(volume, tmp, readonly=True) as root:
            return hash_tree(root)


def _dd_into(volume: Path, disk: Path, offset: int) -> None:
    _run("dd", f"if={volume}", f"of={disk}", "bs=1M", f"seek={offset}", "oflag=seek_bytes",
         "conv=notrunc,sparse", "status=none")


def _layout(disk: Path) -> list[dict]:
    """Partitions as sfdisk -J reports them (start/size in sectors)."""
    return json.loads(_run("sfdisk", "-J", disk))["partitiontable"]["partitions"]


# ---------------------------------------------------------------- disks

def make_gpt_disk(path: str | Path, size: int = 512 * MiB, *, esp_fat32: bool = True, msr: bool = True,
                  ntfs_tree: str | Path | None = None, seed: int = 1, tree_bytes: int = 8 * MiB,
                  esp_size: int = 100 * MiB, stale_free_space: bool = False) -> tuple[Path, dict[int, Hashes]]:
    """GPT disk: [ESP FAT32] + [MSR 16 MiB] + NTFS "Basic data" (rest); hashes per partition number."""
    path = Path(path)
    _new_file(path, size)
    args = ["sgdisk"]
    n = 0
    if esp_fat32:
        n += 1
        args += [f"-n{n}:2048:+{esp_size // 1024}K", f"-t{n}:ef00", f"-c{n}:EFI system partition"]
    if msr:
        n += 1
        args += [f"-n{n}:0:+16M", f"-t{n}:0c01", f"-c{n}:Microsoft reserved partition"]
    n += 1
    args += [f"-n{n}:0:0", f"-t{n}:0700", f"-c{n}:Basic data partition"]
    _run(*args, path)
    parts = _layout(path)
    hashes: dict[int, Hashes] = {}
    with tempfile.TemporaryDirectory(dir=path.parent) as tmp:
        for num, p in enumerate(parts, 1):
            start, psize = p["start"] * 512, p["size"] * 512
            vol = Path(tmp, f"p{num}.img")
            if esp_fat32 and num == 1:
                _v, hashes[num] = make_fat_volume(vol, psize, seed=seed + 100, part_start_sector=p["start"])
            elif num == n:
                _v, hashes[num] = make_ntfs_volume(vol, psize, ntfs_tree, seed=seed, tree_bytes=tree_bytes,
                                                   part_start_sector=p["start"], stale_free_space=stale_free_space)
            else:
                continue  # MSR: no file system
            _dd_into(vol, path, start)
            vol.unlink()
    return path, hashes


def make_mbr_disk(path: str | Path, size: int = 320 * MiB, *, seed: int = 3,
                  tree_bytes: int = 3 * MiB) -> tuple[Path, dict[int, Hashes]]:
    """MBR disk: 1 NTFS (active) 96 MiB, 2 FAT32 64 MiB, 3 extended (rest) with logical 5 FAT16 40 MiB and
    logical 6 NTFS 64 MiB."""
    path = Path(path)
    _new_file(path, size)
    script = ("label: dos\nlabel-id: 0x1234abcd\n"
              "start=2048, size=96MiB, type=7, bootable\n"
              "size=64MiB, type=c\n"
              "type=5\n"
              "size=40MiB, type=6\n"
              "size=64MiB, type=7\n")
    _run("sfdisk", "-q", path, stdin=script)
    hashes: dict[int, Hashes] = {}
    with tempfile.TemporaryDirectory(dir=path.parent) as tmp:
        for p in _layout(path):
            num = int(p["node"][len(str(path)):].lstrip("p"))  # sfdisk names partitions <disk><n>
            start, psize, ptype = p["start"] * 512, p["size"] * 512, p["type"]
            vol = Path(tmp, f"p{num}.img")
            if ptype == "7":
                _v, hashes[num] = make_ntfs_volume(vol, psize, seed=seed + num, tree_bytes=tree_bytes,
                                                   label=f"NTFS{num}", part_start_sector=p["start"])
            elif ptype in ("c", "6"):
                _v, hashes[num] = make_fat_volume(vol, psize, bits=32 if ptype == "c" else 16, seed=seed + num,
                                                  tree_bytes=tree_bytes // 2, label=f"FAT{num}",
                                                  part_start_sector=p["start"])
            else:
                continue
            _dd_into(vol, path, start)
            vol.unlink()
    return path, hashes


# ---------------------------------------------------------------- reading files back

def extract_partition(disk: str | Path, offset: int, size: int, out: str | Path) -> Path:
    """Copy ``size`` bytes at ``offset`` of ``disk`` to a new sparse file ``out``."""
    out = Path(out)
    _new_file(out, size)
    _run("dd", f"if={disk}", f"of={out}", "bs=1M", f"skip={offset}", f"count={size}",
         "iflag=skip_bytes,count_bytes", "conv=notrunc,sparse", "status=none")
    return out


def file_hashes_ntfs(volume: str | Path, offset: int = 0, size: int | None = None) -> Hashes:
    """sha256 of every file on an NTFS volume (at ``offset`` of a disk image): wimlib capture + apply."""
    volume = Path(volume)
    with tempfile.TemporaryDirectory(dir=volume.parent) as tmp:
        src = volume
        if offset or size is not None:
            src = extract_partition(volume, offset, size or volume.stat().st_size - offset, Path(tmp, "vol.img"))
        wim, out = Path(tmp, "vol.wim"), Path(tmp, "files")
        _run("wimlib-imagex", "capture", src, wim, "--compress=none", "--no-acls")
        _run("wimlib-imagex", "apply", wim, "1", out, "--no-acls")
        return hash_tree(out)


def file_hashes_fat(image: str | Path, offset: int = 0) -> Hashes:
    """sha256 of every file on a FAT volume (at ``offset`` of ``image``) via mtools."""
    image = Path(image)
    with tempfile.TemporaryDirectory(dir=image.parent) as tmp:
        out = Path(tmp, "files")
        out.mkdir()
        _run("mcopy", "-s", "-n", "-Q", "-i", f"{image}@@{offset}", "::/*", out)
        return hash_tree(out)


def modify_files(volume: str | Path, fs: str, *, offset: int = 0, size: int | None = None, seed: int = 7,
                 count: int = 3, new_bytes: int = 256 << 10) -> dict[str, str]:
    """Overwrite ``count`` files with new random content of ``new_bytes`` and add one new file.

    ``fs`` is "ntfs" (ntfscp) or "fat" (mcopy -o); returns {path: new sha256}.
    """
    volume = Path(volume)
    rng = random.Random(seed)
    changed: dict[str, str] = {}
    with tempfile.TemporaryDirectory(dir=volume.parent) as tmp:
        if fs == "ntfs":
            vol = volume
            if offset or size is not None:
                vol = extract_partition(volume, offset, size or volume.stat().st_size - offset, Path(tmp, "v.img"))
            names = sorted(n for n in file_hashes_ntfs(vol) if "/" in n)
        else:
            names = sorted(file_hashes_fat(volume, offset))
        targets = rng.sample(names, min(count, len(names))) + [f"{names[0].rsplit('/', 1)[0]}/added{seed}.bin"]
        for name in targets:
            data = rng.randbytes(new_bytes)
            src = Path(tmp, "new.bin")
            src.write_bytes(data)
            if fs == "ntfs":
                _run("ntfscp", "-f", "-q", vol, src, "/" + name)
            else:
                _run("mcopy", "-o", "-Q", "-i", f"{volume}@@{offset}", src, "::/" + name)
            changed[name] = hashlib.sha256(data).hexdigest()
        if fs == "ntfs" and vol != volume:
            _dd_into(vol, volume, offset)
    return changed


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("kind", choices=["gpt", "mbr", "ntfs", "fat32", "exfat"])
    ap.add_argument("path")
    ap.add_argument("--size-mib", type=int)
    ap.add_argument("--tree-mib", type=float, default=8)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--stale", action="store_true", help="fill free space with stale data (NTFS, GPT)")
    ap.add_argument("--hashes", help="write expected file hashes (JSON) here")
    a = ap.parse_args()
    tb = int(a.tree_mib * MiB)
    if a.kind == "gpt":
        _p, h = make_gpt_disk(a.path, (a.size_mib or 512) * MiB, seed=a.seed, tree_bytes=tb,
                              stale_free_space=a.stale)
    elif a.kind == "mbr":
        _p, h = make_mbr_disk(a.path, (a.size_mib or 320) * MiB, seed=a.seed, tree_bytes=tb)
    elif a.kind == "ntfs":
        _p, h = make_ntfs_volume(a.path, (a.size_mib or 256) * MiB, seed=a.seed, tree_bytes=tb,
                                 stale_free_space=a.stale)
    elif a.kind == "fat32":
        _p, h = make_fat_volume(a.path, (a.size_mib or 64) * MiB, seed=a.seed, tree_bytes=tb)
    else:
        _p, h = make_exfat_files(a.path, (a.size_mib or 64) * MiB, seed=a.seed, tree_bytes=tb)
    if a.hashes:
        Path(a.hashes).write_text(json.dumps(h, indent=1, ensure_ascii=False))
    print(a.path)


if __name__ == "__main__":
    main()

"""``rescuekit build --base linux``: a real rescue disc from Debian 12 packages (no Windows files).

Pipeline: resolve + fetch the packages (builder.linux_base; verified by apt, cached per user) and the runtime's
manylinux wheels -> unpack into a staging root -> trim (docs, unused stdlib, kernel modules outside the needed
closure) -> check every shipped ELF's libraries are present -> precompile .pyc with the target interpreter ->
initramfs (builder.initramfs) -> GRUB images (BIOS: grub-mkimage i386-pc-eltorito from grub-pc-bin's modules;
UEFI: Debian's signed shim + GRUB in a FAT image) -> the shared pycdlib mastering (builder.iso) with a boot info
table for the BIOS image only.  Everything temporary lives next to the output and is removed; the ISO appears
only when complete (atomic rename), with its lock file next to it.
"""
from __future__ import annotations

import dataclasses
import json
import os
import shutil
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import jinja2

from builder import bzimage, elf, initramfs, iso, linux_base, tools, wheels
from builder.config import RuntimeConfig
from builder.files import sha256_file
from builder.overlay import build_time
from builder.render import render
from rescuekit import __version__
from rescuekit.errors import RescueError, UsageError

TEMPLATES = Path(__file__).resolve().parent / "linux_templates"
ISO_KERNEL = "boot/vmlinuz"  # Debian's signed kernel: UEFI (Secure Boot) and the BIOS fallback entry
ISO_BIOS_KERNEL = "boot/vmlinuz.bios"  # the same kernel without its xz decompressor, lzop-wrapped (bzimage.py)
ISO_INITRD = "boot/initrd.img"
ISO_CONFIG_INITRD = "boot/rkconfig.img"  # a second, tiny cpio: the build's settings (the kernel merges both)
ISO_PAYLOAD = "rescuekit/root.sfs"  # the root file system (squashfs), read by the kernel from the medium on demand
ISO_PAYLOAD_ID = "rescuekit/payload.id"  # its id (SHA-256 prefix): stage 1 finds the medium by it
PAYLOAD_ID_PATH = "etc/rescuekit/payload.id"  # the same id in the initramfs
STAGE2 = "usr/lib/rescuekit/stage2"
ISO_GRUB_CFG = "boot/grub/grub.cfg"
ISO_MARKER = ".disk/info"  # what both GRUBs search for (Debian's signed GRUB looks for exactly this file)
BUILD_INFO_PATH = "rescuekit/build.json"
LOCK_PATH = "rescuekit/packages.lock.json"
SITE = "usr/lib/python3/dist-packages"  # on Debian's sys.path already
CONFIG_PATH = "etc/rescuekit/config.toml"
MEDIUM_LABEL_PATH = "etc/rescuekit/medium-label"  # rescuekit.boot: the disc's own volume is never a target
# What the cached main initramfs depends on besides the lock (packages + wheels) and the runtime package.
_CACHE_INPUTS = ["linux_build.py", "initramfs.py", "elf.py", "linux_base.py", "bzimage.py", "asm",
                 "linux_templates"]
MKSQUASHFS = "mksquashfs"  # squashfs-tools
KERNEL_CMDLINE = "console=tty0 console=ttyS0,115200 loglevel=4 cryptomgr.notests"
GRUB_TIMEOUT = 1  # seconds; any key stops it (e edits the command line)
PAD_SECTORS = 150  # 300 KiB, as xorriso pads

# Kernel modules loaded at boot (their depends= closure comes along); built-in ones are skipped.  EARLY ones are
# also in the small initramfs: what finding and mounting the boot medium needs (CD/SATA/USB/virtio controllers,
# ISO 9660 and FAT, loop + squashfs + overlay); stage 2 loads the rest from the medium's root file system.
EARLY_MODULES = [
    "virtio_pci", "virtio_blk", "virtio_scsi", "ahci", "ata_piix", "sd_mod", "sr_mod", "isofs",
    "xhci_pci", "ehci_pci", "uhci_hcd", "ohci_pci", "usb_storage", "uas",
    "vfat", "nls_cp437", "nls_ascii", "nls_iso8859_1", "nls_utf8", "loop", "squashfs", "overlay",
]
MODULES = [*EARLY_MODULES, "nvme", "usbhid", "hid_generic", "evdev", "exfat", "fuse"]
LINUX_REQUIREMENTS = ["click>=8.1", "rich>=13", "zstandard>=0.22", "blake3>=0.4", "cryptography>=42"]
LINUX_DISTS = ["click", "rich", "zstandard", "blake3", "cryptography", "cffi", "pycparser"]
# rich's dependencies for Markdown and syntax highlighting (pygments alone is 8.6 MiB): the runtime uses Console,
# Table and markup only, whose imports never touch them (rich imports pygments lazily, in syntax/traceback).
LINUX_SKIP_DISTS = {"pygments", "markdown-it-py", "mdurl"}
# Unused stdlib parts (and extensions whose libraries we do not ship).
STDLIB_DROP = ["test", "idlelib", "tkinter", "turtledemo", "ensurepip", "lib2to3", "pydoc_data", "distutils",
               "config-3.11-x86_64-linux-gnu", "unittest/test", "sqlite3/test", "ctypes/test"]
# ntfsdecrypt needs GnuTLS + libgcrypt (2 MB more) for EFS files, which imaging never reads.
# gconv: iconv's code page modules (8 MB; Python has its own codecs); engines/ossl-modules: OpenSSL plug-ins.
DROP = ["usr/share", "boot", "usr/bin/ntfsdecrypt", "usr/include", "usr/lib/pkgconfig",
        "usr/lib/x86_64-linux-gnu/gconv", "usr/lib/x86_64-linux-gnu/engines-3", "usr/lib/x86_64-linux-gnu/ossl-modules"]
DYNLOAD_DROP = ("_dbm", "nis", "_curses_panel", "_tkinter", "_gdbm")
BOOT_FILES = {  # boot package file -> staging name
    "usr/lib/shim/shimx64.efi.signed": "BOOTX64.EFI",
    "usr/lib/grub/x86_64-efi-signed/gcdx64.efi.signed": "grubx64.efi",
}
GRUB_BIOS_MODULES = ["biosdisk", "iso9660", "part_msdos", "part_gpt", "search", "search_fs_file", "configfile",
                     "normal", "linux", "serial", "terminal", "echo", "test", "sleep", "halt", "reboot", "ls", "cat",
                     "lzopio"]  # lzopio: inflates vmlinuz.bios as `linux` reads it


@dataclass
class LinuxBuildOptions:
    output: Path
    label: str = iso.DEFAULT_LABEL
    config: RuntimeConfig = field(default_factory=RuntimeConfig)
    lock: Path | None = None
    progress: bool | None = None


@dataclass
class LinuxBuildResult:
    output: Path
    size: int
    lock_file: Path
    kernel: str
    packages: int
    wheels: int
    initramfs_raw: int
    initramfs: int
    payload_raw: int
    payload: int
    bios_kernel: int  # bytes of /boot/vmlinuz.bios (lzop)
    boot_entries: list[str]
    notes: list[str]

    def as_dict(self) -> dict:
        return {k: str(v) if isinstance(v, Path) else v for k, v in self.__dict__.items()}


def _template(name: str, **values: object) -> str:
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(TEMPLATES)), undefined=jinja2.StrictUndefined,
                             autoescape=False, keep_trailing_newline=True)
    return env.get_template(name + ".j2").render(**values)


# ---- wheels -----------------------------------------------------------------------------------------------------

def linux_wheels(locked: list[dict] | None) -> list[wheels.Wheel]:
    """manylinux wheels for Debian's CPython 3.11 from the per-user cache (pip download); checked against the lock."""
    xy = linux_base.PYTHON_XY
    dest = wheels.wheel_cache_dir(xy).with_name(f"cp{xy.replace('.', '')}-{wheels.LINUX}")
    reqs = [f"{wheels.normalize(w['filename'].split('-')[0])}=={w['filename'].split('-')[1]}" for w in locked] \
        if locked else LINUX_REQUIREMENTS
    if locked:
        have = {p.name for p in dest.glob("*.whl")} if dest.is_dir() else set()
        if not all(w["filename"] in have for w in locked):
            _pip(xy, dest, reqs)
        chosen = []
        for w in locked:
            if wheels.normalize(w["filename"].split("-")[0]) in LINUX_SKIP_DISTS:
                continue  # an older lock: the disc no longer ships them
            p = dest / w["filename"]
            if not p.is_file():
                raise RescueError(f"cannot fetch locked wheel {w['filename']} from PyPI")
            digest = sha256_file(p)
            if digest != w["sha256"]:
                raise RescueError(f"wheel {w['filename']}: SHA-256 {digest} does not match the locked {w['sha256']}")
            chosen.append(wheels.parse_wheel(p))
        return chosen
    wheels.download_wheels(xy, dest, reqs, wheels.LINUX, LINUX_DISTS)
    return [w for w in wheels.select_wheels(dest, xy, LINUX_DISTS, wheels.LINUX) if w.name not in LINUX_SKIP_DISTS]


def _pip(xy: str, dest: Path, reqs: list[str]) -> None:
    tmp = Path(tempfile.mkdtemp(prefix=".download-", dir=dest))
    try:
        tools.run([sys.executable, "-m", "pip", "download", "--quiet", "--disable-pip-version-check", "--no-deps",
                   "--only-binary=:all:", *wheels._pip_platforms(wheels.LINUX), "--python-version", xy,
                   "--implementation", "cp", "-d", str(tmp), *reqs], "download the locked wheels")
        for whl in tmp.glob("*.whl"):
            os.replace(whl, dest / whl.name)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


# ---- staging root -----------------------------------------------------------------------------------------------

def _kernel_version(root: Path) -> str:
    mods = sorted((root / "lib/modules").iterdir())
    if len(mods) != 1:
        raise RescueError(f"expected one kernel in the staging root, found {[m.name for m in mods]}")
    return mods[0].name


def stage_modules(root: Path, kver: str, wanted: list[str] = MODULES, early: list[str] = EARLY_MODULES) -> list[str]:
    """Keep only ``wanted`` and what they depend on; write the load order (all: modules.load; what ``early`` needs:
    modules.early, in the same order) and modules.dep. Returns the early modules' paths below lib/modules/KVER."""
    moddir = root / "lib/modules" / kver
    paths = {p.name.split(".ko")[0].replace("-", "_"): p for p in (moddir / "kernel").rglob("*.ko")}
    builtin = {Path(line).name.split(".ko")[0].replace("-", "_")
               for line in (moddir / "modules.builtin").read_text().split()}
    order: list[str] = []
    deps: dict[str, list[str]] = {}

    def visit(name: str, chain: tuple[str, ...]) -> None:
        if name in order or name in builtin:
            return
        if name not in paths:
            raise RescueError(f"kernel module {name} not in the kernel package (wanted by {' <- '.join(chain)})")
        if name in chain:
            return
        hard, soft = elf.module_deps(paths[name])
        soft = [d for d in soft if d.replace("-", "_") in paths]  # an alias or an absent optional module
        deps[name] = [d.replace("-", "_") for d in hard + soft]
        for d in deps[name]:
            visit(d, chain + (name,))
        order.append(name)

    for m in wanted:
        visit(m, ("boot list",))
    keep = {paths[m] for m in order}
    for p in list((moddir / "kernel").rglob("*.ko")):
        if p not in keep:
            p.unlink()
    rel = {m: paths[m].relative_to(moddir).as_posix() for m in order}

    def closure(m: str, acc: list[str]) -> list[str]:
        for d in deps[m]:
            if d in rel and rel[d] not in acc:
                acc.append(rel[d])
                closure(d, acc)
        return acc

    (moddir / "modules.dep").write_text("".join(f"{rel[m]}: {' '.join(closure(m, []))}\n" for m in order))
    need: set[str] = set()

    def needs(m: str) -> None:
        if m in rel and m not in need:
            need.add(m)
            for d in deps[m]:
                needs(d)

    for m in early:
        needs(m)
    early_order = [rel[m] for m in order if m in need]
    (root / "etc/rescuekit").mkdir(parents=True, exist_ok=True)
    (root / "etc/rescuekit/modules.load").write_text("".join(f"{rel[m]}\n" for m in order))
    (root / "etc/rescuekit/modules.early").write_text("".join(f"{r}\n" for r in early_order))
    return early_order


def trim(root: Path) -> None:
    """Drop what a rescue shell never needs: docs, man pages, locales, unused stdlib parts, empty folders."""
    for rel in DROP:
        p = root / rel
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p)
        elif p.exists() or p.is_symlink():
            p.unlink()
    std = root / "usr/lib/python3.11"
    for rel in STDLIB_DROP:
        shutil.rmtree(std / rel, ignore_errors=True)
    for p in (std / "lib-dynload").glob("*.so"):
        if p.name.split(".")[0] in DYNLOAD_DROP:
            p.unlink()
    for p in std.rglob("__pycache__"):
        shutil.rmtree(p, ignore_errors=True)
    for p in root.rglob("*.a"):
        p.unlink()


def check_libraries(root: Path) -> None:
    """Every DT_NEEDED of every shipped ELF file is shipped too (else: which Debian package to add)."""
    libdirs = [root / "lib/x86_64-linux-gnu", root / "usr/lib/x86_64-linux-gnu", root / "lib64"]
    have = {p.name for d in libdirs if d.is_dir() for p in d.iterdir()}
    for p in sorted(root.rglob("*")):
        if p.is_symlink() or not p.is_file() or p.suffix == ".ko" or not elf.is_elf(p):
            continue
        local = {q.name for q in p.parent.iterdir()} | {q.name for d in p.parent.parent.glob("*.libs")
                                                           for q in d.iterdir()}
        for lib in elf.needed(p):
            if lib not in have and lib not in local:
                raise RescueError(f"{p.relative_to(root)} needs {lib}, which no package of the Linux base ships "
                                  "(add its Debian package to builder/linux_base.py)")


def compile_python(root: Path) -> None:
    """Precompile the stdlib and site-packages with the TARGET interpreter (run through its own loader), hashes
    unchecked so the initramfs's fixed mtimes never force a recompile at boot."""
    loader = root / "lib64/ld-linux-x86-64.so.2"
    libpath = f"{root}/lib/x86_64-linux-gnu:{root}/usr/lib/x86_64-linux-gnu"
    # PYTHONDONTWRITEBYTECODE and -f: the interpreter running compileall would otherwise leave timestamp .pyc for
    # the modules it imports itself (enum, re, functools, pathlib, ...), compileall would skip those as up to date,
    # and the fixed mtimes of the root image would make them stale: every boot recompiled ~70 modules from source.
    env = {"PYTHONHOME": str(root / "usr"), "PATH": "/usr/bin:/bin", "LC_ALL": "C", "PYTHONDONTWRITEBYTECODE": "1"}
    tools.run([str(loader), "--library-path", libpath, str(root / "usr/bin/python3.11"), "-m", "compileall", "-q",
               "-f", "-j", "0", "--invalidation-mode", "unchecked-hash", "-s", str(root), "-p", "/",
               str(root / "usr/lib/python3.11"), str(root / SITE)], "precompile the runtime", env=env)


def busybox_links(root: Path) -> list[str]:
    """Symlinks to /bin/busybox in ``root`` for its applets (asked from the static binary itself) that no package
    ships. Returns their paths."""
    out = tools.run([str(root / "bin/busybox"), "--list-full"], "list its applets").stdout.split()
    links = []
    for path in out:
        if path.startswith(("usr/bin/", "usr/sbin/", "bin/", "sbin/")) and not (root / path).is_symlink() \
                and not (root / path).exists():
            (root / path).parent.mkdir(parents=True, exist_ok=True)
            (root / path).symlink_to("/bin/busybox")
            links.append(path)
    return links


def stage_root(root: Path, debs: dict[str, Path], kernel_pkg: str,
               wheel_list: list[wheels.Wheel]) -> tuple[str, list[str], Path]:
    """Unpack and assemble the root file system; return (kernel version, early modules' paths, vmlinuz)."""
    for name in [kernel_pkg, *linux_base.RUNTIME_PACKAGES]:
        linux_base.extract(debs[name], root)
    kver = _kernel_version(root)
    vmlinuz = root.parent / "vmlinuz"
    shutil.move(root / "boot" / f"vmlinuz-{kver}", vmlinuz)
    early = stage_modules(root, kver)
    trim(root)
    site = root / SITE
    site.mkdir(parents=True, exist_ok=True)
    for w in wheel_list:
        wheels.install_wheel(w, site)
    for p in [*site.glob("zstandard/_cffi*.so"), *site.glob("zstandard/backend_cffi.py")]:
        p.unlink()  # the C backend is used
    # manylinux wheels ship unstripped extensions (zstandard's C backend: 11.6 MB -> 1 MB)
    sos = [str(p) for p in site.rglob("*.so") if p.is_file()]
    if sos:
        tools.run(["strip", "--strip-unneeded", *sos], "strip the wheels' extensions")
    wheels.copy_runtime_package(site)
    for rel, text, mode in (
        (STAGE2, _template("stage2", tool_version=__version__), 0o755),
        ("etc/inittab", _template("inittab"), 0o644),
        ("usr/bin/rk-consoles", _template("rk-consoles"), 0o755),
        ("etc/passwd", "root:x:0:0:root:/root:/bin/sh\n", 0o644),
        ("etc/group", "root:x:0:\n", 0o644),
    ):
        target = root / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
        target.chmod(mode)
    for d in ("proc", "sys", "dev", "run", "tmp", "root", "mnt"):
        (root / d).mkdir(exist_ok=True)
    check_libraries(root)
    compile_python(root)
    busybox_links(root)
    return kver, early, vmlinuz


def squashfs(root: Path, dest: Path, epoch: int) -> None:
    """The root file system image the kernel reads from the medium on demand: zstd squashfs, every file owned by
    root, fixed times (mksquashfs 4.5 writes the same image for the same tree)."""
    tools.run([MKSQUASHFS, str(root), str(dest), "-noappend", "-quiet", "-no-progress", "-comp", "zstd",
               "-all-root", "-no-xattrs", "-mkfs-time", str(epoch), "-all-time", str(epoch)],
              "make the root file system image")


def early_initramfs(root: Path, kver: str, early: list[str], payload_id: str) -> list[initramfs.Entry]:
    """The small initramfs: busybox, stage 1's /init, the drivers that find and mount the medium, the payload id."""
    out = [*initramfs.DEVICE_NODES]
    for d in ("bin", "sbin", "usr", "usr/bin", "usr/sbin", "etc", "etc/rescuekit", "proc", "sys", "dev", "run",
              "tmp", "newroot", "lib", "lib/modules", f"lib/modules/{kver}"):
        out.append(initramfs.directory(d))
    out.append(initramfs.Entry("bin/busybox", 0o100755, host=root / "bin/busybox"))
    applets = tools.run([str(root / "bin/busybox"), "--list-full"], "list its applets").stdout.split()
    out += [initramfs.Entry(p, 0o120777, link="/bin/busybox") for p in applets if p != "bin/busybox"]
    init = _template("init", tool_version=__version__, payload_path=ISO_PAYLOAD,
                     payload_id_path=ISO_PAYLOAD_ID)
    out.append(initramfs.file_bytes("init", init.encode(), 0o755))
    out.append(initramfs.file_bytes(PAYLOAD_ID_PATH, (payload_id + "\n").encode()))
    out.append(initramfs.file_bytes("etc/rescuekit/modules.early", "".join(f"{m}\n" for m in early).encode()))
    dirs = sorted({str(Path(m).parent) for m in early} | {str(p) for m in early for p in Path(m).parents})
    out += [initramfs.directory(f"lib/modules/{kver}/{d}") for d in dirs if d != "."]
    out += [initramfs.Entry(f"lib/modules/{kver}/{m}", 0o100644, host=root / "lib/modules" / kver / m) for m in early]
    # modprobe's view of them: their lines of modules.dep (an early module depends only on early ones)
    wanted = set(early)
    dep = [line for line in (root / "lib/modules" / kver / "modules.dep").read_text().splitlines()
           if line.split(":", 1)[0] in wanted]
    out.append(initramfs.file_bytes(f"lib/modules/{kver}/modules.dep", "".join(f"{x}\n" for x in dep).encode()))
    return out


def _cache_key(lock_doc: dict) -> str:
    """SHA-256 over everything that goes into the main initramfs: the lock, the runtime package, our code."""
    import hashlib

    import rescuekit

    h = hashlib.sha256(json.dumps(lock_doc, sort_keys=True).encode() + __version__.encode())
    here = Path(__file__).resolve().parent
    pkg = Path(rescuekit.__file__).resolve().parent
    paths = [p for name in _CACHE_INPUTS for p in ([here / name] if (here / name).is_file()
                                                  else sorted((here / name).rglob("*")))]
    paths += sorted(p for p in pkg.rglob("*") if "__pycache__" not in p.parts)
    for p in paths:
        if p.is_file():
            h.update(p.name.encode() + b"\0" + p.read_bytes())
    return h.hexdigest()


@dataclass
class LinuxParts:
    """The cached, settings-independent parts of a disc: kernel, small initramfs, root file system image."""

    kernel: str
    vmlinuz: Path
    bios_kernel: Path
    initrd: Path
    payload: Path
    meta: dict


def main_parts(staging: Path, debs: dict[str, Path], kernel_pkg: str, wheel_list: list[wheels.Wheel],
               lock_doc: dict, epoch: int | None) -> LinuxParts:
    """Kernel, initramfs and root image: from the per-user cache when the same inputs made them before (a rebuild
    with other settings then takes seconds), else built and cached."""
    cache = linux_base.cache_dir().parent / "initramfs" / f"{_cache_key(lock_doc)}-{epoch or 0}"
    meta = cache / "meta.json"
    if meta.is_file():
        m = json.loads(meta.read_text())
        return LinuxParts(m["kernel"], cache / "vmlinuz", cache / "vmlinuz.bios", cache / "initrd.img",
                          cache / "root.sfs", m)
    root = staging / "root"
    kver, early, vmlinuz = stage_root(root, debs, kernel_pkg, wheel_list)
    bios_kernel = staging / "vmlinuz.bios"
    bzimage.write_bios_kernel(vmlinuz, bios_kernel, mtime=epoch or 0)
    sfs = staging / "root.sfs"
    squashfs(root, sfs, epoch or 0)
    digest = sha256_file(sfs)
    initrd = staging / "initrd.img"
    # level 19: 10% smaller than 12 (what GRUB reads through BIOS disk calls), a few seconds once, same unpack time
    raw, packed = initramfs.write_initramfs(early_initramfs(root, kver, early, digest[:16]), initrd,
                                            mtime=epoch or 0, level=19)
    root_raw = sum(p.lstat().st_size for p in root.rglob("*") if p.is_file() and not p.is_symlink())
    m = {"kernel": kver, "raw": raw, "bytes": packed, "payload": {"bytes": sfs.stat().st_size, "raw_bytes": root_raw,
                                                                   "sha256": digest, "id": digest[:16]}}
    cache.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".new-", dir=cache.parent))
    for src, name in ((vmlinuz, "vmlinuz"), (bios_kernel, "vmlinuz.bios"), (initrd, "initrd.img"),
                      (sfs, "root.sfs")):
        shutil.copyfile(src, tmp / name)
    (tmp / "meta.json").write_text(json.dumps(m))
    try:
        os.rename(tmp, cache)  # atomic: a concurrent build sees all of it or nothing
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)  # another build cached the same one first
    return LinuxParts(kver, vmlinuz, bios_kernel, initrd, sfs, m)


# ---- boot images -------------------------------------------------------------------------------------------------

def grub_bios_image(boot_root: Path, work: Path) -> Path:
    """GRUB's El Torito image (cdboot + core) with an early config that finds the disc by /.disk/info."""
    early = work / "early.cfg"
    early.write_text(_template("early.cfg"))
    out = work / "grub-eltorito.img"
    tools.run(["grub-mkimage", "-O", "i386-pc-eltorito", "-d", str(boot_root / "usr/lib/grub/i386-pc"),
               "-p", "/boot/grub", "-c", str(early), "-o", str(out), *GRUB_BIOS_MODULES], "make the BIOS GRUB image")
    return out


def efi_image(boot_root: Path, work: Path) -> Path:
    """A FAT image with EFI/BOOT/BOOTX64.EFI = Debian's Microsoft-signed shim and grubx64.efi = Debian-signed GRUB."""
    files = [(boot_root / src, dst) for src, dst in BOOT_FILES.items()]
    kib = sum(p.stat().st_size for p, _ in files) // 1024 + 256
    img = work / "efiboot.img"
    tools.run(["mkfs.vfat", "-C", "-n", "RKEFI", "-i", "524b4546", str(img), str(kib)], "make the UEFI boot image")
    env = dict(os.environ, MTOOLS_SKIP_CHECK="1")
    tools.run(["mmd", "-i", str(img), "::/EFI", "::/EFI/BOOT"], "make folders in the UEFI boot image", env=env)
    for src, dst in files:
        tools.run(["mcopy", "-i", str(img), str(src), f"::/EFI/BOOT/{dst}"], "copy into the UEFI boot image", env=env)
    return img


# ---- the build --------------------------------------------------------------------------------------------------

def build_linux_iso(opts: LinuxBuildOptions) -> LinuxBuildResult:
    output = Path(opts.output)
    if output.is_dir():
        raise UsageError(f"output is a folder, give a file name: {output}")
    if not output.parent.is_dir():
        raise UsageError(f"output folder does not exist: {output.parent}")
    label = iso.normalize_label(opts.label)
    epoch = iso.source_date_epoch()
    cfg = dataclasses.replace(opts.config, build_time=opts.config.build_time or build_time(epoch))
    cfg.validated()
    locked_pkgs, locked_wheels = linux_base.read_lock(opts.lock) if opts.lock else (None, None)
    packages = linux_base.resolve(locked_pkgs)
    debs = linux_base.fetch(packages)
    wheel_list = linux_wheels(locked_wheels)
    kernel_pkg = next(p.name for p in packages if p.name.startswith("linux-image-"))
    wheel_lock = [{"filename": w.filename, "sha256": sha256_file(w.path)} for w in wheel_list]
    lock_doc = linux_base.lock_document(packages, wheel_lock)
    lock_file = output.with_name(output.name + ".lock.json")

    staging = Path(tempfile.mkdtemp(prefix=f".{output.name}.build-", dir=output.parent))
    try:
        boot_root = staging / "boot"
        for name in linux_base.BOOT_PACKAGES:
            linux_base.extract(debs[name], boot_root)
        parts = main_parts(staging, debs, kernel_pkg, wheel_list, lock_doc, epoch)
        kver, raw, packed, payload = parts.kernel, parts.meta["raw"], parts.meta["bytes"], parts.meta["payload"]
        bios_bytes = parts.bios_kernel.stat().st_size
        conf = staging / "rkconfig.img"
        with open(conf, "wb") as f:
            initramfs.write_cpio([
                initramfs.directory("etc"), initramfs.directory("etc/rescuekit"),
                initramfs.file_bytes(CONFIG_PATH, render("rescuekit/config.toml", table=cfg.as_toml_table()).encode()),
                initramfs.file_bytes(MEDIUM_LABEL_PATH, (label + "\n").encode()),
            ], f, mtime=epoch or 0)
        info = {
            "tool": "rescuekit", "version": __version__, "base": "linux", "built": cfg.build_time,
            "label": label, "kernel": kver, "kernel_cmdline": KERNEL_CMDLINE,
            "initramfs": {"raw_bytes": raw, "bytes": packed, "sha256": sha256_file(parts.initrd)},
            # what BIOS boots (docs/linux-base.md, "The BIOS kernel image"): Debian's vmlinux without the decompressor
            "bios_kernel": {"path": ISO_BIOS_KERNEL, "format": "lzop", "bytes": bios_bytes,
                            "sha256": sha256_file(parts.bios_kernel)},
            "payload": {"path": ISO_PAYLOAD, "format": "squashfs", "compression": "zstd", **payload},
            "packages": lock_doc["packages"], "wheels": wheel_lock,
        }
        extra = {
            ISO_MARKER: f"rescuekit {__version__} Linux-based rescue disc (Debian 12 packages)\n".encode(),
            ISO_GRUB_CFG: _template("grub.cfg", tool_version=__version__, timeout=GRUB_TIMEOUT,
                                    cmdline=KERNEL_CMDLINE).encode(),
            BUILD_INFO_PATH: (json.dumps(info, indent=2, sort_keys=True) + "\n").encode(),
            LOCK_PATH: (json.dumps(lock_doc, indent=1, sort_keys=True) + "\n").encode(),
            ISO_PAYLOAD_ID: (payload["id"] + "\n").encode(),
        }
        files = {ISO_KERNEL: parts.vmlinuz, ISO_BIOS_KERNEL: parts.bios_kernel, ISO_INITRD: parts.initrd,
                 ISO_CONFIG_INITRD: conf, ISO_PAYLOAD: parts.payload}
        res = iso.master_iso(files, output, bios_image=grub_bios_image(boot_root, staging),
                             efi_image=efi_image(boot_root, staging), label=label, extra=extra,
                             progress=opts.progress, bios=iso.GRUB_BIOS, boot_check=False, pad_sectors=PAD_SECTORS)
        linux_base.write_lock(lock_file, lock_doc)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return LinuxBuildResult(output=output, size=res.size, lock_file=lock_file, kernel=kver, packages=len(packages),
                            wheels=len(wheel_list), initramfs_raw=raw, initramfs=packed,
                            payload_raw=payload["raw_bytes"], payload=payload["bytes"],
                            bios_kernel=bios_bytes,
                            boot_entries=res.boot_entries, notes=res.notes)

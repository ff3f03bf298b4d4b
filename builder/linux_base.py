"""Debian packages of the Linux-based rescue base: resolve, fetch (verified by apt), cache, lock.

No root-only step: ``apt-get download`` (apt checks each .deb against the SHA-256 in the signed archive indexes the
host's apt already trusts) into a per-user cache, ``dpkg-deb -x`` into a staging tree.  The default build takes the
current candidate of every package (Debian mirrors drop superseded versions, so nothing older is pinned in code); a
lock file (JSON, written next to every ISO and copied into it) names every package, version and SHA-256, and
``--lock FILE`` reproduces exactly that set while the mirror still has it.  A package that cannot be fetched, or a
locked version/hash that does not match, is a one-line error before anything is mastered.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from builder.files import sha256_file
from rescuekit.errors import RescueError, UsageError

LOCK_FORMAT = 1
ARCH = "amd64"
KERNEL_META = "linux-image-amd64"  # depends on the current linux-image-6.1.0-NN-amd64
PYTHON_XY = "3.11"

# What goes into the initramfs (libraries: what the shipped binaries' DT_NEEDED entries name; the build checks it).
RUNTIME_PACKAGES = [
    "busybox-static",
    "python3.11-minimal", "libpython3.11-minimal", "libpython3.11-stdlib",
    "libc6", "libgcc-s1", "zlib1g", "libexpat1", "libssl3", "libbz2-1.0", "libcrypt1", "libffi8", "liblzma5",
    "libncursesw6", "libtinfo6", "libreadline8", "libsqlite3-0", "libuuid1",
    "ntfs-3g", "libntfs-3g89",  # NTFS as a file system (Debian 12's kernel has no NTFS3); uses the fuse module
]
# Boot loaders: Debian-signed shim + GRUB for UEFI (Secure Boot), GRUB's i386-pc modules for the BIOS image.
BOOT_PACKAGES = ["shim-signed", "grub-efi-amd64-signed", "grub-pc-bin"]

_NAME = re.compile(r"^[a-z0-9][a-z0-9+.-]+$")
_VERSION = re.compile(r"^[A-Za-z0-9.+~:-]+$")


@dataclass(frozen=True)
class Package:
    name: str
    version: str
    sha256: str
    arch: str = ARCH

    @property
    def filename(self) -> str:
        return f"{self.name}_{self.version.replace(':', '%3a')}_{self.arch}.deb"

    def as_dict(self) -> dict:
        return {"name": self.name, "version": self.version, "arch": self.arch, "sha256": self.sha256}


def cache_dir() -> Path:
    from builder.python_embed import cache_dir as base

    return base() / "debian" / "debs"


def _apt(args: list[str], what: str, cwd: Path | None = None) -> str:
    exe = args[0]
    if shutil.which(exe) is None:
        raise RescueError(f"{exe} not found: the Linux base is built from Debian packages (run on Debian/Ubuntu)")
    env = dict(os.environ, LC_ALL="C")
    proc = subprocess.run(args, capture_output=True, text=True, cwd=cwd, env=env, check=False)
    if proc.returncode != 0:
        lines = [ln for ln in (proc.stderr + proc.stdout).splitlines() if ln.strip() and not ln.startswith("W:")]
        raise RescueError(f"{what}: {lines[-1].strip() if lines else f'exit {proc.returncode}'}")
    return proc.stdout


def candidates(names: list[str]) -> list[Package]:
    """The versions apt would install now, with the SHA-256s from the signed index (one apt-cache run)."""
    found: dict[str, Package] = {}
    for name in names:  # apt-cache fails on the first unknown name: ask once per name only if the batch fails
        if name in found:
            continue
        try:
            out = _apt(["apt-cache", "show", "--no-all-versions", *[f"{n}:{ARCH}" for n in names if n not in found]],
                       "apt-cache")
        except RescueError:
            out = _apt(["apt-cache", "show", "--no-all-versions", f"{name}:{ARCH}"],
                       f"cannot fetch Debian package {name}")
        for stanza in out.split("\n\n"):
            fields = dict(re.findall(r"^([A-Za-z0-9-]+): ?(.*)$", stanza, re.M))
            if {"Package", "Version", "SHA256"} <= set(fields):
                found.setdefault(fields["Package"], Package(fields["Package"], fields["Version"], fields["SHA256"]))
        if name not in found:
            raise RescueError(f"cannot fetch Debian package {name}: apt-cache shows no version (run apt-get update)")
    return [found[n] for n in names]


def kernel_package() -> str:
    """The versioned kernel image package the meta package points at now (e.g. linux-image-6.1.0-57-amd64)."""
    out = _apt(["apt-cache", "show", "--no-all-versions", f"{KERNEL_META}:{ARCH}"],
               f"cannot fetch Debian package {KERNEL_META}")
    m = re.search(r"^Depends:.*?\b(linux-image-[0-9][^ ,]*-amd64)\b", out, re.M)
    if not m:
        raise RescueError(f"cannot tell the kernel package from {KERNEL_META}'s Depends")
    return m.group(1)


def resolve(lock: list[Package] | None = None) -> list[Package]:
    """Every package of the base: the lock's set, or the current candidates."""
    if lock is not None:
        return lock
    names = [kernel_package(), *RUNTIME_PACKAGES, *BOOT_PACKAGES]
    return candidates(names)


def fetch(packages: list[Package], dest: Path | None = None) -> dict[str, Path]:
    """{name: cached .deb} for ``packages``; downloads what the cache lacks with one ``apt-get download``.

    apt verifies each download against the signed index; we then check the file against the recorded SHA-256
    (the index's or the lock's), so a cached file can never stand in for another version.
    """
    dest = Path(dest) if dest is not None else cache_dir()
    dest.mkdir(parents=True, exist_ok=True)
    have: dict[str, Path] = {}
    todo: list[Package] = []
    for p in packages:
        f = dest / p.filename
        if f.is_file() and sha256_file(f) == p.sha256:
            have[p.name] = f
        else:
            todo.append(p)
    if todo:
        # a private folder first: a concurrent build never sees a half-downloaded .deb under its final name
        tmp = Path(tempfile.mkdtemp(prefix=".apt-", dir=dest))
        try:
            os.chmod(tmp, 0o755)  # apt's _apt user may write the files (else it warns and downloads as us)
            specs = [f"{p.name}:{p.arch}={p.version}" for p in todo]
            names = ", ".join(f"{p.name}={p.version}" for p in todo[:3]) + (" ..." if len(todo) > 3 else "")
            _apt(["apt-get", "download", "-q", *specs], f"cannot fetch Debian package(s) {names}", cwd=tmp)
            for p in todo:
                got = [f for f in tmp.glob(f"{p.name}_*_{p.arch}.deb")]
                if len(got) != 1:
                    raise RescueError(f"cannot fetch Debian package {p.name}={p.version}: apt-get wrote no .deb")
                digest = sha256_file(got[0])
                if digest != p.sha256:
                    raise RescueError(f"Debian package {p.name}={p.version}: SHA-256 {digest} does not match "
                                      f"the locked {p.sha256}")
                os.replace(got[0], dest / p.filename)
                have[p.name] = dest / p.filename
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return have


def extract(deb: Path, into: Path) -> None:
    """``dpkg-deb -x`` (no maintainer scripts run, no root needed)."""
    _apt(["dpkg-deb", "-x", str(deb), str(into)], f"cannot unpack {deb.name}")


def lock_document(packages: list[Package], wheels: list[dict]) -> dict:
    return {"format": LOCK_FORMAT, "base": "debian-12", "arch": ARCH,
            "packages": [p.as_dict() for p in packages], "wheels": wheels}


def write_lock(path: Path, doc: dict) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(doc, indent=1, sort_keys=True) + "\n")
    os.replace(tmp, path)


def read_lock(path: Path) -> tuple[list[Package], list[dict]]:
    """(packages, wheels) of a lock file; anything malformed is a one-line usage error."""
    try:
        doc = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UsageError(f"--lock {path}: file not found") from None
    except (OSError, ValueError) as exc:
        raise UsageError(f"--lock {path}: not a rescuekit lock file ({exc})") from None
    if not isinstance(doc, dict) or doc.get("format") != LOCK_FORMAT:
        got = doc.get("format") if isinstance(doc, dict) else None
        raise UsageError(f"--lock {path}: lock format {got!r} is not supported (want {LOCK_FORMAT})")
    pkgs = []
    for p in doc.get("packages") or []:
        try:
            pkg = Package(p["name"], p["version"], p["sha256"], p.get("arch", ARCH))
        except (TypeError, KeyError):
            raise UsageError(f"--lock {path}: bad package entry {p!r}") from None
        if not (_NAME.match(pkg.name) and _VERSION.match(pkg.version) and re.fullmatch(r"[0-9a-f]{64}", pkg.sha256)
                and pkg.arch in (ARCH, "all")):
            raise UsageError(f"--lock {path}: bad package entry {p!r}")
        pkgs.append(pkg)
    names = {p.name for p in pkgs}
    missing = [n for n in [*RUNTIME_PACKAGES, *BOOT_PACKAGES] if n not in names]
    if not any(n.startswith("linux-image-") for n in names):
        missing.insert(0, "linux-image-*")
    if missing:
        raise UsageError(f"--lock {path}: no entry for {', '.join(missing)}")
    wheels = doc.get("wheels") or []
    if not all(isinstance(w, dict) and {"filename", "sha256"} <= set(w) for w in wheels):
        raise UsageError(f"--lock {path}: bad wheels list")
    return pkgs, wheels

"""The runtime's dependencies as real win_amd64 wheels, unpacked into the image's site-packages.

Wheels come from PyPI (``pip download --only-binary=:all: --platform win_amd64 --python-version X.Y``, cached per
user) or from ``--wheelhouse DIR`` (offline). Each wheel's tags are checked against the embedded Python.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from builder.files import copy_zip_member
from builder.pe_imports import needs_msvcp140
from rescuekit.errors import RescueError, UsageError

# What `python -m rescuekit` imports inside WinPE. pip evaluates environment markers for the HOST, so
# Windows-only dependencies (colorama for click) are listed explicitly.
# cryptography: AES-XTS/CBC/CCM for BitLocker volumes (capture --recovery-password); cffi/pycparser are its deps.
RUNTIME_REQUIREMENTS = ["click>=8.1", "rich>=13", "zstandard>=0.22", "blake3>=0.4", "colorama>=0.4", "cryptography>=42"]
# Distributions that must be present (rich's dependencies included).
REQUIRED_DISTS = ["click", "rich", "markdown-it-py", "mdurl", "pygments", "zstandard", "blake3", "colorama",
                  "cryptography", "cffi", "pycparser"]

_WHEEL = re.compile(
    r"^(?P<name>[^-]+)-(?P<version>[^-]+)(?:-(?P<build>\d[^-]*))?-(?P<py>[^-]+)-(?P<abi>[^-]+)-(?P<plat>[^-]+)\.whl$"
)


def normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


@dataclass(frozen=True)
class Wheel:
    path: Path
    name: str  # normalized distribution name
    version: str
    py: str
    abi: str
    plat: str

    @property
    def filename(self) -> str:
        return self.path.name


def parse_wheel(path: Path) -> Wheel:
    m = _WHEEL.match(path.name)
    if not m:
        raise UsageError(f"not a wheel file name: {path}")
    return Wheel(path, normalize(m["name"]), m["version"], m["py"], m["abi"], m["plat"])


LINUX = "manylinux_x86_64"  # the Linux base: manylinux wheels (glibc 2.17+, Debian 12 has 2.36)
_MANYLINUX = re.compile(r"^(manylinux(2014|1|2010|_2_(\d+))_x86_64|linux_x86_64)$")


def _plat_ok(p: str, platform: str) -> bool:
    if p == "any":
        return True
    if platform == LINUX:
        m = _MANYLINUX.match(p)
        return bool(m) and (m.group(3) is None or int(m.group(3)) <= 36) and p != "linux_x86_64"
    return p == platform


def tag_problem(wheel: Wheel, xy: str, platform: str = "win_amd64") -> str | None:
    """Why ``wheel`` cannot run on CPython ``xy`` on ``platform`` (None when it can)."""
    cp = "cp" + xy.replace(".", "")
    minor = int(xy.split(".")[1])
    plats = wheel.plat.split(".")
    if not any(_plat_ok(p, platform) for p in plats):
        return f"wheel {wheel.filename} is for platform {wheel.plat}, not {platform}"
    pys = wheel.py.split(".")
    abis = wheel.abi.split(".")

    def py_ok(t: str) -> bool:
        if t in ("py3", cp, "py" + cp[2:]):
            return True
        m = re.fullmatch(r"cp3(\d+)", t)
        # an abi3 wheel built for an older 3.N runs on newer CPython
        return bool(m and "abi3" in abis and int(m.group(1)) <= minor)

    if not any(py_ok(t) for t in pys):
        return f"wheel {wheel.filename} is for Python {wheel.py}, not {cp}"
    if not any(a in ("none", "abi3", cp) for a in abis):
        return f"wheel {wheel.filename} has ABI {wheel.abi}, not {cp}"
    return None


def select_wheels(wheelhouse: Path, xy: str, required: list[str] = REQUIRED_DISTS,
                  platform: str = "win_amd64") -> list[Wheel]:
    """Pick one compatible wheel per distribution from ``wheelhouse``; refuse a distribution with none."""
    wheelhouse = Path(wheelhouse)
    if not wheelhouse.is_dir():
        raise UsageError(f"wheelhouse is not a directory: {wheelhouse}")
    by_name: dict[str, list[Wheel]] = {}
    for p in sorted(wheelhouse.glob("*.whl")):
        w = parse_wheel(p)
        by_name.setdefault(w.name, []).append(w)
    chosen: list[Wheel] = []
    for name, wheels in sorted(by_name.items()):
        ok = [w for w in wheels if tag_problem(w, xy, platform) is None]
        if not ok:
            raise UsageError(tag_problem(wheels[0], xy, platform) or f"no usable wheel for {name}")
        # prefer the exact cpXY/platform build, then the newest version string
        ok.sort(key=lambda w: (w.plat != "any", w.abi != "abi3", _version_key(w.version)))
        chosen.append(ok[-1])
    missing = [n for n in map(normalize, required) if n not in by_name]
    if missing:
        raise UsageError(f"wheelhouse {wheelhouse} has no wheel for {', '.join(missing)}")
    return chosen


def _version_key(v: str) -> tuple:
    return tuple(int(p) if p.isdigit() else 0 for p in re.split(r"[.+-]", v))


def download_wheels(xy: str, dest: Path, requirements: list[str] = RUNTIME_REQUIREMENTS,
                    platform: str = "win_amd64", required: list[str] = REQUIRED_DISTS) -> Path:
    """``pip download`` wheels for CPython ``xy`` on ``platform`` into ``dest`` (reused when already complete)."""
    dest.mkdir(parents=True, exist_ok=True)
    try:
        select_wheels(dest, xy, required, platform)
        return dest
    except UsageError:
        pass
    # pip writes into a private folder; finished wheels are renamed into the shared cache one by one,
    # so a concurrent build never sees a half-written wheel
    tmp = Path(tempfile.mkdtemp(prefix=".download-", dir=dest))
    try:
        cmd = [
            sys.executable, "-m", "pip", "download", "--quiet", "--disable-pip-version-check",
            "--only-binary=:all:", *_pip_platforms(platform), "--python-version", xy,
            "--implementation", "cp", "-d", str(tmp), *requirements,
        ]
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            lines = [ln for ln in (proc.stderr or proc.stdout).splitlines() if ln.strip()]
            raise RescueError(
                f"pip download of {platform} wheels for Python {xy} failed: {lines[-1] if lines else proc.returncode}"
                " (use --wheelhouse DIR offline)"
            )
        for whl in tmp.glob("*.whl"):
            os.replace(whl, dest / whl.name)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return dest


def _pip_platforms(platform: str) -> list[str]:
    if platform == LINUX:
        return ["--platform", "manylinux2014_x86_64", "--platform", "manylinux_2_28_x86_64"]
    return ["--platform", platform]


def install_wheel(wheel: Wheel, site_packages: Path) -> list[str]:
    """Unpack a wheel into ``site_packages`` (purelib/platlib data dirs merged); return msvcp140 warnings."""
    warnings: list[str] = []
    try:
        zf = zipfile.ZipFile(wheel.path)
    except zipfile.BadZipFile:
        raise UsageError(f"not a valid wheel (bad zip): {wheel.path}") from None
    with zf:
        for member in zf.infolist():
            if member.is_dir():
                continue
            p = PurePosixPath(member.filename)
            if p.is_absolute() or ".." in p.parts or "\\" in member.filename or ":" in member.filename:
                raise RescueError(f"unsafe member {member.filename!r} in {wheel.path}")
            parts = p.parts
            if parts[0].endswith(".data"):
                if len(parts) > 2 and parts[1] in ("purelib", "platlib"):
                    parts = parts[2:]
                else:
                    continue  # scripts/headers/data are not needed by the runtime
            target = site_packages.joinpath(*parts)
            target.parent.mkdir(parents=True, exist_ok=True)
            copy_zip_member(zf, member, target, f"damaged wheel {wheel.path}")
            if target.suffix.lower() in (".pyd", ".dll") and needs_msvcp140(target.read_bytes()):
                warnings.append(f"{wheel.filename}: {p.name} imports msvcp140.dll, which the embeddable Python lacks")
    return warnings


def copy_runtime_package(dest_lib: Path) -> Path:
    """Copy the installed runtime package (without caches) to ``dest_lib/rescuekit``, checked against its module
    manifest before and after the copy: an incomplete install (or copy) is refused, never laid into boot.wim."""
    import rescuekit
    from rescuekit import modules

    src = Path(rescuekit.__file__).resolve().parent
    expected = modules.read_manifest(src)
    modules.check_complete(modules.scan(src), expected, str(src))
    dst = dest_lib / "rescuekit"
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "*.pyo"), dirs_exist_ok=True)
    modules.check_complete(modules.scan(dst), expected, str(dst))
    return dst


def wheel_cache_dir(xy: str) -> Path:
    from builder.python_embed import cache_dir

    return cache_dir() / "wheels" / f"cp{xy.replace('.', '')}-win_amd64"


def gather_wheels(xy: str, wheelhouse: Path | None) -> list[Wheel]:
    """Wheels for the image: from ``wheelhouse`` or downloaded into the per-user cache."""
    if wheelhouse is not None:
        return select_wheels(wheelhouse, xy)
    env_house = os.environ.get("RESCUEKIT_WHEELHOUSE")
    if env_house:
        return select_wheels(Path(env_house), xy)
    return select_wheels(download_wheels(xy, wheel_cache_dir(xy)), xy)

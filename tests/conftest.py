"""Shared pytest fixtures. Build each expensive fixture once per session."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
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
import sys  # noqa: E402

sys.path.insert(0, str(REPO / "scripts"))


@pytest.fixture(scope="session", autouse=True)
def _offline_python_embed(tmp_path_factory):
    """`rescuekit build` bundles a Windows Python by default (issue 3), downloaded from python.org, which tests must
    not need: point RESCUEKIT_PYTHON_EMBED at a small zip shaped like the embeddable package (the stand-in base never
    runs it). Runtime wheels still come from PyPI into the per-user cache, once per machine."""
    if os.environ.get("RESCUEKIT_PYTHON_EMBED"):
        yield
        return
    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))
    from tests.overlay.conftest import make_embed_zip

    zip_path = make_embed_zip(tmp_path_factory.mktemp("python-embed") / "python-3.12.10-embed-amd64.zip")
    os.environ["RESCUEKIT_PYTHON_EMBED"] = str(zip_path)
    try:
        yield
    finally:
        os.environ.pop("RESCUEKIT_PYTHON_EMBED", None)

"""Shared pytest fixtures. Build each expensive fixture once per session."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


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

"""Fixtures for the builder tests (helpers in rk_build_helpers.py)."""
from __future__ import annotations

import os

import pytest

from rk_build_helpers import EPOCH, Kit, make_kit


@pytest.fixture(scope="session")
def kit(tmp_path_factory) -> Kit:
    return make_kit(tmp_path_factory.mktemp("kit"))


@pytest.fixture(scope="session")
def epoch_env():
    return {**os.environ, "SOURCE_DATE_EPOCH": EPOCH}

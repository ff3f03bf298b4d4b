"""Boot-test fixtures: stand-in WinPE bases and media made from them, built once per session."""
from __future__ import annotations

from pathlib import Path

import pytest

from boot_media import require_tools, xorriso_iso
from make_standin_base import make_standin_base  # scripts/ is on sys.path (tests/conftest.py)

STANDIN_TOOLS = ("nasm", "grub-mkstandalone", "mkfs.vfat", "mmd", "mcopy", "wimlib-imagex")


@pytest.fixture(scope="session")
def standin_fwfiles(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A stand-in base in the old-ADK layout (DIR/fwfiles)."""
    require_tools(*STANDIN_TOOLS)
    return make_standin_base(tmp_path_factory.mktemp("standin") / "fwfiles-base", "fwfiles")


@pytest.fixture(scope="session")
def standin_bootbins(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A stand-in base in the ADK 10.1.26100+ layout (DIR/bootbins, with the CA 2023 _EX files)."""
    require_tools(*STANDIN_TOOLS)
    return make_standin_base(tmp_path_factory.mktemp("standin") / "bootbins-base", "bootbins")


@pytest.fixture(scope="session")
def xorriso_fwfiles_iso(standin_fwfiles: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The fwfiles stand-in mastered by xorriso like MakeWinPEMedia /ISO."""
    return xorriso_iso(standin_fwfiles, tmp_path_factory.mktemp("iso") / "xorriso-fwfiles.iso")


@pytest.fixture(scope="session")
def qemu_tools() -> None:
    """QEMU and OVMF must be installed (fail, don't skip)."""
    require_tools("qemu-system-x86_64")
    from qemu_boot import find_ovmf

    find_ovmf()

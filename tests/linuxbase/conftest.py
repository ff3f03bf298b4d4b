"""Linux-base fixtures: the ISO (built once per session; variants with other settings reuse the cached initramfs
and take seconds) and the disks of the end-to-end test."""
from __future__ import annotations

from pathlib import Path

import make_test_disks as mtd  # scripts/ is on sys.path (tests/conftest.py)
import pytest

from linux_helpers import TOOLS, MiB, build

from tests.conftest import require_tools

@pytest.fixture(scope="session")
def linux_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    require_tools(*TOOLS)
    return tmp_path_factory.mktemp("linuxbase")


@pytest.fixture(scope="session")
def linux_iso(linux_dir: Path) -> Path:
    """The default disc: the menu at boot."""
    out = linux_dir / "rescue.iso"
    build(out)
    return out


@pytest.fixture(scope="session")
def unattended_isos(linux_iso: Path, linux_dir: Path) -> dict[str, Path]:
    """Discs that capture /dev/vda into RKREPO:\\images, and restore it onto the one internal disk that can hold it
    (``--target auto``: the repository's disk and the disc are never it), then power off."""
    common = ["--repository", "RKREPO:\\images", "--image-name", "pc1", "--then", "poweroff", "--countdown", "1"]
    out = {}
    for action, target in (("capture", "/dev/vda"), ("restore", "auto")):
        out[action] = linux_dir / f"{action}.iso"
        build(out[action], "--default-action", action, "--target", target, *common)
    return out


@pytest.fixture(scope="session")
def source_disk(linux_dir: Path) -> tuple[Path, dict]:
    """The imaging tests' GPT disk (ESP FAT32 + MSR + NTFS), smaller: every byte goes through TCG."""
    return mtd.make_gpt_disk(linux_dir / "source.img", 128 * MiB, esp_size=40 * MiB, tree_bytes=4 * MiB)

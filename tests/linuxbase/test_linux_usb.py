"""The Linux-based disc written to a USB stick image (`rescuekit usb --from-iso`): SeaBIOS boots it as a hard disk
(MBR -> syslinux -> the disc's kernel and initrds), OVMF as a USB stick (removable path); both reach the runtime."""
from __future__ import annotations

from pathlib import Path

import pytest
import qemu_boot  # scripts/

from test_linux_base import FAILED, READY
from tests.boot.usb_helpers import partitions, rescuekit_usb

pytestmark = pytest.mark.qemu


@pytest.fixture(scope="module")
def linux_stick(linux_iso: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    img = tmp_path_factory.mktemp("linux-usb") / "stick.img"
    proc = rescuekit_usb("--from-iso", str(linux_iso), "--image", str(img), "--size", "256M", "--yes")
    assert proc.returncode == 0, proc.stderr
    parts = partitions(img)
    assert parts[0]["type"] == "c" and parts[0].get("bootable") and len(parts) == 2  # FAT32 boot + exFAT data
    return img


def test_seabios_boots_the_linux_stick_as_a_hard_disk(linux_stick: Path) -> None:
    """The default disc's files on the stick's FAT32 partition: stage 1 finds its root file system image there
    (by the payload id) and the runtime's menu comes up."""
    res = qemu_boot.boot(linux_stick, "bios", "disk", "Main menu", timeout=600, memory_mb=512, fail_markers=FAILED)
    assert res.ok, res.text[-3000:]
    assert READY in res.text


@pytest.mark.slow
def test_ovmf_boots_the_linux_stick_as_usb(linux_stick: Path) -> None:
    # GRUB for UEFI loads the kernel + initramfs into RAM: 256 MiB is too little (seen by hand), 1 GiB works
    res = qemu_boot.boot(linux_stick, "uefi", "usb", READY, timeout=600, memory_mb=1024, fail_markers=FAILED)
    assert res.ok, res.text[-3000:]

"""Pieces of the Linux base without a boot: cpio writer, ELF reader, shared config keys, kernel command line."""
from __future__ import annotations

import io
import shutil
import subprocess
from pathlib import Path

import pytest

from builder import elf, initramfs
from builder.config import RuntimeConfig
from rescuekit import volumes
from rescuekit.boot import cmdline_settings
from rescuekit.config import Settings
from rescuekit.errors import UsageError
from tests.conftest import require_tools


def test_cpio_is_read_back_by_an_independent_reader(tmp_path: Path) -> None:
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "f.txt").write_bytes(b"hello\n")
    (tmp_path / "d" / "l").symlink_to("f.txt")
    buf = io.BytesIO()
    initramfs.write_cpio([*initramfs.DEVICE_NODES, *initramfs.tree_entries(tmp_path / "d", "x")], buf)
    require_tools("cpio")
    out = subprocess.run(["cpio", "-itv"], input=buf.getvalue(), capture_output=True, check=True).stdout.decode()
    assert "x/f.txt" in out and "x/l -> f.txt" in out and "dev/console" in out


def test_elf_needed_of_a_host_binary() -> None:
    libs = elf.needed(Path(shutil.which("ls")))
    assert "libc.so.6" in libs
    assert elf.needed(Path(__file__)) == []


@pytest.mark.parametrize("repo", ["RKREPO:\\images", "RK REPO:\\a\\b", "USB_2:/imgs", "RKREPO:\\"])
def test_label_repository_is_accepted(repo: str) -> None:
    RuntimeConfig(default_action="capture", repository=repo, target="/dev/vda").validated()
    assert volumes.parse(repo)[0] == repo.split(":")[0]


def test_drive_letter_is_not_a_label() -> None:
    assert volumes.parse("D:\\images") is None
    assert volumes.parse("RKREPO:\\images\\pc1") == ("RKREPO", "images/pc1")


@pytest.mark.parametrize("field,value,fragment", [
    ("repository", "RKREPO:\\a&b", "metacharacters"), ("repository", "RKREPO:\\..\\x", "'..'"),
    ("target", "/dev/../etc/passwd", "device path"), ("then", "halt", "choose one of menu, poweroff, reboot"),
    ("countdown", 601, "0-600"),
])
def test_bad_unattended_settings_are_refused(field: str, value: object, fragment: str) -> None:
    with pytest.raises(UsageError, match=None) as exc:
        RuntimeConfig(**{field: value}).validated()
    assert fragment in str(exc.value)


def test_kernel_command_line_overrides_and_refuses_typos() -> None:
    s, problems = cmdline_settings(Settings(), "quiet rescuekit.action=restore rescuekit.target=/dev/sda "
                                   "rescuekit.countdown=3 rescuekit.then=halt rescuekit.bogus=1")
    assert (s.default_action, s.target, s.countdown, s.then) == ("restore", "/dev/sda", 3, "menu")
    assert any("then=halt ignored" in p for p in problems) and any("bogus" in p for p in problems)

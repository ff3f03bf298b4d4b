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
from rescuekit.boot import boot_image, cmdline_settings
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


def test_the_ready_line_names_the_kernel_file_the_loader_started() -> None:
    assert boot_image("BOOT_IMAGE=/boot/vmlinuz.bios console=ttyS0 quiet") == "/boot/vmlinuz.bios"
    assert boot_image("console=ttyS0 quiet") == "?"  # a loader that passes no BOOT_IMAGE


@pytest.fixture
def ntfs_repo_volume(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """A real NTFS volume labelled RKREPO in a file (ntfs-3g mounts a file as it mounts /dev/vdb1), mount points
    under tmp_path, the boot log in tmp_path; unmounted whatever happens."""
    from rescuekit import boot

    require_tools("mkntfs", "ntfs-3g", "ntfscat", "umount")
    img = tmp_path / "repo.ntfs"
    with open(img, "wb") as f:
        f.truncate(16 << 20)
    subprocess.run(["mkntfs", "-F", "-Q", "-L", "RKREPO", str(img)], capture_output=True, check=True)
    monkeypatch.setattr(volumes, "MOUNT_ROOT", tmp_path / "run")
    monkeypatch.setattr(boot, "LOG", tmp_path / "rescuekit.log")
    boot.LOG.write_text("rescuekit: unattended restore finished\n")
    vol = volumes.Volume("RKREPO", str(img), str(img), "ntfs")
    try:
        yield vol
    finally:
        point = volumes.MOUNT_ROOT / "RKREPO"
        subprocess.run(["umount", str(point)], capture_output=True)


def test_restore_log_reaches_a_read_only_mounted_volume(ntfs_repo_volume, tmp_path: Path) -> None:
    """After an unattended restore (repository mounted read-only) the log is copied to <volume>/rescuekit-logs/:
    the volume is mounted read-write for it; read back from the image with ntfscat (no mount)."""
    from rescuekit import boot

    vol = ntfs_repo_volume
    point = volumes.mount(vol, writable=False)
    with pytest.raises(OSError):
        (point / "probe").write_text("x")  # really read-only
    lines: list[str] = []
    point = boot._copy_log(vol, point, mounted_rw=False, log=lambda ln: lines.append(ln))
    volumes.unmount(point)
    assert not lines[-1].startswith("rescuekit: warning"), lines
    name = lines[-1].rsplit("/", 1)[-1]
    assert name.startswith("boot-") and name.endswith(".log"), lines
    out = subprocess.run(["ntfscat", vol.device, f"rescuekit-logs/{name}"], capture_output=True, check=True).stdout
    assert out == boot.LOG.read_bytes()


def test_a_failing_log_copy_is_a_warning_not_a_failure(ntfs_repo_volume, tmp_path: Path) -> None:
    from rescuekit import boot

    vol = ntfs_repo_volume
    point = volumes.mount(vol, writable=False)
    gone = volumes.Volume(vol.label, str(tmp_path / "missing.ntfs"), vol.disk, "ntfs")  # cannot be mounted again
    lines: list[str] = []
    point = boot._copy_log(gone, point, mounted_rw=False, log=lambda ln: lines.append(ln))
    assert len(lines) == 1 and lines[0].startswith("rescuekit: warning: cannot mount ") and \
        f"the log stays in {boot.LOG}" in lines[0], lines

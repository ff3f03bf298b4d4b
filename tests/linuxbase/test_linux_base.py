"""The Linux-based rescue disc booted in QEMU (TCG): runtime, menu, unattended capture and restore of real disks."""
from __future__ import annotations

import hashlib
import json
import subprocess
from pathlib import Path

import pycdlib
import pytest
import qemu_boot  # scripts/
from linux_helpers import build, make_repo_disk

from tests.conftest import RK_HOST

from tests.imaging.imaging_helpers import check_disk_files

pytestmark = pytest.mark.qemu
READY = "RESCUEKIT LINUX READY on ttyS0"
FAILED = ("rescuekit: showing the menu", "Kernel panic")
MEM = 512  # the initramfs unpacks into a tmpfs of at most half the RAM


def _virtio(path: Path, snapshot: bool = False) -> list[str]:
    return ["-drive", f"file={path},format=raw,if=virtio" + (",snapshot=on" if snapshot else "")]


def _boot(iso: Path, firmware: str, expect: str | None, timeout: float, disks: list[str] = (), send=None):
    res = qemu_boot.boot(iso, firmware, "cdrom", expect, timeout=timeout, memory_mb=MEM, fail_markers=FAILED,
                         extra_args=tuple(disks), send=send)
    return res


def test_iso_records_packages_and_lock(linux_iso: Path) -> None:
    iso = pycdlib.PyCdlib()
    iso.open(str(linux_iso))
    try:
        import io

        buf = io.BytesIO()
        iso.get_file_from_iso_fp(buf, joliet_path="/rescuekit/build.json")
        info = json.loads(buf.getvalue())
    finally:
        iso.close()
    lock = json.loads(Path(f"{linux_iso}.lock.json").read_text())
    assert info["base"] == "linux" and info["packages"] == lock["packages"]
    names = {p["name"] for p in lock["packages"]}
    assert {"busybox-static", "shim-signed", "grub-efi-amd64-signed", "python3.11-minimal"} <= names
    assert all(len(p["sha256"]) == 64 for p in lock["packages"]) and lock["wheels"]
    assert not [w for w in lock["wheels"] if w["filename"].lower().startswith(("pygments", "markdown_it", "mdurl"))]
    # the root file system image on the disc is the one the record names, and stage 1 looks for its id
    payload = info["payload"]
    assert _iso_file(linux_iso, "/rescuekit/payload.id").decode().strip() == payload["id"]
    assert hashlib.sha256(_iso_file(linux_iso, "/" + payload["path"])).hexdigest() == payload["sha256"]
    assert payload["id"] == payload["sha256"][:16] and payload["format"] == "squashfs"
    assert hashlib.sha256(_iso_file(linux_iso, "/boot/vmlinuz.bios")).hexdigest() == info["bios_kernel"]["sha256"]
    assert linux_iso.stat().st_size < 60_000_000  # the target: under 60 MB
    shown = subprocess.run([*RK_HOST, "inspect", str(linux_iso)], capture_output=True, text=True)
    assert shown.returncode == 0 and f"package:  busybox-static {_version(lock, 'busybox-static')}" in shown.stdout


def _iso_file(path: Path, name: str) -> bytes:
    import io

    iso = pycdlib.PyCdlib()
    iso.open(str(path))
    try:
        buf = io.BytesIO()
        iso.get_file_from_iso_fp(buf, joliet_path=name)
        return buf.getvalue()
    finally:
        iso.close()


def _first_mib_blank(path: Path) -> bool:
    with open(path, "rb") as f:
        return not f.read(1 << 20).strip(b"\0")


def _version(lock: dict, name: str) -> str:
    return next(p["version"] for p in lock["packages"] if p["name"] == name)


def _e2e(firmware: str, isos: dict[str, Path], source: tuple[Path, dict], work: Path) -> None:
    src, hashes = source
    repo = make_repo_disk(work / "repo.img")
    res = _boot(isos["capture"], firmware, None, 600, [*_virtio(src, snapshot=True), *_virtio(repo)])
    text = res.text
    assert res.ok and "unattended capture finished" in text, text[-4000:]
    # BIOS boots the kernel without its xz decompressor (builder/bzimage.py); UEFI the signed one
    assert f"from /boot/{'vmlinuz.bios' if firmware == 'bios' else 'vmlinuz'}, python" in text, text[-4000:]
    assert "RKREPO is /dev/vdb1 (exfat), mounted read-write" in text
    target = work / "target.img"
    with open(target, "wb") as f:
        f.truncate(src.stat().st_size)
    if firmware == "bios":
        # two blank disks that could both hold the image: --target auto must refuse, write nothing, show the menu
        other = work / "other.img"
        with open(other, "wb") as f:
            f.truncate(src.stat().st_size)
        res = qemu_boot.boot(isos["restore"], firmware, "cdrom", "Main menu", timeout=600, memory_mb=MEM,
                             fail_markers=("Kernel panic",),
                             extra_args=(*_virtio(target), *_virtio(other), *_virtio(repo)))
        text = res.text
        assert res.ok, text[-4000:]
        assert "needs exactly one internal disk that can hold image pc1" in text, text[-4000:]
        assert "found 2: /dev/vda, /dev/vdb; nothing was written" in text, text[-4000:]
        assert "unattended restore of image" not in text
        assert _first_mib_blank(target) and _first_mib_blank(other)
    res = _boot(isos["restore"], firmware, None, 600, [*_virtio(target), *_virtio(repo)])
    text = res.text
    assert res.ok and "unattended restore finished" in text, text[-4000:]
    assert "--target auto is /dev/vda" in text  # not vdb (the repository's disk), not the disc
    assert "mounted read-only" in text
    # the restore's log reaches the read-only mounted repository volume (mounted read-write just for it)
    assert "mounted read-write for the log" in text and "rescuekit: log copied to /run/rescuekit/RKREPO/" in text, \
        text[-3000:]
    v = subprocess.run(["sgdisk", "-v", str(target)], capture_output=True, text=True)
    assert v.returncode == 0 and "No problems found" in v.stdout, v.stdout
    check_disk_files(target, hashes, work)  # ntfsfix -n, fsck.vfat -n, every file's SHA-256


def test_seabios_unattended_capture_then_restore(unattended_isos, source_disk, tmp_path: Path) -> None:
    _e2e("bios", unattended_isos, source_disk, tmp_path)


@pytest.mark.slow
def test_ovmf_unattended_capture_then_restore(unattended_isos, source_disk, tmp_path: Path) -> None:
    _e2e("uefi", unattended_isos, source_disk, tmp_path)


def test_refused_restore_then_the_menu_on_serial(linux_dir: Path, tmp_path: Path) -> None:
    """One SeaBIOS boot, two checks. (1) The repository's own disk as the unattended restore's target: refused,
    logged, the menu instead of a poweroff. (2) That menu on ttyS0, driven over the serial console: entry 1
    (Restore an image) runs its repository picker, which finds none (the repository disk is empty)."""
    iso = linux_dir / "refuse.iso"
    build(iso, "--default-action", "restore", "--repository", "RKREPO:\\images", "--target", "/dev/vda",
          "--then", "poweroff", "--countdown", "1")
    repo = make_repo_disk(tmp_path / "repo.img")
    want = "No rescuekit repository was found on any attached volume."
    res = qemu_boot.boot(iso, "bios", "cdrom", want, timeout=300, memory_mb=MEM, extra_args=tuple(_virtio(repo)),
                         send=("Main menu", "1\n"), fail_markers=("Kernel panic",))
    assert res.ok, res.text[-3000:]
    assert READY in res.text
    assert "refused: target /dev/vda is the disk that holds the repository" in res.text
    assert "rescuekit: showing the menu" in res.text
    assert "Restore an image" in res.text and want in res.text, res.text[-3000:]


@pytest.mark.slow
def test_ovmf_secure_boot_runs_the_signed_chain(linux_iso: Path) -> None:
    """OVMF with Secure Boot on and Microsoft's keys: shim (Microsoft-signed) -> GRUB -> kernel (Debian-signed);
    the kernel then runs locked down (integrity), which only happens when the firmware verified the chain."""
    res = _boot(linux_iso, "uefi-sb", READY, 600)
    assert res.ok, res.text[-3000:]
    assert "lockdown none [integrity] confidentiality" in res.text, res.text[-2000:]
    assert "from /boot/vmlinuz, python" in res.text

"""``rescuekit usb`` refusals, on image files and on loop block devices: too small, holding the source, no --yes on a
non-interactive run, mounted, not removable; and the FAT32 4 GiB file limit.  Nothing is written when refused."""
from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from builder import usb
from rescuekit.errors import RescueError
from tests.conftest import RK_HOST, require_tools
from usb_helpers import MIB, loop_device, mounted, rescuekit_usb


@pytest.fixture(scope="session")
def standin_iso(standin_fwfiles: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    iso = tmp_path_factory.mktemp("usb-iso") / "rescue.iso"
    subprocess.run([*RK_HOST, "build", "--source", str(standin_fwfiles), "--no-runtime", "-o", str(iso)],
                   check=True, capture_output=True)
    return iso


def _zero_file(path: Path, size: int) -> Path:
    with open(path, "wb") as f:
        f.truncate(size)
    return path


def _untouched(path: Path) -> bool:
    with open(path, "rb") as f:
        return not f.read(2 * MIB).strip(b"\0")


def _error(proc: subprocess.CompletedProcess) -> str:
    lines = proc.stderr.strip().splitlines()
    assert "Traceback" not in proc.stderr, proc.stderr
    return lines[-1] if lines else ""


# ---------------------------------------------------------------- image files

def test_image_too_small(standin_iso: Path, tmp_path: Path) -> None:
    out = tmp_path / "small.img"
    proc = rescuekit_usb("--from-iso", str(standin_iso), "--image", str(out), "--size", "70M")
    assert proc.returncode == 1
    assert _error(proc).startswith(f"rescuekit: error: {out} is too small: 70.0 MiB, the media need 81.0 MiB")
    assert not out.exists() and list(tmp_path.iterdir()) == []  # no temp file left next to it


def test_existing_image_needs_yes_when_not_interactive(standin_iso: Path, tmp_path: Path) -> None:
    out = tmp_path / "old.img"
    out.write_bytes(b"keep me")
    proc = rescuekit_usb("--from-iso", str(standin_iso), "--image", str(out), "--size", "100M")
    assert proc.returncode == 2
    assert _error(proc) == f"rescuekit: error: refusing to overwrite {out} without --yes (no terminal to ask on)"
    assert out.read_bytes() == b"keep me"
    proc = rescuekit_usb("--from-iso", str(standin_iso), "--image", str(out), "--size", "100M", "--yes")
    assert proc.returncode == 0, proc.stderr
    assert out.stat().st_size == 100 * MIB


def test_image_inside_the_source_refused(standin_fwfiles: Path) -> None:
    out = standin_fwfiles / "media" / "stick.img"
    proc = rescuekit_usb("--source", str(standin_fwfiles), "--no-runtime", "--image", str(out), "--size", "100M")
    assert proc.returncode == 2
    assert _error(proc) == f"rescuekit: error: output {out} is inside the source folder {standin_fwfiles}"
    assert not out.exists()


def test_image_is_the_iso(standin_iso: Path) -> None:
    proc = rescuekit_usb("--from-iso", str(standin_iso), "--image", str(standin_iso), "--size", "100M", "--yes")
    assert proc.returncode == 2 and "is the --from-iso file itself" in _error(proc)


@pytest.mark.parametrize("args, message", [
    ([], "give one of --device DEV or --image FILE --size SIZE"),
    (["--image", "x.img"], "--image needs --size"),
    (["--image", "x.img", "--size", "1G", "--data-partition", "fat32", "--no-data-partition"],
     "--data-partition and --no-data-partition exclude each other"),
    (["--image", "x.img", "--size", "1G", "--from-iso", "r.iso", "--source", "s"],
     "--from-iso writes the ISO's files as they are: --source cannot be used with it"),
    (["--image", "x.img", "--size", "1G", "--from-iso", "r.iso", "--network"],
     "--from-iso writes the ISO's files as they are: --network cannot be used with it"),
    (["--image", "x.img", "--size", "lots"], "bad size 'lots'"),
    (["--image", "x.img", "--size", "1G", "--label", "A_LABEL_TOO_LONG"], "a FAT label holds 1-11 characters"),
])
def test_usage_errors(args: list[str], message: str, tmp_path: Path) -> None:
    proc = subprocess.run([*RK_HOST, "usb", *args], capture_output=True, text=True, cwd=tmp_path, input="")
    assert proc.returncode == 2, proc.stderr
    assert message in _error(proc)
    assert list(tmp_path.iterdir()) == []


def test_fat32_refuses_files_over_4_gib(tmp_path: Path) -> None:
    big = tmp_path / "boot.wim"
    with open(big, "wb") as f:
        f.truncate(1 << 32)  # sparse: one byte over FAT32's largest file
    with pytest.raises(RescueError, match=r"sources/boot.wim is 4.0 GiB .* too big for the FAT32 boot partition "
                                          r"\(at most 4 GiB - 1 byte per file; a split WIM does not boot\)"):
        usb.check_fat32_files({"sources/boot.wim": big})
    with open(big, "r+b") as f:
        f.truncate((1 << 32) - 1)
    usb.check_fat32_files({"sources/boot.wim": big})


def test_layout_plan() -> None:
    lay = usb.plan_layout(8 << 30, 600 * MIB, "exfat")
    assert lay.boot_start == MIB and lay.boot_size == 646 * MIB and lay.data_start == 647 * MIB  # + 5% + 16 MiB
    assert lay.data_start + lay.data_size == 8 << 30
    alone = usb.plan_layout(8 << 30, 600 * MIB, None)
    assert alone.boot_size == (8 << 30) - MIB and alone.data_fs is None
    big = usb.plan_layout(3 << 40, 600 * MIB, "exfat")  # MBR addresses 2 TiB: the rest stays unused
    assert big.data_start + big.data_size == 2 << 40


def test_base_supplies_its_bios_boot_method(monkeypatch: pytest.MonkeyPatch) -> None:
    """The hook for bases that do not boot bootmgr: BIOS_BOOT by base kind (the Linux base is one entry)."""
    other = usb.BiosBoot("syslinux other", "DEFAULT o\nLABEL o\n  LINUX /k\n")
    monkeypatch.setitem(usb.BIOS_BOOT, "other-base", lambda files: other)
    assert usb.bios_boot_for("other-base", {"k": Path("k")}) is other
    assert usb.bios_boot_for("copype-fwfiles", {"bootmgr": Path("b")}).name == "syslinux chain.c32 ntldr=/bootmgr"
    assert usb.bios_boot_for("copype-fwfiles", {"EFI/Boot/bootx64.efi": Path("e")}) is None  # UEFI-only base


# ---------------------------------------------------------------- loop block devices

@pytest.mark.parametrize("size_mib, flags, code, message", [
    (120, ["--yes"], 1, "{dev} is not a removable or USB disk: refusing (--force if you mean it)"),
    (70, ["--yes", "--force"], 1, "{dev} is too small: 70.0 MiB, the media need 81.0 MiB"),
    (120, ["--force"], 2, "refusing to overwrite {dev} without --yes (no terminal to ask on)"),
])
def test_loop_refusals(size_mib: int, flags: list[str], code: int, message: str, standin_iso: Path,
                       tmp_path: Path) -> None:
    """Not removable (a loop device) without --force; too small; no --yes on a non-interactive run."""
    backing = _zero_file(tmp_path / "disk.img", size_mib * MIB)
    with loop_device(backing) as dev:
        proc = rescuekit_usb("--from-iso", str(standin_iso), "--device", dev, *flags)
        assert proc.returncode == code
        assert _error(proc).startswith("rescuekit: error: " + message.format(dev=dev)), proc.stderr
        if "--yes" not in flags:  # what would be destroyed was shown
            assert f"{dev}: unknown model, 120.0 MiB (125829120 bytes)" in proc.stderr
    assert _untouched(backing)


def test_loop_mounted_and_holding_the_source(standin_iso: Path, tmp_path: Path) -> None:
    """A mounted device is refused; so is the device that holds the --from-iso file (said first)."""
    require_tools("mkfs.ext4")
    backing = _zero_file(tmp_path / "disk.img", 120 * MIB)
    with loop_device(backing) as dev:
        subprocess.run(["mkfs.ext4", "-q", dev], check=True, capture_output=True)
        with mounted(dev, tmp_path / "mnt") as mnt:
            proc = rescuekit_usb("--from-iso", str(standin_iso), "--device", dev, "--yes", "--force")
            assert proc.returncode == 1
            assert _error(proc) == f"rescuekit: error: {dev} is mounted ({mnt}): unmount it first"
            iso = mnt / "rescue.iso"
            iso.write_bytes(standin_iso.read_bytes())
            proc = rescuekit_usb("--from-iso", str(iso), "--device", dev, "--yes", "--force")
            assert proc.returncode == 1
            assert _error(proc) == f"rescuekit: error: {dev} holds the --from-iso file {iso}: refusing to overwrite it"
            assert iso.read_bytes() == standin_iso.read_bytes()


def test_partition_device_refused(standin_iso: Path, tmp_path: Path) -> None:
    backing = tmp_path / "disk.img"
    proc = rescuekit_usb("--from-iso", str(standin_iso), "--image", str(backing), "--size", "120M")
    assert proc.returncode == 0, proc.stderr
    with loop_device(backing) as dev:
        subprocess.run([*RK_HOST, "usb", "--from-iso", str(standin_iso), "--device", dev, "--yes", "--force"],
                       capture_output=True)  # its partitions must be known to the kernel (BLKPG on this VM)
        proc = rescuekit_usb("--from-iso", str(standin_iso), "--device", dev + "p1", "--yes", "--force")
        assert proc.returncode == 2
        assert _error(proc) == f"rescuekit: error: --device {dev}p1 is a partition: give the whole disk"


def test_fat32_refuses_names_differing_in_case(tmp_path: Path) -> None:
    f = tmp_path / "f"
    f.write_text("x")
    with pytest.raises(RescueError, match="two media paths differ only in case: EFI and efi"):
        usb.check_fat32_files({"EFI/boot/a": f, "efi/boot/b": f})
    usb.check_fat32_files({"EFI/Boot/a": f, "EFI/Boot/b": f, "boot/a": f})


def _run_on_a_terminal(args: list[str], answer: bytes) -> tuple[int, str]:
    """Run ``rescuekit usb ARGS`` with a pseudo-terminal as stdin/stderr and type ``answer`` at the question."""
    import os
    import pty

    pid, fd = pty.fork()
    if pid == 0:  # the child: the CLI on the terminal
        os.execv(RK_HOST[0], [*RK_HOST, "usb", *args])
    out = b""
    try:
        while b"Continue?" not in out:
            chunk = os.read(fd, 4096)
            if not chunk:
                break
            out += chunk
        os.write(fd, answer)
        while True:
            try:
                chunk = os.read(fd, 4096)
            except OSError:  # EIO: the child closed the terminal
                break
            if not chunk:
                break
            out += chunk
    finally:
        _, status = os.waitpid(pid, 0)
        os.close(fd)
    return os.waitstatus_to_exitcode(status), out.decode(errors="replace")


def test_asks_on_a_terminal(standin_iso: Path, tmp_path: Path) -> None:
    """On a terminal it shows what is destroyed and asks: "n" keeps the file, "y" writes it."""
    out = tmp_path / "old.img"
    out.write_bytes(b"keep me")
    args = ["--from-iso", str(standin_iso), "--image", str(out), "--size", "100M"]
    code, text = _run_on_a_terminal(args, b"n\n")
    assert code == 1 and f"{out}: existing file" in text and "not written (answered no)" in text, text
    assert out.read_bytes() == b"keep me"
    code, text = _run_on_a_terminal(args, b"y\n")
    assert code == 0, text
    assert out.stat().st_size == 100 * MIB


def test_linux_base_bios_method_follows_the_grub_menu(tmp_path: Path) -> None:
    """The Linux base (issue 10): syslinux boots its kernel with the GRUB menu's command line and initrd list."""
    cfg = tmp_path / "grub.cfg"
    cfg.write_text('set timeout=2\nmenuentry "rescuekit" {\n  linux /boot/vmlinuz console=ttyS0,115200 quiet\n'
                   '  initrd /boot/initrd.img /boot/rkconfig.img\n}\nmenuentry "other" {\n  linux /boot/vmlinuz x\n}\n')
    files = {"boot/vmlinuz": cfg, "boot/initrd.img": cfg, "boot/grub/grub.cfg": cfg}
    bios = usb.bios_boot_for("linux", files)
    assert bios is not None and bios.modules == ()
    assert "  LINUX /boot/vmlinuz\n  INITRD /boot/initrd.img,/boot/rkconfig.img\n" in bios.syslinux_cfg
    assert "  APPEND console=ttyS0,115200 quiet\n" in bios.syslinux_cfg
    assert usb.bios_boot_for("linux", {"boot/vmlinuz": cfg}) is None  # no initramfs: no BIOS method

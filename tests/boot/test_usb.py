"""``rescuekit usb``: the stick image made from the stand-in base boots (SeaBIOS as a hard disk through MBR ->
syslinux -> chain.c32 -> bootmgr; OVMF as a USB stick through EFI/Boot/bootx64.efi), its file systems pass the
fsck of their own tools, the data partition holds an empty repository, and a real loop block device is written."""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
from pathlib import Path

import pytest

from boot_media import BOOT_TIMEOUT
from make_standin_base import read_nonce
from qemu_boot import boot
from tests.conftest import RK_HOST, require_tools
from usb_helpers import MIB, cut_partition, fsck, loop_device, mounted, partitions, rescuekit_usb

USB_TOOLS = ("sfdisk", "mkfs.vfat", "mmd", "mcopy", "syslinux", "mkfs.exfat", "fsck.exfat", "fsck.vfat")
SYSLINUX_MBR = Path("/usr/lib/syslinux/mbr/mbr.bin")


@pytest.fixture(scope="session")
def standin_stick(standin_fwfiles: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    """The stand-in base written to a 160 MiB stick image (exFAT data partition), and the --json result."""
    require_tools(*USB_TOOLS)
    img = tmp_path_factory.mktemp("usb") / "stick.img"
    proc = rescuekit_usb("--source", str(standin_fwfiles), "--no-runtime", "--image", str(img), "--size", "160M",
                         "--json")
    assert proc.returncode == 0, proc.stderr
    return img, json.loads(proc.stdout)


def _fat_files(image: Path, offset: int) -> list[str]:
    env = dict(os.environ, MTOOLS_SKIP_CHECK="1")
    out = subprocess.run(["mdir", "-/", "-a", "-b", "-i", f"{image}@@{offset}", "::/"], check=True, capture_output=True,
                         text=True, env=env).stdout
    return sorted(line.strip() for line in out.splitlines() if line.strip())


def test_layout_like_makewinpemedia_ufd(standin_stick: tuple[Path, dict]) -> None:
    img, res = standin_stick
    parts = partitions(img)
    assert [(p["start"], p["type"], p.get("bootable", False)) for p in parts] == [(2048, "c", True),
                                                                                  (parts[1]["start"], "7", False)]
    assert parts[0]["start"] + parts[0]["size"] == parts[1]["start"]
    assert (parts[1]["start"] + parts[1]["size"]) * 512 == 160 * MIB
    assert img.read_bytes()[:440] == SYSLINUX_MBR.read_bytes()[:440]  # BIOS: MBR code that starts the active one
    assert res["bios"] == "syslinux chain.c32 ntldr=/bootmgr"
    assert res["data_partition"]["fs"] == "exfat" and res["data_partition"]["repository"] == "Images"


def test_boot_partition_passes_fsck_vfat(standin_stick: tuple[Path, dict], standin_fwfiles: Path,
                                         tmp_path: Path) -> None:
    img, _ = standin_stick
    part = cut_partition(img, partitions(img)[0], tmp_path / "p1")
    proc = fsck("fsck.vfat", part)
    assert proc.returncode == 0 and "differences" not in proc.stdout, proc.stdout + proc.stderr
    names = _fat_files(img, MIB)
    for rel in ("::/bootmgr", "::/EFI/Boot/bootx64.efi", "::/sources/boot.wim", "::/NONCE.TXT",
                "::/rescuekit/build.json", "::/syslinux/syslinux.cfg", "::/syslinux/ldlinux.sys"):
        assert rel in names, names
    env = dict(os.environ, MTOOLS_SKIP_CHECK="1")
    wim = subprocess.run(["mtype", "-i", f"{img}@@{MIB}", "::/sources/boot.wim"], check=True, capture_output=True,
                         env=env).stdout
    info = json.loads(subprocess.run(["mtype", "-i", f"{img}@@{MIB}", "::/rescuekit/build.json"], check=True,
                                     capture_output=True, env=env).stdout)
    assert hashlib.sha256(wim).hexdigest() == info["boot_wim_sha256"]


def test_data_partition_holds_an_empty_repository(standin_stick: tuple[Path, dict], tmp_path: Path) -> None:
    img, _ = standin_stick
    part = cut_partition(img, partitions(img)[1], tmp_path / "p2")
    proc = fsck("fsck.exfat", part)
    assert proc.returncode == 0 and "clean" in proc.stdout, proc.stdout + proc.stderr
    assert "directories 7, files 1" in proc.stdout  # root, Images/ + 5 folders; Images/config
    # read it back through the exFAT FUSE driver (the kernel here has no exFAT): the runtime opens the repository
    require_tools("mount.exfat-fuse")
    with loop_device(part, partscan=False) as dev, mounted(dev, tmp_path / "mnt", fuse_exfat=True) as mnt:
        cfg = json.loads((mnt / "Images" / "config").read_text())
        from rescuekit.repo.config import FORMAT_VERSION

        assert cfg["format"] == "rescuekit-repository" and cfg["version"] == FORMAT_VERSION  # the runtime's own
        res = subprocess.run([*RK_HOST, "images", str(mnt / "Images"), "--json"], capture_output=True, text=True)
        assert res.returncode == 0, res.stderr
        assert json.loads(res.stdout)["images"] == []


@pytest.mark.qemu
def test_seabios_boots_stick_as_hard_disk(standin_stick: tuple[Path, dict], standin_fwfiles: Path,
                                          qemu_tools: None) -> None:
    """MBR -> syslinux boot sector -> ldlinux -> chain.c32 -> this stick's bootmgr, whose nonce is built in."""
    img, _ = standin_stick
    res = boot(img, "bios", "disk", expect="RESCUEKIT BIOS OK", timeout=BOOT_TIMEOUT)
    assert res.ok, res.log
    assert "SYSLINUX" in res.text and "RESCUEKIT STAND-IN BOOTMGR" in res.text
    assert "boot drive 0x80" in res.text
    assert "VBR=FAT32 hidden sectors 0x00000800" in res.text  # the active partition's BPB, at 1 MiB
    assert f"NONCE={read_nonce(standin_fwfiles)}\n" in res.text


@pytest.mark.qemu
def test_ovmf_boots_stick_as_usb(standin_stick: tuple[Path, dict], standin_fwfiles: Path, qemu_tools: None) -> None:
    """UEFI removable-media path EFI/Boot/bootx64.efi from the FAT32 partition of a USB stick."""
    img, _ = standin_stick
    res = boot(img, "uefi", "usb", expect="RESCUEKIT UEFI OK", timeout=BOOT_TIMEOUT)
    assert res.ok, res.log
    assert "VARIANT=bootmgfw.efi CA2011" in res.log
    assert f"NONCE={read_nonce(standin_fwfiles)}" in res.log


def test_from_iso_writes_the_same_media(standin_stick: tuple[Path, dict], standin_fwfiles: Path,
                                        tmp_path: Path) -> None:
    """A built ISO written with --from-iso gives the stick the same files as --source (both share the pipeline)."""
    iso = tmp_path / "rescue.iso"
    proc = subprocess.run([*RK_HOST, "build", "--source", str(standin_fwfiles), "--no-runtime", "-o", str(iso)],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    img = tmp_path / "from-iso.img"
    proc = rescuekit_usb("--from-iso", str(iso), "--image", str(img), "--size", "100M", "--no-data-partition")
    assert proc.returncode == 0, proc.stderr
    assert _fat_files(img, MIB) == _fat_files(standin_stick[0], MIB)
    parts = partitions(img)
    assert len(parts) == 1 and (parts[0]["start"] + parts[0]["size"]) * 512 == 100 * MIB  # FAT32 fills it
    proc = fsck("fsck.vfat", cut_partition(img, parts[0], tmp_path / "p1"))
    assert proc.returncode == 0, proc.stdout


def test_writes_a_loop_block_device(standin_fwfiles: Path, tmp_path: Path) -> None:
    """Through the device path: size by ioctl, partitions re-read (/dev/loopNp1 appears), synced to the file."""
    require_tools(*USB_TOOLS)
    iso = tmp_path / "rescue.iso"
    subprocess.run([*RK_HOST, "build", "--source", str(standin_fwfiles), "--no-runtime", "-o", str(iso)],
                   check=True, capture_output=True)
    backing = tmp_path / "disk.img"
    with open(backing, "wb") as f:
        f.truncate(120 * MIB)
    with loop_device(backing) as dev:
        proc = rescuekit_usb("--from-iso", str(iso), "--device", dev, "--yes", "--force", "--json")
        assert proc.returncode == 0, proc.stderr
        res = json.loads(proc.stdout)
        assert res["size"] == 120 * MIB and res["device"] is True
        assert Path(dev + "p1").exists() and Path(dev + "p2").exists()
        assert fsck("fsck.vfat", dev + "p1").returncode == 0
        assert "clean" in fsck("fsck.exfat", dev + "p2").stdout
    parts = partitions(backing)  # synced through to the backing file
    assert [p["type"] for p in parts] == ["c", "7"]


@pytest.mark.slow
def test_runtime_overlay_options_reach_the_stick(standin_fwfiles: Path, tmp_path: Path) -> None:
    """The build pipeline's overlay step runs for usb too: the runtime and its config.toml are in the stick's
    boot.wim, whose SHA-256 build.json records."""
    require_tools(*USB_TOOLS, "wimlib-imagex")
    img = tmp_path / "rt.img"
    proc = rescuekit_usb("--source", str(standin_fwfiles), "--repository", "D:\\Images", "--locale", "de-DE",
                         "--image", str(img), "--size", "100M", "--no-data-partition")
    assert proc.returncode == 0, proc.stderr
    assert "runtime: Python" in proc.stderr
    env = dict(os.environ, MTOOLS_SKIP_CHECK="1")
    wim = tmp_path / "boot.wim"
    subprocess.run(["mcopy", "-i", f"{img}@@{MIB}", "::/sources/boot.wim", str(wim)], check=True, env=env)
    cfg = subprocess.run(["wimlib-imagex", "extract", str(wim), "1", "/rescuekit/config.toml", "--to-stdout"],
                         check=True, capture_output=True, text=True).stdout
    assert 'repository = "D:\\\\Images"' in cfg and 'locale = "de-DE"' in cfg
    info = json.loads(subprocess.run(["mtype", "-i", f"{img}@@{MIB}", "::/rescuekit/build.json"], check=True,
                                     capture_output=True, env=env).stdout)
    assert hashlib.sha256(wim.read_bytes()).hexdigest() == info["boot_wim_sha256"]


@pytest.mark.qemu
def test_from_iso_without_tree_loader_uses_el_torito_uefi_image(standin_fwfiles: Path, tmp_path: Path,
                                                                qemu_tools: None) -> None:
    """A disc whose tree has no EFI/Boot/bootx64.efi (the Linux base keeps shim + GRUB only in the El Torito UEFI
    image): the stick gets that image's EFI/ folder, and OVMF runs the efisys.bin program from the stick."""
    from boot_media import xorriso_iso

    media = tmp_path / "media"
    subprocess.run(["cp", "-a", str(standin_fwfiles / "media"), str(media)], check=True)
    (media / "EFI" / "Boot" / "bootx64.efi").unlink()
    iso = xorriso_iso(standin_fwfiles, tmp_path / "no-loader.iso", media=media)
    img = tmp_path / "stick.img"
    proc = rescuekit_usb("--from-iso", str(iso), "--image", str(img), "--size", "100M", "--no-data-partition")
    assert proc.returncode == 0, proc.stderr
    assert "UEFI boot files (EFI/BOOT/BOOTX64.EFI) taken from the ISO's El Torito UEFI image" in proc.stdout
    res = boot(img, "uefi", "usb", expect="RESCUEKIT UEFI OK", timeout=BOOT_TIMEOUT)
    assert res.ok, res.log
    assert "VARIANT=efisys.bin CA2011 PROMPT" in res.log  # the El Torito image's program, not bootmgfw.efi's
    assert f"NONCE={read_nonce(standin_fwfiles)}" in res.log

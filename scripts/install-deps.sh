#!/usr/bin/env bash
# Install the system packages rescuekit's tests, stand-in base and benchmarks use (Debian/Ubuntu, as root),
# then the project itself (editable, with test extras).
set -euo pipefail
cd "$(dirname "$0")/.."

export DEBIAN_FRONTEND=noninteractive
APT_PACKAGES=(
  wimtools            # wimlib-imagex: WIM capture/apply/update/verify
  qemu-system-x86     # boot tests (TCG)
  ovmf                # UEFI firmware for QEMU
  nasm                # stand-in BIOS boot program; the Linux base's BIOS kernel entry stub
  lzop                # the Linux base's BIOS kernel image (GRUB's lzopio inflates it as it loads it)
  grub-efi-amd64-bin  # stand-in EFI loader (grub-mkstandalone -O x86_64-efi)
  grub-common
  xorriso             # independent check of the El Torito catalog, benchmark peer
  genisoimage         # UDF test ISOs (genisoimage -udf)
  udftools            # udfinfo: independent check of the UDF revision of built ISOs
  ntfs-3g             # mkntfs, ntfsfix, ntfsclone, ntfscat
  gdisk fdisk         # sgdisk, sfdisk
  dosfstools mtools   # mkfs.vfat, fsck.vfat, mcopy
  exfatprogs          # mkfs.exfat, fsck.exfat
  exfat-fuse          # mount.exfat-fuse: real files into exFAT test volumes; the USB data partition read back
  libfuse2 fuse3      # fusepy's libfuse.so.2 + fusermount: tests/imaging/faultfs.py (a file with bad sectors)
  syslinux syslinux-common  # rescuekit usb: BIOS boot of the stick (mbr.bin, mtools installer, chain.c32)
  qemu-utils          # qemu-img
  e2fsprogs util-linux  # mkfs.ext4, chattr; losetup, partx, unshare (loop-device and read-only-target tests)
  zstd partclone      # benchmark peers
  faketime            # lock tests: another machine whose clock is 40 minutes off
  python3-pip         # fresh Debian has no pip for the system python3
  wine wine64         # the Windows tier (tests/wine): the Windows runtime of a built ISO under Wine
  gcc-mingw-w64-x86-64  # tests/wine: the ProcessPrng shim DLL and the WinPE tool stand-ins (harness only)
  binutils            # strip: the Linux base strips the manylinux wheels' extensions
  cpio                # independent reader of the Linux base's initramfs (tests)
  squashfs-tools      # mksquashfs: the Linux base's root file system image (read from the medium at boot)
)
# The Linux base (rescuekit build --base linux) itself needs only apt-get/apt-cache/dpkg-deb (every Debian),
# grub-mkimage (grub-common), mkfs.vfat + mtools, strip, mksquashfs (squashfs-tools), nasm and lzop: its packages are fetched
# with apt-get download.
if ! dpkg -s "${APT_PACKAGES[@]}" >/dev/null 2>&1; then
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -q
  $SUDO apt-get install -y -q --no-install-recommends "${APT_PACKAGES[@]}"
fi

# Debian 12+ marks the system python3 "externally managed" (PEP 668); pips that don't know the variable ignore it.
PIP_BREAK_SYSTEM_PACKAGES=1 python3 -m pip install -q -e '.[test]'

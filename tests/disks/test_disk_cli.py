"""`rescuekit disks` on image files, the device layer on files, and the Linux inventory."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from disk_helpers import MiB

from rescuekit.disk import device, inventory, linux
from rescuekit.errors import RescueError, UsageError


def rk(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "rescuekit", *map(str, args)], capture_output=True, text=True)


def test_disks_json_on_images(gpt_disk, mbr_disk):
    r = rk("disks", "--json", gpt_disk[0], mbr_disk[0])
    assert r.returncode == 0, r.stderr
    gpt, mbr = json.loads(r.stdout)
    assert gpt["table"] == "gpt" and gpt["size"] == 320 * MiB
    assert [(p["number"], p["type_name"], p["fs"], p["label"]) for p in gpt["partitions"]] == [
        (1, "EFI System", "fat32", "ESP"), (2, "Microsoft reserved", "zero", None),
        (3, "Basic data", "ntfs", "Windows")]
    assert gpt["partitions"][2]["used_bytes"] > 6 * MiB
    assert mbr["table"] == "mbr"
    assert [(p["number"], p["type"], p["fs"], p["bootable"], p["extended"]) for p in mbr["partitions"]] == [
        (1, "0x07", "ntfs", True, False), (2, "0x0C", "fat32", False, False), (3, "0x05", None, False, True),
        (5, "0x06", "fat16", False, False), (6, "0x07", "ntfs", False, False)]


def test_disks_table_on_images(gpt_disk, stale_ntfs):
    r = rk("disks", gpt_disk[0], stale_ntfs[0])
    assert r.returncode == 0, r.stderr
    out = r.stdout
    assert "table: gpt" in out and "EFI System" in out and "Basic data partition" in out and "Windows" in out
    assert "table: none" in out and "volume: ntfs label=Windows" in out


def test_disks_errors_are_one_line(tmp_path):
    r = rk("disks", tmp_path / "missing.img")
    assert r.returncode == 1 and r.stderr.startswith("rescuekit: error: no such disk") and "Traceback" not in r.stderr
    r = rk("disks", tmp_path)
    assert r.returncode == 2 and "is a directory" in r.stderr
    bad = tmp_path / "garbage.img"
    data = bytearray(b"\x5a" * MiB)
    data[510:512] = b"\x55\xaa"
    bad.write_bytes(bytes(data))
    r = rk("disks", "--json", bad)
    assert r.returncode == 0 and "garbage" in json.loads(r.stdout)[0]["error"]


def _lsblk_disks() -> dict[str, int]:
    """{/dev/NAME: size} of this machine's whole disks as util-linux's lsblk sees them (an independent oracle),
    less the virtual kinds rescuekit leaves out (loop, RAM, zram, md, dm, nbd...) and empty ones."""
    out = subprocess.run(["lsblk", "-J", "-d", "-b", "-o", "NAME,SIZE,TYPE"], capture_output=True, text=True,
                         check=True).stdout
    return {f"/dev/{d['name']}": int(d["size"]) for d in json.loads(out)["blockdevices"]
            if d["type"] == "disk" and int(d["size"] or 0) > 0 and not d["name"].startswith(linux.SKIP_PREFIXES)}


def test_disks_without_arguments_lists_this_machine():
    r = rk("disks", "--json")
    assert r.returncode == 0, r.stderr
    listed = {d["path"]: d["size"] for d in json.loads(r.stdout)}
    assert listed == _lsblk_disks()  # the same disks and sizes as lsblk (none only where lsblk shows none)
    # the system disk(s) are flagged, and only they
    system = inventory.system_disk_paths()
    assert {d["path"] for d in json.loads(r.stdout) if d["is_system"]} == system & set(listed)


def test_file_device(tmp_path):
    p = tmp_path / "new.img"
    with device.open_target(p, create_size=10 * MiB) as t:
        assert t.size == 10 * MiB and t.writable
        t.write(10 * MiB - 3, b"end")
        with pytest.raises(RescueError, match="past the end"):
            t.write(10 * MiB - 2, b"end")
    assert p.stat().st_size == 10 * MiB and p.stat().st_blocks * 512 < MiB  # sparse
    with device.open_source(p) as s:
        assert isinstance(s, device.BlockDevice)
        assert s.read(10 * MiB - 4, 4) == b"\0end"
        buf = bytearray(8)
        assert s.readinto(10 * MiB - 8, memoryview(buf)) == 8
        with pytest.raises(RescueError, match="read-only"):
            s.write(0, b"x")
        with pytest.raises(RescueError, match="past the end"):
            s.read(10 * MiB - 1, 2)
    with device.open_target(p, create_size=1) as t:  # an existing file keeps its size
        assert t.size == 10 * MiB
    with pytest.raises(UsageError, match="directory"):
        device.open_source(tmp_path)
    with pytest.raises(RescueError, match="no such"):
        device.open_target(tmp_path / "nope.img")


def _root_disk() -> str | None:
    """The whole disk under / as util-linux sees it (findmnt + lsblk), or None (overlay, tmpfs...)."""
    src = subprocess.run(["findmnt", "-n", "-o", "SOURCE", "/"], capture_output=True, text=True).stdout.strip()
    if not src.startswith("/dev/"):
        return None
    parent = subprocess.run(["lsblk", "-n", "-d", "-o", "PKNAME", src], capture_output=True, text=True,
                            check=True).stdout.strip()
    return f"/dev/{parent}" if parent else str(Path(src).resolve())


def test_linux_inventory():
    disks = inventory.list_disks()
    system = inventory.system_disk_paths()
    assert {d.path: d.size for d in disks} == _lsblk_disks()
    for d in disks:
        assert d.kind == "disk" and d.size > 0 and d.path.startswith("/dev/")
        assert d.is_system == (d.path in system)
    holder = inventory.disk_holding("/")
    assert holder == _root_disk()
    assert holder is None or holder in system
    # A path that does not exist yet resolves through its existing parent.
    assert inventory.disk_holding("/no/such/dir/repo") == holder
    assert inventory.disk_holding("/proc") is None  # not on a block device


def test_linux_inventory_of_a_loop_disk(loop_ext4, monkeypatch):
    """The listing code on a block device that is always there: a loop disk (GPT, ext4 partition mounted).
    Loop devices are left out of the listing (live media, snaps); with that filter lifted, the loop disk is
    listed with its sysfs facts and its partition's mount point."""
    loop, img, mnt = loop_ext4
    assert loop not in {d.path for d in inventory.list_disks()}
    monkeypatch.setattr(linux, "SKIP_PREFIXES", tuple(p for p in linux.SKIP_PREFIXES if p != "loop"))
    [d] = [d for d in inventory.list_disks() if d.path == loop]
    assert d.kind == "disk" and d.size == img.stat().st_size and d.sector_size == 512
    assert d.mounts == [str(mnt)] and not d.is_system
    assert linux.mounts_by_disk()[os.path.basename(loop)] == [str(mnt)]
    with device.open_source(f"{loop}p1") as p:  # a partition device: its own size, kind "partition"
        assert p.info.kind == "partition" and p.size == 8 * MiB


def test_linux_disk_of_dev_partitions(loop_ext4):
    """sysfs partition -> whole disk mapping: every block device of this machine, and a loop disk's partition."""
    loop = os.path.basename(loop_ext4[0])
    names = os.listdir("/sys/class/block")
    assert f"{loop}p1" in names
    assert linux.whole_disk_name(f"{loop}p1") == loop and linux.whole_disk_name(loop) == loop
    for name in names:
        disk = linux.whole_disk_name(name)
        assert os.path.exists(f"/sys/block/{disk}")


def test_disks_table_shows_names_literally(gpt_disk, tmp_path):
    """Names from the disk are data, not rich markup."""
    from disk_helpers import copy_sparse, run

    d = tmp_path / "named.img"
    copy_sparse(gpt_disk[0], d)
    run("sgdisk", "-c", "3:[red]Data[/red]", d)
    r = rk("disks", d)
    assert r.returncode == 0 and "[red]Data[/red]" in r.stdout


@pytest.fixture()
def loop_disk(gpt_disk, tmp_path):
    """The GPT test disk (a copy) attached to a loop device: a real Linux block device."""
    from disk_helpers import copy_sparse

    img = tmp_path / "loop.img"
    copy_sparse(gpt_disk[0], img)
    dev = _attach(img)
    try:
        yield dev
    finally:
        subprocess.run(["losetup", "-d", dev], check=False)


def _attach(img: Path, *, partscan: bool = False) -> str:
    """A loop device for ``img`` (the tests run as root, as .ci/run does: a failure is a failure, not a skip)."""
    r = subprocess.run(["losetup", "--find", "--show", *(["--partscan"] if partscan else []), str(img)],
                       capture_output=True, text=True)
    if r.returncode != 0:
        pytest.fail(f"cannot attach a loop device (the tests need root): {r.stderr.strip()}")
    return r.stdout.strip()


@pytest.fixture()
def loop_ext4(tmp_path):
    """A 16 MiB GPT image on a loop device with partitions scanned; partition 1 (8 MiB ext4) mounted."""
    from disk_helpers import run

    img = tmp_path / "ext4disk.img"
    with open(img, "wb") as f:
        f.truncate(16 * MiB)
    run("sgdisk", "-n", "1:2048:+8M", "-t", "1:8300", img)
    dev = _attach(img, partscan=True)
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    mounted = False
    try:
        if not os.path.exists(f"{dev}p1"):  # kernels without the GPT parser: add the partitions by hand
            run("partx", "-a", dev, check=False)
        for _ in range(200):  # devtmpfs/udev may still be creating the partition node
            if os.path.exists(f"{dev}p1"):
                break
            time.sleep(0.05)
        run("mkfs.ext4", "-q", "-F", f"{dev}p1")
        run("mount", f"{dev}p1", mnt)
        mounted = True
        yield dev, img, mnt
    finally:
        if mounted:
            subprocess.run(["umount", str(mnt)], check=False)
        subprocess.run(["losetup", "-d", dev], check=False)


def test_linux_block_device(loop_disk, gpt_disk):
    with device.open_source(loop_disk) as d:
        assert isinstance(d, device.FileDevice)
        assert d.size == gpt_disk[0].stat().st_size and d.sector_size == 512  # BLKGETSIZE64, BLKSSZGET
        assert d.info.kind == "disk" and not d.info.is_system
        from rescuekit.disk import partitions

        assert [p.type_name for p in partitions.read_table(d).partitions] == [
            "EFI System", "Microsoft reserved", "Basic data"]
    # A loop device "is on" the disk that holds its backing file (live media: / on a loop-mounted image).
    backing = open(f"/sys/block/{os.path.basename(loop_disk)}/loop/backing_file").read().strip()
    assert linux.disk_of_dev(os.stat(loop_disk).st_rdev) == [d for d in [inventory.disk_holding(backing)] if d]
    # Writable opens are exclusive: a second writer (or a mount) gets a clear error, not a shared disk.
    with device.open_target(loop_disk) as t:
        t.write(0, t.read(0, 512))
        with pytest.raises(RescueError, match="in use"):
            device.open_target(loop_disk)
    r = rk("disks", "--json", loop_disk)
    assert r.returncode == 0 and json.loads(r.stdout)[0]["table"] == "gpt"


def test_file_device_enospc_is_a_clear_error(tmp_path):
    """A target file on a full file system: RescueError naming the offset and the file."""
    full = "/dev/full"  # every write fails with ENOSPC
    fd = os.open(full, os.O_RDWR)
    dev = device.FileDevice(full, fd, 1 << 20, writable=True)
    try:
        with pytest.raises(RescueError, match=r"write error at offset 4096 of /dev/full: no space left on device"):
            dev.write(4096, b"x" * 512)
    finally:
        os.close(fd)


def test_fifo_is_refused_without_blocking(tmp_path):
    """Opening a FIFO for reading blocks until a writer comes: it must be refused before any open()."""
    import threading

    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    got: list[BaseException] = []

    def probe() -> None:
        try:
            device.open_source(fifo)
        except BaseException as exc:  # noqa: BLE001 - handed to the test thread
            got.append(exc)

    t = threading.Thread(target=probe, daemon=True)
    t.start()
    t.join(60)  # a hang guard, not a timing assertion
    if t.is_alive():  # unblock the stuck open so the thread ends
        os.close(os.open(fifo, os.O_WRONLY))
        t.join()
        pytest.fail("open_source blocked on a FIFO")
    assert len(got) == 1 and isinstance(got[0], UsageError) and "neither a regular file" in str(got[0])


def test_refused_open_says_why_for_root_and_for_users(tmp_path):
    """EPERM/EACCES: "run as root" only when not root; as root, say that the system refuses the open (seen as root
    on a container's /dev/vda, where advising to run as root was wrong). Real refusals: an immutable file for root,
    a 0600 file for an unprivileged user."""
    import os

    if os.geteuid() != 0:
        pytest.skip("needs root (chattr +i, setpriv)")
    img = tmp_path / "locked.img"
    img.write_bytes(bytes(1 << 20))
    if subprocess.run(["chattr", "+i", str(img)], capture_output=True).returncode != 0:
        pytest.skip(f"file system of {tmp_path} has no immutable attribute")
    try:
        r = subprocess.run([sys.executable, "-P", "-m", "rescuekit", "restore", str(tmp_path / "no-repo"), str(img),
                            "--yes"], capture_output=True, text=True)
        from rescuekit.disk import device
        from rescuekit.errors import RescueError

        with pytest.raises(RescueError, match=r"operation not permitted opening .*locked.img \(read-write\) "
                                              r"although running as root: the system does not let"):
            device.open_target(img)
    finally:
        subprocess.run(["chattr", "-i", str(img)], check=True)
    assert "Traceback" not in r.stderr
    img.chmod(0o600)
    os.seteuid(65534)  # the kernel checks the file mode for a user; back to root in finally
    try:
        with pytest.raises(RescueError) as err:
            device.open_source(img)
    finally:
        os.seteuid(0)
    assert str(err.value) == f"permission denied opening {img} (read); run as root/administrator"

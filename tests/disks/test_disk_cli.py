"""`rescuekit disks` on image files, the device layer on files, and the Linux inventory."""
from __future__ import annotations

import json
import os
import subprocess
import sys

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


def test_disks_without_arguments_lists_this_machine():
    r = rk("disks", "--json")
    assert r.returncode == 0, r.stderr
    for d in json.loads(r.stdout):
        assert d["path"].startswith("/dev/") and d["size"] > 0


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


def test_linux_inventory():
    disks = inventory.list_disks()
    system = inventory.system_disk_paths()
    for d in disks:
        assert d.kind == "disk" and d.size > 0 and d.path.startswith("/dev/")
        assert d.is_system == (d.path in system)
    holder = inventory.disk_holding("/")
    assert holder is None or holder in system
    # A path that does not exist yet resolves through its existing parent.
    assert inventory.disk_holding("/no/such/dir/repo") == holder
    assert inventory.disk_holding("/proc") is None  # not on a block device


def test_linux_disk_of_dev_partitions():
    """sysfs partition -> whole disk mapping, whatever disks this machine has."""
    for name in os.listdir("/sys/class/block"):
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
    r = subprocess.run(["losetup", "--find", "--show", str(img)], capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot attach a loop device here (needs root): {r.stderr.strip()}")
    dev = r.stdout.strip()
    try:
        yield dev
    finally:
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

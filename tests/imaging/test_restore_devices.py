"""Restore and capture on real Linux block devices (loop devices, as root): sizing, exclusive open, the
kernel re-reading the partition table, 4096-byte sectors, and loop devices / image files that hold the
repository. Every loop device is detached by its own name, also on failure."""
from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path

import pytest
from imaging_helpers import MiB, rk, rk_json

from rescuekit.disk.device import open_source
from rescuekit.disk.filesystems import detect
from rescuekit.disk.partitions import read_table

SIZE = 200 * MiB


@pytest.fixture(scope="module", autouse=True)
def _tools():
    from tests.conftest import require_tools

    require_tools("losetup", "partx", "mkfs.ext4", "unshare", "sgdisk", "fsck.vfat")


@contextmanager
def loop_device(path: Path, *args: str):
    r = subprocess.run(["losetup", "--find", "--show", *args, str(path)], capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot attach a loop device here (needs root): {r.stderr.strip()}")
    dev = r.stdout.strip()
    try:
        yield dev
    finally:
        subprocess.run(["losetup", "-d", dev], check=False)


def _blank(path: Path, size: int) -> Path:
    with open(path, "wb") as f:
        f.truncate(size)
    return path


def _sha(path: str | Path) -> str:
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def _err(res: subprocess.CompletedProcess) -> str:
    assert res.returncode == 1 and "Traceback" not in res.stderr, res.stdout + res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("rescuekit: error: "), res.stderr
    return lines[0]


def _kernel_partitions(dev: str) -> list[str]:
    name = Path(dev).name
    return sorted(p for p in os.listdir(f"/sys/block/{name}") if p.startswith(name + "p"))


def _kernel_reads_gpt() -> bool:
    """Does this kernel parse GPTs itself (CONFIG_EFI_PARTITION)? Minimal VM kernels may not: then partition
    nodes come from ``partx`` (userspace parsing + BLKPG)."""
    import gzip

    try:
        with gzip.open("/proc/config.gz", "rt") as f:
            return "CONFIG_EFI_PARTITION=y" in f.read()
    except OSError:
        return True


def _partx(dev: str) -> None:
    """Partition nodes for ``dev`` whatever the kernel parses (libblkid reads the table, BLKPG adds them)."""
    subprocess.run(["partx", "-u", dev], capture_output=True, text=True, check=True)


def test_restore_onto_loop_devices(repo, repo_copy, disks, tmp_path, monkeypatch, capsys):
    """Sizing from BLKGETSIZE64 (a device below the smallest fit refused; one sector short now shrinks), exclusive open (a holder: refused, no journal),
    and after the restore the kernel sees the partitions (BLKRRPART): /dev/loopNp1..p3."""
    tiny = 16 * MiB  # below the image's used data + layout: no shrink can fit it
    with loop_device(_blank(tmp_path / "short.img", tiny), "--partscan") as short:
        line = _err(rk("restore", repo_copy, short, "--image", "gpt", "--yes", check=False))
        assert "too small" in line and str(tiny) in line, line
        assert _sha(short) == _sha(tmp_path / "short.img") and not _kernel_partitions(short)
    for size in (SIZE, SIZE + 56 * MiB):
        img = _blank(tmp_path / "t.img", size)
        with loop_device(img, "--partscan") as dev:
            assert not _kernel_partitions(dev)
            holder = os.open(dev, os.O_RDONLY | os.O_EXCL)  # another program holds the disk
            try:
                line = _err(rk("restore", repo_copy, dev, "--image", "gpt", "--yes", check=False))
                assert "in use" in line and dev in line
            finally:
                os.close(holder)
            assert rk_json("images", repo_copy)["unfinished_restores"] == []
            assert _sha(dev) == _sha(img)
            rereads = _restore_in_process(monkeypatch, capsys, repo_copy, dev)
            assert rereads == [(dev, None)], rereads  # BLKRRPART issued on the disk, accepted by the kernel
            if _kernel_reads_gpt():
                assert _kernel_partitions(dev) == [f"{Path(dev).name}p{i}" for i in (1, 2, 3)]
            v = subprocess.run(["sgdisk", "-v", dev], capture_output=True, text=True)
            assert "No problems found" in v.stdout, v.stdout
            _partx(dev)
            with open_source(f"{dev}p3") as p3:
                assert p3.info.kind == "partition" and detect(p3, 0, p3.size).kind == "ntfs"
            with open_source(f"{dev}p1") as p1:
                assert detect(p1, 0, p1.size).kind == "fat32"
        img.unlink()


def _restore_in_process(monkeypatch, capsys, repo: Path, dev: str) -> list[tuple[str, str | None]]:
    """``rescuekit restore REPO DEV --yes --verify`` in this process; the BLKRRPART calls it made (device, error)."""
    import fcntl

    from rescuekit.cli import COMMAND_MODULES, _register_all, cli, run
    from rescuekit.disk import device

    calls: list[tuple[str, str | None]] = []

    def spy(fd: int) -> None:
        try:
            fcntl.ioctl(fd, device.BLKRRPART)
            calls.append((os.readlink(f"/proc/self/fd/{fd}"), None))
        except OSError as exc:
            calls.append((os.readlink(f"/proc/self/fd/{fd}"), exc.strerror))

    with monkeypatch.context() as m:
        m.setattr(device, "_reread_partitions", spy)
        _register_all(cli, COMMAND_MODULES)
        with pytest.raises(SystemExit) as exc:
            run(cli, ["restore", str(repo), dev, "--image", "gpt", "--yes", "--verify"])
    assert exc.value.code == 0, capsys.readouterr().err
    return calls


@pytest.fixture(scope="module")
def disk_4k(tmp_path_factory):
    """A GPT disk made on a loop device with 4096-byte sectors (sgdisk + mkfs.vfat on /dev/loopNp1), captured
    from that device: the image records 4096-byte sectors."""
    d = tmp_path_factory.mktemp("4k")
    img = _blank(d / "4k.img", 64 * MiB)
    repo = d / "repo"
    with loop_device(img, "--sector-size", "4096", "--partscan") as dev:
        subprocess.run(["sgdisk", "-n1:256:+24M", "-t1:ef00", "-n2:0:+16M", "-t2:0700", dev], check=True,
                       capture_output=True)
        _partx(dev)
        subprocess.run(["mkfs.vfat", "-F", "32", "-n", "ESP4K", f"{dev}p1"], check=True, capture_output=True)
        doc = rk_json("capture", dev, repo, "--name", "4k")
    assert doc["partitions"][0]["fs"] == "fat32"
    return repo, doc


def test_sector_size_mismatch_refused_both_ways(repo, repo_copy, disk_4k, tmp_path):
    repo4k, doc = disk_4k
    # a 512-byte-sector image onto a 4096-byte-sector disk
    with loop_device(_blank(tmp_path / "a.img", SIZE), "--sector-size", "4096") as dev:
        before = _sha(dev)
        line = _err(rk("restore", repo_copy, dev, "--image", "gpt", "--yes", check=False))
        assert "sector size mismatch" in line and "4096-byte sectors" in line and "512-byte" in line
        assert _sha(dev) == before
    # a 4096-byte-sector image onto a 512-byte-sector disk (whole disk and one partition)
    with loop_device(_blank(tmp_path / "b.img", 64 * MiB)) as dev:
        before = _sha(dev)
        line = _err(rk("restore", repo4k, dev, "--image", "4k", "--yes", check=False))
        assert "sector size mismatch" in line and "512-byte sectors" in line and "4096-byte" in line
        assert _sha(dev) == before
    c = _blank(tmp_path / "c.img", 64 * MiB)
    subprocess.run(["sgdisk", "-n1:2048:+40M", str(c)], check=True, capture_output=True)
    with loop_device(c) as dev:
        before = _sha(dev)
        line = _err(rk("restore", repo4k, dev, "--image", "4k", "--partition", "1", "--yes", check=False))
        assert "sector size mismatch" in line and _sha(dev) == before
    assert rk_json("images", repo4k)["unfinished_restores"] == []


def test_4k_image_restores_onto_larger_4k_disk(disk_4k, tmp_path):
    repo4k, _doc = disk_4k
    with loop_device(_blank(tmp_path / "big.img", 96 * MiB), "--sector-size", "4096", "--partscan") as dev:
        rk("restore", repo4k, dev, "--image", "4k", "--yes", "--verify")
        with open_source(dev) as d:
            t = read_table(d)
        assert t.kind == "gpt" and t.sector_size == 4096 and not t.warnings
        assert t.last_usable == 96 * MiB - (1 + 128 * 128 // 4096) * 4096
        if _kernel_reads_gpt():
            assert _kernel_partitions(dev) == [f"{Path(dev).name}p1", f"{Path(dev).name}p2"]
        _partx(dev)
        r = subprocess.run(["fsck.vfat", "-n", f"{dev}p1"], capture_output=True, text=True)
        assert r.returncode == 0, r.stdout + r.stderr


def test_loop_devices_and_image_files_holding_the_repository(disks, tmp_path):
    """A repository on a file system in a loop-attached image (a partition of a loop disk, and a whole loop
    device): restoring onto the image file, the loop device, a second loop device on the same file, and
    capturing the loop disk or the image file are all refused; the repository stays intact."""
    disk = _blank(tmp_path / "disk.img", 96 * MiB)
    subprocess.run(["sgdisk", "-n1:2048:0", str(disk)], check=True, capture_output=True)
    vol = _blank(tmp_path / "vol.img", 48 * MiB)
    subprocess.run(["mkfs.ext4", "-q", "-F", str(vol)], check=True, capture_output=True)
    src = _blank(tmp_path / "src.img", 4 * MiB)
    with open(src, "r+b") as f:
        f.write(os.urandom(4 * MiB))
    m1, m2 = tmp_path / "m1", tmp_path / "m2"
    m1.mkdir()
    m2.mkdir()
    py = sys.executable
    with loop_device(disk, "--partscan") as ld, loop_device(disk) as ld2, loop_device(vol) as lv:
        _partx(ld)
        subprocess.run(["mkfs.ext4", "-q", "-F", f"{ld}p1"], check=True, capture_output=True)
        cases = [  # (label, command line); run inside the mount namespace
            ("restore onto the image file", f"restore {m1}/repo {disk} --yes"),
            ("restore onto the loop disk", f"restore {m1}/repo {ld} --yes"),
            ("restore onto its partition", f"restore {m1}/repo {ld}p1 --yes"),
            ("restore onto a second loop of the file", f"restore {m1}/repo {ld2} --yes"),
            ("capture the loop disk", f"capture {ld} {m1}/repo"),
            ("capture the image file", f"capture {disk} {m1}/repo"),
            ("restore onto a loop-mounted volume file", f"restore {m2}/repo {vol} --yes"),
            ("restore onto its loop device", f"restore {m2}/repo {lv} --yes"),
            ("capture its loop device", f"capture {lv} {m2}/repo"),
        ]
        lines = [f"mount {ld}p1 {m1} && mount {lv} {m2} || exit 99",
                 f"{py} -m rescuekit capture {src} {m1}/repo --name src >/dev/null || exit 98",
                 f"{py} -m rescuekit capture {src} {m2}/repo --name src >/dev/null || exit 98"]
        for i, (_label, cmd) in enumerate(cases):
            lines.append(f"echo '#{i}' >&2; {py} -m rescuekit {cmd}; echo \"rc{i}=$?\"")
        lines.append(f"{py} -m rescuekit verify {m1}/repo --read-data && {py} -m rescuekit verify {m2}/repo "
                     f"--read-data; echo \"verify=$?\"; echo \"journals=$(find {m1}/repo/restores {m2}/repo/restores "
                     "-name '*.json' | wc -l)\"")
        res = subprocess.run(["unshare", "-m", "sh", "-c", "\n".join(lines)], capture_output=True, text=True,
                             timeout=300, env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    if res.returncode == 99:
        pytest.skip(f"cannot mount ext4 here: {res.stderr.strip()[:200]}")
    assert res.returncode != 98, res.stderr
    out, err = res.stdout, res.stderr
    per_case = err.split("#")[1:]
    for i, (label, cmd) in enumerate(cases):
        assert f"rc{i}=1" in out, (label, out, err)
        msg = per_case[i].split("\n", 1)[1].strip()
        assert msg.startswith("rescuekit: error: ") and "\n" not in msg, (label, msg)
        want = "is on the disk being captured" if cmd.startswith("capture") else "it holds the repository"
        assert want in msg, (label, msg)
    assert "verify=0" in out and "journals=0" in out, out + err


def test_empty_and_resized_block_device_sources_refused(tmp_path, monkeypatch):
    """A device reporting 0 bytes (a loop device on an empty file, like an empty card reader) and a device
    whose capacity changes during the capture (`losetup -c` after the backing file grew) are refused."""
    from rescuekit.errors import RescueError
    from rescuekit.imaging import capture as cap

    empty = tmp_path / "empty.img"
    empty.touch()
    with loop_device(empty) as dev:
        line = _err(rk("capture", dev, tmp_path / "repo", check=False))
        assert "is empty (0 bytes)" in line and dev in line
    assert not (tmp_path / "repo").exists()
    img = _blank(tmp_path / "grow.img", 16 * MiB)
    with open(img, "r+b") as f:
        f.write(os.urandom(16 * MiB))
    with loop_device(img) as dev:
        real_plan = cap.make_plan

        def plan_then_grow(d, cs, **kw):
            plan = real_plan(d, cs, **kw)
            with open(img, "r+b") as f:
                f.truncate(20 * MiB)
            subprocess.run(["losetup", "-c", dev], check=True)  # the kernel re-reads the capacity
            return plan

        monkeypatch.setattr(cap, "make_plan", plan_then_grow)
        with pytest.raises(RescueError, match=r"changed size during the capture \(16777216 -> 20971520 bytes\)"):
            cap.capture(dev, tmp_path / "repo2", progress=False)
    assert not list((tmp_path / "repo2" / "images").glob("*.json"))


def test_write_protected_device_refused_without_journal(repo_copy, tmp_path):
    """A read-only block device (a write-protected card; `losetup -r`): Linux opens it read-write anyway and
    fails each write, so BLKROGET is asked at open: refused in one line, untouched, no journal."""
    img = _blank(tmp_path / "ro.img", SIZE)
    with loop_device(img, "--read-only") as dev:
        line = _err(rk("restore", repo_copy, dev, "--image", "gpt", "--yes", check=False))
        assert "is read-only" in line and dev in line
    assert rk_json("images", repo_copy)["unfinished_restores"] == []
    with open(img, "rb") as f:
        assert f.read(MiB) == bytes(MiB)

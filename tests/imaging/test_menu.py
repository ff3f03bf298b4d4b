"""`rescuekit menu` (issue 11) on image files standing in for disks: the full restore flow in tmux (arrows, number
keys, typed confirmation, progress, result screen), capture / cancel flows and the unattended restore through a
pipe, and the pure command-line builders of boot repair, driver loading and network shares."""
from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from imaging_helpers import MiB, check_disk_files, rk

from rescuekit import finders, tools
from rescuekit.errors import RescueError
from tests.conftest import require_tools
from tests.tmux_helpers import Tmux

MENU = [sys.executable, "-m", "rescuekit", "menu"]


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _blank(path: Path, size: int) -> Path:
    with open(path, "wb") as f:
        f.truncate(size)
    return path


def menu(*args: object, keys: str, env: dict | None = None, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run([*MENU, *map(str, args)], input=keys, capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "RESCUEKIT_CONFIG": os.devnull, **(env or {})})


@pytest.fixture(scope="session")
def repo_volume(repo: dict, tmp_path_factory: pytest.TempPathFactory):
    """An ext4 volume image (the Linux base mounts what it finds; this kernel has no vfat) holding a copy of the session repository, loop-mounted (root only)."""
    if os.geteuid() != 0:
        pytest.skip("needs root for a loop mount")
    require_tools("losetup", "mount", "umount", "mkfs.ext4")
    d = tmp_path_factory.mktemp("repovol")
    vol, mnt = _blank(d / "usb stick.img", 160 * MiB), d / "mnt"
    mnt.mkdir()
    subprocess.run(["mkfs.ext4", "-q", "-F", "-L", "RKIMAGES", str(vol)], check=True, capture_output=True)
    loop = subprocess.run(["losetup", "-f", "--show", str(vol)], check=True, capture_output=True,
                          text=True).stdout.strip()
    try:
        subprocess.run(["mount", loop, str(mnt)], check=True)
        try:
            shutil.copytree(repo["path"], mnt / "Images" / "office", copy_function=shutil.copyfile)
            yield {"image": vol, "mount": mnt, "repo": mnt / "Images" / "office", "loop": loop}
        finally:
            subprocess.run(["umount", str(mnt)], check=True)
    finally:
        subprocess.run(["losetup", "-d", loop], check=True)


PICKED = "Esc or 0:"  # a picker's key help line: the page is drawn


def _row(screen: str, needle: str) -> str:
    """The number of the picker row whose line holds ``needle``."""
    for ln in screen.splitlines():
        m = re.match(r"^[ >]\s*(\d+)\s{2}", ln)
        if m and needle in ln:
            return m.group(1)
    raise AssertionError(f"no row with {needle!r}:\n{screen}")


def test_restore_flow_in_tmux_finds_the_repository_refuses_its_disk_and_restores(repo_volume, disks, tmp_path):
    require_tools("tmux")
    target = _blank(tmp_path / "new disk.img", 256 * MiB)
    logs = tmp_path / "logs"
    t = Tmux(f"rkmenu{os.getpid()}", [*MENU, str(target), str(repo_volume["image"]), "--log-dir", str(logs)],
             {"RESCUEKIT_CONFIG": os.devnull, "TERM": "xterm"})
    try:
        s = t.wait_for("Main menu", PICKED)
        # an entry is offered when its feature's module is in the runtime (winbackup and files are)
        for entry in ("Restore a Windows system image backup", "Browse files in an image"):
            assert entry in s and f"{entry}  (" not in s, s
        t.keys("Down", "Down", "Up", "Up", "Enter")  # arrows: back on "Restore an image"
        s = t.wait_for("choose the repository", PICKED)  # found by scanning the mounted file systems
        assert "Images/office" in s and "2 image(s)" in s, s
        t.keys(_row(s, str(repo_volume["repo"])), "Enter")
        s = t.wait_for("choose the image", PICKED)
        assert "#1 gpt" in s and "#2 mbr" in s and "200.0 MiB" in s, s
        t.keys(_row(s, "#1 gpt"), "Enter")
        s = t.wait_for("choose the disk to overwrite", PICKED)
        vol_row = _row(s, "usb stick.img")
        assert "REPOSITORY" in s and "(holds the repository)" in s, s
        t.keys(vol_row, "Enter")  # the repository's disk: shown, refused
        s = t.wait_for(f"{vol_row} cannot be chosen: holds the repository", PICKED)
        t.keys(_row(s, "new disk.img"), "Enter")
        s = t.wait_for("this will be overwritten", "Type ERASE:")
        flat = " ".join(s.split())  # the target's path is long enough to wrap the line where it may
        assert "image file, 256.0 MiB" in flat and "will overwrite" in flat and "gpt, whole disk" in flat, s
        t.keys("ERASE", "Enter")
        s = t.wait_for("Restore an image: done", "Enter or Esc")
        assert "read back and verified" in s and "remove the rescue USB stick" in s, s
        t.keys("Enter")
        t.wait_for("Main menu")
        t.keys("Escape")
        t.wait_for("MENU-EXITED 0")
    finally:
        t.kill()
    check_disk_files(target, disks["gpt"][1], tmp_path)  # ntfsfix, fsck.vfat, every file's SHA-256
    log = next(logs.glob("rescuekit-*.log")).read_text()
    assert "confirmation: given" in log and f"disk: {target}" in log and "restored" in log, log
    assert list((repo_volume["repo"] / "logs").glob("rescuekit-*.log"))  # copied next to the repository


def test_capture_flow_adds_an_image(repo_copy, disks, tmp_path):
    source = disks["gpt"][0]
    before = _sha(source)
    res = menu("--no-scan", repo_copy, source, "--log-dir", tmp_path / "logs",
               keys="2\n1\n1\npc-new\n\n0\n")  # capture, repository 1, disk 1, name, result, exit
    assert res.returncode == 0, res.stdout + res.stderr
    assert "Capture this PC: done" in res.stdout and "pc-new" in res.stdout, res.stdout
    assert "B/s" in res.stderr, res.stderr  # rich's progress: rate and time left
    names = [i["name"] for i in json.loads(rk("images", repo_copy, "--json").stdout)["images"]]
    assert sorted(names) == ["gpt", "mbr", "pc-new"]
    assert "OK:" in rk("verify", repo_copy).stdout and _sha(source) == before


def test_cancelled_restore_writes_nothing(repo_copy, disks, tmp_path):
    target = _blank(tmp_path / "t.img", 256 * MiB)
    res = menu("--no-scan", repo_copy, target, "--log-dir", tmp_path / "logs",
               keys="1\n1\n2\n1\nno\n\n\x1b")  # restore, repo, image #1 (second row: newest first), disk, "no"
    assert res.returncode == 0, res.stdout + res.stderr
    assert "this will be overwritten" in res.stdout and "Type ERASE" in res.stdout
    assert "restore cancelled; nothing was written" in res.stdout, res.stdout
    assert not any(target.read_bytes()) and list((repo_copy / "restores").iterdir()) == []


def test_unattended_restore_from_a_build_config(repo_copy, disks, tmp_path):
    from builder.config import RuntimeConfig, toml_key, toml_value

    cfg = RuntimeConfig(default_action="restore", repository="D:\\Images", target="auto", image="gpt", then="menu")
    assert cfg.validated().launcher_args() == ["rescuekit", "menu"]
    table = {**cfg.as_toml_table(), "repository": str(repo_copy)}  # the host's path for D:\Images
    conf = tmp_path / "config.toml"
    conf.write_text("[rescuekit]\n" + "".join(f"{toml_key(k)} = {toml_value(v)}\n" for k, v in table.items()))
    env = {"RESCUEKIT_CONFIG": str(conf)}
    small = _blank(tmp_path / "small.img", 100 * MiB)  # cannot hold the 200 MiB image
    a, b = _blank(tmp_path / "a.img", 256 * MiB), _blank(tmp_path / "b.img", 256 * MiB)
    res = menu("--no-scan", small, a, b, "--countdown", "0", keys="", env=env)  # two candidates: refused
    assert res.returncode == 1 and "found 2" in res.stderr and "nothing was written" in res.stderr, res.stderr
    assert not any(a.read_bytes()) and not any(b.read_bytes())
    res = menu("--no-scan", small, a, "--countdown", "0", keys="", env=env)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "Unattended restore: done" in res.stdout and "B/s" in res.stderr
    check_disk_files(a, disks["gpt"][1], tmp_path)
    lines = (repo_copy / "logs" / "machines.log").read_text().splitlines()
    gpt_id = next(i["id"] for i in json.loads(rk("images", repo_copy, "--json").stdout)["images"] if i["name"] == "gpt")
    host = lines[0].split("\t")[1]
    assert host and [ln.split("\t")[1:] for ln in lines] == [  # time, host, disk, serial, image, name, result
        [host, "auto", "-", gpt_id, "gpt", "refused"], [host, str(a), "-", gpt_id, "gpt", "ok"]]


def test_restore_flow_onto_a_smaller_disk_shrinks(repo_copy, disks, tmp_path):
    """The picker offers a disk smaller than the image's source when the used data fits (the restore shrinks the
    NTFS volume); far too small stays refused; --target auto never picks a smaller disk on its own."""
    from rescuekit.repo.repository import Repository

    doc = Repository.open(repo_copy).find_image("gpt")
    small, tiny = _blank(tmp_path / "small.img", 150 * MiB), _blank(tmp_path / "tiny.img", 8 * MiB)
    rows = finders.disk_rows(finders.describe_disks([str(small), str(tiny)], machine=False), image=doc)
    assert rows[0].why == "" and rows[0].shrinks and "the restore shrinks" in " ".join(rows[0].marks)
    assert rows[1].why.startswith("too small (needs ") and finders.internal_candidates(rows) == []
    res = menu("--no-scan", repo_copy, small, "--log-dir", tmp_path / "logs",
               keys="1\n1\n2\n1\nERASE\n\n\x1b")  # restore, repository, image gpt, the small disk, ERASE
    assert res.returncode == 0, res.stdout + res.stderr
    assert "the NTFS volume shrinks" in res.stdout and "Restore an image: done" in res.stdout, res.stdout[-3000:]
    assert subprocess.run(["sgdisk", "-v", str(small)], capture_output=True, text=True).returncode == 0
    check_disk_files(small, disks["gpt"][1], tmp_path)


def test_unattended_auto_rules_pick_one_disk(repo_copy, disks, tmp_path):
    """auto:RULES narrows the candidates; no match or a bad rule writes nothing."""
    a, b = _blank(tmp_path / "a.img", 256 * MiB), _blank(tmp_path / "b.img", 300 * MiB)
    common = ("--no-scan", a, b, "--action", "restore", "--repository", repo_copy, "--image", "gpt",
              "--countdown", "0", "--then", "menu")
    res = menu(*common, "--target", "auto:size>=1G", keys="")
    assert res.returncode == 1 and "matching size>=1G that can hold" in res.stderr, res.stderr
    assert "found 0" in res.stderr and "nothing was written" in res.stderr, res.stderr
    res = menu(*common, "--target", "auto:colour=red", keys="")
    assert res.returncode == 2 and "bad rule 'colour=red'" in res.stderr and "Traceback" not in res.stderr
    assert not any(a.read_bytes()) and not any(b.read_bytes())
    res = menu(*common, "--target", "auto:size>=280M", keys="")
    assert res.returncode == 0 and "Unattended restore: done" in res.stdout, res.stdout + res.stderr
    assert not any(a.read_bytes())
    check_disk_files(b, disks["gpt"][1], tmp_path)


def test_target_rules_match_model_serial_bus_and_size():
    from rescuekit import target_rules as tr

    rows = [finders.DiskRow("/dev/sda", {"model": "Samsung SSD 870 EVO 500GB", "serial": "S62ANJ0R1",
                                         "bus": "sata", "size": 500_107_862_016}),
            finders.DiskRow("/dev/nvme0n1", {"model": "WD Blue SN570 1TB", "serial": "2201AB", "bus": "nvme",
                                             "size": 1_000_204_886_016})]
    pick = lambda t: [r.path for r in tr.select(rows, t)]  # noqa: E731
    assert pick("auto") == ["/dev/sda", "/dev/nvme0n1"]
    assert pick("auto:model=*samsung*") == ["/dev/sda"]
    assert pick("auto:bus=nvme,size~1TB") == ["/dev/nvme0n1"]
    assert pick("auto:size~500GB") == ["/dev/sda"] and pick("auto:size~465G") == ["/dev/sda"]
    assert pick("auto:serial=S62*,size<600GB") == ["/dev/sda"] and pick("auto:size>2TB") == []
    assert tr.parse_size("1.5TiB", "x") == 3 * (1 << 39) and tr.parse_size("64M", "x") == 64 << 20
    for bad in ("auto:model>=x", "auto:size=lots", "auto:serial=a%b", "autox", "auto:"):
        with pytest.raises(RescueError):
            tr.parse(bad)


def test_a_build_for_a_named_target_still_opens_the_menu(repo_copy, tmp_path):
    """default_action restore onto a named disk is launch.cmd's `rescuekit restore` (which asks); `rescuekit menu`
    started by hand with that config shows the main screen and writes nothing."""
    target = _blank(tmp_path / "t.img", 256 * MiB)
    conf = tmp_path / "config.toml"
    conf.write_text(f"[rescuekit]\ndefault_action = 'restore'\nrepository = {str(repo_copy)!r}\n"
                    f"target = {str(target)!r}\n")
    res = menu("--no-scan", target, "--countdown", "0", keys="0\n", env={"RESCUEKIT_CONFIG": str(conf)})
    assert res.returncode == 0 and "Main menu" in res.stdout and "Unattended" not in res.stdout, res.stdout
    assert not any(target.read_bytes())


def test_unattended_auto_refuses_the_repositorys_disk(repo_volume, tmp_path):
    res = menu("--no-scan", repo_volume["image"], "--action", "restore", "--repository", repo_volume["repo"],
               "--target", "auto", "--image", "gpt", "--countdown", "0", "--then", "menu", keys="")
    assert res.returncode == 1 and "found 0" in res.stderr, res.stdout + res.stderr
    rows = finders.disk_rows(finders.describe_disks([str(repo_volume["image"])], machine=False),
                             repo=str(repo_volume["repo"]))
    assert [(r.why, r.marks) for r in rows] == [("holds the repository", ["REPOSITORY"])]


def test_captured_from_matches_guid_signature_or_serial():
    img = {"table": {"disk_guid": "AB-CD", "disk_signature": 0x1234ABCD}, "source": {"serial": " S1 "}}
    assert finders.captured_from({"disk_guid": "ab-cd"}, img)
    assert finders.captured_from({"disk_signature": "1234ABCD"}, img)
    assert finders.captured_from({"serial": "S1"}, img)
    assert not finders.captured_from({"disk_guid": "x", "disk_signature": "00000000", "serial": "S2"}, img)


def test_tool_command_lines():
    assert tools.bcdboot_command("C:\\Windows", "S", "uefi") == ["bcdboot", "C:\\Windows", "/s", "S:", "/f", "UEFI"]
    assert tools.bcdboot_command("D:\\Windows", "s:\\", "BIOS")[3:] == ["S:", "/f", "BIOS"]
    with pytest.raises(ValueError):
        tools.bcdboot_command("C:\\Windows", "S", "coreboot")
    assert tools.diskpart_assign_script(0, 1, "S:") == "select disk 0\nselect partition 1\nassign letter=S\n"
    assert tools.system_partition({"table": "gpt", "partitions": [
        {"number": 2, "type_name": "Microsoft basic data"}, {"number": 1, "type_name": "EFI System"}]}) == (1, "UEFI")
    assert tools.system_partition({"table": "mbr", "partitions": [{"number": 1, "bootable": True}]}) == (1, "BIOS")
    assert tools.system_partition({"table": "gpt", "partitions": []}) is None
    assert tools.net_use_command("z", "\\\\nas\\images", "OFFICE\\admin", "p w") == [
        "net", "use", "Z:", "\\\\nas\\images", "p w", "/user:OFFICE\\admin", "/persistent:no"]
    assert tools.net_use_command("Y:", "\\\\nas\\pub", None, None) == ["net", "use", "Y:", "\\\\nas\\pub",
                                                                       "/persistent:no"]
    with pytest.raises(ValueError):
        tools.net_use_command("Z", "nas/images", None, None)
    assert tools.drvload_command("E:\\rst\\iaStorVD.inf") == ["drvload", "E:\\rst\\iaStorVD.inf"]


def test_windows_dirs_and_infs_are_found(tmp_path):
    (tmp_path / "C" / "Windows" / "System32").mkdir(parents=True)
    (tmp_path / "C" / "Windows" / "System32" / "winload.efi").write_bytes(b"")
    (tmp_path / "D" / "Windows").mkdir(parents=True)  # no winload: not a bootable Windows
    (tmp_path / "E" / "drivers" / "rst").mkdir(parents=True)
    (tmp_path / "E" / "drivers" / "rst" / "iaStorVD.INF").write_text("[Version]")
    roots = [str(tmp_path / x) for x in "CDE"]
    assert tools.windows_dirs(roots) == [str(tmp_path / "C" / "Windows")]
    assert tools.find_infs(roots) == [str(tmp_path / "E" / "drivers" / "rst" / "iaStorVD.INF")]


def test_keys_from_a_terminal_and_a_pipe():
    """VT100/ANSI sequences (as a serial console sends them) on a pty; plain characters on a pipe."""
    import io

    from rescuekit.tui.keys import Keys

    master, slave = os.openpty()
    try:
        with open(slave, "r", closefd=False) as f:
            k = Keys(f)
            assert k.tty
            with k.active():  # cbreak first: a canonical-mode line discipline would eat the \x7f
                os.write(master, b"\x1b[A\x1bOB\x1b[6~\r7\x7f\xc3\xa9\x1b")
                got = [k.read() for _ in range(8)]
        assert got == ["up", "down", "pgdn", "enter", "7", "backspace", "\u00e9", "esc"]
    finally:
        os.close(master)
        os.close(slave)
    k = Keys(io.StringIO("12\nERASE\n\x1b"))
    assert [k.read(), k.read(), k.read(), k.read_line(), k.read()] == ["1", "2", "enter", "ERASE", "esc"]

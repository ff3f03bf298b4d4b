"""The Windows runtime of the built ISO (Windows CPython 3.13 + win_amd64 wheels) on disk image files under Wine."""
from __future__ import annotations

import json
import shutil
import struct
import subprocess
import sys
import time
from pathlib import Path

import blake3
import make_test_disks as mtd
import pytest
import zstandard
from wine_env import Runtime, winpath

from tests.imaging.imaging_helpers import check_disk_files
from tests.wine.conftest import IMAGE_NAME, MiB

pytestmark = pytest.mark.wine


def ok(res: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert res.returncode == 0, f"exit {res.returncode}\n{res.stdout}\n{res.stderr}"
    return res


def one_line_error(res: subprocess.CompletedProcess, *words: str) -> str:
    """A failed run: non-zero exit, exactly one ``rescuekit: error: ...`` line naming ``words``, no traceback."""
    assert res.returncode != 0, res.stdout + res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("rescuekit: error: "), res.stderr
    for w in words:
        assert w in lines[0], lines[0]
    return lines[0]


def test_it_is_windows_python_with_the_bundled_wheels(runtime: Runtime, x_tree: Path):
    code = ("import sys, json, blake3, zstandard, click, rich, rescuekit; print(json.dumps({'platform': sys.platform,"
            " 'version': sys.version.split()[0], 'exe': sys.executable, 'rescuekit': rescuekit.__file__,"
            " 'blake3': blake3.blake3(b'abc' * 1000).hexdigest(),"
            " 'zstd': zstandard.ZstdCompressor().compress(b'x' * 5000).hex(), 'isolated': sys.flags.isolated}))")
    res = ok(runtime.prefix.run([str(runtime.python), "-B", "-c", code]))
    got = json.loads(res.stdout)
    assert got["platform"] == "win32" and got["version"] == "3.13.2" and got["isolated"] == 1
    assert got["exe"].lower() == (winpath(x_tree) + "\\rescuekit\\python\\python.exe").lower()
    # the runtime package comes from X:\rescuekit\lib (the ._pth line), not from this checkout
    assert got["rescuekit"].lower().startswith((winpath(x_tree) + "\\rescuekit\\lib\\rescuekit\\").lower())
    # the Windows builds of the extensions agree with the Linux ones
    assert got["blake3"] == blake3.blake3(b"abc" * 1000).hexdigest()
    assert zstandard.ZstdDecompressor().decompress(bytes.fromhex(got["zstd"])) == b"x" * 5000


def test_bitlocker_ciphers_under_windows_python(runtime: Runtime):
    """cryptography's win_amd64 build (AES-CCM, AES-ECB) behind rescuekit.disk.bitlocker gives the Linux results."""
    code = ("import json; from rescuekit.disk import bitlocker as b\n"
            "out = {}\n"
            "for method in (0x8004, 0x8005, 0x8002, 0x8000):\n"
            "    m = b.Metadata(512, 0, method, 4, '', (0, 0, 0), 0, 512)\n"
            "    out[hex(method)] = b.SectorCipher(m, bytes(range(64))).decrypt(bytes(range(256)) * 8, 512 * 77).hex()\n"
            "from cryptography.hazmat.primitives.ciphers.aead import AESCCM\n"
            "out['ccm'] = b._ccm_unwrap(bytes(32), bytes.fromhex(%r))\n"
            "out['ccm'] = out['ccm'].hex() if out['ccm'] else None\n"
            "print(json.dumps(out))")
    from cryptography.hazmat.primitives.ciphers.aead import AESCCM

    from rescuekit.disk import bitlocker as b

    nonce, key_entry = bytes(range(12)), struct.pack("<HHHHHH", 44, 0, 1, 1, 0x2003, 0) + bytes(range(32))
    sealed = AESCCM(bytes(32), tag_length=16).encrypt(nonce, key_entry, None)
    value = nonce + sealed[-16:] + sealed[:-16]  # BitLocker's order: nonce, MAC, data
    got = json.loads(ok(runtime.prefix.run([str(runtime.python), "-B", "-c", code % value.hex()])).stdout)
    for method in (0x8004, 0x8005, 0x8002, 0x8000):
        m = b.Metadata(512, 0, method, 4, "", (0, 0, 0), 0, 512)
        assert got[hex(method)] == b.SectorCipher(m, bytes(range(64))).decrypt(bytes(range(256)) * 8, 512 * 77).hex()
    assert got["ccm"] == bytes(range(32)).hex()


def test_capture_and_images_json(runtime: Runtime, wine_repo: dict, gpt_disk):
    cap = wine_repo["capture"]
    assert cap["name"] == IMAGE_NAME and cap["warnings"] == []
    assert [(p["number"], p["fs"]) for p in cap["partitions"]] == [(1, "fat32"), (2, "zero"), (3, "ntfs")]
    assert cap["totals"]["disk_bytes"] == gpt_disk[0].stat().st_size
    doc = json.loads(ok(runtime.rk("images", winpath(wine_repo["path"]), "--json")).stdout)
    assert [(i["id"], i["name"], i["table"]) for i in doc["images"]] == [(cap["id"], IMAGE_NAME, "gpt")]
    assert doc["images"][0]["source"] == winpath(gpt_disk[0]) and doc["unfinished_restores"] == []
    table = ok(runtime.rk("images", winpath(wine_repo["path"]))).stdout
    assert cap["id"] in table and IMAGE_NAME in table and "3:ntfs(Windows)" in table
    # `disks FILE`: what the Windows runtime reads from the image is what the Linux one reads (but the path)
    win = json.loads(ok(runtime.rk("disks", winpath(gpt_disk[0]), "--json")).stdout)
    linux = json.loads(ok(subprocess.run([sys.executable, "-m", "rescuekit", "disks", str(gpt_disk[0]), "--json"],
                                         capture_output=True, text=True)).stdout)
    assert [d.pop("path") for d in win] == [winpath(gpt_disk[0])] and [d.pop("path") for d in linux]
    assert win == linux and [p["fs"] for p in win[0]["partitions"]] == ["fat32", "zero", "ntfs"]


def test_restore_onto_a_larger_image_passes_sgdisk_ntfsfix_and_file_compare(runtime: Runtime, wine_repo: dict,
                                                                          gpt_disk, tmp_path: Path):
    target = tmp_path / "bigger.img"
    with open(target, "wb") as f:
        f.truncate(192 * MiB)
    res = ok(runtime.rk("restore", winpath(wine_repo["path"]), winpath(target), "--image", IMAGE_NAME, "--yes",
                        "--verify", "--json"))  # --verify: re-reads what was written and compares the hashes
    doc = json.loads(res.stdout)
    assert doc["image"] == wine_repo["capture"]["id"] and doc["verified"] is True
    assert target.stat().st_size == 192 * MiB
    sg = subprocess.run(["sgdisk", "-v", str(target)], capture_output=True, text=True)
    assert sg.returncode == 0 and "No problems found" in sg.stdout, sg.stdout + sg.stderr
    check_disk_files(target, gpt_disk[1], tmp_path)  # ntfsfix -n, fsck.vfat -n, every file's SHA-256


def test_restore_asks_and_a_no_writes_nothing(runtime: Runtime, wine_repo: dict, tmp_path: Path):
    target = tmp_path / "t.img"
    with open(target, "wb") as f:
        f.truncate(160 * MiB)
    res = runtime.rk("restore", winpath(wine_repo["path"]), winpath(target), input="n\n")
    assert res.returncode == 1 and "Overwrite it?" in res.stderr, res.stdout + res.stderr
    assert res.stderr.rstrip().endswith("rescuekit: error: restore cancelled; nothing was written"), res.stderr
    with open(target, "rb") as f:
        assert f.read(1 << 20) == bytes(1 << 20)


def test_verify_read_data_reads_every_chunk(runtime: Runtime, wine_repo: dict, tmp_path: Path):
    out = ok(runtime.rk("verify", winpath(wine_repo["path"]), "--read-data")).stdout
    assert out.startswith("OK: 1 image(s)"), out
    bad = shutil.copytree(wine_repo["path"], tmp_path / "repo")
    pack = max((p for p in (bad / "data").rglob("*.pack") if p.is_file()), key=lambda p: p.stat().st_size)
    data = bytearray(pack.read_bytes())
    data[len(data) // 2] ^= 0xFF
    pack.write_bytes(bytes(data))
    res = runtime.rk("verify", winpath(bad), "--read-data")
    assert res.returncode != 0 and "FAILED" in res.stdout, res.stdout + res.stderr
    assert "Traceback" not in res.stderr


def test_forget_and_prune(runtime: Runtime, wine_repo: dict, tmp_path: Path):
    repo = shutil.copytree(wine_repo["path"], tmp_path / "repo")
    vol, _hashes = mtd.make_fat_volume(tmp_path / "other.img", 40 * MiB, seed=11)
    other = json.loads(ok(runtime.rk("capture", winpath(vol), winpath(repo), "--name", "other", "--json")).stdout)
    assert other["totals"]["new_packs"] >= 1
    packs_before = sorted(p.name for p in (repo / "data").rglob("*.pack"))
    out = ok(runtime.rk("forget", winpath(repo), "other")).stdout
    assert f"removed image {other['id']} (other)" in out
    pr = json.loads(ok(runtime.rk("prune", winpath(repo), "--json")).stdout)
    assert pr["packs_deleted"] >= 1 and pr["bytes_freed"] > 0, pr
    packs_after = sorted(p.name for p in (repo / "data").rglob("*.pack"))
    assert len(packs_after) < len(packs_before)
    doc = json.loads(ok(runtime.rk("images", winpath(repo), "--json")).stdout)
    assert [i["name"] for i in doc["images"]] == [IMAGE_NAME]
    assert ok(runtime.rk("verify", winpath(repo), "--read-data")).stdout.startswith("OK: 1 image(s)")


def _holder(runtime: Runtime):
    """A live Windows process that reports its pid and host name, then waits for its stdin to close."""
    code = "import os, socket, sys; print(os.getpid(), socket.gethostname(), flush=True); sys.stdin.read()"
    proc = runtime.prefix.popen([str(runtime.python), "-B", "-c", code])
    pid, host = proc.stdout.readline().decode().split()
    return proc, int(pid), host


def _plant_lock(repo: Path, pid: int, host: str, name: str = "0123456789abcdef") -> Path:
    from datetime import datetime, timezone

    lock = repo / "locks" / f"{name}.json"
    lock.write_text(json.dumps({"exclusive": True, "pid": pid, "host": host, "command": "capture",
                                "time": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")}))
    return lock


def test_lock_of_a_live_process_refuses_and_of_a_dead_one_is_removed(runtime: Runtime, wine_repo: dict,
                                                                      gpt_disk, tmp_path: Path):
    repo = shutil.copytree(wine_repo["path"], tmp_path / "repo")
    proc, pid, host = _holder(runtime)
    try:
        lock = _plant_lock(repo, pid, host)
        res = runtime.rk("capture", winpath(gpt_disk[0]), winpath(repo), "--name", "second")
        one_line_error(res, "is locked", f"pid {pid} on {host}", "--force-unlock")
        assert lock.exists()
        assert len(json.loads(ok(runtime.rk("images", winpath(repo), "--json")).stdout)["images"]) == 1
    finally:
        proc.communicate(b"", timeout=60)  # the holder exits: its pid is gone
    ok(runtime.rk("capture", winpath(gpt_disk[0]), winpath(repo), "--name", "second"))
    assert not lock.exists() and not list((repo / "locks").glob("*.json"))
    assert len(json.loads(ok(runtime.rk("images", winpath(repo), "--json")).stdout)["images"]) == 2


def test_a_capture_killed_mid_way_leaves_a_lock_the_next_run_clears(runtime: Runtime, wine_repo: dict,
                                                                    tmp_path: Path):
    repo = shutil.copytree(wine_repo["path"], tmp_path / "repo")
    # a source that takes a while: 1 GiB, mostly holes, random blocks spread over it
    src = tmp_path / "slow.img"
    with open(src, "wb") as f:
        f.truncate(1 << 30)
        for i in range(64):
            f.seek(i * (16 * MiB))
            f.write(bytes(range(256)) * 1024 + i.to_bytes(4, "little") * 16384)
    proc = runtime.popen("capture", winpath(src), winpath(repo), "--name", "killed")
    locks = repo / "locks"
    try:
        deadline = time.monotonic() + 120
        while not list(locks.glob("*.json")) and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)
        assert proc.poll() is None, "the capture ended before it could be killed"
        proc.kill()  # SIGKILL: no cleanup runs in the Windows process
        proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    left = list(locks.glob("*.json"))
    assert len(left) == 1
    doc = json.loads(left[0].read_text())
    assert doc["exclusive"] is True and doc["command"].startswith("capture")
    # the next writer (prune: exclusive, like capture) finds the lock from this host whose process is gone,
    # removes it and deletes what the killed run left (temp files, packs no image uses)
    pr = json.loads(ok(runtime.rk("prune", winpath(repo), "--json")).stdout)
    assert not left[0].exists() and not list(locks.glob("*.json"))
    names = [i["name"] for i in json.loads(ok(runtime.rk("images", winpath(repo), "--json")).stdout)["images"]]
    assert names == [IMAGE_NAME], pr  # the killed capture did not leave an image
    assert ok(runtime.rk("verify", winpath(repo), "--read-data")).stdout.startswith("OK: 1 image(s)")
    assert not [p for p in repo.rglob("*") if p.name.endswith(".tmp")]


def test_errors_are_one_line(runtime: Runtime, wine_repo: dict, gpt_disk, tmp_path: Path):
    one_line_error(runtime.rk("images", winpath(tmp_path / "nope")), "does not exist")
    small = tmp_path / "small.img"
    with open(small, "wb") as f:
        f.truncate(64 * MiB)
    one_line_error(runtime.rk("restore", winpath(wine_repo["path"]), winpath(small), "--yes"), "small")
    with open(small, "rb") as f:
        assert f.read(1 << 20) == bytes(1 << 20)
    one_line_error(runtime.rk("capture", winpath(tmp_path / "missing.img"), winpath(tmp_path / "r")),
                   "missing.img")
    assert not (tmp_path / "r").exists()


def test_a_non_ascii_image_name_through_a_pipe(runtime: Runtime, wine_repo: dict, gpt_disk, tmp_path: Path):
    """Windows writes redirected output in the ANSI code page (cp1252 here): the runtime writes UTF-8 there."""
    repo = shutil.copytree(wine_repo["path"], tmp_path / "repo")
    name = "\u0414\u0438\u0441\u043a \u00e9t\u00e9"
    res = ok(runtime.rk("capture", winpath(gpt_disk[0]), winpath(repo), "--name", name))
    assert f", {name})" in res.stdout and res.stderr == ""  # the line says (#seq, name)
    assert name in ok(runtime.rk("images", winpath(repo))).stdout
    doc = json.loads(ok(runtime.rk("images", winpath(repo), "--json")).stdout)
    assert [i["name"] for i in doc["images"]] == [IMAGE_NAME, name]

"""Faults: kill -9 during capture, flipped bytes in a pack, disk full (real ENOSPC on a tiny tmpfs)."""
from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import make_test_disks as mtd
import pytest
from imaging_helpers import MiB, check_disk_files, rk, rk_json

from rescuekit.disk.device import open_source
from rescuekit.disk.partitions import read_table
from rescuekit.repo.index import load_index
from rescuekit.repo.packs import pack_files, read_pack_header


def _random_volume(path: Path, size: int, seed: int = 5) -> Path:
    rng = random.Random(seed)
    with open(path, "wb") as f:
        for _ in range(size // MiB):
            f.write(rng.randbytes(MiB))
    return path


def _flip_in_blob(repo: Path, cid: str, n: int) -> None:
    """Invert ``n`` bytes in the middle of the stored blob holding chunk ``cid``."""
    for pack in repo.glob("data/*/*.pack"):
        rows = {r[0]: r for r in read_pack_header(pack)}
        if cid in rows:
            break
    _, off, clen, *_ = rows[cid]
    data = bytearray(pack.read_bytes())
    for i in range(off + clen // 2, off + clen // 2 + n):
        data[i] ^= 0xFF
    pack.write_bytes(bytes(data))


def test_kill9_during_capture_leaves_valid_repository(tmp_path: Path) -> None:
    src = _random_volume(tmp_path / "vol.img", 256 * MiB)
    repo = tmp_path / "repo"
    proc = subprocess.Popen([sys.executable, "-m", "rescuekit", "capture", str(src), str(repo), "--pack-size", "1M"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while not list(repo.glob("data/*/*.pack")):
        assert proc.poll() is None, proc.stderr.read()
        assert time.monotonic() < deadline
        time.sleep(0.005)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not list(repo.glob("images/*.json"))  # killed mid-way
    # finished packs that no index file lists yet (the index is written every few packs): orphans
    orphans = set(pack_files(repo)) - set(load_index(repo).packs)
    assert orphans
    # prune right now (on a copy) deletes them: no image uses their chunks
    early = tmp_path / "early"
    shutil.copytree(repo, early)
    pr = rk_json("prune", early)
    assert pr["packs_deleted"] == len(orphans) and pr["packs_kept"] == len(set(pack_files(repo)) - orphans)
    assert not orphans & set(pack_files(early)), "prune left the killed capture's orphan packs"
    assert not list(early.glob("data/**/*.tmp"))
    assert rk_json("verify", early, "--read-data")["ok"]
    assert list(repo.glob("locks/*.json"))  # its lock is left behind...
    rep = rk_json("verify", repo, "--read-data")
    assert rep["ok"] and rep["images"] == 0
    # ...and is recognised as stale (same host, process gone): a later capture completes
    doc = rk_json("capture", src, repo)
    assert doc["totals"]["stored_bytes"] == 256 * MiB
    rk("verify", repo, "--read-data")
    out = tmp_path / "out.img"
    rk("restore", repo, out, "--yes")
    assert out.read_bytes() == src.read_bytes()
    # packs are named by their content: the re-capture wrote the same first packs and so adopted the
    # orphans; whatever is still unindexed now is garbage for prune
    unindexed = set(pack_files(repo)) - set(load_index(repo).packs)
    pr = rk_json("prune", repo)
    assert pr["packs_kept"] >= 1 and pr["packs_deleted"] == len(unindexed)
    assert set(pack_files(repo)) == set(load_index(repo).packs)  # every pack left is indexed
    rk("verify", repo, "--read-data")  # every chunk of the image re-hashed after prune


def test_flipped_bytes_in_pack_are_found(repo: dict, repo_copy: Path, disks: dict, tmp_path: Path) -> None:
    gpt = repo["gpt"]
    man = json.loads((repo_copy / "images" / f"{gpt['id']}.json").read_text())
    # a chunk that only the gpt image uses (the partition table chunk at disk offset 0)
    cid = man["extents"][0]["chunks"][0]
    _flip_in_blob(repo_copy, cid, 4)

    assert rk("verify", repo_copy).returncode == 0  # structure is fine; only reading the data shows it
    res = rk("verify", repo_copy, "--read-data", check=False)
    assert res.returncode == 1, res.stdout
    assert f"damaged: image {gpt['id']} (gpt): bytes " in res.stdout
    assert "mbr" not in res.stdout.split("damaged:", 1)[1]  # the other image is not affected
    rep = json.loads(rk("verify", repo_copy, "--read-data", "--json", check=False).stdout)
    # the flipped blob is a compressed group of up to 8 chunks (the first 2 MiB of the disk): the damaged
    # ranges are inside it
    [dmg] = rep["damaged"]
    assert dmg["image"] == gpt["id"] and dmg["ranges"]
    assert all(0 <= o and o + n <= 8 * (256 << 10) for o, n in dmg["ranges"])

    # a restore of the damaged image stops with a clear error; the unfinished restore is reported
    target = tmp_path / "t.img"
    shutil.copyfile(disks["gpt"][0], target)  # the target holds a GPT, with its backup at the end
    res = rk("restore", repo_copy, target, "--image", "gpt", "--yes", check=False)
    assert res.returncode == 1 and "corrupt" in res.stderr and "Traceback" not in res.stderr
    with open(target, "rb") as f:
        assert f.read(1 << 20) == bytes(1 << 20)  # no partition table: the disk does not pass for restored
    with open_source(target) as dev:
        assert read_table(dev).kind == "none"  # not even from the backup GPT
    res = rk("images", repo_copy)
    assert "did not finish" in res.stderr and str(target) in res.stderr
    assert rk_json("images", repo_copy)["unfinished_restores"][0]["target"] == str(target)
    # the other image still restores (and verifies)
    rk("restore", repo_copy, tmp_path / "m.img", "--image", "mbr", "--yes", "--verify")
    assert len(rk_json("images", repo_copy)["unfinished_restores"]) == 1


def test_disk_full_during_capture(disks: dict, tmp_path: Path) -> None:
    """Real ENOSPC: the repository lives on a 4 MiB tmpfs mounted in a private user+mount namespace."""
    small, _ = mtd.make_fat_volume(tmp_path / "small.img", 16 * MiB, bits=16, tree_bytes=256 << 10)
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    py = sys.executable
    script = f"""
set -u
mount -t tmpfs -o size=4m tmpfs {mnt} || exit 99
{py} -m rescuekit capture {disks['gpt'][0]} {mnt}/repo --pack-size 1M; echo "rc1=$?"
{py} -m rescuekit verify {mnt}/repo --read-data; echo "rc2=$?"
{py} -m rescuekit prune {mnt}/repo; echo "rc3=$?"
{py} -m rescuekit capture {small} {mnt}/repo; echo "rc4=$?"
{py} -m rescuekit verify {mnt}/repo --read-data; echo "rc5=$?"
"""
    res = subprocess.run(["unshare", "-rm", "sh", "-c", script], capture_output=True, text=True, timeout=300,
                         env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    out, err = res.stdout, res.stderr
    if res.returncode == 99 or (res.returncode != 0 and "unshare failed" in err):
        # user namespaces disabled here (a kernel/container policy, not a missing tool):
        # test_disk_full_injected_mid_capture covers the same code path
        pytest.skip(f"cannot mount a tmpfs in a user namespace: {err.strip()[:200]}")
    assert "rc1=1" in out, out + err
    errs = [l for l in err.splitlines() if l.startswith("rescuekit:")]
    assert errs and "no space left on device" in errs[0], err
    assert "Traceback" not in err
    assert "rc2=0" in out and "rc3=0" in out and "rc4=0" in out and "rc5=0" in out, out + err


def test_restore_killed_midway_is_reported_and_leaves_no_table(repo: dict, repo_copy: Path, disks: dict,
                                                               tmp_path: Path) -> None:
    """restore dies (like kill -9) after wiping / after the body: no valid table, `images` warns; a new restore
    of the same target succeeds and clears the warning."""
    gpt, hashes = disks["gpt"]
    target = tmp_path / "t.img"
    for step in ("restore-wiped", "restore-body-written"):
        shutil.copyfile(disks["gpt"][0], target)  # a valid GPT (with backup) was there before
        res = rk("restore", repo_copy, target, "--image", "gpt", "--yes", check=False,
                 env={"RESCUEKIT_TEST_CRASH_AFTER": step})
        assert res.returncode == 137, res.stderr
        with open_source(target) as dev:
            assert read_table(dev).kind == "none", step
        assert str(target) in rk("images", repo_copy).stderr
    assert len(rk_json("images", repo_copy)["unfinished_restores"]) == 2
    rk("restore", repo_copy, target, "--image", "gpt", "--yes")
    assert rk_json("images", repo_copy)["unfinished_restores"] == []
    check_disk_files(target, hashes, tmp_path)


def test_disk_full_injected_mid_capture(disks: dict, tmp_path: Path) -> None:
    """The same through the pack writer's ENOSPC hook, after some packs were finished (they are kept)."""
    repo = tmp_path / "repo"
    res = rk("capture", disks["gpt"][0], repo, "--pack-size", "512k", check=False,
             env={"RESCUEKIT_TEST_PACK_ENOSPC_AFTER": str(3 << 20)})
    assert res.returncode == 1 and "Traceback" not in res.stderr
    assert res.stderr.startswith("rescuekit: error: no space left on device writing the repository")
    assert not list(repo.glob("images/*.json")) and not list(repo.glob("data/.*.tmp"))
    rep = rk_json("verify", repo, "--read-data")
    assert rep["ok"] and rep["images"] == 0 and rep["packs"] >= 2
    doc = rk_json("capture", disks["gpt"][0], repo)
    t = doc["totals"]
    assert 0 < t["new_chunks"] < t["chunks"] - t["zero_chunks"]  # the finished packs were indexed and reused
    rk("verify", repo, "--read-data")


def test_failed_restore_to_new_file_leaves_nothing(repo: dict, repo_copy: Path, tmp_path: Path) -> None:
    man = json.loads((repo_copy / "images" / f"{repo['gpt']['id']}.json").read_text())
    cid = next(c for e in man["extents"][1:] for c in e["chunks"] if c)  # not the first blob: fail mid-way
    _flip_in_blob(repo_copy, cid, 1)
    target = tmp_path / "new.img"
    res = rk("restore", repo_copy, target, "--image", "gpt", "--yes", check=False)
    assert res.returncode == 1 and "corrupt" in res.stderr and "Traceback" not in res.stderr
    assert not target.exists()
    assert rk_json("images", repo_copy)["unfinished_restores"] == []

"""Incremental by construction (dedup), then forget + prune reclaim space and keep the rest restorable."""
from __future__ import annotations

import shutil
from pathlib import Path

import make_test_disks as mtd
from imaging_helpers import MiB, check_disk_files, layout, rk, rk_json, tree_size


def test_incremental_capture_forget_prune(repo: dict, repo_copy: Path, disks: dict, tmp_path: Path) -> None:
    gpt, hashes = disks["gpt"]
    disk = tmp_path / "changed.img"
    shutil.copyfile(gpt, disk)
    esp, _msr, ntfs = layout(disk)
    changed = mtd.modify_files(disk, "fat", offset=esp["start"], count=2, new_bytes=256 << 10, seed=11)
    changed_n = mtd.modify_files(disk, "ntfs", offset=ntfs["start"], size=ntfs["size"], count=2,
                                 new_bytes=256 << 10, seed=12)
    changed_bytes = (len(changed) + len(changed_n)) * (256 << 10)  # random data: does not compress
    new_hashes = {1: {**hashes[1], **changed}, 3: {**hashes[3], **changed_n}}

    # unchanged re-capture adds nothing
    before = tree_size(repo_copy)
    same = rk_json("capture", gpt, repo_copy, "--name", "gpt")
    assert same["totals"]["new_chunks"] == 0 and same["totals"]["new_stored_bytes"] == 0
    # changed capture adds about the changed data only (plus a few metadata chunks)
    inc = rk_json("capture", disk, repo_copy, "--name", "gpt")
    grew = tree_size(repo_copy) - before
    assert changed_bytes * 0.9 <= inc["totals"]["new_stored_bytes"] <= changed_bytes + 1.5 * MiB
    assert grew <= changed_bytes + 2 * MiB, grew
    assert grew < repo["gpt"]["totals"]["new_stored_bytes"] + repo["mbr"]["totals"]["new_stored_bytes"]

    # the newest image named "gpt" restores the changed disk
    out = tmp_path / "restored.img"
    rk("restore", repo_copy, out, "--image", "gpt", "--yes", "--verify")
    check_disk_files(out, new_hashes, tmp_path)
    out.unlink()

    # forget the MBR image and the two older gpt images, prune: space comes back, the rest stays valid
    ids = [i["id"] for i in rk_json("images", repo_copy)["images"]]
    assert len(ids) == 4
    res = rk("forget", repo_copy, "mbr", repo["gpt"]["id"], same["id"][:10])
    assert res.stdout.count("removed image") == 3
    size_before_prune = tree_size(repo_copy)
    pr = rk_json("prune", repo_copy)
    assert pr["packs_deleted"] >= 1 and pr["bytes_freed"] > 0
    assert tree_size(repo_copy) < size_before_prune - repo["mbr"]["totals"]["new_stored_bytes"] // 2
    assert [i["id"] for i in rk_json("images", repo_copy)["images"]] == [inc["id"]]
    rk("verify", repo_copy, "--read-data")
    rk("restore", repo_copy, out, "--yes", "--verify")
    check_disk_files(out, new_hashes, tmp_path)
    # pruning again changes nothing
    assert rk_json("prune", repo_copy)["packs_deleted"] == 0


def test_forget_unknown_or_ambiguous(repo_copy: Path) -> None:
    res = rk("forget", repo_copy, "nosuchimage", check=False)
    assert res.returncode == 1 and "no image 'nosuchimage'" in res.stderr
    res = rk("forget", repo_copy, "", check=False)
    assert res.returncode == 2 and "matches 2 images" in res.stderr


def test_prune_interrupted_at_every_step_leaves_valid_repository(repo: dict, disks: dict, tmp_path: Path) -> None:
    """prune dies (like kill -9) after each of its steps; the repository stays valid and a new prune finishes."""
    gpt, hashes = disks["gpt"]
    changed = tmp_path / "changed.img"
    shutil.copyfile(gpt, changed)
    esp = layout(changed)[0]
    mtd.modify_files(changed, "fat", offset=esp["start"], count=2, new_bytes=256 << 10, seed=21)
    base = tmp_path / "base"
    shutil.copytree(repo["path"], base)
    # the first gpt image's pack becomes partly used (rewritten), the mbr image's stays
    inc = rk_json("capture", changed, base, "--name", "changed")
    rk("forget", base, repo["gpt"]["id"])
    full = tmp_path / "full"
    shutil.copytree(base, full)
    pr = rk_json("prune", full)
    assert pr["packs_rewritten"] >= 1 and pr["packs_deleted"] >= 1, pr  # every step has work to do
    for step in ("packs-written", "index-written", "old-index-deleted", "one-pack-deleted"):
        r = tmp_path / step
        shutil.copytree(base, r)
        res = rk("prune", r, check=False, env={"RESCUEKIT_TEST_CRASH_AFTER": step})
        assert res.returncode == 137, (step, res.stderr)
        rep = rk_json("verify", r, "--read-data")
        assert rep["ok"] and rep["images"] == 2, (step, rep)
        rk("prune", r)
        rep = rk_json("verify", r, "--read-data")
        assert rep["ok"] and rep["orphan_packs"] == 0, (step, rep)
    out = tmp_path / "out.img"
    rk("restore", r, out, "--image", inc["id"], "--yes", "--verify")
    check_disk_files(out, {3: hashes[3]}, tmp_path)

"""A repository on a full medium (a real tmpfs filled to the last page) and on a read-only one (a read-only
bind mount): reading works, forget and prune work on the full one (prune frees space), errors name paths."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import make_test_disks as mtd
import pytest
from imaging_helpers import MiB, check_fat, rk_json


def _in_namespace(script: str, timeout: int = 600) -> subprocess.CompletedProcess:
    res = subprocess.run(["unshare", "-rm", "sh", "-c", script], capture_output=True, text=True, timeout=timeout,
                         env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    if res.returncode == 99:
        pytest.fail(f"cannot mount in a user+mount namespace here: {res.stderr.strip()[:300]}")
    return res


def _results(out: Path) -> dict[str, tuple[int, str, str]]:
    """name -> (exit code, stdout, stderr) of the commands the script ran through ``run``."""
    got = {}
    for rc in out.glob("*.rc"):
        name = rc.stem
        got[name] = (int(rc.read_text()), (out / f"{name}.out").read_text(), (out / f"{name}.err").read_text())
    return got


_RUN = """
run() {{ name=$1; shift; {py} -m rescuekit "$@" >{out}/$name.out 2>{out}/$name.err; echo $? >{out}/$name.rc; }}
fill() {{ dd if=/dev/zero of={mnt}/filler.$1 bs=4k >/dev/null 2>&1; sync; }}
"""


def test_repository_on_a_full_medium(tmp_path: Path) -> None:
    a, a_hashes = mtd.make_fat_volume(tmp_path / "a.img", 16 * MiB, bits=16, seed=11, tree_bytes=512 << 10)
    b, _ = mtd.make_fat_volume(tmp_path / "b.img", 16 * MiB, bits=16, seed=12, tree_bytes=2 * MiB)
    big = tmp_path / "big.img"
    big.write_bytes(os.urandom(16 * MiB))  # does not fit any more
    zero = tmp_path / "zero.img"
    zero.write_bytes(bytes(MiB))  # stores no chunk: only its manifest needs space
    mnt, out = tmp_path / "mnt", tmp_path / "out"
    mnt.mkdir()
    out.mkdir()
    repo = mnt / "repo"
    py = sys.executable
    script = _RUN.format(py=py, out=out, mnt=mnt) + f"""
mount -t tmpfs -o size=12m tmpfs {mnt} || exit 99
run cap_a capture {a} {repo} --name a
run cap_b capture {b} {repo} --name b
fill 1
run images images {repo} --json
run verify verify {repo} --read-data
run restore restore {repo} {tmp_path}/restored.img --image a --yes
run cap_zero capture {zero} {repo} --name zero
run cap_big capture {big} {repo} --name big
run forget forget {repo} b
fill 2
run prune prune {repo} --json
run verify2 verify {repo} --read-data --json
run restore2 restore {repo} {tmp_path}/restored2.img --yes --json
test -f {repo}/locks/.reserve; echo $? >{out}/reserve.flag
rm -f {repo}/locks/.reserve
fill 3
run forget_nospare forget {repo} a
ls -a {repo}/locks >{out}/locks.txt
"""
    res = _in_namespace(script)
    assert res.returncode == 0, res.stdout + res.stderr
    got = _results(out)

    def ok(name: str) -> tuple[int, str, str]:
        rc, so, se = got[name]
        assert rc == 0 and "Traceback" not in se, (name, so, se)
        return got[name]

    def one_error(name: str) -> str:
        rc, so, se = got[name]
        lines = se.strip().splitlines()
        assert rc == 1 and len(lines) == 1 and lines[0].startswith("rescuekit: error: "), (name, so, se)
        return lines[0]

    ok("cap_a"), ok("cap_b")
    assert [x["name"] for x in json.loads(ok("images")[1])["images"]] == ["a", "b"]
    ok("verify")
    ok("restore")
    msg = one_error("cap_zero")  # the manifest did not fit: the message names it
    assert "no space left on device writing the image manifest" in msg and f"{repo}/images/" in msg
    assert "no space left on device" in one_error("cap_big")
    ok("forget")
    pr = json.loads(ok("prune")[1])
    assert pr["packs_deleted"] >= 1 and pr["bytes_freed"] > 512 << 10, pr
    rep = json.loads(ok("verify2")[1])
    assert rep["ok"] and rep["images"] == 1 and rep["problems"] == [], rep
    assert json.loads(ok("restore2")[1])["name"] == "a"
    assert (out / "reserve.flag").read_text().strip() == "0"  # prune's lock came from the spare and went back
    msg = one_error("forget_nospare")  # without the spare, the lock file that could not be written is named
    assert "no space left on device writing" in msg and f"{repo}/locks/" in msg and ".reserve" in msg
    assert [n for n in (out / "locks.txt").read_text().split() if n.endswith(".tmp")] == []
    for restored in ("restored.img", "restored2.img"):
        check_fat(tmp_path / restored)
        assert mtd.file_hashes_fat(tmp_path / restored) == a_hashes


def test_reading_a_read_only_repository(repo: dict, repo_copy: Path, disks: dict, tmp_path: Path) -> None:
    """images, verify and restore work from a read-only medium; writers say which file they cannot write."""
    out = tmp_path / "out"
    out.mkdir()
    py = sys.executable
    before = sorted(p.relative_to(repo_copy) for p in repo_copy.rglob("*"))
    script = _RUN.format(py=py, out=out, mnt=tmp_path) + f"""
mount --bind {repo_copy} {repo_copy} && mount -o remount,ro,bind {repo_copy} || exit 99
touch {repo_copy}/x 2>/dev/null && exit 98
run images images {repo_copy} --json
run verify verify {repo_copy} --read-data --json
run restore restore {repo_copy} {tmp_path}/t.img --image mbr --yes --verify --json
run prune prune {repo_copy}
run forget forget {repo_copy} gpt
run capture capture {disks['mbr'][0]} {repo_copy}
"""
    res = _in_namespace(script)
    assert res.returncode == 0, res.stdout + res.stderr
    got = _results(out)
    for name in ("images", "verify", "restore"):
        rc, so, se = got[name]
        assert rc == 0 and "Traceback" not in se, (name, se)
    assert len(json.loads(got["images"][1])["images"]) == 2
    assert json.loads(got["verify"][1])["ok"]
    assert json.loads(got["restore"][1])["image"] == repo["mbr"]["id"]
    for name in ("prune", "forget", "capture"):
        rc, so, se = got[name]
        lines = se.strip().splitlines()
        assert rc == 1 and len(lines) == 1 and "read-only file system" in lines[0].lower(), (name, se)
        assert f"{repo_copy}/" in lines[0], (name, se)
    assert sorted(p.relative_to(repo_copy) for p in repo_copy.rglob("*")) == before
    assert rk_json("verify", repo_copy)["ok"]

"""Repository locks: live/stale rules that do not trust clocks, refresh in place, race back-off, lost locks."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import pytest
from imaging_helpers import one_line_error as _err
from imaging_helpers import rk, rk_json

from rescuekit.errors import RescueError
from rescuekit.repo import lock as lk
from rescuekit.repo.config import utc_now
from tests.conftest import require_tools

FAST = {"RESCUEKIT_TEST_LOCK_TIMING": "0.02,0.3"}  # refresh every 20 ms; unchanged for 0.3 s = stale
PATIENT = {"RESCUEKIT_TEST_LOCK_TIMING": "0.05,20"}  # a live holder surely refreshes within 20 s
LOCK = "0123456789abcdef.json"


def _put(repo: Path, name: str = LOCK, **doc) -> Path:
    lock = repo / "locks" / name
    lock.write_text(json.dumps({"time": utc_now(), **doc}))
    return lock


def _mine(**doc) -> dict:
    """A lock record of this host and boot (its pid is checked)."""
    return {"host": socket.gethostname(), "boot": lk.boot_id(), "refresh": 10.0, "count": 0, **doc}


def test_locks_of_this_host_are_judged_by_their_pid(repo_copy: Path, disks: dict, tmp_path: Path) -> None:
    lock = _put(repo_copy, **_mine(exclusive=True, pid=os.getpid(), command="capture"))
    msg = _err(rk("capture", disks["gpt"][0], repo_copy, check=False, env=FAST))
    assert "is locked" in msg and "still running" in msg and "--force-unlock" in msg
    assert "is locked" in _err(rk("restore", repo_copy, tmp_path / "x.img", "--yes", check=False, env=FAST))
    assert lock.exists()
    rk("capture", disks["gpt"][0], repo_copy, "--force-unlock")
    assert not lock.exists() and not list((repo_copy / "locks").glob("*.json"))
    # a shared (reader) lock of a live process blocks a writer but not another reader
    lock = _put(repo_copy, **_mine(exclusive=False, pid=os.getpid(), command="restore"))
    assert "shared lock by restore" in _err(rk("prune", repo_copy, check=False, env=FAST))
    assert rk_json("verify", repo_copy)["ok"]
    # stale: this host's process is gone (e.g. kill -9), whatever its time says
    lock = _put(repo_copy, **_mine(exclusive=True, pid=2 ** 22 + 12345, command="capture", time="2099-01-01T00:00:00Z"))
    rk("prune", repo_copy)
    assert not lock.exists()


def test_locks_of_other_hosts_are_judged_by_refreshes_not_by_their_time(repo_copy: Path) -> None:
    """A lock nobody refreshes is stale whatever its time says (old, in the future, or a format-1 lock)."""
    other = {"exclusive": True, "pid": 1, "host": "otherhost", "command": "capture", "refresh": 0.02, "count": 7}
    for doc in ({**other, "time": "2026-01-01T00:00:00Z"}, {**other, "time": "2099-01-01T00:00:00Z"},
                {"exclusive": True, "pid": 1, "host": "otherhost", "command": "capture"}):  # format 1: no counter
        lock = _put(repo_copy, **doc)
        rk("prune", repo_copy, env=FAST)
        assert not lock.exists(), doc
    # an earlier boot of this host: its pid says nothing, so it is watched too
    lock = _put(repo_copy, **_mine(exclusive=True, pid=os.getpid(), command="capture", boot="an-earlier-boot",
                                   refresh=0.02))
    rk("prune", repo_copy, env=FAST)
    assert not lock.exists()


_HOLDER = r"""
import sys, threading, time
from pathlib import Path
from rescuekit.repo.packs import PackWriter
from rescuekit.repo.repository import Repository

repo = Repository.open(sys.argv[1])
ready, done = Path(sys.argv[2]), Path(sys.argv[3])
with repo.lock(exclusive=True, command="capture") as lock:
    w = PackWriter(repo.root)  # a running capture's temp pack
    w.add(b"x" * 4096, False, [])
    ready.write_text(str(w.tmp))
    deadline = time.monotonic() + 240
    while not done.exists() and time.monotonic() < deadline:
        threading.Event().wait(0.05)  # (time.sleep fails under faketime)
    lock.check_held()
    assert w.tmp.exists(), "temp pack deleted"
    w.abort()
print("still held")
"""


def test_live_lock_of_a_machine_whose_clock_is_40_minutes_behind(repo_copy: Path, disks: dict, tmp_path: Path) -> None:
    """Another machine (own host name via a UTS namespace, clock 40 min behind via faketime) holds an exclusive
    lock and writes a temp pack: prune and capture here must see it refreshed and keep off it."""
    require_tools("unshare", "faketime")
    (tmp_path / "holder.py").write_text(_HOLDER)
    ready, done = tmp_path / "ready", tmp_path / "done"
    env = {**os.environ, **PATIENT, "FAKETIME_DONT_FAKE_MONOTONIC": "1",
           "PYTHONPATH": os.pathsep.join(sys.path)}
    holder = subprocess.Popen(
        ["unshare", "-u", "sh", "-c", 'hostname pc-b-other && exec faketime -f -40m "$@"', "sh",
         sys.executable, str(tmp_path / "holder.py"), str(repo_copy), str(ready), str(done)],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while not ready.exists():
            assert holder.poll() is None, holder.communicate()
            assert time.monotonic() < deadline
            time.sleep(0.05)
        tmp_pack = Path(ready.read_text())
        [lock] = (repo_copy / "locks").glob("*.json")
        doc = json.loads(lock.read_bytes())
        stamp = datetime.strptime(doc["time"], "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=timezone.utc)
        skew = (datetime.now(timezone.utc) - stamp).total_seconds()
        assert doc["host"] == "pc-b-other" and skew > 35 * 60, doc  # an old rule "older than 30 min" fires
        for args in (["prune", repo_copy], ["capture", disks["mbr"][0], repo_copy]):
            msg = _err(rk(*args, check=False, env=PATIENT))
            assert "is locked" in msg and "pc-b-other" in msg and "refreshed while we watched" in msg, msg
        assert lock.exists() and tmp_pack.exists()
        done.write_text("")
        out, err = holder.communicate(timeout=120)
        assert holder.returncode == 0 and "still held" in out, out + err
    finally:
        done.write_text("")
        if holder.poll() is None:
            holder.kill()
            holder.wait()
    assert rk_json("verify", repo_copy)["ok"]


def test_unreadable_lock_files_are_not_exclusive_forever(repo_copy: Path) -> None:
    for garbage in ("[]", "", '{"exclusive": tr'):
        lock = repo_copy / "locks" / LOCK
        lock.write_text(garbage)
        rk("verify", repo_copy, env=FAST)  # watched like another host's lock: nobody rewrites it
        assert not lock.exists(), garbage
        lock.write_text(garbage)
        rk("prune", repo_copy, env=FAST)
        assert not lock.exists(), garbage


def test_every_verb_that_advises_force_unlock_has_it(repo: dict, repo_copy: Path, disks: dict,
                                                    tmp_path: Path) -> None:
    _put(repo_copy, **_mine(exclusive=True, pid=os.getpid(), command="capture"))
    verbs = {"capture": [disks["mbr"][0], repo_copy], "restore": [repo_copy, tmp_path / "t.img", "--yes"],
             "verify": [repo_copy], "forget": [repo_copy, "mbr"], "prune": [repo_copy]}
    for verb, args in verbs.items():
        msg = _err(rk(verb, *args, check=False))
        assert "--force-unlock" in msg, (verb, msg)
        assert "--force-unlock" in rk(verb, "--help").stdout, verb
    rep = rk_json("verify", repo_copy, "--force-unlock")
    assert rep["ok"] and not list((repo_copy / "locks").glob("*.json"))


def test_lock_is_refreshed_in_place_and_released(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RESCUEKIT_TEST_LOCK_TIMING", "0.02,1")
    (tmp_path / "locks").mkdir()
    lock = lk.RepoLock(tmp_path, exclusive=True, command="prune").acquire()
    try:
        path = lock.path
        ino = path.stat().st_ino
        deadline = time.monotonic() + 60
        while json.loads(path.read_bytes())["count"] < 3:  # the refresher thread bumps it
            assert time.monotonic() < deadline
            time.sleep(0.01)
        assert path.stat().st_ino == ino and path.stat().st_size == lk.LOCK_SIZE  # rewritten in place
        lock.check_held()
        assert (tmp_path / "locks" / lk.RESERVE).stat().st_size == lk.LOCK_SIZE  # the spare for full media
    finally:
        lock.release()
    assert not list((tmp_path / "locks").glob("*.json"))


def test_removed_lock_is_not_recreated_and_capture_commits_nothing(disks: dict, tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    import rescuekit.imaging.capture as cap

    monkeypatch.setenv("RESCUEKIT_TEST_LOCK_TIMING", "0.02,1")
    repo = tmp_path / "repo"
    real = cap.make_plan

    def plan_and_lose_the_lock(dev, chunk_size, **kw):
        for p in (repo / "locks").glob("*.json"):
            p.unlink()  # another process took it for stale
        time.sleep(0.1)  # the refresher runs meanwhile: it must not bring the file back
        assert not list((repo / "locks").glob("*.json"))
        return real(dev, chunk_size, **kw)

    monkeypatch.setattr(cap, "make_plan", plan_and_lose_the_lock)
    with pytest.raises(RescueError, match="was removed by another process"):
        cap.capture(disks["mbr"][0], repo)
    assert not list((repo / "images").glob("*.json")) and not list((repo / "locks").glob("*.json"))


def test_back_off_after_a_lock_race(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Another process writes its lock at the same moment as ours: we drop ours, wait a random moment and look
    again: if the other one kept its lock we refuse; if it backed off too, we get the lock."""
    (tmp_path / "locks").mkdir()
    racer = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    rival = tmp_path / "locks" / "00000000rival000.json"
    real_write, real_sleep = lk.atomic_write, lk.time.sleep
    writes, pauses = [], []

    def racing_write(path: Path, data: bytes) -> None:
        real_write(path, data)
        if path.name != lk.RESERVE:
            writes.append(path)
            if len(writes) == 1:
                rival.write_text(json.dumps(_mine(exclusive=True, pid=racer.pid, command="capture")))

    monkeypatch.setattr(lk, "atomic_write", racing_write)
    try:
        # the racer keeps its lock
        with pytest.raises(RescueError, match="taken at the same time|still running"):
            lk.RepoLock(tmp_path, exclusive=True, command="prune").acquire()
        assert [p.name for p in (tmp_path / "locks").glob("*.json")] == [rival.name]  # ours was dropped
        # the racer backed off as well (its lock goes while we wait): the second attempt gets the lock
        writes.clear()
        rival.unlink()

        def pause(seconds: float) -> None:
            pauses.append(seconds)
            rival.unlink(missing_ok=True)
            real_sleep(seconds)

        monkeypatch.setattr(lk.time, "sleep", pause)
        lock = lk.RepoLock(tmp_path, exclusive=True, command="prune").acquire()
        monkeypatch.setattr(lk.time, "sleep", real_sleep)
        try:
            assert len(writes) == 2 and pauses and pauses[0] > 0
            assert not writes[0].exists() and lock.path == writes[1] and lock.path.exists()
        finally:
            lock.release()
    finally:
        racer.kill()
        racer.wait()

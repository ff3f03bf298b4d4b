"""The Linux-base build refuses unfetchable packages and locks that do not match, in one line, leaving nothing."""
from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from builder import linux_base
from tests.conftest import RK_HOST


@pytest.fixture(scope="module")
def current_lock(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A lock of what apt would fetch now (no download; the wheels entry is left empty here)."""
    return linux_base.lock_document(linux_base.resolve(), [{"filename": "x-1-py3-none-any.whl", "sha256": "0" * 64}])


def _build_with(lock: dict, tmp_path: Path) -> subprocess.CompletedProcess:
    (tmp_path / "out").mkdir()
    lock_file = tmp_path / "bad.lock.json"
    lock_file.write_text(json.dumps(lock))
    return subprocess.run([*RK_HOST, "build", "--base", "linux", "--lock", str(lock_file),
                           "--output", str(tmp_path / "out" / "rescue.iso")], capture_output=True, text=True,
                          timeout=600)


def _assert_refused(res: subprocess.CompletedProcess, tmp_path: Path, *fragments: str) -> None:
    assert res.returncode != 0
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("rescuekit: error: "), res.stderr
    for f in fragments:
        assert f in lines[0], lines[0]
    assert list((tmp_path / "out").iterdir()) == []  # no ISO, no half-made temp file, no staging folder


def _with(lock: dict, name: str, **change: str) -> dict:
    doc = json.loads(json.dumps(lock))
    for p in doc["packages"]:
        if p["name"] == name:
            p.update(change)
    return doc


def test_unfetchable_package_version_is_refused(current_lock: dict, tmp_path: Path) -> None:
    res = _build_with(_with(current_lock, "busybox-static", version="1:9.9.9-rescuekit-bogus"), tmp_path)
    _assert_refused(res, tmp_path, "cannot fetch Debian package", "busybox-static=1:9.9.9-rescuekit-bogus")


def test_locked_hash_mismatch_is_refused(current_lock: dict, tmp_path: Path) -> None:
    res = _build_with(_with(current_lock, "busybox-static", sha256="0" * 64), tmp_path)
    _assert_refused(res, tmp_path, "busybox-static", "does not match the locked " + "0" * 64)


def test_lock_of_another_format_is_refused(current_lock: dict, tmp_path: Path) -> None:
    res = _build_with({**current_lock, "format": 99}, tmp_path)
    _assert_refused(res, tmp_path, "lock format 99 is not supported")


def test_lock_without_a_kernel_is_refused(current_lock: dict, tmp_path: Path) -> None:
    doc = {**current_lock, "packages": [p for p in current_lock["packages"] if not p["name"].startswith("linux-")]}
    _assert_refused(_build_with(doc, tmp_path), tmp_path, "no entry for linux-image-*")


@pytest.mark.parametrize("base,args,fragment", [
    ("linux", ["--target", "\\\\.\\PhysicalDrive0"], "the Linux base needs e.g. /dev/sda"),
    ("linux", ["--repository", "D:\\images"], "by volume label"),
    ("linux", ["--source", "x"], "--source is for --base winpe"),
    ("winpe", ["--target", "/dev/sda"], "WinPE needs"),
])
def test_settings_of_the_other_base_are_refused(base: str, args: list[str], fragment: str, tmp_path: Path) -> None:
    res = subprocess.run([*RK_HOST, "build", "--base", base, "--output", str(tmp_path / "o.iso"),
                          *(["--source", str(tmp_path)] if base == "winpe" else []), *args],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 2 and fragment in res.stderr and len(res.stderr.strip().splitlines()) == 1, res.stderr
    assert list(tmp_path.iterdir()) == []

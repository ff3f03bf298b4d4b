"""Packaging: the module manifest matches the tree; the wheel and sdist ship everything; a wheel installed into a
fresh venv (not editable) runs every verb and builds a disc whose runtime is complete."""
from __future__ import annotations

import os
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

from tests.conftest import REPO

PKG = REPO / "winpe_overlay" / "rescuekit"
VERBS = ["build", "capture", "disks", "forget", "images", "inspect", "prune", "restore", "verify"]


def test_module_manifest_matches_the_source_tree():
    from rescuekit import modules

    listed = modules.read_manifest(PKG)
    assert listed == modules.scan(PKG), "run: python3 scripts/update_module_manifest.py"


def test_module_manifest_reader_refuses_foreign_and_newer(tmp_path):
    from rescuekit import modules
    from rescuekit.errors import RescueError

    for text, want in [("cli.py\n", "not a rescuekit module manifest"),
                       ("# rescuekit module manifest v2\ncli.py\n", "version '2' is not supported"),
                       ("# rescuekit module manifest v1\n../x.py\n", "invalid entry"),
                       (None, "has no MODULES.txt")]:
        (tmp_path / "MODULES.txt").unlink(missing_ok=True)
        if text is not None:
            (tmp_path / "MODULES.txt").write_text(text)
        with pytest.raises(RescueError, match=want):
            modules.read_manifest(tmp_path)
    with pytest.raises(RescueError, match=r"missing disk/ntfs.py, repo/a.py, x.py \(and 1 more\)"):
        modules.check_complete(["CLI.PY"], ["cli.py", "disk/ntfs.py", "repo/a.py", "x.py", "y.py"], "here")


def test_installed_copy_is_under_test():
    """CI runs the suite from a wheel installed into a fresh venv: then nothing may be imported from the checkout."""
    if os.environ.get("RESCUEKIT_TEST_INSTALLED") != "1":
        pytest.skip("suite runs against the checkout (CI sets RESCUEKIT_TEST_INSTALLED=1 for its wheel venv)")
    import builder
    import rescuekit
    import winpe_overlay

    for mod in (builder, rescuekit, winpe_overlay):
        assert not Path(mod.__file__).resolve().is_relative_to(REPO), mod.__file__


@pytest.fixture(scope="session")
def dists(tmp_path_factory) -> dict[str, Path]:
    """The wheel and sdist built from this tree, as a user or a release would build them."""
    out = tmp_path_factory.mktemp("dist")
    r = subprocess.run([sys.executable, "-m", "build", "--sdist", "--wheel", "--outdir", str(out), str(REPO)],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    (whl,) = out.glob("rescuekit-*.whl")
    (sdist,) = out.glob("rescuekit-*.tar.gz")
    return {"wheel": whl, "sdist": sdist}


def _expected_files() -> list[str]:
    from rescuekit import modules

    files = [f"rescuekit/{m}" for m in modules.read_manifest(PKG)] + ["rescuekit/MODULES.txt"]
    files += [f"builder/{p.relative_to(REPO / 'builder').as_posix()}" for p in (REPO / "builder").rglob("*.py")]
    files += [f"winpe_overlay/{p.relative_to(REPO / 'winpe_overlay').as_posix()}"
              for p in (REPO / "winpe_overlay" / "templates").rglob("*") if p.is_file()]
    return sorted(files)


def test_wheel_and_sdist_ship_every_module_and_template(dists):
    names = set(zipfile.ZipFile(dists["wheel"]).namelist())
    assert [f for f in _expected_files() if f not in names] == []
    with tarfile.open(dists["sdist"]) as tf:
        members = {m.name.split("/", 1)[1] for m in tf.getmembers() if "/" in m.name}
    sdist_paths = [f.replace("rescuekit/", "winpe_overlay/rescuekit/", 1) if f.startswith("rescuekit/") else f
                   for f in _expected_files()]
    assert [f for f in sdist_paths if f not in members] == []


@pytest.mark.slow
def test_wheel_in_a_fresh_venv_runs_every_verb_and_builds_a_complete_runtime(dists, tmp_path):
    """`pip install rescuekit-*.whl` into a venv without this checkout: every verb, a capture + restore of a small
    image, and `rescuekit build` whose boot.wim runtime holds every module of the manifest."""
    from builder import wim
    from rescuekit import modules

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    py = venv / "bin" / "python"
    r = subprocess.run([str(py), "-m", "pip", "install", "-q", str(dists["wheel"])], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    exe = venv / "bin" / "rescuekit"
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    work = tmp_path / "work"  # not the checkout: nothing there can be imported by accident
    work.mkdir()

    def rk(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([str(exe), *args], capture_output=True, text=True, cwd=work, env=env)

    where = subprocess.run([str(py), "-c", "import rescuekit, builder; print(rescuekit.__file__, builder.__file__)"],
                           capture_output=True, text=True, cwd=work, env=env).stdout
    assert str(REPO) not in where and str(venv) in where, where
    from rescuekit import __version__
    assert rk("--version").stdout.strip() == f"rescuekit, version {__version__}"
    for verb in VERBS:
        r = rk(verb, "--help")
        assert r.returncode == 0 and "Usage:" in r.stdout, (verb, r.stderr)
    assert rk("disks", "--json").returncode in (0, 1)  # runs (no ModuleNotFoundError); 1 only for a one-line error
    assert "Traceback" not in rk("disks", "--json").stderr

    disk = tmp_path / "disk.img"
    with open(disk, "wb") as f:
        for i in range(8):
            f.write(bytes([i + 1]) * (1 << 20))
    repo, target = tmp_path / "repo", tmp_path / "restored.img"
    for args in (["capture", str(disk), str(repo)], ["images", str(repo), "--json"],
                 ["restore", str(repo), str(target), "--yes"], ["verify", str(repo), "--read-data"]):
        r = rk(*args)
        assert r.returncode == 0, (args, r.stderr)
    assert target.read_bytes() == disk.read_bytes()

    from make_standin_base import make_standin_base
    from tests.conftest import real_python_embed

    base = make_standin_base(tmp_path / "standin")
    iso = tmp_path / "rescue.iso"
    r = rk("build", "--source", str(base), "--output", str(iso), "--python-embed", str(real_python_embed()))
    assert r.returncode == 0, r.stderr
    import pycdlib

    cd = pycdlib.PyCdlib()
    cd.open(str(iso))
    boot = tmp_path / "boot.wim"
    with open(boot, "wb") as f:
        cd.get_file_from_iso_fp(f, udf_path="/sources/boot.wim")
    cd.close()
    prefix = "/rescuekit/lib/rescuekit/"
    present = [p[len(prefix):] for p in wim.dir_listing(boot, 1, prefix.rstrip("/")) if p.startswith(prefix)]
    assert modules.missing(present, modules.read_manifest(PKG)) == []


@pytest.mark.slow
def test_sdist_installs_a_complete_runtime(dists, tmp_path):
    """`pip install rescuekit-*.tar.gz` (built from the sdist, as pipx or an offline mirror may do) installs every
    module of the manifest; `rescuekit --version` runs from it."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    py = venv / "bin" / "python"
    r = subprocess.run([str(py), "-m", "pip", "install", "-q", str(dists["sdist"])], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    code = ("import pathlib, rescuekit; from rescuekit import modules; p = pathlib.Path(rescuekit.__file__).parent; "
            "print(p); print(modules.missing(modules.scan(p), modules.read_manifest(p)))")
    r = subprocess.run([str(py), "-P", "-c", code], capture_output=True, text=True, cwd=tmp_path)
    where, missing = r.stdout.splitlines()
    assert str(venv) in where and missing == "[]", r.stderr
    assert subprocess.run([str(venv / "bin" / "rescuekit"), "--version"], capture_output=True).returncode == 0

"""End to end: `rescuekit build` from the stand-in base with the runtime, then prove what is in the ISO's boot.wim."""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
from pathlib import Path

import pycdlib
import pytest

from builder import wim
from make_standin_base import make_standin_base
from tests.conftest import RK_HOST, require_tools
from tests.overlay.conftest import make_embed_zip


def rk(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([*RK_HOST, *args], capture_output=True, text=True, env=env)


def boot_wim_from_iso(iso_path: Path, dest: Path) -> Path:
    iso = pycdlib.PyCdlib()
    iso.open(str(iso_path))
    try:
        with open(dest, "wb") as out:
            iso.get_file_from_iso_fp(out, udf_path="/sources/boot.wim")
    finally:
        iso.close()
    return dest


@pytest.fixture(scope="session")
def standin(tmp_path_factory) -> Path:
    require_tools("wimlib-imagex", "nasm", "grub-mkstandalone", "mkfs.vfat", "mcopy")
    return make_standin_base(tmp_path_factory.mktemp("standin") / "base")


@pytest.fixture(scope="session")
def built(standin, embed_zip, wheelhouse, tmp_path_factory):
    """One ISO with the runtime, a driver folder and a capture default action (built once per session)."""
    root = tmp_path_factory.mktemp("built")
    drv = root / "drivers" / "nic"
    drv.mkdir(parents=True)
    (drv / "netkvm.inf").write_text("[Version]\r\n")
    (drv / "netkvm.sys").write_bytes(b"MZ")
    iso = root / "rescue.iso"
    r = rk("build", "--source", str(standin), "--output", str(iso), "--python-embed", str(embed_zip),
           "--wheelhouse", str(wheelhouse), "--driver", str(root / "drivers"), "--default-action", "capture",
           "--repository", "D:\\Rescue Images", "--target", "\\\\.\\PhysicalDrive0", "--image-name", "office pc",
           "--locale", "en-US", "--network")
    assert r.returncode == 0, r.stderr
    boot = boot_wim_from_iso(iso, root / "boot.wim")
    return iso, boot, r


def test_runtime_is_at_the_documented_paths(built, tmp_path):
    iso, boot, r = built
    assert "runtime: Python 3.12.10, " in r.stderr and "boot.wim " in r.stderr and " -> " in r.stderr
    wim.verify(boot)
    listing = wim.dir_listing(boot, 1, "/")
    lower = {p.lower() for p in listing}
    for p in ["/rescuekit/python/python.exe", "/rescuekit/python/python312._pth", "/rescuekit/python/python312.zip",
              "/rescuekit/launch.cmd", "/rescuekit/config.toml", "/rescuekit/manifest.json",
              "/rescuekit/lib/rescuekit/__init__.py", "/rescuekit/lib/rescuekit/__main__.py",
              "/rescuekit/lib/rescuekit/cli.py", "/rescuekit/lib/rescuekit/menu.py",
              "/rescuekit/lib/rescuekit/config.py", "/rescuekit/drivers/1/nic/netkvm.inf"]:
        assert p in lower, p
    for pkg in ("zstandard", "blake3"):
        pyds = [p for p in listing if p.lower().startswith(f"/rescuekit/python/lib/site-packages/{pkg}/")
                and p.endswith(".cp312-win_amd64.pyd")]
        assert pyds, pkg
    assert not any("__pycache__" in p for p in listing)

    wim.extract(boot, 1, ["/Windows/System32/startnet.cmd", "/rescuekit/launch.cmd",
                          "/rescuekit/python/python312._pth"], tmp_path)
    startnet = (tmp_path / "startnet.cmd").read_bytes().decode().split("\r\n")
    assert startnet[3:8] == ["wpeinit", "powercfg /s 8c5e7fda-e8bf-4a96-9a85-a6e23a8c635c",
                             "wpeutil InitializeNetwork", "wpeutil SetUserLocale en-US",
                             "drvload X:\\rescuekit\\drivers\\1\\nic\\netkvm.inf"]
    assert "call X:\\rescuekit\\launch.cmd" in startnet
    launch = (tmp_path / "launch.cmd").read_bytes().decode().split("\r\n")
    assert launch[3] == ('X:\\rescuekit\\python\\python.exe -B -m rescuekit capture \\\\.\\PhysicalDrive0 '
                         '"D:\\Rescue Images" --name "office pc"')
    pth = (tmp_path / "python312._pth").read_bytes().decode().split("\r\n")
    assert pth[:4] == ["python312.zip", ".", "Lib\\site-packages", "..\\lib"] and "#import site" in pth


def test_inspect_iso(built):
    iso, _, _ = built
    r = rk("inspect", str(iso), "--json")
    assert r.returncode == 0, r.stderr
    info = json.loads(r.stdout)
    assert info["kind"] == "iso" and info["build"]["source_kind"] == "copype-fwfiles"
    assert info["manifest"]["python"]["version"] == "3.12.10"
    assert info["manifest"]["drivers"][0]["infs"] == ["nic/netkvm.inf"]
    assert {w.split("-")[0] for w in info["manifest"]["wheels"]} >= {"click", "rich", "zstandard", "blake3"}
    assert info["config"]["default_action"] == "capture" and info["config"]["repository"] == "D:\\Rescue Images"
    text = rk("inspect", str(iso))
    assert text.returncode == 0 and "copype-fwfiles" in text.stdout and "3.12.10" in text.stdout


def test_no_runtime_builds_plain_winpe(standin, tmp_path):
    iso = tmp_path / "plain.iso"
    r = rk("build", "--source", str(standin), "--output", str(iso), "--no-runtime")
    assert r.returncode == 0, r.stderr
    boot = boot_wim_from_iso(iso, tmp_path / "boot.wim")
    assert not any(p.lower().startswith("/rescuekit") for p in wim.dir_listing(boot, 1, "/"))
    r = rk("inspect", str(iso))
    assert r.returncode == 1 and r.stderr.startswith("rescuekit: error: no rescuekit runtime in boot.wim")
    r = rk("build", "--source", str(standin), "--output", str(iso), "--no-runtime", "--driver", str(tmp_path))
    assert r.returncode == 2 and "--no-runtime cannot be combined with --driver" in r.stderr


@pytest.mark.parametrize("args,want", [
    (["--repository", "D:\\x & format C:"], "invalid --repository"),
    (["--image-name", "a|b"], "invalid --image-name"),
    (["--target", "C:"], "invalid --target"),
    (["--default-action", "restore", "--target", "\\\\.\\PhysicalDrive0"], "needs --repository"),
    (["--python-version", "3"], "invalid --python-version"),
])
def test_bad_build_options_are_one_line_errors(standin, tmp_path, args, want):
    out = tmp_path / "x.iso"
    r = rk("build", "--source", str(standin), "--output", str(out), *args)
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2 and len(lines) == 1 and lines[0].startswith("rescuekit: error: ") and want in lines[0]
    assert list(tmp_path.iterdir()) == []


def test_wrong_checksum_fails_the_build(standin, http_dir, tmp_path, wheelhouse):
    root, url, hits = http_dir
    (root / "3.12.10").mkdir()
    make_embed_zip(root / "3.12.10" / "python-3.12.10-embed-amd64.zip")
    env = {k: v for k, v in os.environ.items() if k != "RESCUEKIT_PYTHON_EMBED"}
    env.update(RESCUEKIT_PYTHON_MIRROR=url, RESCUEKIT_CACHE_DIR=str(tmp_path / "cache"))
    out = tmp_path / "out" / "x.iso"
    out.parent.mkdir()
    r = rk("build", "--source", str(standin), "--output", str(out), "--wheelhouse", str(wheelhouse), env=env)
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 1 and len(lines) == 1
    assert lines[0].startswith(f"rescuekit: error: checksum mismatch for {url}/3.12.10/python-3.12.10-embed-amd64.zip")
    assert list(out.parent.iterdir()) == [] and list((tmp_path / "cache" / "python").iterdir()) == []
    # with the fixture's hash given explicitly the same download is accepted and cached
    sha = hashlib.sha256((root / "3.12.10" / "python-3.12.10-embed-amd64.zip").read_bytes()).hexdigest()
    r = rk("build", "--source", str(standin), "--output", str(out), "--wheelhouse", str(wheelhouse),
           "--python-sha256", sha, env=env)
    assert r.returncode == 0, r.stderr
    assert [p.name for p in (tmp_path / "cache" / "python").iterdir()] == ["python-3.12.10-embed-amd64.zip"]


def _one_error_line(r: subprocess.CompletedProcess) -> str:
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 1 and len(lines) == 1 and lines[0].startswith("rescuekit: error: "), r.stderr
    return lines[0]


@pytest.mark.parametrize("size", [40_000, 100_000, 1_000_000])
def test_inspect_truncated_iso_is_a_one_line_error(built, tmp_path, size):
    iso, _, _ = built
    cut = tmp_path / "cut.iso"
    with open(iso, "rb") as f:
        cut.write_bytes(f.read(size))
    assert f"truncated ISO {cut}: {size} of " in _one_error_line(rk("inspect", str(cut)))


@pytest.mark.parametrize("text", ["{not json", "[1, 2]", "\xff\xfe"])
def test_inspect_corrupt_build_json_is_a_one_line_error(standin, tmp_path, text):
    media = tmp_path / "media"
    (media / "sources").mkdir(parents=True)
    (media / "sources" / "boot.wim").write_bytes((standin / "media" / "sources" / "boot.wim").read_bytes())
    (media / "rescuekit").mkdir()
    (media / "rescuekit" / "build.json").write_bytes(text.encode("latin-1"))
    assert "corrupt rescuekit/build.json of " in _one_error_line(rk("inspect", str(media)))



def test_inspect_finds_upper_case_names_in_a_folder(built, tmp_path):
    """Windows matches names case-insensitively, as the builder does: SOURCES/BOOT.WIM is the boot.wim."""
    _, boot, _ = built
    (tmp_path / "MEDIA" / "SOURCES").mkdir(parents=True)
    (tmp_path / "MEDIA" / "SOURCES" / "BOOT.WIM").write_bytes(boot.read_bytes())
    r = rk("inspect", str(tmp_path), "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["manifest"]["python"]["version"] == "3.12.10"


def test_output_inside_a_driver_folder_is_refused_before_anything_is_written(standin, embed_zip, wheelhouse, tmp_path):
    """The staging folder is made next to the output: inside a --driver folder it was written into the user's
    folder and then copied into itself until the path got too long."""
    drv = tmp_path / "drivers"
    (drv / "nic").mkdir(parents=True)
    (drv / "nic" / "netkvm.inf").write_text("[Version]\r\n")
    before = {p: p.stat().st_mtime_ns for p in [drv, *drv.rglob("*")]}
    out = drv / "nic" / "rescue.iso"
    r = rk("build", "--source", str(standin), "--output", str(out), "--python-embed", str(embed_zip),
           "--wheelhouse", str(wheelhouse), "--driver", str(drv))
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2 and lines == [f"rescuekit: error: output {out} is inside the --driver folder {drv}"]
    assert {p: p.stat().st_mtime_ns for p in [drv, *drv.rglob("*")]} == before


def test_output_over_an_overlay_input_is_refused(standin, wheelhouse, tmp_path):
    embed = make_embed_zip(tmp_path / "python-3.12.10-embed-amd64.zip")
    before = embed.read_bytes()
    r = rk("build", "--source", str(standin), "--output", str(embed), "--python-embed", str(embed),
           "--wheelhouse", str(wheelhouse))
    assert r.returncode == 2 and f"output {embed} would overwrite --python-embed" in r.stderr, r.stderr
    assert embed.read_bytes() == before
    house = tmp_path / "house"
    shutil.copytree(wheelhouse, house)
    r = rk("build", "--source", str(standin), "--output", str(house / "x.whl"), "--python-embed", str(embed),
           "--wheelhouse", str(house))
    assert r.returncode == 2 and "would overwrite --wheelhouse" in r.stderr, r.stderr
    r = rk("build", "--source", str(standin), "--output", str(tmp_path / "ok.iso"), "--python-embed", str(embed),
           "--wheelhouse", str(house))
    assert r.returncode == 0, r.stderr


def test_inspect_shows_a_foreign_manifest_without_crashing(tmp_path):
    """A manifest of other shapes (hand-made, damaged, another version) is shown as far as it goes."""
    tree = tmp_path / "tree"
    (tree / "rescuekit").mkdir(parents=True)
    (tree / "rescuekit" / "manifest.json").write_text('{"python": "x", "wheels": 5, "drivers": ["a", {"infs": 3}]}')
    boot = tmp_path / "boot.wim"
    subprocess.run(["wimlib-imagex", "capture", str(tree), str(boot), "odd", "--boot"], check=True, capture_output=True)
    r = rk("inspect", str(boot))
    assert r.returncode == 0 and "internal error" not in r.stderr, r.stderr
    assert "runtime" in r.stdout and "wheels" in r.stdout


def test_runtime_in_boot_wim_is_the_whole_package(built):
    """Every module of the package's manifest is in the ISO's boot.wim (and nothing the manifest does not know)."""
    from rescuekit import modules

    _, boot, _ = built
    prefix = "/rescuekit/lib/rescuekit/"
    present = sorted(p[len(prefix):] for p in wim.dir_listing(boot, 1, prefix.rstrip("/"))
                     if p.startswith(prefix) and p.endswith(".py"))
    assert present == modules.read_manifest() == modules.scan()


def test_default_build_with_the_runtime_is_reproducible(standin, tmp_path):
    """The default build (real embeddable CPython, downloaded win_amd64 wheels, runtime, config) under
    SOURCE_DATE_EPOCH gives the same bytes twice: every staged overlay file's time must be pinned."""
    env = {**os.environ, "SOURCE_DATE_EPOCH": "1700000000"}
    digests = []
    for n in (1, 2):
        out = tmp_path / f"r{n}" / "rescue.iso"
        out.parent.mkdir()
        r = rk("build", "--source", str(standin), "--output", str(out), env=env)
        assert r.returncode == 0, r.stderr
        assert "runtime: Python 3.13.2, " in r.stderr
        digests.append(hashlib.sha256(out.read_bytes()).hexdigest())
    assert digests[0] == digests[1]


def test_incomplete_runtime_package_is_refused(standin, embed_zip, wheelhouse, tmp_path):
    """A rescuekit install that lost a subpackage (the hand-kept package list once did that) is not laid into
    boot.wim: the build stops with one line naming the missing module and writes no output."""
    import rescuekit

    broken = tmp_path / "site"
    shutil.copytree(Path(rescuekit.__file__).parent, broken / "rescuekit",
                    ignore=shutil.ignore_patterns("__pycache__"))
    (broken / "rescuekit" / "repo" / "prune.py").unlink()  # a module no verb imports at start-up
    env = {**os.environ, "PYTHONPATH": str(broken)}  # found before the installed package
    out = tmp_path / "out" / "x.iso"
    out.parent.mkdir()
    r = rk("build", "--source", str(standin), "--output", str(out), "--python-embed", str(embed_zip),
           "--wheelhouse", str(wheelhouse), env=env)
    line = _one_error_line(r)
    assert f"incomplete rescuekit runtime in {broken / 'rescuekit'}: missing repo/prune.py" in line, line
    assert list(out.parent.iterdir()) == []
    (broken / "rescuekit" / "MODULES.txt").unlink()
    shutil.copy(Path(rescuekit.__file__).parent / "repo" / "prune.py", broken / "rescuekit" / "repo" / "prune.py")
    r = rk("build", "--source", str(standin), "--output", str(out), "--python-embed", str(embed_zip),
           "--wheelhouse", str(wheelhouse), env=env)
    assert "runtime package has no MODULES.txt" in _one_error_line(r)
    assert list(out.parent.iterdir()) == []

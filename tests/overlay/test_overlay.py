"""Injecting the overlay into a real WIM with wimlib; drivers; the DISM backend's exact command lines."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from builder import wim
from builder.config import RuntimeConfig
from builder.dism import DismBackend
from builder.drivers import validate_driver_dir
from builder.overlay import OverlayOptions, apply_overlay, wimlib_commands
from rescuekit.errors import RescueError, UsageError


def extract_text(wim_path: Path, rel: str, tmp: Path) -> str:
    wim.extract(wim_path, 1, ["/" + rel], tmp)
    return (tmp / Path(rel).name).read_bytes().decode()


@pytest.fixture
def driver_dir(tmp_path) -> Path:
    d = tmp_path / "drivers" / "Intel NIC"
    (d / "x64").mkdir(parents=True)
    (d / "x64" / "e1d.inf").write_text("[Version]\r\n")
    (d / "x64" / "e1d.sys").write_bytes(b"MZ")
    (d / "readme.txt").write_text("hi")
    return d


@pytest.fixture(scope="module")
def overlaid(tiny_wim, embed_zip, wheelhouse, tmp_path_factory):
    """tiny_wim + overlay (wimlib backend, one driver folder), done once for this module."""
    root = tmp_path_factory.mktemp("overlaid")
    boot = root / "boot.wim"
    shutil.copy(tiny_wim, boot)
    drv = root / "drv"
    (drv / "net").mkdir(parents=True)
    (drv / "net" / "net.inf").write_text("x")
    opts = OverlayOptions(
        config=RuntimeConfig(default_action="restore", repository="E:\\Images", target="\\\\.\\PhysicalDrive0"),
        python_embed=embed_zip, wheelhouse=wheelhouse, drivers=[drv], base_kind="test",
    )
    result = apply_overlay(boot, root / "work", opts)
    return boot, result, root


def test_wimlib_injection_layout(overlaid, tmp_path):
    boot, result, _ = overlaid
    assert result.size_after > result.size_before
    listing = {p.lower() for p in wim.dir_listing(boot, 1, "/")}
    for path in ["/rescuekit/launch.cmd", "/rescuekit/config.toml", "/rescuekit/manifest.json",
                 "/rescuekit/python/python.exe", "/rescuekit/python/python312._pth", "/rescuekit/python/python312.zip",
                 "/rescuekit/lib/rescuekit/__main__.py", "/rescuekit/lib/rescuekit/cli.py",
                 "/rescuekit/python/lib/site-packages/click/__init__.py",
                 "/rescuekit/drivers/1/net/net.inf", "/windows/system32/startnet.cmd", "/setup.exe.orig"]:
        assert path in listing, path
    assert any(p.startswith("/rescuekit/python/lib/site-packages/zstandard/") and p.endswith(".cp312-win_amd64.pyd")
               for p in listing)
    assert any(p.startswith("/rescuekit/python/lib/site-packages/blake3/") and p.endswith(".cp312-win_amd64.pyd")
               for p in listing)
    # what would bypass startnet.cmd is gone
    assert "/windows/system32/winpeshl.ini" not in listing and "/setup.exe" not in listing
    startnet = extract_text(boot, "Windows/System32/startnet.cmd", tmp_path).split("\r\n")
    assert "drvload X:\\rescuekit\\drivers\\1\\net\\net.inf" in startnet
    assert startnet.index("wpeinit") < startnet.index("call X:\\rescuekit\\launch.cmd")
    manifest = json.loads(extract_text(boot, "rescuekit/manifest.json", tmp_path))
    assert manifest["python"]["xy"] == "3.12" and manifest["base_kind"] == "test"
    assert manifest["drivers"] == [{"name": "drv", "infs": ["net/net.inf"], "path": "X:\\rescuekit\\drivers\\1"}]
    wim.verify(boot)
    count, boot_index = wim.check_wim(boot)
    assert (count, boot_index) == (1, 1)


def test_inspect_reads_the_overlay(overlaid):
    from builder.inspect_cli import inspect_medium

    boot, _, _ = overlaid
    ins = inspect_medium(boot)
    assert ins.kind == "wim" and ins.config["default_action"] == "restore"
    assert ins.config["repository"] == "E:\\Images"
    assert ins.manifest["runtime_version"]


def test_inspect_refuses_plain_winpe_and_junk(tiny_wim, tmp_path):
    from builder.inspect_cli import inspect_medium

    with pytest.raises(RescueError, match="no rescuekit runtime in boot.wim"):
        inspect_medium(tiny_wim)
    junk = tmp_path / "junk.iso"
    junk.write_bytes(b"\0" * 40000)
    with pytest.raises(UsageError, match="not an ISO, a WIM or a media folder"):
        inspect_medium(junk)
    with pytest.raises(UsageError, match="no sources/boot.wim in folder"):
        inspect_medium(tmp_path)


def test_inspect_iso_without_boot_wim(tmp_path):
    from builder.inspect_cli import inspect_medium

    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "hello.txt").write_text("x")
    iso = tmp_path / "plain.iso"
    subprocess.run(["xorriso", "-as", "mkisofs", "-quiet", "-J", "-o", str(iso), str(tmp_path / "d")], check=True)
    with pytest.raises(RescueError, match="no sources/boot.wim in ISO"):
        inspect_medium(iso)


def test_update_script_is_one_batch(tmp_path):
    cmds = wimlib_commands(tmp_path / "my tree", "winpeshl", has_setup_exe=False)
    assert cmds == [
        f'add "{tmp_path}/my tree/rescuekit" "/rescuekit"',
        f'add "{tmp_path}/my tree/Windows/System32/startnet.cmd" "/Windows/System32/startnet.cmd"',
        f'add "{tmp_path}/my tree/Windows/System32/winpeshl.ini" "/Windows/System32/winpeshl.ini"',
    ]


def test_bad_options_fail_before_any_work(tiny_wim, tmp_path, embed_zip):
    boot = tmp_path / "boot.wim"
    shutil.copy(tiny_wim, boot)
    before = boot.read_bytes()
    for opts, msg in [
        (OverlayOptions(drivers=[tmp_path / "none"]), "not a directory"),
        (OverlayOptions(drivers=[tmp_path]), "no .inf file"),
        (OverlayOptions(backend="foo"), "--wim-backend"),
        (OverlayOptions(python_embed=tmp_path / "x.zip"), "--python-embed"),
        (OverlayOptions(config=RuntimeConfig(repository="D:\\a&b")), "--repository"),
    ]:
        with pytest.raises(UsageError, match=msg):
            apply_overlay(boot, tmp_path / "w", opts)
        assert not (tmp_path / "w").exists()
    assert boot.read_bytes() == before


def test_driver_validation(driver_dir, tmp_path):
    d = validate_driver_dir(driver_dir)
    assert d.infs == [Path("x64/e1d.inf")]
    evil = tmp_path / "evil"
    evil.mkdir()
    (evil / "a&b.inf").write_text("x")
    with pytest.raises(UsageError, match="cmd.exe cannot take"):
        validate_driver_dir(evil)
    # cmd.exe would read a UTF-8 "é" in startnet.cmd as two OEM characters: drvload would miss the file
    accents = tmp_path / "accents"
    accents.mkdir()
    (accents / "r\u00e9seau.inf").write_text("x")
    with pytest.raises(UsageError, match="cmd.exe cannot take"):
        validate_driver_dir(accents)


class FakeRunner:
    def __init__(self, fail_on: str | None = None) -> None:
        self.calls: list[list[str]] = []
        self.fail_on = fail_on

    def __call__(self, cmd):
        self.calls.append(list(cmd))
        rc = 1 if self.fail_on and self.fail_on in cmd else 0
        return subprocess.CompletedProcess(cmd, rc, stdout="Error: 50\n" if rc else "ok\n", stderr="")


def test_dism_backend_exact_command_lines(tmp_path, driver_dir):
    tree = tmp_path / "tree"
    (tree / "rescuekit").mkdir(parents=True)
    (tree / "rescuekit" / "launch.cmd").write_text("x")
    mount = tmp_path / "mount"
    (mount / "Windows" / "System32").mkdir(parents=True)
    (mount / "Windows" / "System32" / "winpeshl.ini").write_text("x")
    runner = FakeRunner()
    wimfile = tmp_path / "boot.wim"
    DismBackend(runner).apply(wimfile, 1, tree, [driver_dir], mount, remove=["Windows/System32/winpeshl.ini"])
    assert runner.calls == [
        ["Dism.exe", "/Mount-Image", f"/ImageFile:{wimfile}", "/Index:1", f"/MountDir:{mount}"],
        ["Dism.exe", "/Add-Driver", f"/Image:{mount}", f"/Driver:{driver_dir}", "/Recurse"],
        ["Dism.exe", "/Unmount-Image", f"/MountDir:{mount}", "/Commit"],
    ]
    assert (mount / "rescuekit" / "launch.cmd").is_file()
    assert not (mount / "Windows" / "System32" / "winpeshl.ini").exists()


def test_dism_failure_discards(tmp_path, driver_dir):
    runner = FakeRunner(fail_on="/Add-Driver")
    (tmp_path / "tree").mkdir()
    with pytest.raises(RescueError, match="^DISM /Add-Driver failed: Error: 50$"):
        DismBackend(runner).apply(tmp_path / "b.wim", 1, tmp_path / "tree", [driver_dir], tmp_path / "m")
    assert runner.calls[-1] == ["Dism.exe", "/Unmount-Image", f"/MountDir:{tmp_path / 'm'}", "/Discard"]
    assert not any("/Commit" in c for c in runner.calls)


def test_dism_overlay_skips_drvload(tiny_wim, tmp_path, embed_zip, wheelhouse, driver_dir):
    runner = FakeRunner()
    boot = tmp_path / "boot.wim"
    shutil.copy(tiny_wim, boot)
    opts = OverlayOptions(python_embed=embed_zip, wheelhouse=wheelhouse, drivers=[driver_dir], backend="dism")
    apply_overlay(boot, tmp_path / "work", opts, dism_runner=runner)
    assert [c[1] for c in runner.calls] == ["/Mount-Image", "/Add-Driver", "/Unmount-Image"]
    startnet = (tmp_path / "work" / "mount" / "Windows" / "System32" / "startnet.cmd").read_bytes().decode()
    assert "drvload" not in startnet and "call X:\\rescuekit\\launch.cmd" in startnet
    assert not (tmp_path / "work" / "mount" / "rescuekit" / "drivers").exists()


def test_dism_overlay_renames_setup_exe_like_wimlib(tiny_wim, tmp_path, embed_zip, wheelhouse):
    """winpeshl would run X:\\setup.exe instead of startnet.cmd: the DISM backend renames it away too."""
    mount = tmp_path / "work" / "mount"

    class MountingRunner(FakeRunner):
        def __call__(self, cmd):
            if cmd[1] == "/Mount-Image":  # what DISM shows of a Windows setup boot.wim
                (mount / "Windows" / "System32").mkdir(parents=True)
                (mount / "setup.exe").write_bytes(b"MZ setup")
            return super().__call__(cmd)

    runner = MountingRunner()
    boot = tmp_path / "boot.wim"
    shutil.copy(tiny_wim, boot)
    apply_overlay(boot, tmp_path / "work", OverlayOptions(python_embed=embed_zip, wheelhouse=wheelhouse,
                                                          backend="dism"), dism_runner=runner)
    assert [c[1] for c in runner.calls] == ["/Mount-Image", "/Unmount-Image"] and runner.calls[-1][-1] == "/Commit"
    assert not (mount / "setup.exe").exists() and (mount / "setup.exe.orig").read_bytes() == b"MZ setup"


def test_staged_runtime_imports_from_the_pth_paths_alone(overlaid, tmp_path):
    """Emulate the ._pth: only its entries (resolved from python.exe's folder) on sys.path, no site. The pure
    wheels and the runtime package must then import from the staged tree; the compiled deps (win_amd64 in the
    image) are stood in for by the host's builds, the embedded stdlib zip by the host's stdlib."""
    import importlib
    import os

    _, _, root = overlaid
    pydir = root / "work" / "overlay" / "rescuekit" / "python"
    entries = [ln.strip() for ln in (pydir / "python312._pth").read_text().splitlines()
               if ln.strip() and not ln.startswith("#")]
    assert entries[0] == "python312.zip"
    staged = [str((pydir / e.replace("\\", "/")).resolve()) for e in entries[1:]]
    native = tmp_path / "native"
    for mod in ("zstandard", "blake3"):
        shutil.copytree(Path(importlib.import_module(mod).__file__).parent, native / mod,
                        ignore=shutil.ignore_patterns("__pycache__"))
    # The host's standard library where this interpreter really finds it (in a venv, sysconfig's platstdlib names
    # the venv, which has no lib-dynload): the folder of os.py and the lib-dynload entry of sys.path.
    stdlib = [str(Path(os.__file__).parent), *(p for p in sys.path if Path(p).name == "lib-dynload")]
    code = (
        "import sys, runpy; sys.path[:] = {paths!r}; sys.argv = ['rescuekit', '--help'];"
        "import click, rich, rescuekit; print('FROM', click.__file__, rich.__file__, rescuekit.__file__);"
        "runpy.run_module('rescuekit', run_name='__main__')"
    ).format(paths=stdlib + [str(native)] + staged)  # host builds shadow the win_amd64 ones
    r = subprocess.run([sys.executable, "-I", "-S", "-B", "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    origin = r.stdout.split("FROM ", 1)[1].splitlines()[0].split()
    assert all(p.startswith(str(root / "work" / "overlay")) for p in origin), origin
    assert "capture" in r.stdout and "restore" in r.stdout


@pytest.mark.parametrize("raw", ["1700000000", "+1700000000", " 1700000000"])
def test_overlay_reads_source_date_epoch_as_the_iso_does(monkeypatch, tmp_path, raw):
    """Any value the ISO mastering pins its clock to pins the config time and staged file times too (else the
    build is silently not reproducible); a value it refuses is refused here as well."""
    from builder import iso
    from builder.overlay import _pin_times, build_time

    monkeypatch.setenv("SOURCE_DATE_EPOCH", raw)
    assert iso.source_date_epoch() == 1700000000
    assert build_time() == "2023-11-14T22:13:20Z"
    (tmp_path / "t" / "d").mkdir(parents=True)
    (tmp_path / "t" / "d" / "f").write_text("x")
    _pin_times(tmp_path / "t")
    assert {p.stat().st_mtime for p in (tmp_path / "t").rglob("*")} == {1700000000}
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "yesterday")
    with pytest.raises(UsageError, match="SOURCE_DATE_EPOCH"):
        build_time()


def test_update_script_quotes_a_path_with_a_double_quote(tmp_path):
    """An output folder named 'say "hi"' (the staged tree lives next to the output) still builds."""
    cmds = wimlib_commands(tmp_path / 'say "hi"', "startnet", has_setup_exe=True)
    assert cmds[0] == f"""add '{tmp_path}/say "hi"/rescuekit' "/rescuekit\""""
    assert cmds[-1] == 'rename "/setup.exe" "/setup.exe.orig"'
    with pytest.raises(UsageError, match="both quote characters"):
        wimlib_commands(tmp_path / """it's "x\"""", "startnet", has_setup_exe=False)
    # wimlib refuses a path that is not UTF-8 ("A string was not a valid UTF-8 string"): say so up front
    import os
    with pytest.raises(UsageError, match=r"not valid UTF-8\): .*/d\\xe9j\\xe0/rescuekit"):
        wimlib_commands(tmp_path / os.fsdecode(b"d\xe9j\xe0"), "startnet", has_setup_exe=False)


def test_overlay_into_a_wim_from_a_folder_with_a_double_quote(tiny_wim, tmp_path, embed_zip, wheelhouse):
    work = tmp_path / 'out "new"'
    boot = tmp_path / "boot.wim"
    shutil.copy(tiny_wim, boot)
    apply_overlay(boot, work, OverlayOptions(python_embed=embed_zip, wheelhouse=wheelhouse))
    assert "/rescuekit/launch.cmd" in {p.lower() for p in wim.dir_listing(boot, 1, "/rescuekit")}

"""The build pipeline and the ``rescuekit build`` command, end to end on real files."""
from __future__ import annotations

import hashlib
import io
import json
import subprocess
from pathlib import Path

import pycdlib
import pytest

from builder import wim
from builder.build import BuildOptions, build_iso
from rescuekit.errors import RescueError
from rk_build_helpers import el_torito, rk_build, make_copype, make_iso_udf, make_windows_folder, tree_hash, write


def rk(cmd: str, *args: str, env=None) -> subprocess.CompletedProcess:
    assert cmd == "build"
    return rk_build(*args, env=env)


def iso_file(path: Path, udf_path: str) -> bytes:
    iso = pycdlib.PyCdlib()
    iso.open(str(path))
    try:
        buf = io.BytesIO()
        iso.get_file_from_iso_fp(buf, udf_path=udf_path)
        return buf.getvalue()
    finally:
        iso.close()


def efi_image_bytes(path: Path) -> bytes:
    ent = [e for e in el_torito(path) if e["platform"] == "UEFI"][0]
    with open(path, "rb") as f:
        f.seek(ent["lba"] * 2048)
        return f.read(1474560)


def test_cli_build_copype(kit, tmp_path):
    base = make_copype(kit, tmp_path / "winpe")
    before = tree_hash(base)
    out = tmp_path / "rescue.iso"
    r = rk("build", "--source", str(base), "--output", str(out))
    assert r.returncode == 0, r.stderr
    assert "copype-fwfiles" in r.stdout and "BIOS etfsboot.com, UEFI efisys.bin" in r.stdout
    assert [e["platform"] for e in el_torito(out)] == ["BIOS", "UEFI"]
    info = json.loads(iso_file(out, "/rescuekit/build.json"))
    assert info["source_kind"] == "copype-fwfiles" and info["uefi_ca"] == "2011" and info["no_prompt"] is False
    staged = tmp_path / "staged.wim"
    staged.write_bytes(iso_file(out, "/sources/boot.wim"))
    assert hashlib.sha256(staged.read_bytes()).hexdigest() == info["boot_wim_sha256"]
    winfo = wim.wim_info(staged)
    assert len(winfo.images) == 1 and winfo.boot_index == 1
    assert tree_hash(base) == before  # the user's source is untouched
    assert not any(".build-" in p.name or p.suffix == ".tmp" for p in tmp_path.iterdir())  # staging cleaned up


def test_setup_boot_wim_exports_winpe_image(kit, tmp_path):
    folder = make_windows_folder(kit, tmp_path / "win")
    iso = make_iso_udf(folder, tmp_path / "win.iso")
    out = tmp_path / "rescue.iso"
    r = rk("build", "--source", str(iso), "--output", str(out), "--no-prompt", "--json")
    assert r.returncode == 0, r.stderr
    res = json.loads(r.stdout)
    assert res["source_kind"] == "windows-iso" and res["boot_image"] == {"index": 1, "name": "Microsoft Windows PE (x64)"}
    staged = tmp_path / "staged.wim"
    staged.write_bytes(iso_file(out, "/sources/boot.wim"))
    info = wim.wim_info(staged)
    assert [i.name for i in info.images] == ["Microsoft Windows PE (x64)"] and info.boot_index == 1
    assert efi_image_bytes(out) == kit.efi["efisys_noprompt.bin"].read_bytes()
    listing = {c.file_identifier() for c in _udf_children(out, "/sources")}
    assert listing == {b"boot.wim"}  # install.wim is not copied


def _udf_children(path: Path, udf_path: str):
    iso = pycdlib.PyCdlib()
    iso.open(str(path))
    try:
        return [c for c in iso.list_children(udf_path=udf_path) if c]
    finally:
        iso.close()


def test_uefi_ca_2023(kit, tmp_path):
    base = make_copype(kit, tmp_path / "winpe", "bootbins")
    out = tmp_path / "ex.iso"
    res = build_iso(BuildOptions(source=base, output=out, uefi_ca="2023", no_prompt=True, progress=False))
    assert res.boot_entries == ["BIOS etfsboot.com", "UEFI efisys_noprompt_EX.bin"]
    assert efi_image_bytes(out) == kit.efi["efisys_noprompt_EX.bin"].read_bytes()
    assert iso_file(out, "/EFI/Boot/bootx64.efi") == b"bootmgfw 2023 (bootbins)\n"
    assert json.loads(iso_file(out, "/rescuekit/build.json"))["uefi_ca"] == "2023"


def test_winre_with_boot_files(kit, tmp_path):
    base = make_copype(kit, tmp_path / "winpe")
    out = tmp_path / "re.iso"
    r = rk("build", "--source", str(kit.winre_wim), "--boot-files", str(base), "--output", str(out))
    assert r.returncode == 0, r.stderr
    staged = tmp_path / "staged.wim"
    staged.write_bytes(iso_file(out, "/sources/boot.wim"))
    assert wim.wim_info(staged).images[0].name == "Microsoft Windows Recovery Environment (x64)"


def test_reproducible_build(kit, tmp_path, epoch_env):
    base = make_copype(kit, tmp_path / "winpe")
    sums = []
    for n in range(2):
        out = tmp_path / f"r{n}.iso"
        r = rk("build", "--source", str(base), "--output", str(out), env=epoch_env)
        assert r.returncode == 0, r.stderr
        sums.append(hashlib.sha256(out.read_bytes()).hexdigest())
    assert sums[0] == sums[1]


def test_overlay_hook_runs_on_staged_wim(kit, tmp_path):
    base = make_copype(kit, tmp_path / "winpe")
    seen = []

    def step(boot_wim: Path, workdir: Path) -> None:
        seen.append((boot_wim.name, workdir.is_dir()))
        ini = write(workdir / "winpeshl.ini", "[LaunchApps]\r\n")
        wim.update(boot_wim, 1, [f"add '{ini}' /Windows/System32/winpeshl.ini"])

    out = tmp_path / "o.iso"
    build_iso(BuildOptions(source=base, output=out, boot_wim_steps=[step], progress=False))
    assert seen == [("boot.wim", True)]
    staged = tmp_path / "staged.wim"
    staged.write_bytes(iso_file(out, "/sources/boot.wim"))
    assert "/Windows/System32/winpeshl.ini" in wim.dir_listing(staged, 1, "/Windows/System32")
    assert b"winpeshl" not in (base / "media/sources/boot.wim").read_bytes()


def test_failing_step_cleans_up(kit, tmp_path):
    base = make_copype(kit, tmp_path / "winpe")
    out = tmp_path / "x" / "o.iso"
    out.parent.mkdir()

    def bad(boot_wim: Path, workdir: Path) -> None:
        raise RescueError("overlay failed: config.toml line 3")

    with pytest.raises(RescueError, match="overlay failed"):
        build_iso(BuildOptions(source=base, output=out, boot_wim_steps=[bad], progress=False))
    assert list(out.parent.iterdir()) == []


@pytest.mark.parametrize("case", ["empty", "random", "linux-iso", "no-images", "inside", "label", "outdir"])
def test_cli_one_line_errors(kit, tmp_path, case):
    out = tmp_path / "o.iso"
    if case == "empty":
        src = tmp_path / "empty"
        src.mkdir()
        args, want = ["--source", str(src)], "is an empty folder"
    elif case == "random":
        src = write(tmp_path / "r.bin", b"\x01\x02" * 5000)
        args, want = ["--source", str(src)], "not a WinPE base"
    elif case == "linux-iso":
        d = tmp_path / "d"
        write(d / "boot/grub/grub.cfg", "menuentry\n")
        src = make_iso_udf(d, tmp_path / "linux.iso")
        args, want = ["--source", str(src)], "not a Windows/WinPE ISO"
    elif case == "no-images":
        base = make_copype(kit, tmp_path / "pe")
        args, want = ["--source", str(kit.empty_wim), "--boot-files", str(base)], "no images in WIM"
    elif case == "inside":
        base = make_copype(kit, tmp_path / "pe")
        args, want = ["--source", str(base)], "inside the source folder"
        out = base / "media/o.iso"
    elif case == "label":
        base = make_copype(kit, tmp_path / "pe")
        args, want = ["--source", str(base), "--label", "no spaces"], "bad volume label"
    else:
        base = make_copype(kit, tmp_path / "pe")
        args, want = ["--source", str(base)], "output folder does not exist"
        out = tmp_path / "nodir/o.iso"
    before = sorted(out.parent.iterdir()) if out.parent.exists() else None
    r = rk("build", *args, "--output", str(out))
    assert r.returncode != 0
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("rescuekit: error: ") and want in lines[0], r.stderr
    assert not out.exists()
    if before is None:  # a missing output folder is not created (nor anything in it)
        assert not out.parent.exists()
    else:  # nothing left next to the output: no staging folder, no temporary ISO
        assert sorted(out.parent.iterdir()) == before


def test_cli_no_source_off_windows(tmp_path):
    r = rk("build", "--output", str(tmp_path / "o.iso"))
    assert r.returncode == 2 and r.stderr.strip() == (
        "rescuekit: error: no --source given and no Windows ADK with the WinPE add-on found at its standard path")


@pytest.mark.parametrize("where", ["media/o.iso", "fwfiles/o.iso", "o.iso"])
def test_output_inside_source_writes_nothing_into_it(kit, tmp_path, where):
    """Refused before the staging folder is made next to the output: not even a temporary entry in the source
    (a folder's mtime changes when an entry is created and removed)."""
    base = make_copype(kit, tmp_path / "pe")
    before = {p: p.stat().st_mtime_ns for p in [base, *base.rglob("*")]}
    r = rk("build", "--source", str(base), "--output", str(base / where))
    assert r.returncode == 2 and "inside the source folder" in r.stderr, r.stderr
    assert {p: p.stat().st_mtime_ns for p in [base, *base.rglob("*")]} == before

"""builder.wim against real WIMs made by wimlib-imagex."""
from __future__ import annotations


import pytest

from builder import wim
from rescuekit.errors import RescueError


def test_info_single_and_setup(kit):
    info = wim.wim_info(kit.winpe_wim)
    assert [i.name for i in info.images] == ["Microsoft Windows PE (amd64)"]
    assert info.boot_index == 1 and info.images[0].file_count > 0
    setup = wim.wim_info(kit.setup_wim)
    assert [(i.index, i.name) for i in setup.images] == [
        (1, "Microsoft Windows PE (x64)"), (2, "Microsoft Windows Setup (x64)")]
    assert setup.boot_index == 2
    with pytest.raises(RescueError, match="no image 3 in WIM"):
        setup.image(3)


def test_bad_wims(kit, tmp_path):
    junk = tmp_path / "junk.wim"
    junk.write_bytes(b"hello" * 100)
    with pytest.raises(RescueError, match=f"not a WIM file: {junk}"):
        wim.wim_info(junk)
    with pytest.raises(RescueError, match="no images in WIM"):
        wim.wim_info(kit.empty_wim)
    with pytest.raises(RescueError, match="WIM file not found"):
        wim.wim_info(tmp_path / "missing.wim")
    with pytest.raises(RescueError, match="not a WIM file.*directory"):
        wim.read_header(tmp_path)


def test_export_update_extract_verify(kit, tmp_path):
    before = kit.setup_wim.read_bytes()
    out = tmp_path / "boot.wim"
    wim.export_image(kit.setup_wim, 1, out, boot=True)
    assert kit.setup_wim.read_bytes() == before  # source untouched
    info = wim.wim_info(out)
    assert len(info.images) == 1 and info.boot_index == 1
    assert info.images[0].name == "Microsoft Windows PE (x64)"
    with pytest.raises(RescueError, match="already exists"):
        wim.export_image(kit.setup_wim, 1, out)

    add = tmp_path / "winpeshl.ini"
    add.write_text("[LaunchApps]\r\n")
    wim.update(out, 1, [f"add '{add}' /Windows/System32/winpeshl.ini", "delete /Windows/Boot/PCAT/bootmgr"])
    listing = wim.dir_listing(out, 1, "/Windows/System32")
    assert "/Windows/System32/winpeshl.ini" in listing
    assert not any(p.endswith("PCAT/bootmgr") for p in wim.dir_listing(out, 1))
    wim.extract(out, 1, ["/windows/system32/WINPESHL.INI"], tmp_path / "x")  # case-insensitive paths
    assert (tmp_path / "x/winpeshl.ini").read_bytes() == b"[LaunchApps]\r\n"
    wim.verify(out)
    with pytest.raises(RescueError, match=f"wimlib-imagex extract failed on {out}"):
        wim.extract(out, 1, ["/no/such/file"], tmp_path / "y")


def test_reproducible_guid_and_times(kit, tmp_path):
    a, b = tmp_path / "a.wim", tmp_path / "b.wim"
    for p in (a, b):
        wim.export_image(kit.winpe_wim, 1, p)
        wim.set_image_times(p, 1, 1700000000)
        wim.set_guid(p, wim.deterministic_guid(p))
    assert a.read_bytes() == b.read_bytes()
    wim.verify(a)
    with pytest.raises(ValueError):
        wim.set_guid(a, b"short")

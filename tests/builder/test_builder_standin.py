"""``rescuekit build`` on helper A's stand-in base (booted under QEMU in tests/boot)."""
from __future__ import annotations

import io
from pathlib import Path

import pycdlib
import pytest

from builder import isocheck
from make_standin_base import make_standin_base, read_nonce  # scripts/ (tests/conftest.py)
from rk_build_helpers import el_torito, require_tools, rk_build, tree_hash


@pytest.fixture(scope="module")
def standin(tmp_path_factory) -> Path:
    require_tools("nasm", "grub-mkstandalone", "mkfs.vfat", "mcopy", "wimlib-imagex")
    return make_standin_base(tmp_path_factory.mktemp("standin") / "base", "bootbins")


@pytest.mark.parametrize("ca,noprompt,efi", [("2011", False, "efisys.bin"), ("2023", True, "efisys_noprompt_EX.bin")])
def test_build_standin(standin, tmp_path, ca, noprompt, efi):
    before = tree_hash(standin)
    out = tmp_path / "rescue.iso"
    args = ["--source", str(standin), "--output", str(out), "--uefi-ca", ca]
    r = rk_build(*args, *(["--no-prompt"] if noprompt else []))
    assert r.returncode == 0, r.stderr
    ents = el_torito(out)
    assert [(e["platform"], e["load_size"]) for e in ents][0] == ("BIOS", 8)
    data = out.read_bytes()
    etfs = (standin / "bootbins/etfsboot.com").read_bytes()
    assert data[ents[0]["lba"] * 2048:][:len(etfs)] == etfs  # loaded unpatched
    efi_bytes = (standin / "bootbins" / efi).read_bytes()
    assert data[ents[1]["lba"] * 2048:][:len(efi_bytes)] == efi_bytes
    iso = pycdlib.PyCdlib()
    iso.open(str(out))
    try:
        buf = io.BytesIO()
        iso.get_file_from_iso_fp(buf, iso_path="/NONCE.TXT")  # what the BIOS stand-in reads via ISO 9660
        assert buf.getvalue().decode().strip() == read_nonce(standin)
    finally:
        iso.close()
    assert tree_hash(standin) == before
    # --no-prompt also for BIOS: boot\bootfix.bin (the "Press any key") is left off, in UDF and in ISO 9660
    rep = isocheck.check_iso(out)
    assert rep.ok, isocheck.format_report(rep)
    names = {c.name for c in rep.checks}
    assert ("udf:boot/bootfix.bin" in names) is (not noprompt)
    assert ("iso9660:BOOT/BOOTFIX.BIN" in names) is (not noprompt)
    assert ("bootfix.bin left off the disc" in r.stdout) is noprompt

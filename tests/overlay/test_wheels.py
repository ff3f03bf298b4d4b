"""Runtime wheels: tag checks, wheelhouse selection, unpacking real win_amd64 wheels, msvcp140 warning."""
from __future__ import annotations

import shutil
import zipfile
from pathlib import Path

import pytest

from builder.pe_imports import needs_msvcp140, pe_imports
from builder.wheels import REQUIRED_DISTS, copy_runtime_package, install_wheel, parse_wheel, select_wheels, tag_problem
from rescuekit.errors import UsageError


@pytest.mark.parametrize("name,problem", [
    ("click-8.1.7-py3-none-any.whl", None),
    ("colorama-0.4.6-py2.py3-none-any.whl", None),
    ("zstandard-0.25.0-cp312-cp312-win_amd64.whl", None),
    ("cryptography-43.0.0-cp39-abi3-win_amd64.whl", None),
    ("zstandard-0.25.0-cp311-cp311-win_amd64.whl", "is for Python cp311, not cp312"),
    ("zstandard-0.25.0-cp312-cp312-manylinux_2_17_x86_64.whl", "is for platform manylinux_2_17_x86_64, not win_amd64"),
    ("zstandard-0.25.0-cp312-cp312-win32.whl", "is for platform win32, not win_amd64"),
    ("blake3-1.0.0-cp312-cp312-win_arm64.whl", "not win_amd64"),
    ("foo-1.0-cp313-abi3-win_amd64.whl", "is for Python cp313"),
    ("foo-1.0-pp310-pypy310_pp73-win_amd64.whl", "is for Python pp310"),
])
def test_tag_check(name, problem):
    got = tag_problem(parse_wheel(Path(name)), "3.12")
    if problem is None:
        assert got is None
    else:
        assert got is not None and problem in got


def test_wrong_wheel_in_wheelhouse_is_refused(tmp_path, wheelhouse):
    for w in wheelhouse.glob("*.whl"):
        if not w.name.startswith("zstandard"):
            shutil.copy(w, tmp_path)
    (tmp_path / "zstandard-0.25.0-cp311-cp311-win_amd64.whl").write_bytes(b"")
    with pytest.raises(UsageError, match=r"^wheel zstandard-0\.25\.0-cp311-cp311-win_amd64\.whl is for Python cp311"):
        select_wheels(tmp_path, "3.12")


def test_missing_dependency_named(tmp_path, wheelhouse):
    for w in wheelhouse.glob("*.whl"):
        if not w.name.startswith("blake3"):
            shutil.copy(w, tmp_path)
    with pytest.raises(UsageError, match="has no wheel for blake3"):
        select_wheels(tmp_path, "3.12")
    with pytest.raises(UsageError, match="not a directory"):
        select_wheels(tmp_path / "nope", "3.12")


def test_real_wheels_unpack_with_win_amd64_pyds(tmp_path, wheelhouse):
    wheels = select_wheels(wheelhouse, "3.12")
    assert {w.name for w in wheels} >= set(REQUIRED_DISTS)
    site = tmp_path / "site-packages"
    warnings = []
    for w in wheels:
        warnings += install_wheel(w, site)
    assert warnings == []  # zstandard (C) and blake3 (Rust) do not need msvcp140.dll
    for pkg in ("zstandard", "blake3"):
        pyds = list((site / pkg).glob("*.cp312-win_amd64.pyd"))
        assert pyds, pkg
        imports = [n.lower() for n in pe_imports(pyds[0].read_bytes())]
        assert "python312.dll" in imports and "vcruntime140.dll" in imports
    for pkg in ("click", "rich", "markdown_it", "mdurl", "pygments", "colorama"):
        assert (site / pkg / "__init__.py").is_file(), pkg
    assert list(site.glob("click-*.dist-info/METADATA"))


def test_msvcp140_import_warns(tmp_path, wheelhouse):
    # a real .pyd with its import name patched from VCRUNTIME140.dll to MSVCP140.dll (same length)
    zst = next(wheelhouse.glob("zstandard-*.whl"))
    with zipfile.ZipFile(zst) as z:
        name = next(n for n in z.namelist() if n.endswith("backend_c.cp312-win_amd64.pyd"))
        data = z.read(name)
    patched = data.replace(b"VCRUNTIME140.dll", b"MSVCP140.dll\0\0\0\0", 1)
    assert not needs_msvcp140(data) and needs_msvcp140(patched)
    fake = tmp_path / "cxx-1.0-cp312-cp312-win_amd64.whl"
    with zipfile.ZipFile(fake, "w") as z:
        z.writestr("cxx/_ext.cp312-win_amd64.pyd", patched)
        z.writestr("cxx-1.0.data/purelib/cxx/__init__.py", "")
        z.writestr("cxx-1.0.data/scripts/tool.exe", "MZ")
    warnings = install_wheel(parse_wheel(fake), tmp_path / "site")
    assert warnings == [f"{fake.name}: _ext.cp312-win_amd64.pyd imports msvcp140.dll, which the embeddable Python lacks"]
    assert (tmp_path / "site" / "cxx" / "__init__.py").is_file()  # .data/purelib merged
    assert not (tmp_path / "site" / "tool.exe").exists()


def test_runtime_package_copied_without_caches(tmp_path):
    dst = copy_runtime_package(tmp_path)
    assert (dst / "__main__.py").is_file() and (dst / "cli.py").is_file()
    assert not list(dst.rglob("__pycache__")) and not list(dst.rglob("*.pyc"))


def test_damaged_wheel_is_a_one_line_error(tmp_path):
    from rescuekit.errors import RescueError
    from tests.overlay.test_python_embed import damage_member

    whl = tmp_path / "blob-1.0-py3-none-any.whl"
    with zipfile.ZipFile(whl, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("blob/__init__.py", "x = 1\n" * 2000)
    damage_member(whl, "blob/__init__.py")
    with pytest.raises(RescueError, match=r"damaged wheel .*blob-1\.0-py3-none-any\.whl: blob/__init__\.py"):
        install_wheel(parse_wheel(whl), tmp_path / "site")


def test_wheel_members_are_streamed_not_read_whole(tmp_path):
    """A big member (here 64 MiB of zeros, a few KiB compressed) is copied in pieces, not held in memory."""
    import tracemalloc

    whl = tmp_path / "big-1.0-py3-none-any.whl"
    with zipfile.ZipFile(whl, "w", zipfile.ZIP_DEFLATED) as z:
        with z.open("big/data.bin", "w") as f:
            for _ in range(64):
                f.write(bytes(1 << 20))
    tracemalloc.start()
    try:
        install_wheel(parse_wheel(whl), tmp_path / "site")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert (tmp_path / "site" / "big" / "data.bin").stat().st_size == 64 << 20
    assert peak < 16 << 20, peak

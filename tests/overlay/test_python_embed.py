"""The embeddable Python: download from a local mirror, SHA-256 pinning, per-user cache, zip checks, ._pth."""
from __future__ import annotations

import hashlib
import zipfile

import pytest

from builder import python_embed as pe
from rescuekit.errors import RescueError, UsageError
from tests.overlay.conftest import PTH_312, make_embed_zip

VERSION = "3.12.10"


@pytest.fixture
def mirror(http_dir, tmp_path, monkeypatch):
    """A local python.org-like mirror holding a fixture zip at /3.12.10/python-3.12.10-embed-amd64.zip."""
    root, url, hits = http_dir
    (root / VERSION).mkdir()
    z = make_embed_zip(root / VERSION / f"python-{VERSION}-embed-amd64.zip")
    monkeypatch.setenv("RESCUEKIT_PYTHON_MIRROR", url)
    monkeypatch.setenv("RESCUEKIT_CACHE_DIR", str(tmp_path / "cache"))
    return z, hashlib.sha256(z.read_bytes()).hexdigest(), hits, tmp_path / "cache" / "python"


def test_right_checksum_downloads_once_then_uses_the_cache(mirror):
    z, sha, hits, cache = mirror
    first = pe.fetch_embed(VERSION, sha)
    assert first == cache / z.name and first.read_bytes() == z.read_bytes()
    assert hits == [f"/{VERSION}/{z.name}"]
    again = pe.resolve_embed(None, VERSION, sha)
    assert again.path == first and again.xy == "3.12" and again.version == VERSION
    assert len(hits) == 1  # the second build did not download
    assert [p.name for p in cache.iterdir()] == [z.name]  # no temp files left


def test_wrong_checksum_fails_and_caches_nothing(mirror):
    z, sha, hits, cache = mirror
    with pytest.raises(RescueError) as err:
        pe.fetch_embed(VERSION, "0" * 64)
    msg = str(err.value)
    assert "\n" not in msg and msg.startswith("checksum mismatch for http://127.0.0.1:")
    assert sha in msg
    assert list(cache.iterdir()) == []


def test_pinned_hash_is_used_by_default(mirror):
    # the fixture zip is not python.org's, so the pinned 3.12.10 hash must reject it
    with pytest.raises(RescueError, match=pe.PINNED_SHA256[VERSION]):
        pe.fetch_embed(VERSION)


def test_tampered_cache_entry_is_replaced(mirror):
    z, sha, hits, cache = mirror
    cache.mkdir(parents=True)
    (cache / z.name).write_bytes(b"evil")
    assert pe.fetch_embed(VERSION, sha).read_bytes() == z.read_bytes()
    assert len(hits) == 1


def test_unreachable_mirror_is_one_line(monkeypatch, tmp_path):
    monkeypatch.setenv("RESCUEKIT_PYTHON_MIRROR", "http://127.0.0.1:9")
    monkeypatch.setenv("RESCUEKIT_CACHE_DIR", str(tmp_path))
    with pytest.raises(RescueError, match=r"^cannot download http://127\.0\.0\.1:9/3\.12\.10/"):
        pe.fetch_embed(VERSION)


def test_unpinned_version_needs_a_hash(monkeypatch, tmp_path):
    monkeypatch.setenv("RESCUEKIT_CACHE_DIR", str(tmp_path))
    with pytest.raises(UsageError, match="no pinned SHA-256 for Python 3.11.2"):
        pe.fetch_embed("3.11.2")
    with pytest.raises(UsageError, match="invalid --python-version"):
        pe.fetch_embed("3.12")
    with pytest.raises(UsageError, match="invalid --python-sha256"):
        pe.fetch_embed("3.11.2", "xyz")


def test_embed_zip_validation(tmp_path):
    info = pe.inspect_embed(make_embed_zip(tmp_path / "python-3.13.14-embed-amd64.zip", tag="313"))
    assert (info.xy, info.tag, info.pth_name, info.version) == ("3.13", "313", "python313._pth", "3.13.14")
    with pytest.raises(UsageError, match="holds Python 3.13, not 3.12.10"):
        pe.inspect_embed(info.path, "3.12.10")
    (tmp_path / "junk.zip").write_bytes(b"not a zip")
    with pytest.raises(UsageError, match="not a zip file"):
        pe.inspect_embed(tmp_path / "junk.zip")
    bad = tmp_path / "nopth.zip"
    with zipfile.ZipFile(bad, "w") as z:
        z.writestr("python.exe", b"MZ")
        z.writestr("python312.dll", b"MZ")
        z.writestr("python312.zip", b"")
    with pytest.raises(UsageError, match=r"no python312\._pth"):
        pe.inspect_embed(bad)
    with pytest.raises(UsageError, match="not found"):
        pe.inspect_embed(tmp_path / "missing.zip")


def test_given_zip_is_checked_against_given_hash(embed_zip):
    with pytest.raises(RescueError, match="checksum mismatch"):
        pe.resolve_embed(embed_zip, None, "1" * 64)
    assert pe.resolve_embed(embed_zip, None, None).version == "3.12.10"


def test_pth_keeps_its_lines_and_adds_ours(tmp_path, embed_zip):
    info = pe.inspect_embed(embed_zip)
    pe.unpack_embed(info, tmp_path / "py", ["Lib\\site-packages", "..\\lib"])
    text = (tmp_path / "py" / "python312._pth").read_bytes().decode()
    assert text.split("\r\n") == [
        "python312.zip", ".", "Lib\\site-packages", "..\\lib", "",
        "# Uncomment to run site.main() automatically", "#import site", "",
    ]
    assert PTH_312.replace("\r\n", "\n").splitlines()[-1] == "#import site"
    assert (tmp_path / "py" / "python.exe").is_file()


def test_unsafe_zip_member_refused(tmp_path):
    z = make_embed_zip(tmp_path / "e.zip", extra={"../evil.txt": b"x"})
    with pytest.raises(RescueError, match="unsafe member"):
        pe.unpack_embed(pe.inspect_embed(z), tmp_path / "py", [])
    assert not (tmp_path / "evil.txt").exists()


def damage_member(zip_path, name: str) -> None:
    """Flip one byte inside the stored data of member ``name`` (its CRC or deflate stream no longer matches)."""
    with zipfile.ZipFile(zip_path) as zf:
        info = zf.getinfo(name)
    data = bytearray(zip_path.read_bytes())
    fname_len = int.from_bytes(data[info.header_offset + 26:info.header_offset + 28], "little")
    extra_len = int.from_bytes(data[info.header_offset + 28:info.header_offset + 30], "little")
    start = info.header_offset + 30 + fname_len + extra_len
    data[start + info.compress_size // 2] ^= 0xFF
    zip_path.write_bytes(bytes(data))


def test_damaged_embed_zip_is_a_one_line_error(tmp_path):
    z = make_embed_zip(tmp_path / "python-3.12.10-embed-amd64.zip", extra={"big.dll": bytes(range(256)) * 64})
    damage_member(z, "big.dll")
    with pytest.raises(RescueError, match=r"damaged Python embeddable zip .*python-3\.12\.10-embed-amd64\.zip: big\.dll"):
        pe.unpack_embed(pe.inspect_embed(z), tmp_path / "py", [])

"""BitLocker volumes captured decrypted with a recovery password (issue 15).

No BitLocker volume can be made here (no Windows, no manage-bde), so the parser and the decryption are checked
against Windows-made volumes (cryptsetup's test images, see bitlocker_data/README.md): the SHA-256 of each whole
volume decrypted must equal what cryptsetup's bitlkOpen produced. A real NTFS (mkntfs + wimlib) is then encrypted
into one of those Windows-made layouts with its FVEK (by ``cryptography``'s own per-sector AES-XTS, not by the
code under test) for a capture + restore whose files are checked: that proves our capture path end to end on
Windows' metadata, with sector contents we wrote ourselves.
"""
from __future__ import annotations

import hashlib
import json
import lzma
import os
import struct
import subprocess
from pathlib import Path

import make_test_disks as mtd
import pytest
from imaging_helpers import MiB, check_ntfs, one_line_error, rk, rk_json

from rescuekit.disk import bitlocker, ntfs
from rescuekit.disk.device import open_source
from rescuekit.errors import RescueError
from tests.conftest import require_tools

DATA = Path(__file__).parent / "bitlocker_data"
INFO = json.loads((DATA / "images.json").read_text())
XTS = "bitlk-aes-xts-128"


def _unpack(name: str, dest: Path) -> Path:
    """The .img.xz decompressed sparse (the volumes are mostly zeros)."""
    out = dest / f"{name}.img"
    with lzma.open(DATA / f"{name}.img.xz") as src, open(out, "wb") as f:
        while block := src.read(1 << 20):
            if block.count(0) == len(block):
                f.seek(len(block), os.SEEK_CUR)
            else:
                f.write(block)
        f.truncate()
    return out


class _Volumes(dict):
    """name -> unpacked volume file, unpacked when first asked for (each costs ~1 s)."""

    def __init__(self, dest: Path) -> None:
        super().__init__()
        self.dest = dest

    def __missing__(self, name: str) -> Path:
        self[name] = _unpack(name, self.dest)
        return self[name]


@pytest.fixture(scope="session")
def windows_volumes(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return _Volumes(tmp_path_factory.mktemp("bitlk"))


@pytest.fixture(scope="session")
def unlocked(windows_volumes):
    """name -> (metadata, FVEK) of a Windows-made volume, unlocked once per session (the key stretch takes
    seconds): recovery password -> stretch -> VMK -> FVEK, all through the code under test."""
    cache: dict[str, tuple[bitlocker.Metadata, bytes]] = {}

    def get(name: str) -> tuple[bitlocker.Metadata, bytes]:
        if name not in cache:
            with open_source(windows_volumes[name]) as dev:
                meta = bitlocker.read_metadata(dev, 0, dev.size, name)
                cache[name] = meta, bitlocker.unlock(meta, INFO[name]["recovery_password"], name)
        return cache[name]
    return get


@pytest.fixture(scope="session")
def xts_key(unlocked) -> tuple[bitlocker.Metadata, bytes]:
    return unlocked(XTS)


def _sha_of(dev, size: int) -> str:
    h = hashlib.sha256()
    for off in range(0, size, 4 * MiB):
        h.update(dev.read(off, min(4 * MiB, size - off)))
    return h.hexdigest()


@pytest.mark.parametrize("name, method", [("bitlk-aes-xts-128", "aes-xts-128"), ("bitlk-aes-xts-256", "aes-xts-256"),
                                          ("bitlk-aes-cbc-128", "aes-cbc-128"),
                                          ("bitlk-aes-cbc-elephant-128", "aes-cbc-elephant-128")])
def test_windows_volume_unlocks(windows_volumes, unlocked, name: str, method: str) -> None:
    """The key chain on each method; the boot sector (relocated, decrypted) carries the volume's NTFS serial."""
    meta, key = unlocked(name)
    assert meta.describe() == method
    with open_source(windows_volumes[name]) as dev:
        vol = bitlocker.DecryptedVolume(dev, 0, dev.size, meta, key)
        assert f"{ntfs.parse_boot(vol.read(0, 512)).serial:016X}" == INFO[name]["ntfs_serial"]


@pytest.mark.parametrize("name", [
    "bitlk-aes-xts-128", "bitlk-aes-cbc-128",
    pytest.param("bitlk-aes-cbc-elephant-128", marks=pytest.mark.slow),  # the diffuser is pure Python: ~10 MB/s
])
def test_windows_volume_decrypts_as_cryptsetup_does(windows_volumes, unlocked, name: str) -> None:
    """Every sector (XTS tweaks, CBC IVs, the Elephant diffuser), the relocated first sectors and the zeroed
    metadata regions: the whole decrypted volume's SHA-256 is cryptsetup's."""
    with open_source(windows_volumes[name]) as dev:
        vol = bitlocker.DecryptedVolume(dev, 0, dev.size, *unlocked(name))
        assert _sha_of(vol, dev.size) == INFO[name]["sha256"]


def test_bulk_ciphers_match_per_sector_cryptography() -> None:
    """The bulk XTS/CBC/diffuser code against cryptography's own one-sector-at-a-time modes (random data, odd
    sector numbers, both sector sizes); the Elephant diffuser has no second implementation: the Windows-made
    volume above checks it."""
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

    rnd = os.urandom
    for method, ss in ((0x8004, 512), (0x8005, 4096), (0x8002, 512), (0x8003, 4096)):
        m = bitlocker.Metadata(ss, 0, method, 4, "", (0, 0, 0), 0, ss)
        key = rnd(64)
        data, pos = rnd(ss * 5), ss * 12345
        got = bitlocker.SectorCipher(m, key).decrypt(data, pos)
        want = b""
        for i in range(5):
            sec, at = data[i * ss:(i + 1) * ss], pos + i * ss
            if m.mode == "aes-xts":
                n = bitlocker.METHODS[method][1]
                d = Cipher(algorithms.AES(key[:n]), modes.XTS((at // ss).to_bytes(16, "little"))).decryptor()
            else:
                k = algorithms.AES(key[:bitlocker.METHODS[method][1]])
                e = Cipher(k, modes.ECB()).encryptor()
                d = Cipher(k, modes.CBC(e.update(at.to_bytes(16, "little")))).decryptor()
            want += d.update(sec) + d.finalize()
        assert got == want, hex(method)


def test_recovery_password_format() -> None:
    assert bitlocker.recovery_key("000011-000022-000033-000044-000055-000066-000077-000088") == \
        struct.pack("<8H", 1, 2, 3, 4, 5, 6, 7, 8)
    for bad, why in (("12345-000000-000000-000000-000000-000000-000000-000000", "48 digits"),
                     ("000012-000022-000033-000044-000055-000066-000077-000088", r"group 1 \(000012\)"),
                     ("720896-000022-000033-000044-000055-000066-000077-000088", "group 1")):
        with pytest.raises(RescueError, match=why):
            bitlocker.recovery_key(bad)


def _tree_state(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def test_wrong_password_and_damaged_metadata(windows_volumes, tmp_path: Path) -> None:
    """One-line errors naming the volume, non-zero exit; an existing repository is left as it was."""
    src = windows_volumes[XTS]
    repo = tmp_path / "repo"
    plain = tmp_path / "plain.img"
    plain.write_bytes(b"\x01" * MiB)
    rk("capture", plain, repo)
    before = _tree_state(repo)
    wrong = "000011-000022-000033-000044-000055-000066-000077-000088"
    err = one_line_error(rk("capture", src, repo, "--recovery-password", wrong, check=False))
    assert f"{src} (whole volume): the recovery password does not unlock this BitLocker volume" in err
    err = one_line_error(rk("capture", src, repo, "--recovery-password", "123-456", check=False))
    assert "48 digits" in err
    err = one_line_error(rk("capture", plain, repo, "--recovery-password", wrong, check=False))
    assert "has no BitLocker volume" in err
    # every FVE metadata copy damaged (one byte each), and a volume cut short before its metadata
    bad = tmp_path / "bad.img"
    subprocess.run(["cp", "--sparse=always", str(src), str(bad)], check=True)
    with open_source(src) as dev:
        offsets = bitlocker.read_metadata(dev, 0, dev.size, "x").metadata_offsets
    with open(bad, "r+b") as f:
        for i, off in enumerate(offsets):
            f.seek(off + 200)
            byte = f.read(1)
            f.seek(off + 200)
            f.write(bytes([byte[0] ^ 0x40]))
            if i == 0:  # one copy damaged: the next one is used
                with open_source(bad) as dev:
                    assert bitlocker.read_metadata(dev, 0, dev.size, "x").metadata_offsets == offsets
    err = one_line_error(rk("capture", bad, repo, "--recovery-password", wrong, check=False))
    assert f"{bad} (whole volume): no intact BitLocker FVE metadata" in err and "CRC-32 mismatch" in err
    with open(bad, "r+b") as f:
        f.truncate(offsets[0] + 4096)
    err = one_line_error(rk("capture", bad, repo, "--recovery-password", wrong, check=False))
    assert "no intact BitLocker FVE metadata" in err and "outside the volume" in err
    assert _tree_state(repo) == before


def _encrypt_into(plain: Path, template: Path, out: Path, meta: bitlocker.Metadata, key: bytes) -> None:
    """Write ``plain``'s used sectors into a copy of the Windows-made ``template``, AES-XTS encrypted with its FVEK
    as BitLocker stores them (first sectors relocated to the header offset). Free clusters keep the template's
    bytes, which decrypt to noise: the capture must store them as zeros."""
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

    subprocess.run(["cp", "--sparse=always", str(template), str(out)], check=True)
    ss = meta.sector_size
    with open_source(plain) as dev, open(out, "r+b") as f:
        boot = ntfs.parse_boot(dev.read(0, 512))
        ranges, _used = ntfs.used_ranges(dev, 0, dev.size, boot)
        hidden = [(o, bitlocker.METADATA_REGION) for o in meta.metadata_offsets] + \
            [(meta.header_offset, meta.header_size)]
        for s, m in ranges:
            for at in range(s // ss * ss, s + m, ss):
                dest = meta.header_offset + at if at < meta.header_size else at
                # the fixture is only valid if BitLocker's own regions are free in the NTFS
                assert at < meta.header_size or not any(a <= at < a + n for a, n in hidden), at
                c = Cipher(algorithms.AES(key), modes.XTS((dest // ss).to_bytes(16, "little"))).encryptor()
                f.seek(dest)
                f.write(c.update(dev.read(at, ss)) + c.finalize())


def test_capture_restore_real_ntfs_inside_windows_layout(windows_volumes, xts_key, tmp_path: Path) -> None:
    """mkntfs + wimlib NTFS encrypted into the Windows-made layout: capture stores its used clusters only, the
    restore is a clean unencrypted NTFS (ntfsfix -n) whose every file hash equals the plaintext source's."""
    require_tools("mkntfs", "wimlib-imagex", "ntfsfix")
    meta, key = xts_key
    template = windows_volumes[XTS]
    size = template.stat().st_size
    plain, hashes = mtd.make_ntfs_volume(tmp_path / "plain.img", size, tree_bytes=6 * MiB, seed=15)
    enc = tmp_path / "bitlocker.img"
    _encrypt_into(plain, template, enc, meta, key)
    with open_source(plain) as dev:
        used = ntfs.used_ranges(dev, 0, dev.size, ntfs.parse_boot(dev.read(0, 512)))[1] * 4096
    res = rk("capture", enc, tmp_path / "repo", "--recovery-password", INFO[XTS]["recovery_password"])
    assert "rescuekit: warning" not in res.stderr
    assert "captured DECRYPTED" in res.stderr and "UNENCRYPTED" in res.stderr
    listing = rk("images", tmp_path / "repo").stdout
    assert "1:ntfs" in listing and "captured DECRYPTED" in listing
    doc = rk_json("images", tmp_path / "repo")["images"][0]
    part = doc["partitions"][0]
    assert part["fs"] == "ntfs" and part["bitlocker"] == {
        "decrypted": True, "encryption": "aes-xts-128", "unlocked_with": "recovery-password",
        "volume_guid": "8f595209-f5b9-49a0-85d4-cb8f80258c27"}
    assert doc["stored_bytes"] < used + 8 * MiB  # used clusters (on the 256 KiB grid), not 100 MiB
    out = tmp_path / "out.img"
    rk("restore", tmp_path / "repo", out, "--yes")
    check_ntfs(out)
    assert mtd.file_hashes_ntfs(out) == hashes


class _Bytes:
    """A minimal read-only device over bytes (the mutation test re-parses thousands of edited copies)."""

    def __init__(self, data: bytes) -> None:
        self.data, self.size, self.path, self.sector_size = data, len(data), "mem", 512

    def read(self, offset: int, n: int) -> bytes:
        if offset < 0 or offset + n > self.size:
            raise RescueError(f"read past the end of {self.path}")
        return self.data[offset:offset + n]


def test_mutated_metadata_gives_only_one_line_errors(windows_volumes) -> None:
    """Random edits of the first FVE metadata copy, CRC-32 recomputed so the entries themselves are parsed (the
    other copies removed): the parser returns metadata or raises RescueError, nothing else."""
    import random
    import zlib

    with open_source(windows_volumes[XTS]) as dev:
        meta = bitlocker.read_metadata(dev, 0, dev.size, XTS)
        size = dev.size
        off = 1 << 16  # the first copy moved next to the boot sector: a small image to copy 400 times
        base = bytearray(dev.read(0, 512)) + bytes(off - 512) + dev.read(meta.metadata_offsets[0], 1 << 16)
    struct.pack_into("<QQQ", base, 176, off, 0, 0)  # the boot sector names only that copy
    real = struct.unpack_from("<H", base, off + 8)[0] << 4
    rng = random.Random(15)
    outcomes = {"ok": 0, "error": 0}
    for _ in range(400):
        img = bytearray(base)
        for _e in range(rng.randint(1, 4)):
            at = off + rng.randrange(8, real)
            img[at] = rng.randrange(256) if rng.random() < 0.7 else rng.choice((0, 0xFF))
        struct.pack_into("<I", img, off + real + 4, zlib.crc32(bytes(img[off:off + real])))
        try:
            m = bitlocker.read_metadata(_Bytes(bytes(img)), 0, size, "mem")
            for _kid, _ptype, props in m.vmks:
                bitlocker._entries(props, "mem")
            outcomes["ok"] += 1
        except RescueError as exc:
            assert "\n" not in str(exc)
            outcomes["error"] += 1
    assert outcomes["ok"] and outcomes["error"], outcomes

"""rescuekit files / extract / find on real NTFS and FAT32 volumes: raw images, a repository capture and
Windows system image backups (VHD, VHDX); hashes and modification times compared with the source."""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from files_helpers import MiB, expected, sha_file
from rescuekit.files.extract import safe_name

from tests.cli_helpers import one_line_error as _one_line_error
from tests.cli_helpers import rk, rk_json


def one_line_error(res: subprocess.CompletedProcess, *words: str) -> str:
    return _one_line_error(res, *words, alone=False)


def check_tree(out: Path, want: dict[str, tuple[str, int]], mtime_slack_ns: int) -> None:
    got = expected(out)
    assert sorted(got) == sorted(want)
    for path, (digest, mtime) in want.items():
        assert got[path][0] == digest, path
        assert abs(got[path][1] - mtime) <= mtime_slack_ns, (path, got[path][1], mtime)


def test_list_ntfs_volume(vols: dict) -> None:
    doc = rk_json("files", vols["ntfs"], "/")
    by = {e["name"]: e for e in doc["entries"]}
    assert doc["fs"] == "ntfs" and not any(n.startswith("$") for n in by)
    assert by["hardlink.ini"]["links"] == 2 and by["Compressed"]["attributes"][6] == "C"
    assert by["sparse.vhd"]["size"] == 12 * MiB + 4 and "P" in by["sparse.vhd"]["attributes"]
    assert {s["name"]: s["size"] for s in by["withstream.txt"]["streams"]} == {"Zone.Identifier": 26, "big": 300_000}
    deep = "Users/Ana/Documents/" + "/".join(f"level{i:02d}" for i in range(14))
    d = rk_json("files", vols["ntfs"], deep.lower())  # case-insensitive lookup, case kept in the answer
    assert [e["name"] for e in d["entries"]] == ["thesis final v3.docx"] and d["path"] == "/" + deep
    comp = rk_json("files", vols["ntfs"], "Compressed")["entries"]
    assert sorted(e["name"] for e in comp) == ["log.txt", "mixed.bin", "small.txt"]
    assert all(e["attributes"][6] == "C" for e in comp)
    from rescuekit.disk import ntfs
    from rescuekit.files.source import open_source
    from rescuekit.files.tree import open_tree

    with open_source(str(vols["ntfs"])) as src:  # ntfs-3g really stored LZNT1 compression units
        tree = open_tree(src.device, src.fs)
        for name in ("log.txt", "mixed.bin"):
            st = ntfs.data_stream(tree.vol, tree.lookup(f"Compressed/{name}").ref)
            assert st.unit == 16 and sum(n for lcn, n in st.runs if lcn is not None) * 4096 < st.size, name
        st = ntfs.data_stream(tree.vol, tree.lookup("sparse.vhd").ref)
        assert sum(n for lcn, n in st.runs if lcn is None) * 4096 > 10 * MiB  # holes, not zeros on disk
    text = rk("files", vols["ntfs"], "Users/Ana/Documents").stdout
    assert "Résumé – 2024.txt" in text and "日本語のファイル名.txt" in text
    assert re.search(r"/hardlink\.ini  \[2 links\]", rk("files", vols["ntfs"], "/").stdout)


def test_extract_everything_from_repository(vols: dict, tmp_path: Path) -> None:
    r = rk_json("extract", vols["repo"], "--image", "pc", "--partition", "2", "/", tmp_path)
    assert r["errors"] == [] and r["streams"] == 42 and r["links"] == 1
    out = tmp_path / "volume"
    a, b = (out / "Users/Ana/tiny.ini").stat(), (out / "hardlink.ini").stat()
    assert a.st_ino == b.st_ino and a.st_nlink == 2  # the two names of one NTFS file: one file again
    want = dict(vols["ntfs_files"])
    check_tree(out, {**want, **{k: (v, want[k.split(":")[0]][1]) for k, v in vols["streams"].items()}}, 1000)


def test_hard_links_copied_where_dest_has_none(vols: dict, tmp_path: Path) -> None:
    """On an exFAT destination (no hard links) the second name is a copy, with a note."""
    import make_test_disks as mtd

    from tests.conftest import require_tools

    require_tools("mkfs.exfat", "mount.exfat-fuse", "losetup")
    img, mnt = tmp_path / "dest.img", tmp_path / "mnt"
    mnt.mkdir()
    mtd.make_exfat_volume(img, 8 * MiB)
    with mtd.mounted_exfat(img, mnt):
        res = rk("extract", vols["ntfs"], "Users/Ana/tiny.ini", "hardlink.ini", mnt)
        assert "hardlink.ini: copied, not hard-linked to tiny.ini" in res.stderr, res.stderr
        assert "extracted 2 file(s), 0 folder(s)" in res.stdout
        want = vols["ntfs_files"]["Users/Ana/tiny.ini"][0]
        assert sha_file(mnt / "tiny.ini") == sha_file(mnt / "hardlink.ini") == want
        assert (mnt / "tiny.ini").stat().st_nlink == 1
    out = tmp_path / "out"  # the same two on a file system with links: linked, and said so
    out.mkdir()
    assert "(1 as hard links)" in rk("extract", vols["ntfs"], "Users/Ana/tiny.ini", "hardlink.ini", out).stdout
    assert (out / "tiny.ini").stat().st_ino == (out / "hardlink.ini").stat().st_ino


def test_attribute_list_file(vols: dict) -> None:
    from rescuekit.disk import ntfs
    from rescuekit.files.source import open_source
    from rescuekit.files.tree import open_tree

    with open_source(str(vols["ntfs"])) as src:
        tree = open_tree(src.device, src.fs)
        node = tree.lookup("manystreams.txt")
        rec, attrs = ntfs.attribute_list(tree.vol.dev, 0, tree.vol.boot, node.ref)
        # the fixture really spilled into extension records, found through the base record's attribute list
        assert any(t == ntfs.AT_ATTRIBUTE_LIST for t, _pos in ntfs.iter_attributes(rec))
        assert len([a for a in attrs if a[0] == ntfs.AT_DATA]) == 41
        assert len(node.streams) == 40 and node.size == 20_000


def test_extract_fat_from_repository_and_raw(vols: dict, tmp_path: Path) -> None:
    rk("extract", vols["repo"], "--partition", "1", "/Photos", "docs", tmp_path)
    got = expected(tmp_path)
    want = {k: v for k, v in vols["fat_files"].items()}
    assert sorted(got) == sorted(want)
    for k, (digest, mtime) in want.items():
        assert got[k] == (digest, mtime), k  # FAT: 2-second steps, and the source times are even
    raw = tmp_path / "raw"
    raw.mkdir()
    rk("extract", vols["fat"], "Photos/2023/Summer/IMG_0001.JPG", raw)
    assert sha_file(raw / "IMG_0001.JPG") == want["Photos/2023/Summer/IMG_0001.JPG"][0]


def test_exfat_from_raw_and_repository(exfat_vol: dict, tmp_path: Path) -> None:
    doc = rk_json("files", exfat_vol["img"], "/", "--recursive")
    assert doc["fs"] == "exfat"
    assert any(e["name"] == "Ünïcode – a long folder name beyond 15 characters" for e in doc["entries"])
    for i, src in enumerate((exfat_vol["img"], exfat_vol["repo"])):
        out = tmp_path / str(i)
        out.mkdir()
        rk("extract", src, "/", out)
        # exfat-fuse writes local time without a UTC offset; both sides read it in the same zone
        check_tree(out / "volume", exfat_vol["files"], 0)
    assert [m["name"] for m in rk_json("find", exfat_vol["repo"], "vid_*")["matches"]] == ["VID_0001.MP4"]


def test_one_file_reads_only_its_chunks(vols: dict, tmp_path: Path) -> None:
    r = rk_json("extract", vols["repo"], "--partition", "2", "Big/ten.bin", tmp_path)
    chunk = vols["image"].get("chunk_size", 256 << 10)
    total = (vols["disk"].stat().st_size + chunk - 1) // chunk
    # 40 data chunks (+2 for unaligned ends) and a few for the boot sector, MFT records and directory blocks
    assert r["chunks_read"] <= 10 * MiB // chunk + 2 + 10, r["chunks_read"]
    assert r["chunks_read"] < total // 2
    assert sha_file(tmp_path / "ten.bin") == vols["ntfs_files"]["Big/ten.bin"][0]


def test_readahead_stays_inside_the_file(vols: dict) -> None:
    """The read-ahead worker fetches the chunks under the file's runs and no others: after one piece it has
    fetched at most its window ahead; a whole read fetches each chunk under the runs exactly once."""
    from files_helpers import sha
    from rescuekit.disk import ntfs
    from rescuekit.files.source import open_source
    from rescuekit.files.tree import stream_extents

    with open_source(str(vols["repo"]), partition=2) as src:
        view, tree = src.view, src.tree()
        view.AHEAD_BYTES = 1 * MiB
        node = tree.lookup("Big/ten.bin")
        st = ntfs.data_stream(tree.vol, node.ref)
        ext = [(src.choice.start + a, n) for a, n in stream_extents(st, tree.vol.boot.cluster_size)]
        assert sum(n for _a, n in ext) == 10 * MiB
        under = {i for i, (off, m, cid) in enumerate(view._chunks) for a, n in ext
                 if cid is not None and off < a + n and a < off + m}
        chunk = vols["image"].get("chunk_size", 256 << 10)
        assert 10 * MiB // chunk <= len(under) <= 10 * MiB // chunk + 2
        def settled() -> int:  # the worker has filled its window or finished its plan: what it fetched
            p = view._plan
            with view._cv:
                assert view._cv.wait_for(lambda: p.blocked or p.done, timeout=120)
                return p.fetched

        before = view.chunks_read
        pieces = tree.read(node)
        assert len(next(pieces)) == MiB
        ahead = settled()
        pieces.close()  # the plan ends: the worker stops and its fetches are counted
        assert view.chunks_read - before == ahead
        assert MiB // chunk <= ahead <= 2 * (MiB // chunk) + 3, ahead
        before, got = view.chunks_read, []
        pieces = tree.read(node)
        while sum(map(len, got)) < node.size:
            got.append(bytes(next(pieces)))
        assert settled() == len(under)  # all of the file, nothing past its end
        assert next(pieces, None) is None
        assert view.chunks_read - before == len(under)
        data = b"".join(got)
        assert sha(data) == vols["ntfs_files"]["Big/ten.bin"][0]


def test_find(vols: dict) -> None:
    hits = rk_json("find", vols["repo"], "--partition", "2", "*THESIS*")["matches"]
    assert [h["path"] for h in hits] == ["/Users/Ana/Documents/" + "/".join(f"level{i:02d}" for i in range(14))
                                         + "/thesis final v3.docx"]
    assert len(rk_json("find", vols["ntfs"], "note0*.txt")["matches"]) == 40
    assert "IMG_0001.JPG" in rk("find", vols["disk"], "--partition", "1", "*.jpg").stdout


def test_windows_backup_volumes(win10: dict, win7: dict, tmp_path: Path) -> None:
    bset = win10["set"]
    e = one_line_error(rk("files", bset, check=False), "--partition")
    assert "C:" in e and "fat32" in e
    for guid, vol in win10["volumes"].items():
        number = 2 if vol["letter"] == "C:" else 1
        out = tmp_path / guid
        out.mkdir()
        rk("extract", bset, "--partition", number, "/", out)
        got = {k: v[0] for k, v in expected(out / "volume").items()}
        assert got == vol["hashes"]
    # one VHD of a Windows 7 set, opened as a file (MBR inside, one file system)
    c = next(g for g, v in win7["volumes"].items() if v["letter"] == "C:")
    out = tmp_path / "w7"
    out.mkdir()
    rk("extract", win7["set"] / f"{c}.vhd", "/", out)
    assert {k: v[0] for k, v in expected(out / "volume").items()} == win7["volumes"][c]["hashes"]


def test_bad_input(vols: dict, tmp_path: Path) -> None:
    one_line_error(rk("files", vols["ntfs"], "Users/Nobody", check=False), "Nobody")
    one_line_error(rk("files", tmp_path / "missing.img", check=False), "missing.img")
    one_line_error(rk("extract", vols["ntfs"], "Big/none.bin", tmp_path, check=False), "none.bin")
    one_line_error(rk("extract", vols["ntfs"], "Big", tmp_path / "nope", check=False), "nope")
    one_line_error(rk("files", vols["repo"], "--image", "nosuch", check=False), "nosuch")
    one_line_error(rk("files", vols["disk"], "--partition", "7", check=False), "partition 7")
    # a truncated virtual disk
    bad = tmp_path / "short.vhdx"
    subprocess.run(["qemu-img", "convert", "-f", "raw", "-O", "vhdx", str(vols["ntfs"]), str(bad)], check=True)
    with open(bad, "r+b") as f:
        f.truncate(bad.stat().st_size // 3)
    one_line_error(rk("extract", bad, "/", tmp_path, check=False))


def _flip_chunk_under(repo: Path, image: str, partition: int, path: str) -> None:
    """Corrupt the stored blob (a group of chunks) holding the first cluster of ``path`` in its pack file."""
    from rescuekit.disk import ntfs
    from rescuekit.files.source import open_source
    from rescuekit.files.tree import open_tree
    from rescuekit.repo.manifest import iter_chunks
    from rescuekit.repo.packs import pack_path
    from rescuekit.repo.repository import Repository

    with open_source(str(repo), image=image, partition=partition) as src:
        tree = open_tree(src.device, src.fs)
        node = tree.lookup(path)
        st = ntfs.data_stream(tree.vol, node.ref)
        pos = src.choice.start + st.runs[0][0] * tree.vol.boot.cluster_size
    r = Repository.open(repo)
    doc = r.find_image(image)
    cid = next(c for off, n, c in iter_chunks(doc, doc["chunk_size"]) if off <= pos < off + n)
    entry = r.load_index().entries[cid]
    with open(pack_path(repo, entry.pack), "r+b") as f:
        f.seek(entry.offset)
        f.write(bytes(entry.clen))


def test_corrupt_chunk_names_the_file(vols: dict, tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    shutil.copytree(vols["repo"], repo)
    _flip_chunk_under(repo, "pc", 2, "Big/ten.bin")
    out = tmp_path / "out"
    out.mkdir()
    res = rk("extract", repo, "--partition", "2", "Big/ten.bin", "Users/Ana/tiny.ini", out, check=False)
    one_line_error(res, "/Big/ten.bin", "corrupt")
    assert sorted(os.listdir(out)) == ["tiny.ini"]  # nothing half-written, the other file is there
    # a truncated pack: the same kind of one-line error
    for p in (repo / "data").rglob("*.pack"):
        if p.is_file():
            with open(p, "r+b") as f:
                f.truncate(p.stat().st_size // 2)
    one_line_error(rk("extract", repo, "--partition", "2", "/", out / "x", check=False))


def _patch_all(img: Path, old: bytes, new: bytes) -> int:
    """Replace a name (UTF-16, after its FILE_NAME length byte and any namespace byte) everywhere."""
    n_units = len(old) // 2
    data, n = re.subn(re.escape(bytes([n_units])) + b"([\x00-\x03])" + re.escape(old),
                      lambda m: bytes([n_units]) + m.group(1) + new, img.read_bytes())
    img.write_bytes(data)
    return n


def test_hostile_names_and_loops(vols: dict, tmp_path: Path) -> None:
    """Names edited in the MFT records and index entries of a real volume: "..", path separators, NUL;
    and a folder entry pointing back to the root. Nothing lands outside DEST, no hang, one-line errors."""
    import make_test_disks as mtd

    src = tmp_path / "src"
    (src / "box/LOOPDIR").mkdir(parents=True)
    for name in ("HO", "HOSTILE1", "HOSTILE2", "HOSTILE3", "CON.txt"):
        (src / "box" / name).write_bytes(name.encode() * 10)
    img = tmp_path / "hostile.img"
    mtd.make_ntfs_volume(img, 16 * MiB, src)
    def u(s: str) -> bytes:
        return s.encode("utf-16-le")
    assert _patch_all(img, u("HO"), u("..")) >= 2
    assert _patch_all(img, u("HOSTILE1"), u("../../X1")) >= 2
    assert _patch_all(img, u("HOSTILE2"), u("..\\..\\X2")) >= 2
    assert _patch_all(img, u("HOSTILE3"), u("/etc/X3")[:14] + b"\0\0") >= 2
    out = tmp_path / "dest"
    out.mkdir()
    res = rk("extract", img, "box", out, check=False)
    assert "Traceback" not in res.stderr
    names = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*") if "dest" in p.parts)
    assert all(n.startswith("dest/box") or n == "dest" for n in names), names
    assert not list(tmp_path.glob("X*")) and not (tmp_path / "src/X1").exists()
    kids = set(os.listdir(out / "box"))
    assert {"__", ".._.._X1", ".._.._X2", "_etc_X3_", "CON.txt"} <= kids, kids
    # a folder whose index entry for LOOPDIR points at the root directory (MFT record 5)
    listing = rk_json("files", img, "box")["entries"]
    loop = next(e for e in listing if e["name"] == "LOOPDIR")
    data = bytearray(img.read_bytes())
    n = 0
    for m in re.finditer(b"\x07[\x00-\x03]" + re.escape(u("LOOPDIR")), data):
        start = m.start() - 0x40 - 16  # INDEX_ENTRY header (16) + FILE_NAME up to its name length (0x40)
        if start >= 0 and int.from_bytes(data[start:start + 6], "little") == loop["record"]:
            data[start:start + 8] = (5 | 5 << 48).to_bytes(8, "little")
            n += 1
    assert n >= 1
    img.write_bytes(bytes(data))
    one_line_error(rk("files", img, "/", "--recursive", check=False), "loops")
    one_line_error(rk("find", img, "*", check=False), "loops")
    # a damaged MFT record under a file: its listing fails with one line naming it
    data = bytearray(img.read_bytes())
    boot = data[:512]
    import struct
    cs = struct.unpack_from("<H", boot, 11)[0] * boot[13]
    mft = struct.unpack_from("<q", boot, 0x30)[0] * cs
    hit = next(e for e in listing if e["name"] == "CON.txt")["record"]
    data[mft + hit * 1024 + 0x100:mft + hit * 1024 + 0x110] = b"\xff" * 16  # inside the attributes, fixups stay
    data[mft + hit * 1024 + 0x1FE] ^= 0xFF  # torn: the update sequence no longer matches
    img.write_bytes(bytes(data))
    listing = rk_json("files", img, "box")["entries"]  # the others are still listed, the damaged one flagged
    assert "MFT record" in next(e for e in listing if e["name"] == "CON.txt")["error"]
    assert sum(1 for e in listing if "error" not in e) == 5
    res = rk("extract", img, "box/CON.txt", out / "box", check=False)
    one_line_error(res, "/box/CON.txt", "MFT record")


def test_safe_name() -> None:
    assert safe_name("..", windows=False) == "__" and safe_name(".", windows=False) == "_"
    assert "/" not in safe_name("a/b", windows=False) and "\\" not in safe_name("a\\b", windows=False)
    assert safe_name("a\0b", windows=False) == "a_b"
    assert safe_name("CON", windows=True) == "_CON" and safe_name("com1.txt", windows=True) == "_com1.txt"
    assert safe_name("nul .txt", windows=True).startswith("_")
    assert safe_name("x:y?", windows=True) == "x_y_" and safe_name("end. ", windows=True) == "end"
    assert safe_name("CON", windows=False) == "CON"


def test_lznt1_and_cache_limits(vols: dict) -> None:
    from rescuekit.disk import lznt1
    from rescuekit.errors import RescueError
    from rescuekit.files.source import open_source

    # an uncompressed chunk (header bit 15 clear) is padded to 4096 bytes; a compressed one: "abc" then a
    # copy token (offset 3, length 3+3) -> "abcabcabc"
    assert lznt1.decompress(bytes([0x02, 0x30]) + b"xyz", 5) == b"xyz\0\0"
    comp = bytes([0x08]) + b"abc" + (((3 - 1) << 12) | 3).to_bytes(2, "little")
    assert lznt1.decompress((0xB000 | len(comp) - 1).to_bytes(2, "little") + comp, 9) == b"abcabcabc"
    bad = bytes([0x01]) + (0xFFFF).to_bytes(2, "little")  # a copy token before any byte of output
    with pytest.raises(RescueError, match="LZNT1"):
        lznt1.decompress((0xB000 | len(bad) - 1).to_bytes(2, "little") + bad, 10)
    with open_source(str(vols["repo"]), partition=2) as src:  # the LRU keeps at most its byte budget
        src.view._cache_max = 1 << 20
        for pos in range(0, 40 << 20, 1 << 20):
            src.device.read(pos, 4096)
        assert src.view._cache_bytes <= 1 << 20 and len(src.view._cache) <= 4


def test_read_from_an_offset(vols: dict, exfat_vol: dict) -> None:
    """``Tree.read(start=...)`` (what a mount's random reads use) gives the tail of what a whole read gives:
    plain, compressed, sparse, resident and streams on NTFS, chained files on FAT32 and exFAT."""
    from rescuekit.files.source import open_source

    cases = [(vols["ntfs"], None, ["Big/ten.bin", "Compressed/log.txt", "Compressed/mixed.bin", "sparse.vhd",
                                   "Users/Ana/tiny.ini", "withstream.txt:big"]),
             (vols["repo"], 1, ["Photos/2023/Summer/IMG_0001.JPG", "Docs/readme.txt"]),
             (exfat_vol["img"], None, ["fragmented.bin", "Camera/notes.txt"])]
    for source, part, paths in cases:
        with open_source(str(source), partition=part) as src:
            tree = src.tree()
            for path in paths:
                name, _, stream = path.partition(":")
                node = tree.lookup(name)
                whole = b"".join(tree.read(node, stream))
                assert len(whole) == (node.size if not stream else dict(node.streams)[stream]) > 0, path
                for start in (1, 4095, 4096, 65_536 + 7, 70_001, len(whole) // 2 + 3, len(whole) - 1,
                              len(whole), len(whole) + 5):
                    assert b"".join(tree.read(node, stream, start)) == whole[start:], (path, start)


def test_mount_reads_files(vols: dict, tmp_path: Path) -> None:
    """rescuekit mount: the NTFS volume of the repository capture, read-only through FUSE: a folder listed,
    a file's hash and a read in its middle compared with the source, writes refused; unmounted in a finally."""
    import time

    from tests.conftest import require_tools

    require_tools("fusermount")
    pytest.importorskip("mfusepy")
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    one_line_error(rk("mount", vols["repo"], "--partition", "2", tmp_path / "nowhere", check=False),
                   "is not a folder")
    proc = subprocess.Popen([sys.executable, "-m", "rescuekit", "mount", str(vols["repo"]), "--partition", "2",
                             str(mnt)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        for _ in range(1200):  # until the kernel shows the mount (or the command ends with an error)
            if os.path.ismount(mnt) or proc.poll() is not None:
                break
            time.sleep(0.05)
        assert os.path.ismount(mnt), proc.communicate(timeout=60)
        docs = sorted(os.listdir(mnt / "Users/Ana/Documents"))
        assert "Résumé – 2024.txt" in docs and "note039.txt" in docs and "level00" in docs
        want = vols["ntfs_files"]
        assert sha_file(mnt / "Big/ten.bin") == want["Big/ten.bin"][0]
        assert sha_file(mnt / "Compressed/log.txt") == want["Compressed/log.txt"][0]
        st = (mnt / "Big/ten.bin").stat()
        assert st.st_size == 10 * MiB and st.st_mtime_ns // 1000 == want["Big/ten.bin"][1] // 1000
        assert (mnt / "hardlink.ini").stat().st_nlink == 2
        with open(mnt / "Big/ten.bin", "rb") as f:  # a read back in the file after one near its end
            f.seek(9 * MiB)
            tail = f.read(4096)
            f.seek(3 * MiB + 5)
            mid = f.read(70_000)
        from rescuekit.files.source import open_source

        with open_source(str(vols["ntfs"])) as src:
            tree = src.tree()
            node = tree.lookup("Big/ten.bin")
            assert mid == b"".join(tree.read(node, "", 3 * MiB + 5))[:70_000]
            assert tail == b"".join(tree.read(node, "", 9 * MiB))[:4096]
        with pytest.raises(OSError):
            open(mnt / "Big/new.txt", "wb")
    finally:
        subprocess.run(["fusermount", "-u", str(mnt)], capture_output=True)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, proc.stderr.read()
    assert not os.path.ismount(mnt)

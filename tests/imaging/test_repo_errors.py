"""One-line errors for bad repositories, version checks, corrupt manifests and locks."""
from __future__ import annotations

import json
import os
from pathlib import Path

from imaging_helpers import one_line_error as _err
from imaging_helpers import rk, rk_json

from rescuekit.repo.config import FORMAT_VERSION

NEWER = FORMAT_VERSION + 1


def test_missing_and_not_a_repository(tmp_path: Path, disks: dict) -> None:
    assert "does not exist" in _err(rk("images", tmp_path / "nope", check=False))
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "file.txt").write_text("x")
    assert "not a rescuekit repository" in _err(rk("verify", tmp_path / "other", check=False))
    # capture refuses to turn a non-empty foreign folder into a repository
    assert "non-empty folder" in _err(rk("capture", disks["gpt"][0], tmp_path / "other", check=False))
    assert (tmp_path / "other").iterdir().__next__().name == "file.txt"
    assert "no such disk" in _err(rk("capture", tmp_path / "missing.img", tmp_path / "r", check=False))
    assert not (tmp_path / "r").exists()


def test_newer_format_versions_are_refused(repo_copy: Path) -> None:
    cfg = json.loads((repo_copy / "config").read_text())
    cfg["version"] = 99
    (repo_copy / "config").write_text(json.dumps(cfg))
    for cmd in (["images"], ["verify"], ["prune"]):
        msg = _err(rk(*cmd, repo_copy, check=False))
        assert "format version 99 is newer" in msg


def test_newer_manifest_version_refused(repo: dict, repo_copy: Path, tmp_path: Path) -> None:
    from rescuekit.repo.manifest import checksum

    path = repo_copy / "images" / f"{repo['gpt']['id']}.json"
    doc = json.loads(path.read_text())
    doc["version"] = NEWER
    doc["checksum"] = checksum(doc)
    path.write_text(json.dumps(doc))
    msg = _err(rk("restore", repo_copy, tmp_path / "x.img", "--image", repo["gpt"]["id"], "--yes", check=False))
    assert f"format version {NEWER} is newer" in msg
    assert not (tmp_path / "x.img").exists()
    msg = _err(rk("prune", repo_copy, check=False))  # never advises forgetting a newer rescuekit's image
    assert f"format version {NEWER} is newer" in msg and "forget" not in msg


def test_corrupt_manifest(repo: dict, repo_copy: Path, tmp_path: Path) -> None:
    path = repo_copy / "images" / f"{repo['mbr']['id']}.json"
    path.write_text(path.read_text().replace('"name":"mbr"', '"name":"mbX"'))
    res = rk("images", repo_copy)  # lists the others and names the bad file
    assert "checksum mismatch" in res.stderr and str(path) in res.stderr and repo["gpt"]["id"] in res.stdout
    res = rk("verify", repo_copy, check=False)
    assert res.returncode == 1 and "checksum mismatch" in res.stdout
    # the intact image is still reachable by id and by name (the bad one is named "mbX")...
    rk("restore", repo_copy, tmp_path / "g.img", "--image", "gpt", "--yes")
    rk("restore", repo_copy, tmp_path / "i.img", "--image", repo["gpt"]["id"][:6], "--yes")
    # ...but not as "latest": the unreadable one is newer (seq 2), so "latest" would restore older data
    msg = _err(rk("restore", repo_copy, tmp_path / "l.img", "--yes", check=False))
    assert "cannot tell which is the latest image" in msg and f"forget {repo_copy} {path.stem}" in msg
    assert not (tmp_path / "l.img").exists()
    assert "unreadable manifest(s) skipped" in _err(rk("restore", repo_copy, tmp_path / "m.img", "--image", "mbr",
                                                       "--yes", check=False))
    assert "corrupt image manifest" in _err(rk("prune", repo_copy, check=False))
    path.write_text("{not json")
    res = rk("images", repo_copy)
    assert "not JSON" in res.stderr and repo["gpt"]["id"] in res.stdout


def test_missing_pack_refused_before_writing(repo: dict, repo_copy: Path, tmp_path: Path) -> None:
    for p in repo_copy.glob("data/*/*.pack"):
        p.unlink()
    target = tmp_path / "t.img"
    target.write_bytes(b"x" * 4096 * 100_000)
    msg = _err(rk("restore", repo_copy, target, "--image", "mbr", "--yes", check=False))
    assert "is missing" in msg and "nothing was written" in msg
    assert target.read_bytes() == b"x" * 4096 * 100_000
    res = rk("verify", repo_copy, check=False)
    assert res.returncode == 1 and "missing" in res.stdout and "damaged: image" in res.stdout


def _rewrite_index(repo_copy: Path, edit, listing: str = "") -> None:
    """Apply ``edit`` to the decoded index document (the first, or the one naming pack ``listing``) and store it
    under its new content name (valid zstd/JSON)."""
    import blake3
    import zstandard

    old = next(p for p in sorted((repo_copy / "index").glob("*.idx"))
               if listing in zstandard.ZstdDecompressor().decompress(p.read_bytes()).decode())
    doc = json.loads(zstandard.ZstdDecompressor().decompress(old.read_bytes()))
    edit(doc)
    data = zstandard.ZstdCompressor().compress(json.dumps(doc).encode())
    old.unlink()
    (repo_copy / "index" / f"{blake3.blake3(data).hexdigest()}.idx").write_bytes(data)


def _claim_size(frame: bytes, size: int) -> bytes:
    """The zstd frame with its header's content size field replaced by ``size`` (8-byte field)."""
    fhd = frame[4]
    single, fcs_flag, dict_flag = (fhd >> 5) & 1, fhd >> 6, fhd & 3
    keep = (0 if single else 1) + (0, 1, 2, 4)[dict_flag]  # window descriptor + dictionary id
    fcs_len = ((1 if single else 0), 2, 4, 8)[fcs_flag]
    return frame[:4] + bytes([0xC0 | (fhd & 0x3F)]) + frame[5:5 + keep] + size.to_bytes(8, "little") \
        + frame[5 + keep + fcs_len:]


def test_malformed_index_rows_are_reported_and_bypassed(repo_copy: Path, disks: dict, tmp_path: Path) -> None:
    def edit(doc: dict) -> None:
        rows = next(iter(doc["packs"].values()))
        rows[0] = rows[0][:3]  # a short row
    _rewrite_index(repo_copy, edit)
    res = rk("verify", repo_copy, check=False)
    assert res.returncode == 1 and "corrupt chunk list" in res.stdout, res.stdout + res.stderr
    # readers use the packs' own headers instead; prune writes a good index
    rk("restore", repo_copy, tmp_path / "t.img", "--image", "mbr", "--yes")
    rk("capture", disks["mbr"][0], repo_copy)
    rk("prune", repo_copy)
    assert rk_json("verify", repo_copy)["ok"]


def test_absurd_sizes_are_refused_without_allocating(repo: dict, repo_copy: Path, tmp_path: Path) -> None:
    import zstandard

    # an index file whose zstd header claims 1 TiB
    idx = next((repo_copy / "index").glob("*.idx"))
    good = idx.read_bytes()
    idx.write_bytes(_claim_size(good, 1 << 40))
    res = rk("verify", repo_copy, check=False)
    assert res.returncode == 1 and "corrupt index file" in res.stdout and "Traceback" not in res.stderr
    idx.write_bytes(good)
    # a compressed blob whose zstd header claims 1 TiB: verify names the damage, restore stops with one line
    dctx = zstandard.ZstdDecompressor()
    doc = json.loads(dctx.decompress(good))
    pack_id, rows = next((p, r) for p, r in doc["packs"].items() if any(row[4] for row in r))
    row = next(r for r in rows if r[4])
    pack = repo_copy / "data" / pack_id[:2] / f"{pack_id}.pack"
    data = pack.read_bytes()
    blob = data[row[1]:row[1] + row[2]]
    bad = _claim_size(blob, 1 << 40)
    assert len(bad) >= len(blob)
    # keep the blob's length: overwrite in place, dropping the frame's trailing bytes the header grew by
    pack.write_bytes(data[:row[1]] + bad[:len(blob)] + data[row[1] + row[2]:])
    res = rk("verify", repo_copy, "--read-data", check=False)
    assert res.returncode == 1 and "damaged: image" in res.stdout and "Traceback" not in res.stderr, res.stderr
    user = next(p.stem for p in (repo_copy / "images").glob("*.json") if row[0] in p.read_text())
    msg = _err(rk("restore", repo_copy, tmp_path / "u.img", "--image", user, "--yes", check=False))
    assert "does not decompress" in msg and pack_id[:16] in msg
    # a config with an absurd chunk size
    cfg = json.loads((repo_copy / "config").read_text())
    cfg["chunk_size"] = 1 << 40
    (repo_copy / "config").write_text(json.dumps(cfg))
    assert "corrupt repository config" in _err(rk("images", repo_copy, check=False))


def test_manifest_with_valid_checksum_but_bad_layout(repo: dict, repo_copy: Path, tmp_path: Path) -> None:
    from rescuekit.repo.manifest import canonical, checksum

    path = repo_copy / "images" / f"{repo['gpt']['id']}.json"
    doc = json.loads(path.read_text())
    doc["extents"][0]["chunks"] = doc["extents"][0]["chunks"][1:]  # one chunk id short
    doc["checksum"] = checksum(doc)
    path.write_bytes(canonical(doc))
    assert "corrupt image manifest (extent 0)" in _err(rk("restore", repo_copy, tmp_path / "t.img", "--image",
                                                         repo["gpt"]["id"], "--yes", check=False))
    assert not (tmp_path / "t.img").exists()
    res = rk("verify", repo_copy, check=False)
    assert res.returncode == 1 and "corrupt image manifest" in res.stdout


def test_restore_refuses_targets_in_repository_and_missing_devices(repo_copy: Path, tmp_path: Path) -> None:
    pack = max(repo_copy.glob("data/*/*.pack"), key=lambda p: p.stat().st_size)
    before = pack.read_bytes()
    for target in (pack, repo_copy / "new.img"):
        assert "inside the repository" in _err(rk("restore", repo_copy, target, "--partition", "1", "--image", "mbr",
                                                  "--yes", check=False))
    assert pack.read_bytes() == before and not (repo_copy / "new.img").exists()
    missing = "/dev/rescuekit-no-such-disk-" + tmp_path.name
    assert "no such device" in _err(rk("restore", repo_copy, missing, "--yes", check=False))
    assert not os.path.exists(missing)
    if os.path.isdir("/dev/shm"):  # a tmpfs: image files may be created there
        shm = Path("/dev/shm") / f"rescuekit-test-{tmp_path.name}-{os.getpid()}.img"
        try:
            rk("restore", repo_copy, shm, "--image", "mbr", "--yes")
        finally:
            shm.unlink(missing_ok=True)
    # a garbled restore journal is reported, not a crash
    (repo_copy / "restores" / "0123456789abcdef.json").write_text("[1, 2]")
    assert rk_json("images", repo_copy)["unfinished_restores"][0]["journal"] == "0123456789abcdef.json"
    rk("restore", repo_copy, tmp_path / "ok.img", "--image", "mbr", "--yes")


def test_capture_stores_chunks_of_a_missing_pack_again(repo: dict, repo_copy: Path, disks: dict,
                                                        tmp_path: Path) -> None:
    import zstandard

    packs = {k: v for idx in (repo_copy / "index").glob("*.idx")
             for k, v in json.loads(zstandard.ZstdDecompressor().decompress(idx.read_bytes()))["packs"].items()}
    gpt_doc = (repo_copy / "images" / f"{repo['gpt']['id']}.json").read_text()
    lost = next(p for p, rows in packs.items() if any(r[0] in gpt_doc for r in rows))
    (repo_copy / "data" / lost[:2] / f"{lost}.pack").unlink()
    again = rk_json("capture", disks["gpt"][0], repo_copy, "--name", "gpt2")
    assert again["totals"]["new_chunks"] > 0  # not deduplicated against the lost pack
    rep = json.loads(rk("verify", repo_copy, "--image", "gpt2", "--read-data", "--json", check=False).stdout)
    assert rep["damaged"] == [] and all("missing" in p for p in rep["problems"]), rep
    rk("restore", repo_copy, tmp_path / "t.img", "--image", "gpt2", "--verify", "--yes")
    # chunks are named by content: the chunks stored again repair the older image of the same disk too
    rk("restore", repo_copy, tmp_path / "o.img", "--image", repo["gpt"]["id"], "--verify", "--yes")


def test_corrupt_index_file_falls_back_to_pack_headers(repo: dict, repo_copy: Path, disks: dict,
                                                      tmp_path: Path) -> None:
    for idx in (repo_copy / "index").glob("*.idx"):
        idx.write_bytes(b"")  # e.g. a power cut on FAT32 after the rename
    rk("restore", repo_copy, tmp_path / "t.img", "--image", "gpt", "--verify", "--yes")
    res = rk("verify", repo_copy, check=False)
    assert res.returncode == 1 and "corrupt index file" in res.stdout and "damaged" not in res.stdout
    again = rk_json("capture", disks["gpt"][0], repo_copy, "--name", "gpt2")
    assert again["totals"]["new_chunks"] == 0  # still deduplicated
    rk("prune", repo_copy)  # rewrites the index from what it read
    assert rk_json("verify", repo_copy, "--read-data")["ok"]
    assert rk_json("verify", repo_copy)["images"] == 3


def test_corrupt_manifest_can_be_forgotten_by_id(repo: dict, repo_copy: Path) -> None:
    bad = repo_copy / "images" / f"{repo['mbr']['id']}.json"
    bad.write_text("{not json")
    msg = _err(rk("prune", repo_copy, check=False))
    assert f"rescuekit forget {repo_copy} {repo['mbr']['id']}" in msg
    assert "no image" in _err(rk("forget", repo_copy, "mbr", check=False))  # a name can't be read from it
    rk("forget", repo_copy, repo["mbr"]["id"])
    assert not bad.exists()
    rk("prune", repo_copy)
    assert rk_json("verify", repo_copy, "--read-data")["ok"]


def test_newer_index_version_is_refused_not_bypassed(repo_copy: Path, tmp_path: Path) -> None:
    _rewrite_index(repo_copy, lambda doc: doc.update(version=NEWER, packs=[]))  # a newer, different layout
    for args in (["restore", repo_copy, tmp_path / "t.img", "--yes"], ["prune", repo_copy]):
        assert f"format version {NEWER} is newer" in _err(rk(*args, check=False))
    assert not (tmp_path / "t.img").exists()


def test_capture_completes_a_repository_whose_creation_was_interrupted(disks: dict, tmp_path: Path) -> None:
    r = tmp_path / "r"
    for sub in ("data", "index", "images", "locks", "restores"):
        (r / sub).mkdir(parents=True)
    (r / ".config.0a1b2c3d.tmp").write_text('{"format": "rescu')  # killed while writing config
    assert "not a rescuekit repository" in _err(rk("images", r, check=False))
    rk("capture", disks["mbr"][0], r)
    assert rk_json("verify", r)["ok"]
    assert not list(r.glob(".config.*"))


def test_a_name_the_output_encoding_cannot_show_does_not_fail_the_command(disks: dict, tmp_path: Path) -> None:
    """Redirected output in a narrow encoding (Windows: the ANSI code page) must not turn a capture into a failure."""
    env = {"PYTHONIOENCODING": "cp1252"}  # what Windows gives a pipe or file
    res = rk("capture", disks["gpt"][0], tmp_path / "r", "--name", "\u0414\u0438\u0441\u043a 1", env=env)
    assert ", \\u0414\\u0438\\u0441\\u043a 1)" in res.stdout  # (#seq, name)
    assert "\\u0414\\u0438\\u0441\\u043a 1" in rk("images", tmp_path / "r", env=env).stdout


def _gpt_pack(repo: dict, repo_copy: Path) -> Path:
    """The largest pack holding chunks of the gpt image only."""
    from rescuekit.repo.packs import pack_files, read_pack_header

    man = (repo_copy / "images" / f"{repo['gpt']['id']}.json").read_text()
    packs = [p for p in pack_files(repo_copy).values() if read_pack_header(p)[0][0] in man]
    return max(packs, key=lambda p: p.stat().st_size)


def test_truncated_pack_is_named_by_verify_and_restore(repo: dict, repo_copy: Path, tmp_path: Path) -> None:
    pack = _gpt_pack(repo, repo_copy)
    with open(pack, "r+b") as f:
        f.truncate(pack.stat().st_size // 2)  # e.g. a copy that stopped half-way
    res = rk("verify", repo_copy, check=False)
    problems = [line for line in res.stdout.splitlines() if line.startswith("problem:")]
    assert res.returncode == 1 and len(problems) == 1, res.stdout
    assert problems[0].startswith(f"problem: pack {pack.stem} is truncated ({pack.stat().st_size} of at least ")
    assert f"damaged: image {repo['gpt']['id']}" in res.stdout
    res = rk("verify", repo_copy, "--read-data", check=False)
    assert res.returncode == 1 and pack.stem in res.stdout and "Traceback" not in res.stderr
    target = tmp_path / "t.img"
    target.write_bytes(b"x" * (256 << 20))
    msg = _err(rk("restore", repo_copy, target, "--image", "gpt", "--yes", check=False))
    assert f"pack {pack.stem}" in msg and "is truncated" in msg and "nothing was written" in msg
    with open(target, "rb") as f:
        assert f.read(1 << 20) == b"x" * (1 << 20)  # the partition table area was not wiped first
    rk("restore", repo_copy, tmp_path / "m.img", "--image", "mbr", "--yes", "--verify")


def test_newer_pack_header_version_is_refused(repo: dict, repo_copy: Path, tmp_path: Path,
                                              monkeypatch) -> None:
    import rescuekit.repo.packs as packs

    old = _gpt_pack(repo, repo_copy)
    rows, data = packs.read_pack_header(old), old.read_bytes()
    monkeypatch.setattr(packs, "FORMAT_VERSION", NEWER)  # a newer rescuekit wrote this pack
    w = packs.PackWriter(repo_copy)
    blobs: dict[int, list] = {}
    for r in rows:
        blobs.setdefault(r[1], []).append(r)
    for off, members in blobs.items():
        w.add(data[off:off + members[0][2]], bool(members[0][4]), [(r[0], r[5], r[3]) for r in members])
    new_id, new_rows = w.finish()
    monkeypatch.undo()
    old.unlink()
    _rewrite_index(repo_copy, lambda doc: doc["packs"].update({new_id: doc["packs"].pop(old.stem)}), old.stem)
    assert rk_json("verify", repo_copy)["ok"]  # the structure alone does not read pack headers
    assert f"format version {NEWER} is newer" in _err(rk("verify", repo_copy, "--read-data", check=False))
    for idx in (repo_copy / "index").glob("*.idx"):
        idx.write_bytes(b"")  # now readers take the packs' own headers
    assert f"format version {NEWER} is newer" in _err(rk("verify", repo_copy, check=False))
    msg = _err(rk("restore", repo_copy, tmp_path / "t.img", "--image", "mbr", "--yes", check=False))
    assert f"format version {NEWER} is newer" in msg and new_id in msg
    assert not (tmp_path / "t.img").exists()

"""prune: the hash check when copying live chunks, and an honest figure for the space it freed."""
from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

import blake3
import make_test_disks as mtd
import zstandard
from imaging_helpers import MiB, rk, rk_json

from rescuekit.repo.config import FORMAT_VERSION
from rescuekit.repo.index import index_files, read_index_file
from rescuekit.repo.packs import PackWriter, pack_files, read_pack_header


def _sizes(repo: Path) -> int:
    return sum(p.stat().st_size for sub in ("data", "index") for p in (repo / sub).rglob("*") if p.is_file())


def _files(repo: Path) -> dict[str, bytes]:
    return {str(p.relative_to(repo)): p.read_bytes() for sub in ("data", "index", "images")
            for p in (repo / sub).rglob("*") if p.is_file()}


def _two_images(tmp_path: Path, data: bytes, change: slice) -> tuple[Path, dict, dict]:
    """A repository with an image of ``data`` and, after ``change`` was overwritten, of the result; the first is
    forgotten, so its pack is partly used (prune must copy its live chunks)."""
    src = tmp_path / "vol.img"
    src.write_bytes(data)
    repo = tmp_path / "repo"
    first = rk_json("capture", src, repo, "--name", "v")
    changed = bytearray(data)
    changed[change] = random.Random(9).randbytes(change.stop - change.start)
    src.write_bytes(changed)
    second = rk_json("capture", src, repo, "--name", "v")
    rk("forget", repo, first["id"])
    return repo, first, second


def _used_rows(repo: Path, image: dict) -> tuple[Path, list]:
    """(pack, row) of a chunk the remaining image uses, in a pack that also holds chunks nobody uses."""
    man = json.loads((repo / "images" / f"{image['id']}.json").read_text())
    used = {c for e in man["extents"] for c in e["chunks"] if c}
    for pack in pack_files(repo).values():
        rows = read_pack_header(pack)
        live = [r for r in rows if r[0] in used]
        if live and len(live) < len(rows):
            return pack, live[0]
    raise AssertionError("no partly used pack")


def test_prune_checks_every_chunk_it_copies(tmp_path: Path) -> None:
    """A live chunk of a partly used pack is damaged (its blob is stored uncompressed, so it still decodes):
    prune stops with one line naming it and changes nothing."""
    repo, _first, second = _two_images(tmp_path, random.Random(5).randbytes(4 * MiB), slice(MiB, 2 * MiB))
    pack, row = _used_rows(repo, second)
    assert row[4] == 0  # random data: stored as is
    data = bytearray(pack.read_bytes())
    data[row[1] + row[5] + 100] ^= 0x01  # inside that chunk, in its blob
    pack.write_bytes(bytes(data))
    before = _files(repo)
    res = rk("prune", repo, check=False)
    lines = res.stderr.strip().splitlines()
    assert res.returncode == 1 and len(lines) == 1 and "Traceback" not in res.stderr, res.stderr
    assert f"chunk {row[0][:16]}" in lines[0] and "hash mismatch" in lines[0] and pack.stem[:16] in lines[0]
    assert _files(repo) == before  # nothing deleted, nothing half-written left behind
    rep = json.loads(rk("verify", repo, "--read-data", "--json", check=False).stdout)
    assert [d["image"] for d in rep["damaged"]] == [second["id"]]


def _recompress_packs(repo: Path, level: int) -> None:
    """Re-encode every pack's compressed blobs at zstd ``level`` (as another writer could have), renaming the
    packs by their new content and rewriting the index to match."""
    dctx = zstandard.ZstdDecompressor()
    renamed: dict[str, tuple[str, list]] = {}
    for old_id, path in pack_files(repo).items():
        rows = read_pack_header(path)
        data = path.read_bytes()
        w = PackWriter(repo)
        blobs: dict[int, list] = {}
        for r in rows:
            blobs.setdefault(r[1], []).append(r)
        for off, members in blobs.items():
            blob = data[off:off + members[0][2]]
            if members[0][4]:
                blob = zstandard.ZstdCompressor(level=level).compress(dctx.decompress(blob))
            w.add(blob, bool(members[0][4]), [(r[0], r[5], r[3]) for r in members])
        renamed[old_id] = w.finish()
        path.unlink()
    for idx in index_files(repo):
        packs = read_index_file(idx)
        new = {renamed[p][0]: renamed[p][1] for p in packs}
        raw = zstandard.ZstdCompressor().compress(json.dumps({"version": FORMAT_VERSION, "packs": new}).encode())
        idx.unlink()
        (repo / "index" / f"{blake3.blake3(raw).hexdigest()}.idx").write_bytes(raw)


def test_prune_reports_what_it_really_freed(tmp_path: Path) -> None:
    """Chunks of a partly used group that recompress worse than the group did (here: the repository's packs
    were written at zstd level 19) are copied as stored, so prune never grows the repository; the figure it
    prints is the real change in size (packs and index files), never negative."""
    rng = random.Random(3)
    repo, _first, second = _two_images(tmp_path, mtd._text(rng, 2 * MiB), slice(0, 4096))
    _recompress_packs(repo, 19)
    assert rk_json("verify", repo, "--read-data")["ok"]
    copy = tmp_path / "copy"
    shutil.copytree(repo, copy)
    before = _sizes(repo)
    pr = rk_json("prune", repo)
    assert pr["packs_rewritten"] >= 1, pr
    assert pr["bytes_freed"] == before - _sizes(repo) >= 0, (pr, before, _sizes(repo))
    assert pr["bytes_freed"] == pr["bytes_deleted"] - pr["bytes_written"]
    out = rk("prune", copy).stdout
    assert out.startswith("freed ") and "-" not in out.split(":")[0], out
    for r in (repo, copy):
        assert rk_json("verify", r, "--read-data")["ok"]
        assert rk_json("restore", r, tmp_path / f"{r.name}.img", "--yes")["image"] == second["id"]
    assert (tmp_path / "repo.img").read_bytes()[4096:] == mtd._text(random.Random(3), 2 * MiB)[4096:]
    # a second prune has nothing to do: it frees (and claims) nothing
    again = rk_json("prune", repo)
    assert again["bytes_freed"] == 0 and again["packs_rewritten"] == 0, again


def test_fresh_captures_leave_prune_nothing_to_do(repo: dict, repo_copy: Path, disks: dict) -> None:
    """No pack lists a chunk twice (two batches racing to store the same new chunk: the second blob keeps its
    bytes but does not list it), so prune right after capturing rewrites and frees nothing."""
    rk("capture", disks["gpt"][0], repo_copy, "--name", "again")  # dedups against all of the first
    for pack in pack_files(repo_copy).values():
        ids = [r[0] for r in read_pack_header(pack)]
        assert len(ids) == len(set(ids)), pack
    pr = rk_json("prune", repo_copy)  # (it merges the captures' index files into one)
    assert (pr["packs_rewritten"], pr["packs_written"], pr["packs_deleted"]) == (0, 0, 0), pr
    assert rk_json("prune", repo_copy)["bytes_freed"] == 0


def test_unused_packs_deleted_before_the_index_is_rewritten(repo: dict, repo_copy: Path, tmp_path: Path) -> None:
    """The state prune leaves on a full medium if it cannot write the new index after deleting the packs no
    image uses: readers ignore the missing packs, verify notes them without failing, the next prune drops them."""
    rk("forget", repo_copy, repo["mbr"]["id"])
    gpt = (repo_copy / "images" / f"{repo['gpt']['id']}.json").read_text()
    unused = [p for p in pack_files(repo_copy).values() if not any(r[0] in gpt for r in read_pack_header(p))]
    assert unused
    for p in unused:
        p.unlink()
    rep = rk_json("verify", repo_copy, "--read-data")
    assert rep["ok"] and rep["problems"] == [] and len(rep["notes"]) == len(unused), rep
    assert all(p.stem in " ".join(rep["notes"]) for p in unused)
    rk("restore", repo_copy, tmp_path / "t.img", "--image", "gpt", "--yes", "--verify")
    rk("prune", repo_copy)
    assert rk_json("verify", repo_copy)["notes"] == []

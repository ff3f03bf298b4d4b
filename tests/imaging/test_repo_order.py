"""Which image `latest`, a name or an id prefix selects: by the repository's sequence number, never by the
capturing machine's clock; format-1 manifests; `images` past unreadable manifests."""
from __future__ import annotations

import json
from pathlib import Path

from imaging_helpers import one_line_error as _err
from imaging_helpers import rk, rk_json

from rescuekit.repo.config import FORMAT_VERSION
from rescuekit.repo.manifest import canonical, checksum
from tests.conftest import require_tools


def _rewrite(path: Path, edit) -> dict:
    """Edit a manifest and store it with a valid checksum (as a rescuekit that wrote it so would)."""
    doc = json.loads(path.read_text())
    edit(doc)
    doc["checksum"] = checksum(doc)
    out = path.with_name(f"{doc['id']}.json")
    out.write_bytes(canonical(doc))
    return doc


def test_latest_and_names_follow_the_sequence_not_the_clock(disks: dict, tmp_path: Path) -> None:
    """The newer capture comes from a PC whose CMOS clock reset to 2001: it is still the latest."""
    require_tools("faketime")
    repo = tmp_path / "repo"
    first = rk_json("capture", disks["mbr"][0], repo, "--name", "pc")
    res = rk("capture", disks["gpt"][0], repo, "--name", "pc", "--json",
             env={"FAKETIME": "@2001-01-01 00:00:00", "FAKETIME_DONT_FAKE_MONOTONIC": "1",
                  "LD_PRELOAD": _libfaketime()})
    second = json.loads(res.stdout)
    assert (first["seq"], second["seq"]) == (1, 2)
    listed = rk_json("images", repo)["images"]
    assert [(x["id"], x["seq"]) for x in listed] == [(first["id"], 1), (second["id"], 2)]
    assert listed[1]["created"].startswith("2001-") and listed[1]["created"] < listed[0]["created"]
    text = rk("images", repo).stdout.splitlines()
    assert "SEQ" in text[0] and "CREATED" in text[0]
    assert text[2].split()[:2] == ["2", second["id"]] and "2001-01-01" in text[2]
    for sel in ([], ["--image", "latest"], ["--image", "pc"]):
        out = tmp_path / "t.img"
        got = rk_json("restore", repo, out, *sel, "--yes")
        assert got["image"] == second["id"], sel
        out.unlink()


def _libfaketime() -> str:
    for d in ("/usr/lib/x86_64-linux-gnu/faketime", "/usr/lib/faketime", "/usr/lib64/faketime"):
        lib = Path(d) / "libfaketime.so.1"
        if lib.exists():
            return str(lib)
    raise AssertionError("libfaketime.so.1 not found (apt-get install faketime)")


def test_format_1_manifests_still_read_and_order_before_numbered_ones(repo: dict, repo_copy: Path,
                                                                      disks: dict) -> None:
    cfg = json.loads((repo_copy / "config").read_text())
    (repo_copy / "config").write_text(json.dumps({**cfg, "version": 1}))
    for name in ("gpt", "mbr"):
        _rewrite(repo_copy / "images" / f"{repo[name]['id']}.json",
                 lambda d: (d.pop("seq"), d.update(version=1)))
    listed = rk_json("images", repo_copy)["images"]  # format 1: by creation time, as that version did
    assert [(x["name"], x["seq"]) for x in listed] == [("gpt", None), ("mbr", None)]
    assert rk_json("restore", repo_copy, repo_copy.parent / "a.img", "--yes")["image"] == repo["mbr"]["id"]
    assert rk("images", repo_copy).stdout.splitlines()[1].split()[0] == "-"
    new = rk_json("capture", disks["gpt"][0], repo_copy, "--name", "new")
    assert json.loads((repo_copy / "config").read_text())["version"] == FORMAT_VERSION  # older rescuekit now refuses
    assert new["seq"] == 1
    listed = rk_json("images", repo_copy)["images"]
    assert [x["name"] for x in listed] == ["gpt", "mbr", "new"]
    assert rk_json("restore", repo_copy, repo_copy.parent / "b.img", "--yes")["image"] == new["id"]
    assert rk_json("verify", repo_copy)["ok"]
    # a format-2 manifest must have its seq (every reader checks it)
    path = repo_copy / "images" / f"{new['id']}.json"
    _rewrite(path, lambda d: d.pop("seq"))
    res = rk("images", repo_copy)
    assert "corrupt image manifest (seq None)" in res.stderr and str(path) in res.stderr


def test_images_lists_the_good_manifests_and_names_the_bad_ones(repo: dict, repo_copy: Path) -> None:
    images = repo_copy / "images"
    bad = {"0000000000000001": "{not json", "0000000000000002": ""}
    for stem, text in bad.items():
        (images / f"{stem}.json").write_text(text)
    newer = _rewrite(images / f"{repo['mbr']['id']}.json", lambda d: d.update(version=FORMAT_VERSION + 1))
    res = rk("images", repo_copy, "--json")
    doc = json.loads(res.stdout)
    assert [x["id"] for x in doc["images"]] == [repo["gpt"]["id"]]
    files = {Path(x["file"]).stem: x["error"] for x in doc["unreadable_manifests"]}
    assert set(files) == {*bad, newer["id"]}
    assert "not JSON" in files["0000000000000001"] and "is newer" in files[newer["id"]]
    res = rk("images", repo_copy)
    assert repo["gpt"]["id"] in res.stdout
    warned = [line for line in res.stderr.splitlines() if line.startswith("rescuekit: warning: ")]
    assert len(warned) == 3 and all(any(stem in w for w in warned) for stem in files)


def test_a_new_image_is_numbered_above_every_manifest_present(repo: dict, repo_copy: Path, disks: dict,
                                                            tmp_path: Path) -> None:
    path = repo_copy / "images" / f"{repo['mbr']['id']}.json"
    doc = json.loads(path.read_text())
    doc["seq"] = 41
    path.write_text(json.dumps(doc))  # checksum now wrong: unreadable, but its number is taken
    new = rk_json("capture", disks["gpt"][0], repo_copy, "--name", "again")
    assert new["seq"] == 42
    # the unreadable one is older than the pick now: "latest" is safe again
    assert rk_json("restore", repo_copy, tmp_path / "l.img", "--yes")["image"] == new["id"]


def test_restore_by_id_prefix_and_by_an_ambiguous_prefix(repo: dict, repo_copy: Path, tmp_path: Path) -> None:
    src = repo_copy / "images" / f"{repo['mbr']['id']}.json"
    a = _rewrite(src, lambda d: d.update(id="abcd0000" + "1" * 8, seq=3, name="a"))
    b = _rewrite(src, lambda d: d.update(id="abcd1111" + "2" * 8, seq=4, name="b"))
    target = tmp_path / "t.img"
    msg = _err(rk("restore", repo_copy, target, "--image", "abcd", "--yes", check=False))
    assert "ambiguous" in msg and a["id"][:12] in msg and b["id"][:12] in msg
    assert not target.exists()
    assert "matches 2 images" in _err(rk("forget", repo_copy, "ABCD", check=False))  # case-insensitive
    assert rk_json("restore", repo_copy, target, "--image", "abcd1", "--yes")["image"] == b["id"]
    target.unlink()
    assert rk_json("restore", repo_copy, target, "--image", repo["gpt"]["id"][:5], "--yes")["image"] == repo["gpt"]["id"]
    target.unlink()
    assert "no image 'abce'" in _err(rk("restore", repo_copy, target, "--image", "abce", "--yes", check=False))
    assert not target.exists() and len(list((repo_copy / "images").glob("*.json"))) == 4

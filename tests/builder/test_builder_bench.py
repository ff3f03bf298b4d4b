"""The ISO benchmark script runs (on a tiny tree) and both ISOs hold the same files."""
from __future__ import annotations

import json

import bench_iso  # scripts/ is on sys.path (tests/conftest.py)


def test_bench_small(tmp_path, capsys, kit):
    assert bench_iso.main(["--size-mb", "12", "--json", "--workdir", str(tmp_path)]) == 0
    res = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert res["files"] > 5 and res["ours_s"] > 0 and res["xorriso_s"] > 0
    assert abs(res["ours_iso_mb"] - res["xorriso_iso_mb"]) < 8  # same payload, different metadata
    assert list(tmp_path.iterdir()) == []  # cleaned up

#!/usr/bin/env python3
"""Benchmark: extracting one large file with ``rescuekit extract`` vs ``ntfscat`` on the same NTFS volume.

    python3 scripts/bench_files.py [--mib 1024] [--repo] [--work DIR]

Builds an NTFS volume (mkntfs + wimlib-imagex apply) holding one random file of --mib MiB, then times
``ntfscat VOLUME /big.bin > FILE`` and ``rescuekit extract VOLUME /big.bin DIR`` (best of 3 each; output files
on the same file system). With --repo the volume is also captured into a repository and extracted from there
(chunks read back through the pack reader, BLAKE3-checked and zstd-decoded). Prints MiB/s and the ratio; the
target in issue 14 is at least 0.8x ntfscat on the raw volume.
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import make_test_disks as mtd

MiB = 1 << 20


def best(cmd: list[str], out: Path, stdout: bool) -> float:
    times = []
    for _ in range(3):
        if out.is_dir():
            shutil.rmtree(out)
        out.unlink(missing_ok=True)
        if not stdout:
            out.mkdir()
        t = time.perf_counter()
        if stdout:
            with open(out, "wb") as f:
                subprocess.run(cmd, stdout=f, check=True)
        else:
            subprocess.run(cmd, check=True, capture_output=True)
        times.append(time.perf_counter() - t)
    return min(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mib", type=int, default=1024)
    ap.add_argument("--repo", action="store_true", help="also extract from a repository capture")
    ap.add_argument("--work", default=None)
    a = ap.parse_args()
    with tempfile.TemporaryDirectory(dir=a.work) as tmp:
        t = Path(tmp)
        tree = t / "tree"
        tree.mkdir()
        with open(tree / "big.bin", "wb") as f:
            for _ in range(a.mib):
                f.write(os.urandom(MiB))
        vol, _h = mtd.make_ntfs_volume(t / "vol.img", a.mib * MiB + 64 * MiB, tree)
        (tree / "big.bin").unlink()
        rk = [sys.executable, "-m", "rescuekit"]
        ref = best(["ntfscat", str(vol), "/big.bin"], t / "cat.bin", True)
        ours = best(rk + ["extract", str(vol), "/big.bin", str(t / "out")], t / "out", False)
        print(f"ntfscat            {a.mib / ref:8.1f} MiB/s")
        print(f"rescuekit extract  {a.mib / ours:8.1f} MiB/s  ({ref / ours:.2f}x ntfscat)")
        if a.repo:
            subprocess.run(rk + ["capture", str(vol), str(t / "repo")], check=True, capture_output=True)
            rep = best(rk + ["extract", str(t / "repo"), "/big.bin", str(t / "out")], t / "out", False)
            print(f"  from repository  {a.mib / rep:8.1f} MiB/s  ({ref / rep:.2f}x ntfscat)")


if __name__ == "__main__":
    main()

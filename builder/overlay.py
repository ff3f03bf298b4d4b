"""Put the rescue runtime into the staging copy of boot.wim.

Steps: validate every option -> stage an ``X:\\`` tree in the work dir (generated scripts + config, embedded
Python with its ._pth extended, wheels unpacked into its site-packages, the runtime package, driver folders,
manifest.json) -> inject it with ONE ``wimlib-imagex update --rebuild`` run (or DISM on Windows) -> verify.
The user's files are only read; only the staging boot.wim is changed.
"""
from __future__ import annotations

import dataclasses
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import rescuekit
from builder import iso, layout, wim
from builder.config import RuntimeConfig
from builder.dism import DismBackend, Runner
from builder.drivers import DriverDir, stage_drivers, validate_driver_dir
from builder.python_embed import EmbedInfo, check_version, resolve_embed, unpack_embed
from builder.render import render_overlay_files
from builder.wheels import copy_runtime_package, gather_wheels, install_wheel
from rescuekit import modules
from rescuekit.errors import UsageError

BACKENDS = ("wimlib", "dism")
# winpeshl runs X:\setup.exe (a Windows setup boot.wim) instead of startnet.cmd: both backends rename it away.
SETUP_RENAME = ("setup.exe", "setup.exe.orig")
MANIFEST_FORMAT = 1


@dataclass
class OverlayOptions:
    """Everything ``rescuekit build`` passes to the overlay step."""

    config: RuntimeConfig = field(default_factory=RuntimeConfig)
    python_embed: Path | None = None
    python_version: str | None = None
    python_sha256: str | None = None
    wheelhouse: Path | None = None
    drivers: list[Path] = field(default_factory=list)
    backend: str = "wimlib"
    base_kind: str | None = None

    def validate(self) -> list[DriverDir]:
        """Check all user input before any work is done; return the validated driver folders."""
        self.config.validated()
        if self.backend not in BACKENDS:
            raise UsageError(f"invalid --wim-backend {self.backend!r}: choose one of {', '.join(BACKENDS)}")
        if self.python_version is not None:
            check_version(self.python_version)
        if self.python_embed is not None and not Path(self.python_embed).is_file():
            raise UsageError(f"--python-embed {self.python_embed}: file not found")
        if self.wheelhouse is not None and not Path(self.wheelhouse).is_dir():
            raise UsageError(f"--wheelhouse {self.wheelhouse}: not a directory")
        return [validate_driver_dir(d) for d in self.drivers]


@dataclass
class OverlayResult:
    size_before: int
    size_after: int
    manifest: dict
    warnings: list[str]


def build_time(epoch: int | None = None) -> str:
    """UTC ISO time; SOURCE_DATE_EPOCH wins so reproducible builds write the same config."""
    if epoch is None:
        epoch = iso.source_date_epoch()
    if epoch is None:
        epoch = int(time.time())
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch))


def stage_tree(opts: OverlayOptions, drivers: list[DriverDir], tree: Path) -> tuple[dict, list[str]]:
    """Lay out the X:\\ overlay under ``tree``; return (manifest, warnings)."""
    warnings: list[str] = []
    embed: EmbedInfo = resolve_embed(opts.python_embed, opts.python_version, opts.python_sha256)
    wheels = gather_wheels(embed.xy, opts.wheelhouse)

    unpack_embed(embed, tree / layout.REL_PYTHON_DIR, layout.PTH_EXTRA_LINES)
    site = tree / layout.REL_SITE_PACKAGES
    site.mkdir(parents=True, exist_ok=True)
    for w in wheels:
        warnings += install_wheel(w, site)
    if warnings and not any((tree / layout.REL_PYTHON_DIR).glob("msvcp140*.dll")):
        warnings.append("copy msvcp140.dll next to python.exe (e.g. put it in a wheel or the embeddable zip)")
    copy_runtime_package(tree / layout.REL_LIB_DIR)

    driver_infs = stage_drivers(drivers, tree) if opts.backend == "wimlib" else []
    for rel, text in render_overlay_files(opts.config, driver_infs).items():
        target = tree / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(text.encode("utf-8"))

    manifest = {
        "format": MANIFEST_FORMAT,
        "runtime_version": rescuekit.__version__,
        "tool_version": opts.config.tool_version,
        "build_time": opts.config.build_time,
        "base_kind": opts.base_kind,
        "backend": opts.backend,
        "shell": opts.config.shell,
        "python": {
            "version": embed.version,
            "xy": embed.xy,
            "sha256": embed.sha256,
            "source": embed.path.name,
            "path": layout.X_PYTHON_EXE,
        },
        "wheels": [w.filename for w in wheels],
        "drivers": [
            {"name": d.source.name, "infs": [i.as_posix() for i in d.infs],
             "path": layout.x_path(f"{layout.REL_DRIVERS_DIR}/{n}") if opts.backend == "wimlib" else None}
            for n, d in enumerate(drivers, start=1)
        ],
        "layout": {
            "launcher": layout.X_LAUNCHER,
            "config": layout.X_CONFIG,
            "site_packages": layout.X_SITE_PACKAGES,
            "runtime": layout.X_LIB_DIR + "\\rescuekit",
        },
    }
    (tree / layout.REL_MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    _pin_times(tree)
    return manifest, warnings


def _pin_times(tree: Path) -> None:
    """With SOURCE_DATE_EPOCH set, give every staged file that time (the WIM stores file times)."""
    t = iso.source_date_epoch()  # parsed as the ISO mastering parses it, so both pin or neither does
    if t is None:
        return
    for p in sorted(tree.rglob("*"), reverse=True):
        os.utime(p, (t, t), follow_symlinks=False)


def _q(path: str | Path) -> str:
    """Quote for a wimlib update command: double quotes, or single ones around a path with a double quote
    (wimlib takes either and has no escapes, so only a path with both, or a newline, cannot be given)."""
    s = str(path)
    if "\n" in s or ('"' in s and "'" in s):
        raise UsageError(f"path not usable in a wimlib update command (it has both quote characters): {s!r}")
    try:
        s.encode("utf-8")
    except UnicodeEncodeError:  # wimlib: "A string was not a valid UTF-8 string"
        shown = s.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
        raise UsageError(f"path not usable in a wimlib update command (not valid UTF-8): {shown}") from None
    return f"'{s}'" if '"' in s else f'"{s}"'


def wimlib_commands(tree: Path, shell: str, has_setup_exe: bool) -> list[str]:
    """The update script: the runtime folder, the start scripts, and what would bypass startnet.cmd."""
    cmds = [f"add {_q(tree / layout.REL_ROOT)} {_q('/' + layout.REL_ROOT)}"]
    cmds.append(f"add {_q(tree / layout.REL_STARTNET)} {_q('/' + layout.REL_STARTNET)}")
    if shell == "winpeshl":
        cmds.append(f"add {_q(tree / layout.REL_WINPESHL)} {_q('/' + layout.REL_WINPESHL)}")
    else:
        # winpeshl.exe runs winpeshl.ini's apps instead of startnet.cmd when the file exists
        cmds.append(f"delete --force {_q('/' + layout.REL_WINPESHL)}")
    if has_setup_exe:
        # ... and X:\setup.exe (Windows setup's boot.wim) before startnet.cmd; mkwinpeimg renames it too
        cmds.append(f"rename {_q('/' + SETUP_RENAME[0])} {_q('/' + SETUP_RENAME[1])}")
    return cmds


def _exists(wim_path: Path, index: int, path: str) -> bool:
    try:
        return bool(wim.dir_listing(wim_path, index, path))
    except Exception:  # noqa: BLE001 - wimlib reports a missing path as an error
        return False


def check_runtime_in_wim(boot_wim: Path, index: int, tree: Path) -> None:
    """The runtime inside the finished image has every module of the package's manifest (read back by wimlib)."""
    prefix = f"/{layout.REL_LIB_DIR}/rescuekit/"
    present = [p[len(prefix):] for p in wim.dir_listing(boot_wim, index, prefix.rstrip("/"))
               if p.lower().startswith(prefix.lower())]
    expected = modules.read_manifest(tree / layout.REL_LIB_DIR / "rescuekit")
    modules.check_complete(present, expected, f"{boot_wim} image {index} ({prefix})")


def apply_overlay(
    boot_wim: Path,
    workdir: Path,
    opts: OverlayOptions,
    *,
    index: int = 1,
    dism_runner: Runner | None = None,
) -> OverlayResult:
    """Inject the runtime into image ``index`` of ``boot_wim`` (a staging copy, changed in place)."""
    drivers = opts.validate()
    boot_wim, workdir = Path(boot_wim), Path(workdir)
    if not opts.config.build_time:
        opts = dataclasses.replace(opts, config=dataclasses.replace(opts.config, build_time=build_time()))
    tree = workdir / "overlay"
    tree.mkdir(parents=True, exist_ok=False)
    manifest, warnings = stage_tree(opts, drivers, tree)
    size_before = boot_wim.stat().st_size
    if opts.backend == "wimlib":
        wim.check_wim(boot_wim)
        has_setup = _exists(boot_wim, index, "/setup.exe")
        wim.update(boot_wim, index, wimlib_commands(tree, opts.config.shell, has_setup), rebuild=True)
        wim.verify(boot_wim)
        check_runtime_in_wim(boot_wim, index, tree)
    else:
        remove = [layout.REL_WINPESHL] if opts.config.shell != "winpeshl" else []
        DismBackend(dism_runner).apply(
            boot_wim, index, tree, [d.source for d in drivers], workdir / "mount", remove=remove, rename=[SETUP_RENAME]
        )
    return OverlayResult(size_before, boot_wim.stat().st_size, manifest, warnings)

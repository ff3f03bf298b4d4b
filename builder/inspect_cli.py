"""``rescuekit inspect MEDIUM``: what a built rescue disc (or its boot.wim / media folder) contains.

Reads ``/rescuekit/build.json`` from the ISO (written by ``rescuekit build``) and ``X:\\rescuekit\\config.toml`` +
``X:\\rescuekit\\manifest.json`` from boot.wim (taken out of the ISO to a temp file, streamed).
"""
from __future__ import annotations

import json
import shutil
import struct
import tempfile
import tomllib
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from collections.abc import Iterator

import click
from rich.console import Console
from rich.table import Table

from builder import isocheck, layout, sources, wim
from builder.build import BUILD_INFO_PATH as BUILD_INFO
from rescuekit.errors import RescueError, UsageError



@dataclass
class Inspection:
    medium: Path
    kind: str  # iso | wim | folder
    build: dict | None = None
    manifest: dict = field(default_factory=dict)
    config: dict = field(default_factory=dict)

    def as_dict(self) -> dict:
        return {"medium": str(self.medium), "kind": self.kind, "build": self.build,
                "manifest": self.manifest, "config": self.config}




def _iso_get(iso, rel: str, out) -> bool:
    """Copy ``rel`` (e.g. ``sources/boot.wim``) out of the ISO into ``out``; False when it is not there."""
    import pycdlib.pycdlibexception as pe

    tries = []
    if iso.has_udf():
        tries.append({"udf_path": "/" + rel})
    if iso.has_joliet():
        tries.append({"joliet_path": "/" + rel})
    tries.append({"iso_path": "/" + rel.upper()})  # as rescuekit (and oscdimg) write names: no ";1"
    tries.append({"iso_path": "/" + rel.upper() + ";1"})
    for kw in tries:
        try:
            iso.get_file_from_iso_fp(out, **kw)
            return True
        except pe.PyCdlibException:
            out.seek(0)
            out.truncate()
    # case-insensitive fallback over the ISO 9660 tree
    want = rel.lower()
    for root, _dirs, files in iso.walk(iso_path="/"):
        for name in files:
            full = f"{root.rstrip('/')}/{name}".lstrip("/").lower().split(";")[0]
            if full == want:
                iso.get_file_from_iso_fp(out, iso_path=f"{root.rstrip('/')}/{name}")
                return True
    return False


@contextmanager
def _boot_wim(medium: Path) -> Iterator[tuple[Path, str, dict | None]]:
    """Yield (boot.wim path, kind, build.json) for an ISO, a WIM or a media/copype folder."""
    if not medium.exists():
        raise UsageError(f"no such file or folder: {medium}")
    if medium.is_dir():
        # case-insensitive, as Windows (and the builder) match names: SOURCES\BOOT.WIM is the same file
        for cand in (sources.find_ci(medium, "sources/boot.wim"), sources.find_ci(medium, "media/sources/boot.wim")):
            if cand is not None and cand.is_file():
                info = sources.find_ci(cand.parent.parent, BUILD_INFO)
                build = _json_object(info, f"{BUILD_INFO} of {medium}") if info and info.is_file() else None
                yield cand, "folder", build
                return
        raise UsageError(f"no sources/boot.wim in folder: {medium}")
    if sources.is_wim(medium):
        yield medium, "wim", None
        return
    if not sources.is_iso(medium):
        raise UsageError(f"not an ISO, a WIM or a media folder: {medium}")
    iso = sources.open_iso(medium)
    tmpdir = Path(tempfile.mkdtemp(prefix="rescuekit-inspect-"))
    try:
        target = tmpdir / "boot.wim"
        try:
            with open(target, "w+b") as out:
                if not _iso_get(iso, "sources/boot.wim", out):
                    raise RescueError(f"no sources/boot.wim in ISO: {medium} (not a WinPE/rescuekit disc)")
            with open(tmpdir / "build.json", "w+b") as out:
                have_build = _iso_get(iso, BUILD_INFO, out)
        except sources.ISO_READ_ERRORS as exc:
            raise RescueError(f"cannot read ISO {medium}: {exc or type(exc).__name__}") from None
        finally:
            iso.close()
        build = _json_object(tmpdir / "build.json", f"{BUILD_INFO} in ISO {medium}") if have_build else None
        yield target, "iso", build
    finally:
        shutil.rmtree(tmpdir, ignore_errors=True)


def inspect_medium(medium: Path) -> Inspection:
    medium = Path(medium)
    with _boot_wim(medium) as (boot_wim, kind, build):
        count, boot_index = wim.check_wim(boot_wim)
        index = boot_index or 1
        try:
            listing = wim.dir_listing(boot_wim, index, "/" + layout.REL_ROOT)
        except RescueError:
            listing = []
        have = {p.lower() for p in listing}
        if "/" + layout.REL_MANIFEST.lower() not in have:
            raise RescueError(
                f"no rescuekit runtime in boot.wim of {medium} (plain WinPE, e.g. built with --no-runtime)"
            )
        with tempfile.TemporaryDirectory(prefix="rescuekit-inspect-") as td:
            paths = ["/" + layout.REL_MANIFEST]
            if "/" + layout.REL_CONFIG.lower() in have:
                paths.append("/" + layout.REL_CONFIG)
            wim.extract(boot_wim, index, paths, Path(td))
            manifest = _json_object(Path(td) / "manifest.json", f"{layout.X_MANIFEST} in boot.wim of {medium}")
            cfg_file = Path(td) / "config.toml"
            try:
                config = tomllib.loads(cfg_file.read_text(encoding="utf-8")) if cfg_file.exists() else {}
            except ValueError as exc:  # TOMLDecodeError and UnicodeDecodeError are ValueErrors
                raise RescueError(f"corrupt {layout.X_CONFIG} in boot.wim of {medium}: {exc}") from None
    table = config.get("rescuekit", config)
    if not isinstance(table, dict):
        raise RescueError(f"corrupt {layout.X_CONFIG} in boot.wim of {medium}: [rescuekit] is not a table")
    return Inspection(medium, kind, build, manifest, table)


def _json_object(path: Path, what: str) -> dict:
    """A JSON object from ``path``; anything else is a RescueError naming ``what``."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise RescueError(f"corrupt {what}: {exc}") from None
    if not isinstance(data, dict):
        raise RescueError(f"corrupt {what}: not a JSON object")
    return data


def _obj(value: object) -> dict:
    """A manifest field that should be an object ({} when a damaged or foreign manifest has something else)."""
    return value if isinstance(value, dict) else {}


def _list(value: object) -> list:
    return value if isinstance(value, list) else []


def _table(ins: Inspection) -> Table:
    t = Table(title=f"rescuekit medium: {ins.medium}", show_header=False)
    t.add_column("what", style="bold")
    t.add_column("value")
    m, b, py = ins.manifest, ins.build or {}, _obj(ins.manifest.get("python"))
    t.add_row("base", str(b.get("source_kind") or m.get("base_kind") or "unknown"))
    if b:
        t.add_row("built", f"{b.get('built')} by rescuekit {b.get('version')}")
        t.add_row("boot", f"UEFI CA {b.get('uefi_ca')}, {'BIOS+UEFI' if b.get('bios') else 'UEFI only'}"
                          f"{', no prompt' if b.get('no_prompt') else ''}")
    t.add_row("python", f"{py.get('version') or py.get('xy')} (sha256 {str(py.get('sha256', ''))[:16]}...) "
                        f"at {py.get('path')}")
    t.add_row("runtime", f"rescuekit {m.get('runtime_version')} ({m.get('backend')} backend, {m.get('shell')} shell)")
    t.add_row("wheels", "\n".join(map(str, _list(m.get("wheels")))) or "-")
    drivers = [f"{_obj(d).get('name')}: {', '.join(map(str, _list(_obj(d).get('infs'))))}"
               for d in _list(m.get("drivers"))]
    t.add_row("drivers", "\n".join(drivers) or "-")
    for key, value in ins.config.items():
        t.add_row(f"config {key}", str(value))
    return t


def check_medium(medium: Path, as_json: bool) -> None:
    """``inspect --check``: walk an ISO as the boot chain does (builder.isocheck); failures exit 1."""
    if not medium.exists():
        raise UsageError(f"no such file or folder: {medium}")
    if not medium.is_file() or not sources.is_iso(medium):
        raise UsageError(f"--check needs an ISO file: {medium}")
    try:
        rep = isocheck.check_iso(medium)
    except (OSError, struct.error, ValueError) as exc:
        raise RescueError(f"cannot read ISO {medium}: {exc}") from None
    click.echo(json.dumps(rep.as_dict(), indent=2) if as_json else isocheck.format_report(rep))
    if not rep.ok:
        raise RescueError(f"{medium}: {len(rep.failed)} of {len(rep.checks)} boot-chain checks failed "
                          f"(first: {rep.failed[0].name})")


@click.command("inspect")
@click.argument("medium", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@click.option("--check", is_flag=True,
              help="Walk the ISO as Microsoft's boot chain reads it (UDF, ISO 9660 names, El Torito); exit 1 on a failure.")
def inspect_cmd(medium: Path, as_json: bool, check: bool) -> None:
    """Show what a rescue ISO (or its boot.wim / media folder) contains: base, Python, runtime, drivers, config."""
    if check:
        check_medium(medium, as_json)
        return
    from builder.linux_cli import linux_build_info, show_linux

    linux = linux_build_info(Path(medium))
    if linux is not None:  # a `--base linux` disc: no boot.wim, its record is build.json
        show_linux(linux, as_json)
        return
    ins = inspect_medium(medium)
    if as_json:
        click.echo(json.dumps(ins.as_dict(), indent=2))
        return
    Console().print(_table(ins))


def register(group: click.Group) -> None:
    group.add_command(inspect_cmd)

"""``rescuekit build --base linux``: the command side (options -> LinuxBuildOptions -> report)."""
from __future__ import annotations

import json
from pathlib import Path

import click

from builder.config import RuntimeConfig
from builder.linux_build import LinuxBuildOptions, build_linux_iso
from builder.overlay_cli import _META
from rescuekit.errors import UsageError
from rescuekit.imaging.units import human
from rescuekit.target_rules import is_auto
from rescuekit.volumes import parse as parse_label

# Overlay options that only mean something inside boot.wim.
_WINPE_OVERLAY = ["python_embed", "python_version", "python_sha256", "wheelhouse", "drivers", "locale", "network"]


def config_from_context() -> RuntimeConfig:
    """The runtime settings given on the build command line (shared with the WinPE overlay's options)."""
    ctx = click.get_current_context(silent=True)
    values = dict(ctx.meta.get(_META, {})) if ctx is not None else {}
    for key in _WINPE_OVERLAY:
        src = ctx.get_parameter_source(key) if ctx is not None else None
        if values.get(key) and not (src is not None and src.name == "ENVIRONMENT"):
            raise UsageError(f"--{key.replace('_', '-')} is for --base winpe")
    return RuntimeConfig(
        default_action=values.get("default_action") or "menu",
        repository=values.get("repository"),
        image=values.get("image_name"),
        target=values.get("target"),
        then=values.get("then") or "menu",
        countdown=values.get("countdown") if values.get("countdown") is not None else 10,
    )


def build_linux(output: Path, label: str, lock: Path | None, as_json: bool, winpe_only: dict) -> None:
    given = [opt for opt, v in winpe_only.items() if v]
    if given:
        raise UsageError(f"{given[0]} is for --base winpe")
    config = config_from_context().validated()
    if config.target and not config.target.startswith("/dev/") and not is_auto(config.target):
        raise UsageError(f"--target {config.target} is a Windows device path: the Linux base needs e.g. /dev/sda "
                         "or auto")
    if config.repository and parse_label(config.repository) is None:
        raise UsageError(f"--repository {config.repository}: the Linux base finds its repository by volume label, "
                         "e.g. RKREPO:\\images")
    opts = LinuxBuildOptions(output=output, label=label, config=config, lock=lock,
                             progress=False if as_json else None)
    res = build_linux_iso(opts)
    if as_json:
        click.echo(json.dumps(res.as_dict(), indent=2))
        return
    click.echo(f"base:    Debian 12, kernel {res.kernel}, {res.packages} packages, {res.wheels} wheels")
    click.echo(f"initrd:  {human(res.initramfs_raw)} -> {human(res.initramfs)} (zstd)")
    click.echo(f"root:    {human(res.payload_raw)} -> {human(res.payload)} (squashfs, zstd)")
    click.echo(f"kernel:  signed for UEFI; for BIOS without its xz decompressor, {human(res.bios_kernel)} (lzop)")
    click.echo(f"boot:    {', '.join(res.boot_entries)}")
    for note in res.notes:
        click.echo(f"note:    {note}")
    click.echo(f"lock:    {res.lock_file}")
    click.echo(f"wrote:   {res.output} ({human(res.size)})")


def linux_build_info(medium: Path) -> dict | None:
    """build.json of a Linux-based disc (None for anything else): what ``rescuekit inspect`` shows for it."""
    import io

    from builder import sources
    from builder.inspect_cli import _iso_get
    from builder.linux_build import BUILD_INFO_PATH

    if not medium.is_file() or not sources.is_iso(medium):
        return None
    iso = sources.open_iso(medium)
    try:
        buf = io.BytesIO()
        if not _iso_get(iso, BUILD_INFO_PATH, buf):
            return None
    finally:
        iso.close()
    try:
        info = json.loads(buf.getvalue())
    except ValueError:
        return None
    return info if isinstance(info, dict) and info.get("base") == "linux" else None


def show_linux(info: dict, as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps(info, indent=2))
        return
    click.echo(f"base:     Linux (Debian 12), kernel {info.get('kernel')}, rescuekit {info.get('version')}, "
               f"built {info.get('built')}, label {info.get('label')}")
    for p in info.get("packages", []):
        click.echo(f"package:  {p['name']} {p['version']} sha256 {p['sha256'][:16]}...")
    for w in info.get("wheels", []):
        click.echo(f"wheel:    {w['filename']} sha256 {w['sha256'][:16]}...")

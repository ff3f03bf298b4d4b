"""``rescuekit build``: make a bootable rescue ISO from a WinPE base."""
from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import click

from builder import iso
from builder.build import BuildOptions, build_iso
from builder.overlay_cli import overlay_factory, overlay_options
from builder.sources import UEFI_CAS
from rescuekit.errors import UsageError
from rescuekit.imaging.units import human

# Boot.wim steps that other modules contribute (issue 3's overlay); each is ``(opts) -> step | None``.
STEP_FACTORIES: list = [overlay_factory]


# The WinPE base options that build and usb share (usb: builder/usb_cli.py).
_BASE_OPTIONS = [
    click.option("--source", type=click.Path(path_type=Path), default=None,
                 help="copype folder, ADK root, Windows ISO/folder, or winre.wim (default on Windows: the installed ADK)."),
    click.option("--no-prompt", is_flag=True,
                 help='No "Press any key to boot from CD": UEFI efisys_noprompt, BIOS without boot\\bootfix.bin.'),
    click.option("--uefi-ca", type=click.Choice(UEFI_CAS), default="2011", show_default=True,
                 help="Secure Boot CA of the UEFI boot manager: 2023 for PCs with the BlackLotus revocation (/bootex)."),
    click.option("--boot-files", type=click.Path(path_type=Path), default=None,
                 help="With a winre.wim --source: where the media and boot images come from."),
]


def base_options(f: Callable) -> Callable:
    """Decorator adding --source, --no-prompt, --uefi-ca and --boot-files."""
    for opt in reversed(_BASE_OPTIONS):
        f = opt(f)
    return f


@click.command("build")
@base_options
@click.option("--output", "-o", type=click.Path(path_type=Path), required=True, help="ISO file to write.")
@click.option("--label", default=iso.DEFAULT_LABEL, show_default=True, help="Volume label (A-Z 0-9 _, max 32).")
@click.option("--image", type=click.IntRange(min=1), default=None,
              help="boot.wim image index to boot (default: the WinPE image, never Windows Setup).")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@click.option("--base", type=click.Choice(["winpe", "linux"]), default="winpe", show_default=True,
              help="winpe: from --source (ADK/Windows media); linux: from Debian 12 packages, no Windows files.")
@click.option("--lock", type=click.Path(path_type=Path), default=None,
              help="--base linux: reuse the package/wheel versions and SHA-256s of this lock file (OUTPUT.lock.json).")
@overlay_options  # issue 3: the runtime overlay (builder/overlay_cli.py)
def build_cmd(source: Path | None, output: Path, no_prompt: bool, label: str, uefi_ca: str,
              boot_files: Path | None, image: int | None, as_json: bool, base: str, lock: Path | None) -> None:
    """Build a BIOS+UEFI bootable rescue ISO from a WinPE base, or from Debian packages (--base linux)."""
    if base == "linux":
        from builder.linux_cli import build_linux

        build_linux(output=output, label=label, lock=lock, as_json=as_json,
                    winpe_only={"--source": source, "--no-prompt": no_prompt, "--uefi-ca": uefi_ca != "2011",
                                "--boot-files": boot_files, "--image": image})
        return
    if lock is not None:
        raise UsageError("--lock is for --base linux (a WinPE build takes no packages)")
    opts = BuildOptions(source=source, output=output, label=label, no_prompt=no_prompt, uefi_ca=uefi_ca,
                        boot_files=boot_files, image=image, progress=False if as_json else None)
    steps = [s for s in (factory(opts) for factory in STEP_FACTORIES) if s is not None]
    opts.boot_wim_steps = steps
    res = build_iso(opts)
    if as_json:
        click.echo(json.dumps(res.as_dict(), indent=2))
        return
    click.echo(f"source:  {res.source_kind} {res.source_path}")
    click.echo(f"boot.wim image {res.boot_image[0]} {res.boot_image[1]!r}, sha256 {res.boot_wim_sha256[:16]}...")
    click.echo(f"boot:    {', '.join(res.boot_entries)} (UEFI CA {res.uefi_ca}{', no prompt' if res.no_prompt else ''})")
    for note in res.notes:
        click.echo(f"note:    {note}")
    click.echo(f"wrote:   {res.output} ({human(res.size)}, {res.files} files)")


def register(group: click.Group) -> None:
    group.add_command(build_cmd)

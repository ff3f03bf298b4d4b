"""``rescuekit usb``: write the rescue media to a USB stick or a USB disk image (BIOS + UEFI, with a data partition)."""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import click

from rescuekit.errors import UsageError
from rescuekit.imaging.units import human
from rescuekit.imaging_cli import _size_opt

from builder import iso, usb, usb_device
from builder.build import BuildOptions, check_source_outside
from builder.build_cli import STEP_FACTORIES, base_options
from builder.overlay_cli import _META, overlay_options

# overlay option values that mean "not given" (their defaults)
_OVERLAY_DEFAULTS = (None, False, (), "menu", "startnet", "wimlib")


@click.command("usb")
@click.option("--device", default=None, help=r"Whole disk to overwrite: /dev/sdX, or \\.\PhysicalDriveN on Windows.")
@click.option("--image", "image_file", type=click.Path(path_type=Path), default=None,
              help="Write a USB disk image file instead (needs --size).")
@click.option("--size", default=None, help="Size of the --image file, e.g. 512M, 8G.")
@click.option("--from-iso", type=click.Path(path_type=Path), default=None,
              help="Write the files of an already built rescue ISO (no --source / runtime options).")
@base_options
@click.option("--data-partition", type=click.Choice(usb.DATA_FS), default="exfat", show_default=True,
              is_flag=False, flag_value="exfat",
              help="File system of the second partition, which holds an empty image repository in Images/.")
@click.option("--no-data-partition", is_flag=True, help="One FAT32 partition filling the stick.")
@click.option("--boot-size", default=None, help="Size of the FAT32 boot partition (default: the media + 5% + 16 MiB, "
              "at least 64 MiB).")
@click.option("--label", default=iso.DEFAULT_LABEL, show_default=True, help="Boot partition label (1-11 characters).")
@click.option("--boot-image", type=click.IntRange(min=1), default=None,
              help="boot.wim image index to boot (build's --image; here --image is the output file).")
@click.option("--yes", is_flag=True, help="Do not ask before overwriting the device or an existing image file.")
@click.option("--force", is_flag=True, help="Allow a non-removable or system disk.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@overlay_options
@click.pass_context
def usb_cmd(ctx: click.Context, device: str | None, image_file: Path | None, size: str | None, from_iso: Path | None,
            source: Path | None, data_partition: str, no_data_partition: bool, boot_size: str | None, no_prompt: bool,
            label: str, uefi_ca: str, boot_files: Path | None, boot_image: int | None, yes: bool, force: bool,
            as_json: bool) -> None:
    """Write the rescue media to a USB stick or disk image: MBR, active FAT32 boot partition (UEFI + BIOS), and an
    exFAT data partition holding an empty image repository."""
    if (device is None) == (image_file is None):
        raise UsageError("give one of --device DEV or --image FILE --size SIZE")
    if image_file is not None and size is None:
        raise UsageError("--image needs --size (e.g. --size 8G)")
    if device is not None and size is not None:
        raise UsageError("--size is only for --image: a device has its own size")
    data_fs = None if no_data_partition else data_partition
    if no_data_partition and ctx.get_parameter_source("data_partition").name == "COMMANDLINE":
        raise UsageError("--data-partition and --no-data-partition exclude each other")
    label = usb.fat_label(label)
    want_boot = _size_opt(boot_size)
    if from_iso is not None:
        build_only = {"--source": source, "--boot-files": boot_files, "--boot-image": boot_image,
                      "--no-prompt": no_prompt or None, "--uefi-ca": None if uefi_ca == "2011" else uefi_ca}
        build_only.update({f"--{k.replace('_', '-')}": v for k, v in ctx.meta.get(_META, {}).items()
                           if v not in _OVERLAY_DEFAULTS and not _from_env(ctx, k)})
        given = [k for k, v in build_only.items() if v is not None]
        if given:
            raise UsageError(f"--from-iso writes the ISO's files as they are: {given[0]} cannot be used with it")

    if image_file is not None:
        total = _size_opt(size)
        out = Path(image_file)
        if out.is_dir():
            raise UsageError(f"--image {out} is a folder, give a file name")
        if out.exists() and not out.is_file():
            raise UsageError(f"--image {out} is not a regular file (for a device use --device)")
        if not out.parent.is_dir():
            raise UsageError(f"output folder does not exist: {out.parent}")
        if from_iso is not None and out.resolve() == Path(from_iso).resolve():
            raise UsageError(f"--image {out} is the --from-iso file itself")
        if out.exists():
            usb_device.confirm(str(out), [f"{out}: existing file, {human(out.stat().st_size)}"], yes=yes)
        view = None
        target = out
    else:
        view = usb_device.inspect_device(device)
        total = view.info.size
        target = Path(device)
        protect = [("--from-iso file", from_iso), ("source", source), ("boot files", boot_files)]
        protect += [(f"--{k.replace('_', '-')}", Path(v)) for k, v in ctx.meta.get(_META, {}).items()
                    if k in ("python_embed", "wheelhouse") and v]
        protect += [("driver folder", Path(d)) for d in ctx.meta.get(_META, {}).get("drivers") or ()]
        usb_device.check_device(view, force=force, protect=[(w, p) for w, p in protect if p is not None])

    usb.plan_layout(total, 0, data_fs, want_boot, where=str(target))  # smaller than any stick: refuse before staging
    if from_iso is None:  # before the scratch folder is made next to the output
        check_source_outside(BuildOptions(source=source, output=target, boot_files=boot_files), target)
    scratch = usb.temp_dir_for(image_file)
    try:
        if view is not None:
            usb_device.check_device(view, force=force, protect=[("scratch space", scratch)])
        if from_iso is not None:
            media = usb.media_from_iso(from_iso, scratch, label if _given(ctx, "label") else None)
        else:
            opts = BuildOptions(source=source, output=target, label=label, no_prompt=no_prompt, uefi_ca=uefi_ca,
                                boot_files=boot_files, image=boot_image, progress=False if as_json else None)
            opts.boot_wim_steps = [s for s in (f(opts) for f in STEP_FACTORIES) if s is not None]
            media = usb.media_from_build(opts, scratch, iso.normalize_label(label), iso.source_date_epoch())
        usb.check_fat32_files(media.files)
        need = usb.media_bytes(media.files, media.extra)
        lay = usb.plan_layout(total, need, data_fs, want_boot, where=str(target))
        bios = usb.bios_boot_for(media.kind, {**media.files, **media.extra})
        if view is not None:
            usb_device.confirm(device, view.lines(), yes=yes)
        img = scratch / "usb.img"
        res = usb.write_usb_image(img, media.files, media.extra, lay, label=usb.fat_label(media.label), bios=bios,
                                  scratch=scratch)
        if view is not None:
            written = usb_device.write_device(img, device, lay, progress=False if as_json else None)
        else:
            with open(img, "rb+") as f:
                os.fsync(f.fileno())
            os.replace(img, out)
            written = lay.size
    finally:
        shutil.rmtree(scratch, ignore_errors=True)

    result = {
        "target": str(target), "device": view is not None, "size": lay.size, "source": str(media.source),
        "source_kind": media.kind, "files": res.files, "bios": res.bios.name if res.bios else None, "uefi": res.uefi,
        "boot_partition": {"start": lay.boot_start, "size": lay.boot_size, "fs": "fat32", "label": media.label},
        "data_partition": ({"start": lay.data_start, "size": lay.data_size, "fs": lay.data_fs,
                            "repository": usb.REPO_DIR} if lay.data_fs else None),
        "written_bytes": written, "notes": media.notes + res.notes,
    }
    if as_json:
        click.echo(json.dumps(result, indent=2))
        return
    click.echo(f"source:  {media.kind} {media.source}")
    click.echo(f"boot:    partition 1 FAT32 '{media.label}' {human(lay.boot_size)}, {res.files} files; UEFI "
               f"{'EFI/Boot/bootx64.efi' if res.uefi else 'none'}; BIOS {res.bios.name if res.bios else 'none'}")
    if lay.data_fs:
        click.echo(f"data:    partition 2 {lay.data_fs} '{usb.DATA_LABEL}' {human(lay.data_size)}, empty repository "
                   f"in {usb.REPO_DIR}/")
    for note in result["notes"]:
        click.echo(f"note:    {note}")
    click.echo(f"wrote:   {target} ({human(lay.size)}{'' if view is None else f', {human(written)} written'})")


def _given(ctx: click.Context, name: str) -> bool:
    src = ctx.get_parameter_source(name)
    return src is not None and src.name == "COMMANDLINE"


def _from_env(ctx: click.Context, key: str) -> bool:
    src = ctx.get_parameter_source(key)
    return src is not None and src.name == "ENVIRONMENT"


def register(group: click.Group) -> None:
    group.add_command(usb_cmd)

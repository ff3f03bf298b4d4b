"""The ``rescuekit build`` pipeline: source -> staged boot.wim -> (overlay) -> ISO.

The user's source is only read.  Everything temporary lives in a staging folder next to
the output (same file system, so the final rename is atomic) and is removed on success
and on failure.
"""
from __future__ import annotations

import datetime as _dt
import json
import shutil
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from builder import iso, sources, wim
from builder.files import sha256_file
from rescuekit import __version__
from rescuekit.errors import RescueError, UsageError

# An overlay step gets the staged single-image boot.wim (image 1, writable) and a scratch folder.
BootWimStep = Callable[[Path, Path], None]
BUILD_INFO_PATH = "rescuekit/build.json"
BOOTFIX_PATH = "boot/bootfix.bin"


@dataclass
class BuildOptions:
    source: Path | None
    output: Path
    label: str = iso.DEFAULT_LABEL
    no_prompt: bool = False
    uefi_ca: str = "2011"
    boot_files: Path | None = None  # boot files for a WinRE (.wim) source
    image: int | None = None  # force this boot.wim image index
    boot_wim_steps: Sequence[BootWimStep] = ()  # e.g. builder.overlay's step (issue 3)
    progress: bool | None = None  # None: a bar when stderr is a terminal


@dataclass
class BuildResult:
    output: Path
    size: int
    source_kind: str
    source_path: Path
    boot_image: tuple[int, str]
    boot_entries: list[str]
    boot_wim_sha256: str
    files: int
    uefi_ca: str
    no_prompt: bool
    notes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        return {
            "output": str(self.output),
            "size": self.size,
            "source_kind": self.source_kind,
            "source": str(self.source_path),
            "boot_image": {"index": self.boot_image[0], "name": self.boot_image[1]},
            "boot_entries": self.boot_entries,
            "boot_wim_sha256": self.boot_wim_sha256,
            "files": self.files,
            "uefi_ca": self.uefi_ca,
            "no_prompt": self.no_prompt,
            "notes": self.notes,
        }



def _check_output(output: Path) -> Path:
    output = Path(output)
    if output.is_dir():
        raise UsageError(f"output is a folder, give a file name: {output}")
    if not output.parent.is_dir():
        raise UsageError(f"output folder does not exist: {output.parent}")
    return output


def build_info(src: sources.BaseSource, boot_sha: str, label: str, epoch: int | None) -> dict:
    """What ``rescuekit inspect`` reads back from ``/rescuekit/build.json``."""
    when = _dt.datetime.fromtimestamp(epoch, _dt.UTC) if epoch is not None else _dt.datetime.now(_dt.UTC)
    return {
        "tool": "rescuekit",
        "version": __version__,
        "built": when.replace(microsecond=0).isoformat().replace("+00:00", "Z"),
        "source_kind": src.kind,
        "boot_image": {"index": src.boot_index, "name": src.boot_image_name},
        "uefi_ca": src.uefi_ca,
        "no_prompt": src.no_prompt,
        "label": label,
        "bios": src.etfsboot is not None,
        "boot_wim_sha256": boot_sha,
    }


@dataclass
class StagedMedia:
    """The media file set both ``build`` (ISO) and ``usb`` write: host files plus generated files."""

    src: sources.BaseSource
    files: dict[str, Path]  # media path (posix, relative) -> host file; the staged boot.wim included
    extra: dict[str, bytes]  # generated files (rescuekit/build.json)
    boot_sha: str
    label: str
    notes: list[str]


def stage_media(opts: BuildOptions, staging: Path, *, label: str, epoch: int | None) -> StagedMedia:
    """Resolve the base, export + overlay boot.wim in ``staging`` and return the media file set.

    ``staging`` belongs to the caller (who removes it); ``opts.output`` is checked to lie outside the source.
    """
    src = sources.resolve_source(
        opts.source,
        workdir=staging / "source",
        uefi_ca=opts.uefi_ca,
        no_prompt=opts.no_prompt,
        boot_files=opts.boot_files,
        image=opts.image,
    )
    sources.check_output_outside(src, opts.output, *([opts.boot_files] if opts.boot_files else []))

    boot_wim = staging / "boot.wim"
    wim.export_image(src.boot_wim, src.boot_index, boot_wim, boot=True)
    for n, step in enumerate(opts.boot_wim_steps):
        step_dir = staging / f"step-{n}"
        step_dir.mkdir()
        step(boot_wim, step_dir)
    count, boot_index = wim.check_wim(boot_wim)
    if count != 1 or boot_index != 1:
        raise RescueError(f"staged boot.wim must hold one bootable image, has {count} (boot index {boot_index})")
    if epoch is not None:
        # wimlib stamps a random GUID (and the overlay new times): pin both for reproducible bytes.
        wim.set_image_times(boot_wim, 1, epoch)
        wim.set_guid(boot_wim, wim.deterministic_guid(boot_wim))
    boot_sha = sha256_file(boot_wim)

    files = dict(src.media)
    files[src.boot_wim_key] = boot_wim
    notes = list(src.notes)
    if src.no_prompt and src.etfsboot is not None:
        # The BIOS "Press any key to boot from CD or DVD" is boot\bootfix.bin, which etfsboot.com runs when present.
        fix = [k for k in files if k.lower() == BOOTFIX_PATH]
        for k in fix:
            del files[k]
        if fix:
            notes.append(f"--no-prompt: {fix[0]} left off the disc (no BIOS 'Press any key')")
    if any(k.lower() == BUILD_INFO_PATH for k in files):
        raise RescueError(f"source already has {BUILD_INFO_PATH}: {src.path} (is it a rescuekit ISO?)")
    info = build_info(src, boot_sha, label, epoch)
    extra = {BUILD_INFO_PATH: (json.dumps(info, indent=2, sort_keys=True) + "\n").encode()}
    return StagedMedia(src=src, files=files, extra=extra, boot_sha=boot_sha, label=label, notes=notes)


def check_source_outside(opts: BuildOptions, output: Path) -> None:
    """Before any staging folder is made: the output must not lie inside the user's source."""
    given = opts.source if opts.source is not None else sources.default_adk_root()
    if given is not None:
        sources.check_output_outside(Path(given), output, *([opts.boot_files] if opts.boot_files else []))


def build_iso(opts: BuildOptions) -> BuildResult:
    output = _check_output(opts.output)
    label = iso.normalize_label(opts.label)
    epoch = iso.source_date_epoch()
    check_source_outside(opts, output)
    staging = Path(tempfile.mkdtemp(prefix=f".{output.name}.build-", dir=output.parent))
    try:
        staged = stage_media(opts, staging, label=label, epoch=epoch)
        src = staged.src
        result = iso.master_iso(
            staged.files,
            output,
            bios_image=src.etfsboot,
            efi_image=src.efisys,
            label=label,
            extra=staged.extra,
            progress=opts.progress,
        )
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return BuildResult(
        output=output,
        size=result.size,
        source_kind=src.kind,
        source_path=src.path,
        boot_image=(src.boot_index, src.boot_image_name),
        boot_entries=result.boot_entries,
        boot_wim_sha256=staged.boot_sha,
        files=result.files,
        uefi_ca=src.uefi_ca,
        no_prompt=src.no_prompt,
        notes=staged.notes + result.notes,
    )

"""CLI: ``rescuekit files|extract|find``: browse an image's volume and take single files out of it."""
from __future__ import annotations

import inspect
import json
import time

import click

_SOURCE_HELP = ("SOURCE: a repository folder (--image picks the image), a WindowsImageBackup folder, one of its "
                "VHD/VHDX files, or a raw disk or partition image.")


def _source_options(f):
    f = click.option("--partition", type=int, metavar="N",
                     help="The partition (or backup volume) to read; needed when there are several.")(f)
    f = click.option("--image", metavar="ID|NAME|latest", help="The repository image (default: latest).")(f)
    return f


def _when(t: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t)) if t is not None else "-" * 19


def _line(n) -> str:
    extra = [f"damaged: {n.error}"] if n.error else []
    if n.links > 1:
        extra.append(f"{n.links} links")
    if n.reparse:
        extra.append("reparse point")
    if n.encrypted:
        extra.append("EFS-encrypted")
    extra += [f"stream {s!r} ({size} bytes)" for s, size in n.streams]
    size = "<DIR>" if n.is_dir else str(n.size)
    tail = f"  [{'; '.join(extra)}]" if extra else ""
    return f"{n.attr_text}  {_when(n.mtime)}  {size:>14}  {n.path if n.path else '/'}{tail}"


@click.command("files")
@click.argument("source")
@click.argument("path", required=False, default="/")
@_source_options
@click.option("--recursive", "-r", is_flag=True, help="List everything under PATH.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def files_cmd(source: str, path: str, image: str | None, partition: int | None, recursive: bool,
              as_json: bool) -> None:
    """List a folder (default: the root) of a volume inside SOURCE, straight from the image."""
    from rescuekit.files.source import open_source

    with open_source(source, image=image, partition=partition) as src:
        tree = src.tree()
        node = tree.lookup(path)
        if not node.is_dir:
            items = [node]
        elif recursive:
            items = [k for _n, kids in tree.walk(node) for k in kids]
        else:
            items = tree.listdir(node)
        if as_json:
            click.echo(json.dumps({"source": src.where, "partition": src.choice.number, "fs": src.fs,
                                   "path": node.path or "/", "entries": [n.doc() for n in items]}, indent=1))
            return
        for n in items:
            click.echo(_line(n))
        for n in items:
            if n.error:
                click.echo(f"rescuekit: warning: {n.path}: {n.error}", err=True)


@click.command("extract")
@click.argument("source")
@click.argument("paths", nargs=-1, required=True)
@_source_options
@click.option("--no-streams", is_flag=True, help="Leave NTFS alternate data streams out.")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON report.")
def extract_cmd(source: str, paths: tuple[str, ...], image: str | None, partition: int | None, no_streams: bool,
                as_json: bool) -> None:
    """Copy files or folders PATH... out of a volume inside SOURCE into the folder DEST (the last argument),
    keeping modification times. Nothing is written outside DEST."""
    from rescuekit.errors import RescueError, UsageError
    from rescuekit.files.extract import Extractor
    from rescuekit.files.source import open_source

    if len(paths) < 2:
        raise UsageError("extract needs at least one PATH and a DEST folder")
    *wanted, dest = paths
    import os

    if not os.path.isdir(dest):
        raise UsageError(f"destination folder {dest} does not exist")
    with open_source(source, image=image, partition=partition) as src:
        tree = src.tree()
        nodes = [tree.lookup(p) for p in wanted]  # every PATH checked before anything is written
        ex = Extractor(tree, dest, streams=not no_streams)
        for node in nodes:
            ex.extract(node)
        r = ex.report
        if as_json:
            doc = {"files": r.files, "folders": r.folders, "streams": r.streams, "links": r.links, "bytes": r.bytes,
                   "notes": r.notes, "errors": r.errors}
            if src.view is not None:
                doc["chunks_read"] = src.view.chunks_read
            click.echo(json.dumps(doc, indent=1))
        else:
            for note in r.notes:
                click.echo(f"rescuekit: note: {note}", err=True)
            links = f" ({r.links} as hard links)" if r.links else ""
            click.echo(f"extracted {r.files} file(s){links}, {r.folders} folder(s), {r.streams} stream(s), "
                       f"{r.bytes} bytes into {dest}")
        if r.errors:
            for e in r.errors[1:]:
                click.echo(f"rescuekit: warning: {e}", err=True)
            more = f" ({len(r.errors) - 1} more above)" if len(r.errors) > 1 else ""
            raise RescueError(f"{len(r.errors)} item(s) could not be extracted; first: {r.errors[0]}{more}")


@click.command("find")
@click.argument("source")
@click.argument("pattern")
@_source_options
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def find_cmd(source: str, pattern: str, image: str | None, partition: int | None, as_json: bool) -> None:
    """Search the names of a volume inside SOURCE for the glob PATTERN (e.g. '*thesis*.docx'; case-insensitive)."""
    from rescuekit.files.source import open_source

    with open_source(source, image=image, partition=partition) as src:
        tree = src.tree()
        hits = list(tree.find(pattern))
        if as_json:
            click.echo(json.dumps({"source": src.where, "partition": src.choice.number, "pattern": pattern,
                                   "matches": [n.doc() for n in hits]}, indent=1))
            return
        for n in hits:
            click.echo(_line(n))


@click.command("mount")
@click.argument("source")
@click.argument("mountpoint")
@_source_options
def mount_cmd(source: str, mountpoint: str, image: str | None, partition: int | None) -> None:
    """Show a volume inside SOURCE read-only at the folder MOUNTPOINT (Linux, FUSE) until it is unmounted
    with `fusermount -u MOUNTPOINT`; runs in the foreground."""
    import os
    import sys

    from rescuekit.errors import UsageError
    from rescuekit.files.mount import load_fuse, mount
    from rescuekit.files.source import open_source

    if not sys.platform.startswith("linux"):
        raise UsageError("rescuekit mount works on Linux only (FUSE); use `rescuekit extract` here")
    load_fuse()  # before anything is opened
    if not os.path.isdir(mountpoint):
        raise UsageError(f"mount point {mountpoint} is not a folder")
    with open_source(source, image=image, partition=partition) as src:
        tree = src.tree()
        click.echo(f"{src.where}, partition {src.choice.number} ({src.fs}) mounted read-only at {mountpoint}; "
                   f"unmount with: fusermount -u {mountpoint}", err=True)
        mount(tree, mountpoint, f"rescuekit:{src.choice.number}")


def register(group: click.Group) -> None:
    for cmd in (files_cmd, extract_cmd, find_cmd, mount_cmd):
        cmd.help = f"{inspect.cleandoc(cmd.help or '')}\n\n{_SOURCE_HELP}"  # cleaned before the join
    group.add_command(files_cmd)
    group.add_command(extract_cmd)
    group.add_command(find_cmd)
    group.add_command(mount_cmd)

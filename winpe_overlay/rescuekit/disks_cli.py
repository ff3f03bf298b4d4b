"""``rescuekit disks``: list disks (or the given image files) with partitions, file systems and labels."""
from __future__ import annotations

import json

import click

from rescuekit.errors import RescueError


def _size(n: int | None) -> str:
    if n is None:
        return "-"
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def _collect(paths: tuple[str, ...]) -> list[dict]:
    from rescuekit.disk import device, inventory  # when the verb runs: `--help` and other verbs never need them

    out = []
    if paths:
        for p in paths:
            with device.open_source(p) as dev:
                out.append(inventory.describe(dev))
        return out
    for info in inventory.list_disks():
        try:
            with device.open_source(info.path) as dev:
                dev.info = info
                out.append(inventory.describe(dev))
        except RescueError as exc:
            from dataclasses import asdict

            out.append({**asdict(info), "table": None, "partitions": [], "warnings": [], "error": str(exc)})
    return out


def _print(disks: list[dict]) -> None:
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    import sys

    # Not a terminal (pipe, test): don't squeeze the table into 80 columns.
    console = Console(width=None if sys.stdout.isatty() else 160)
    if not disks:
        console.print("no disks found")
    for d in disks:
        flags = [f for f, on in (("removable", d.get("removable")), ("SYSTEM", d.get("is_system"))) if on]
        title = " ".join(x for x in (d["path"], _size(d.get("size")), d.get("vendor") or "", d.get("model") or "",
                                      f"[{d.get('bus')}]" if d.get("bus") else "",
                                      f"table: {d.get('table') or '?'}", " ".join(flags),
                                      f"mounted: {', '.join(d['mounts'])}" if d.get("mounts") else "") if x)
        console.print(f"[bold]{escape(title)}[/bold]")
        if d.get("error"):
            console.print(f"  [red]{escape(d['error'])}[/red]")
        for w in d.get("warnings", []):
            console.print(f"  [yellow]warning:[/yellow] {escape(w)}")
        if d.get("partitions"):
            t = Table(box=None, padding=(0, 2))
            for col in ("#", "start", "size", "type", "fs", "label", "used", "name"):
                t.add_column(col, justify="right" if col in ("#", "start", "size", "used") else "left", no_wrap=True)
            for p in d["partitions"]:
                kind = p["type_name"] + (" *" if p.get("bootable") else "")
                fs = (p.get("fs") or "") + (" (dirty)" if p.get("dirty") else "")
                cells = (str(p["number"]), _size(p["start"]), _size(p["size"]), kind, fs, p.get("label") or "",
                         _size(p.get("used_bytes")) if p.get("used_bytes") is not None else "", p.get("name") or "")
                t.add_row(*map(escape, cells))
            console.print(t)
        elif d.get("volume"):
            v = d["volume"]
            console.print(escape(f"  volume: {v.get('fs')} label={v.get('label') or '-'} "
                                 f"used={_size(v.get('used_bytes'))}"))


def register(group: click.Group) -> None:
    @group.command("disks")
    @click.argument("paths", nargs=-1)
    @click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
    def disks(paths: tuple[str, ...], as_json: bool) -> None:
        """List disks, or the disk/partition image files PATHS, with partitions, file systems and labels."""
        data = _collect(paths)
        if as_json:
            click.echo(json.dumps(data, indent=2))
        else:
            _print(data)

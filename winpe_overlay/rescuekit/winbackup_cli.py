"""CLI: ``rescuekit winbackup list|restore|import`` for Windows' own system image backups."""
from __future__ import annotations

import json

import click

from rescuekit.imaging.units import human


def _emit_json(obj: object) -> None:
    click.echo(json.dumps(obj, indent=1))


@click.group()
def winbackup() -> None:
    """Windows' own system image backups (WindowsImageBackup folders)."""


def set_doc(bset, vols) -> dict:
    return {"path": str(bset.path), "machine": bset.machine, "date": bset.when,
            "specs_version": bset.specs.version, "system_state": bset.specs.system_state,
            "all_critical": bset.specs.all_critical, "volumes": [v.doc() for v in vols]}


@winbackup.command("list")
@click.argument("path", required=False)
@click.option("--json", "as_json", is_flag=True, help="Print the list as JSON.")
def list_cmd(path: str | None, as_json: bool) -> None:
    """List the backups under PATH (a drive, WindowsImageBackup, a computer's folder or a "Backup ..." folder;
    default: every attached volume)."""
    from rescuekit.winbackup.specs import find_sets
    from rescuekit.winbackup.volumes import open_volumes

    docs = []
    for bset in find_sets(path):
        vols = open_volumes(bset)
        try:
            docs.append(set_doc(bset, vols))
        finally:
            for v in vols:
                v.disk.close()
    if as_json:
        _emit_json({"backups": docs})
        return
    if not docs:
        click.echo("no Windows system image backups found on the attached volumes")
    for d in docs:
        click.echo(f"{d['machine']}  {d['date'] or '?'}  {d['path']}")
        for v in d["volumes"]:
            roles = [r for r, on in (("Windows", v["windows"]), (f"boot manager ({v['boot_manager']})",
                                                                  v["boot_manager"])) if on]
            used = human(v["used_bytes"]) if v["used_bytes"] is not None else "?"
            click.echo(f"  {v['drive_letter'] or '--':<3} {v['guid']}  {v['fs']:<6} {human(v['size']):>10} "
                       f"(used {used:>9})  {repr(v['label']) if v['label'] else '':<18} {', '.join(roles)}")
            for w in v["warnings"]:
                click.echo(f"rescuekit: warning: {v['file']}: {w}", err=True)


def register(group: click.Group) -> None:
    group.add_command(winbackup)

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
    from rescuekit.errors import RescueError
    from rescuekit.winbackup.specs import find_set_folders, load_set
    from rescuekit.winbackup.volumes import open_volumes

    folders = find_set_folders(path)
    docs, errors = [], []
    for folder in folders:
        try:
            bset = load_set(folder)
            vols = open_volumes(bset)
        except RescueError as exc:
            if len(folders) == 1 and path is not None:
                raise  # the one backup asked for: an error, not an empty list
            errors.append({"path": str(folder), "error": str(exc)})  # one broken backup must not hide the others
            continue
        try:
            docs.append(set_doc(bset, vols))
        finally:
            for v in vols:
                v.disk.close()
    for e in errors:
        click.echo(f"rescuekit: warning: skipped {e['path']}: {e['error']}", err=True)
    if as_json:
        _emit_json({"backups": docs, "errors": errors})
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


@winbackup.command("restore")
@click.argument("path")
@click.argument("target")
@click.option("--volume", "volumes", multiple=True, metavar="GUID|LETTER",
              help="Restore only this volume (repeatable; default: all). Keep the boot volume for a bootable disk.")
@click.option("--layout", type=click.Choice(["auto", "bios", "uefi"]), default="auto", show_default=True,
              help="Partition layout: BIOS (MBR, System Reserved active, C:) or UEFI (GPT: ESP, MSR, C:).")
@click.option("--partition", type=int, metavar="N",
              help="Restore ONE volume (--volume) onto partition N of TARGET, keeping the rest of the disk.")
@click.option("--grow", is_flag=True, help="Let the last partition reach the end of TARGET (its file system "
              "keeps its size: extend it in Windows).")
@click.option("--verify", is_flag=True, help="Read everything back and compare.")
@click.option("--allow-hibernated", is_flag=True, help="Restore a volume Windows left hibernated or with an "
              "unfinished NTFS journal (the restored disk then holds the hibernated session).")
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def restore_cmd(path: str, target: str, volumes: tuple[str, ...], layout: str, partition: int | None, grow: bool,
                verify: bool, allow_hibernated: bool, yes: bool, as_json: bool) -> None:
    """Restore the backup at PATH onto TARGET (disk or image file) in a bootable layout; or, with
    --partition, one volume onto an existing partition."""
    from rescuekit.errors import UsageError
    from rescuekit.winbackup.restore import restore_backup, restore_volume

    def confirm(text: str) -> bool:
        click.echo(text, err=True)
        return click.confirm("Overwrite it? All data on it will be lost", default=False, err=True)

    if partition is not None:
        if len(volumes) != 1 or grow:
            raise UsageError("--partition restores exactly one volume: give one --volume GUID|LETTER (no --grow)")
        res = restore_volume(path, target, volume=volumes[0], partition=partition, verify=verify,
                             confirm=None if yes else confirm, progress=False if as_json else None,
                             allow_hibernated=allow_hibernated)
        if as_json:
            _emit_json(res)
            return
        for w in res["warnings"]:
            click.echo(f"rescuekit: warning: {w}", err=True)
        click.echo(f"restored volume {res['guid']} onto partition {partition} of {target} (offset {res['offset']}): "
                   f"wrote {human(res['bytes_written'])}{', verified' if res['verified'] else ''}")
        return
    res = restore_backup(path, target, volumes=volumes, layout=layout, verify=verify, grow=grow,
                         confirm=None if yes else confirm, progress=False if as_json else None,
                         allow_hibernated=allow_hibernated)
    if as_json:
        _emit_json(res)
        return
    for w in res["warnings"]:
        click.echo(f"rescuekit: warning: {w}", err=True)
    click.echo(f"restored {res['machine']} onto {res['target']} ({res['layout'].upper()} layout, "
               f"{len(res['partitions'])} partitions): wrote {human(res['bytes_written'])}"
               f"{', verified' if res['verified'] else ''}"
               + (f"; the last volume shrunk to {human(res['shrunk_to'])}" if res.get("shrunk_to") else ""))
    click.echo("if Windows does not start (its BCD names the original disk), run `bcdboot C:\\Windows` from the "
               "rescue disc once")


@winbackup.command("import")
@click.argument("path")
@click.argument("repo")
@click.option("--volume", "volumes", multiple=True, metavar="GUID|LETTER", help="Import only this volume.")
@click.option("--layout", type=click.Choice(["auto", "bios", "uefi"]), default="auto", show_default=True)
@click.option("--name", help="Image name (default: machine and backup date).")
@click.option("--allow-hibernated", is_flag=True, help="Import a volume Windows left hibernated (the image then "
              "holds the hibernated session).")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def import_cmd(path: str, repo: str, volumes: tuple[str, ...], layout: str, name: str | None, allow_hibernated: bool,
               as_json: bool) -> None:
    """Store the backup at PATH as an image in the repository REPO (the disk `winbackup restore` builds)."""
    from rescuekit.winbackup.restore import import_backup

    doc = import_backup(path, repo, volumes=volumes, layout=layout, name=name, progress=False if as_json else None,
                        allow_hibernated=allow_hibernated)
    if as_json:
        _emit_json({"id": doc["id"], "name": doc["name"], "partitions": doc["partitions"], "totals": doc["totals"],
                    "warnings": doc["warnings"]})
        return
    for w in doc["warnings"]:
        click.echo(f"rescuekit: warning: {w}", err=True)
    click.echo(f"image {doc['id']} ({doc['name']}): disk {human(doc['totals']['disk_bytes'])}, stored "
               f"{human(doc['totals']['new_stored_bytes'])} new")


def register(group: click.Group) -> None:
    group.add_command(winbackup)

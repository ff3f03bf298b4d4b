"""CLI: capture, images, restore, verify, forget, prune."""
from __future__ import annotations

import json

import click

from rescuekit.errors import RescueError, UsageError
from rescuekit.imaging.units import human


def _emit_json(obj: object) -> None:
    click.echo(json.dumps(obj, indent=1))


def _size_opt(value: str | None) -> int | None:
    if value is None:
        return None
    units = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30}
    v = value.strip().lower().rstrip("ib")
    try:
        return int(v[:-1]) * units[v[-1]] if v and v[-1] in units else int(v)
    except (ValueError, KeyError):
        raise UsageError(f"bad size {value!r} (e.g. 1M, 64M)") from None


force_unlock_opt = click.option("--force-unlock", is_flag=True,
                                help="Remove other processes' locks first (only if none is really running).")


@click.command()
@click.argument("source")
@click.argument("repo")
@click.option("--name", help="Image name (default: the source's file name).")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@click.option("--chunk-size", hidden=True, help="Chunk size for a NEW repository (power of two, default 256K).")
@click.option("--pack-size", hidden=True, help="Pack size cap for a NEW repository (default 64M).")
@click.option("--allow-hibernated", is_flag=True, help="Capture a Windows volume that is hibernated or was shut "
              "down with Fast Startup (the image then holds the hibernated session).")
@click.option("--keep-pagefile", is_flag=True, help="Store pagefile.sys, swapfile.sys and hiberfil.sys data too "
              "(by default stored as zeros; Windows recreates them).")
@click.option("--recovery-password", "recovery_passwords", multiple=True, metavar="KEY",
              help="BitLocker recovery password (48 digits, 123456-...-...): capture the volume it unlocks "
              "decrypted, only its used clusters; it then restores as an UNENCRYPTED volume. Repeat for more volumes.")
@force_unlock_opt
def capture(source: str, repo: str, name: str | None, as_json: bool, chunk_size: str | None,
            pack_size: str | None, allow_hibernated: bool, keep_pagefile: bool, recovery_passwords: tuple[str, ...],
            force_unlock: bool) -> None:
    """Capture SOURCE (disk, partition or image file) into the repository REPO (created if missing)."""
    from rescuekit.imaging.capture import capture as do_capture
    from rescuekit.volumes import windows_label_repository

    with windows_label_repository(repo, "capture", writable=True) as (where, note):
        doc = do_capture(source, where, name=name, progress=False if as_json else None,
                         chunk_size=_size_opt(chunk_size), pack_size=_size_opt(pack_size), force_unlock=force_unlock,
                         allow_hibernated=allow_hibernated, keep_pagefile=keep_pagefile,
                         recovery_passwords=list(recovery_passwords))
        note(f"captured {source} as image {doc['id']} (#{doc['seq']}, {doc['name']})")
    t = doc["totals"]
    if as_json:
        _emit_json({"id": doc["id"], "seq": doc["seq"], "name": doc["name"], "partitions": doc["partitions"],
                    "totals": t, "warnings": doc["warnings"]})
        return
    for w in doc["warnings"]:
        click.echo(f"rescuekit: warning: {w}", err=True)
    for p in doc["partitions"]:
        for line in _state_notes(p):
            click.echo(f"rescuekit: note: partition {p['number']}: {line}", err=True)
    secs = max(t["seconds"], 1e-6)
    click.echo(f"image {doc['id']} (#{doc['seq']}, {doc['name']}): disk {human(t['disk_bytes'])}, read {human(t['stored_bytes'])} "
               f"in {t['seconds']:.1f} s ({t['stored_bytes'] / secs / 1e6:.0f} MB/s); new data "
               f"{human(t['new_bytes'])} stored as {human(t['new_stored_bytes'])} in {t['new_packs']} pack(s)")


def _state_notes(p: dict) -> list[str]:
    """What an image partition's Windows state means for the user (images, capture)."""
    out = []
    if p.get("fs") == "bitlocker":
        out.append("BitLocker: stored whole as ciphertext (every sector; it restores as the same encrypted "
                   "volume, unlocked by its own password or recovery key; capture with --recovery-password to "
                   "store only its used data, decrypted)")
    if (bl := p.get("bitlocker")) and bl.get("decrypted"):
        out.append(f"BitLocker volume ({bl.get('encryption')}) captured DECRYPTED with its recovery password: "
                   "it restores as an UNENCRYPTED volume (turn BitLocker on again in Windows after a restore)")
    st = p.get("windows_state") or []
    if "hibernated" in st or "journal-unclean" in st:
        out.append("holds a hibernated Windows session (captured with --allow-hibernated)")
    if "dirty" in st:
        out.append("NTFS marked dirty at capture: run chkdsk on it after a restore")
    if p.get("excluded"):
        out.append("stored as zeros: " + ", ".join(f"{k} ({human(v)})" for k, v in sorted(p["excluded"].items())))
    return out


@click.command()
@click.argument("repo")
@click.option("--json", "as_json", is_flag=True, help="Print the list as JSON.")
def images(repo: str, as_json: bool) -> None:
    """List the images in REPO, oldest first (by sequence number)."""
    from rescuekit.imaging.restore import unfinished_restores
    from rescuekit.repo.repository import Repository

    r = Repository.open(repo)
    docs, bad = r.scan_images()
    unfinished = unfinished_restores(r.root)
    rows = [{"seq": d.get("seq"), "id": d["id"], "name": d.get("name"), "created": d.get("created"),
             "source": d["source"].get("path"), "disk_bytes": d["source"].get("size"), "table": d["table"]["kind"],
             "partitions": [{k: p.get(k) for k in ("number", "start", "size", "fs", "label", "windows_state",
                                                   "excluded", "bitlocker")} for p in d["partitions"]],
             "stored_bytes": d["totals"]["stored_bytes"], "new_stored_bytes": d["totals"]["new_stored_bytes"]}
            for d in docs]
    if as_json:
        _emit_json({"repository": str(r.root), "images": rows,
                    "unreadable_manifests": [{"file": str(p), "error": why} for p, why in bad],
                    "unfinished_restores": unfinished})
        return
    if not rows:
        click.echo(f"no images in {r.root}")
    else:
        click.echo(f"{'SEQ':>5}  {'ID':<16}  {'NAME':<20} {'CREATED (its clock)':<20} {'DISK':>10} {'TABLE':<5} "
                   f"{'DATA':>10} {'ADDED':>10}  PARTITIONS")
        for x in rows:
            parts = " ".join(f"{p['number']}:{p['fs']}" + (f"({p['label']})" if p.get("label") else "")
                             + (f"[{','.join(p['windows_state'])}]" if p.get("windows_state") else "")
                             for p in x["partitions"])
            seq = "-" if x["seq"] is None else str(x["seq"])  # format-1 images have none
            click.echo(f"{seq:>5}  {x['id']:<16}  {str(x['name'])[:20]:<20} {x['created'][:19]:<20} "
                       f"{human(x['disk_bytes']):>10} {x['table']:<5} {human(x['stored_bytes']):>10} "
                       f"{human(x['new_stored_bytes']):>10}  {parts}")
            for p in x["partitions"]:
                for line in _state_notes(p):
                    click.echo(f"{'':25}partition {p['number']}: {line}")
    for _p, why in bad:
        click.echo(f"rescuekit: warning: {why}", err=True)
    for u in unfinished:
        click.echo(f"WARNING: a restore of image {str(u.get('image'))[:16]} onto {u.get('target')} started "
                   f"{u.get('started')} did not finish: that target is incomplete; restore it again", err=True)


@click.command()
@click.argument("repo")
@click.argument("target")
@click.option("--image", "image", default="latest", show_default=True, help="Image id, id prefix, name or 'latest'.")
@click.option("--partition", type=int, help="Restore only this partition number (TARGET: a partition, a "
              "partition image, or a disk whose partition of that number is large enough).")
@click.option("--verify", is_flag=True, help="Re-read what was written and compare hashes.")
@click.option("--shrink-to", help="Restore onto this size (e.g. 40G): the NTFS or FAT volume (a whole disk's last "
              "partition) shrinks; a target smaller than the image shrinks it to the target's size anyway.")
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@force_unlock_opt
def restore(repo: str, target: str, image: str, partition: int | None, verify: bool, shrink_to: str | None,
            yes: bool, as_json: bool, force_unlock: bool) -> None:
    """Restore an image from REPO onto TARGET (disk, partition or image file; a missing file is created)."""
    from rescuekit.imaging.restore import restore as do_restore

    def confirm(text: str) -> bool:
        click.echo(text, err=True)
        return click.confirm("Overwrite it? All data on it will be lost", default=False, err=True)

    from rescuekit.volumes import windows_label_repository

    with windows_label_repository(repo, "restore", writable=False) as (where, note):
        res = do_restore(where, target, image=image, partition=partition, verify=verify,
                         confirm=None if yes else confirm, progress=False if as_json else None,
                         force_unlock=force_unlock, shrink_to=_size_opt(shrink_to))
        note(f"restored image {res['image']} ({res['name']}) onto {target}: {res['bytes_written']} bytes"
             + (", verified" if verify else ""))
    if as_json:
        _emit_json(res)
    else:
        click.echo(f"restored image {res['image']} ({res['name']}) onto {target}: {human(res['bytes_written'])} "
                   f"in {res['seconds']:.1f} s" + (", verified" if verify else "")
                   + (f"; {res['shrunk_fs']} shrunk to {human(res['shrunk_to'])}" if res.get("shrunk_to") else "")
                   + "".join(f"; partition {m['number']} moved down {human(m['from'] - m['to'])}"
                             for m in res.get("moved_partitions", [])))


@click.command()
@click.argument("repo")
@click.option("--image", help="Check only this image (id, prefix, name or 'latest').")
@click.option("--read-data", is_flag=True, help="Re-read every pack, decompress and re-hash every chunk.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@force_unlock_opt
def verify(repo: str, image: str | None, read_data: bool, as_json: bool, force_unlock: bool) -> None:
    """Check the repository's structure (and with --read-data all its data)."""
    from rescuekit.repo.check import check_repository
    from rescuekit.repo.repository import Repository

    r = Repository.open(repo)
    with r.lock(exclusive=False, command="verify", force_unlock=force_unlock):
        rep = check_repository(r, image=image, read_data=read_data, progress=False if as_json else None)
    if as_json:
        _emit_json(rep)
    else:
        for p in rep["problems"]:
            click.echo(f"problem: {p}")
        for n in rep["notes"]:
            click.echo(f"note: {n}")
        for d in rep["damaged"]:
            rs = ", ".join(f"{o}+{n}" for o, n in d["ranges"][:8]) + (" ..." if len(d["ranges"]) > 8 else "")
            click.echo(f"damaged: image {d['image']} ({d['name']}): bytes {rs}")
        if rep["orphan_packs"]:
            click.echo(f"note: {rep['orphan_packs']} unreferenced pack(s) (from an interrupted write); "
                       "`rescuekit prune` removes them")
        click.echo(f"{'OK' if rep['ok'] else 'FAILED'}: {rep['images']} image(s), {rep['packs']} pack(s), "
                   f"{rep['chunks']} chunk(s)" + (f", {human(rep['bytes_read'])} read" if read_data else ""))
    if not rep["ok"]:
        raise click.exceptions.Exit(1)


@click.command()
@click.argument("repo")
@click.argument("image", nargs=-1, required=True)
@force_unlock_opt
def forget(repo: str, image: tuple[str, ...], force_unlock: bool) -> None:
    """Remove images (id, id prefix or unique name) from REPO; `prune` then frees their space."""
    from rescuekit.repo.prune import forget as do_forget
    from rescuekit.repo.repository import Repository

    r = Repository.open(repo)
    with r.lock(exclusive=True, command="forget", force_unlock=force_unlock) as lock:
        for d in do_forget(r, list(image), lock):
            click.echo(f"removed image {d['id']} ({d.get('name')})")


@click.command()
@click.argument("repo")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@force_unlock_opt
def prune(repo: str, as_json: bool, force_unlock: bool) -> None:
    """Delete data no image uses any more (after `forget` or an interrupted capture)."""
    from rescuekit.repo.prune import prune as do_prune
    from rescuekit.repo.repository import Repository

    r = Repository.open(repo)
    with r.lock(exclusive=True, command="prune", force_unlock=force_unlock) as lock:
        res = do_prune(r, lock)
    if as_json:
        _emit_json(res)
        return
    freed = res["bytes_freed"]
    net = f"freed {human(freed)}" if freed >= 0 else f"freed nothing (it wrote {human(-freed)} more than it deleted)"
    click.echo(f"{net}: {res['packs_deleted']} pack(s) deleted, {res['packs_rewritten']} rewritten into "
               f"{res['packs_written']}, {res['packs_kept']} kept")


def register(group: click.Group) -> None:
    for cmd in (capture, images, restore, verify, forget, prune):
        group.add_command(cmd)


__all__ = ["register", "RescueError"]

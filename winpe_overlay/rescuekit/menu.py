"""``rescuekit menu``: the rescue environment's full-screen menu (the launcher's default on WinPE and the Linux
base; on hosts it works on image files given on the command line). See docs/menu.md.

Only click and the config reader are imported here: every other verb's start stays fast; the UI (rich pages and
the key reader in ``rescuekit.tui``) and the flows (``rescuekit.menu_app``) load when ``menu`` runs.
``python -m rescuekit.menu`` is the same as ``python -m rescuekit menu``.
"""
from __future__ import annotations

import click

from rescuekit.config import ACTIONS, THEN


@click.command("menu")
@click.argument("paths", nargs=-1)
@click.option("--action", type=click.Choice(ACTIONS), help="Start an action unattended instead of the main "
              "screen (default: the build's default_action).")
@click.option("--repository", help="Repository folder (default: the build's; also searched for on every volume).")
@click.option("--target", help="Disk to restore onto, or 'auto' (the only internal disk that can hold the image) "
              "or 'auto:RULES', e.g. auto:model=*Samsung*,size~500GB (docs/menu.md).")
@click.option("--image", help="Image id, name or 'latest' for an unattended restore.")
@click.option("--then", "then", type=click.Choice(THEN), help="After an unattended restore (default: the build's, "
              "else menu).")
@click.option("--countdown", type=click.IntRange(0, 3600), default=10, show_default=True,
              help="Seconds the unattended countdown screen waits (Esc cancels).")
@click.option("--no-scan", is_flag=True, help="Do not search attached volumes nor list this machine's disks: only PATHS and "
              "--repository (hosts working on image files).")
@click.option("--log-dir", help="Where the session log is written (default: X:\\ on WinPE, /run/rescuekit on "
              "Linux, else the temp folder).")
def menu(paths: tuple[str, ...], action: str | None, repository: str | None, target: str | None, image: str | None,
         then: str | None, countdown: int, no_scan: bool, log_dir: str | None) -> None:
    """The rescue menu. PATHS: folders to search for repositories and disk image files to offer as disks."""
    from rescuekit.config import load_settings
    from rescuekit.menu_app import App
    from rescuekit.target_rules import is_auto, parse

    settings = load_settings()
    app = App(settings, list(paths), scan=not no_scan, log_dir=log_dir, repository=repository)
    target = target or settings.target
    if is_auto(target):
        parse(target)  # a bad rule is refused before anything starts
    # Unattended only when asked for: --action restore on the command line, or a build for --target auto. A build
    # whose launcher runs `rescuekit restore` onto a named disk (which asks) must not make a hand-started menu
    # overwrite that disk without a question.
    if action is None:
        action = "restore" if settings.default_action == "restore" and is_auto(target) else "menu"
    rc = app.start(action=action, target=target,
                   image=image or settings.image, then=then or settings.then or "menu", countdown=countdown)
    raise click.exceptions.Exit(rc)


def register(group: click.Group) -> None:
    group.add_command(menu)


def main() -> None:
    import sys

    from rescuekit.cli import COMMAND_MODULES, _register_all, cli, run

    _register_all(cli, COMMAND_MODULES)
    run(cli, ["menu", *sys.argv[1:]])


if __name__ == "__main__":
    main()

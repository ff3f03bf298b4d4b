"""A small text menu over the runtime's commands: the launcher's ``menu`` default action.

``python -m rescuekit.menu`` (what ``X:\\rescuekit\\launch.cmd`` runs) reads the build's config.toml for the
repository / target / image defaults, then runs the chosen ``rescuekit`` command in-process. Exit (0, or end of
input) returns to the WinPE command prompt.
"""
from __future__ import annotations

import click

from rescuekit import __version__
from rescuekit.cli import COMMAND_MODULES, _one_line, _register_all, cli, run, safe_std_streams
from rescuekit.config import Settings, load_settings
from rescuekit.errors import RescueError

CHOICES = [
    ("1", "List disks"),
    ("2", "List images in the repository"),
    ("3", "Capture a disk into the repository"),
    ("4", "Restore an image onto a disk"),
    ("5", "Verify the repository"),
    ("6", "Change the repository folder"),
    ("0", "Exit to the command prompt"),
]


def run_command(args: list[str]) -> int:
    """Run ``rescuekit ARGS`` in-process; its one-line errors are printed by the CLI itself."""
    click.echo(f"> rescuekit {' '.join(args)}")
    try:
        run(cli, args)
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        if code:
            click.echo(f"(exit code {code})")
        return code
    return 0


def _ask(text: str, default: str | None) -> str:
    return click.prompt(text, default=default, show_default=default is not None).strip()


def menu(settings: Settings) -> int:
    _register_all(cli, COMMAND_MODULES)
    repo = settings.repository
    while True:
        click.echo()
        click.echo(f"rescuekit {__version__} - repository: {repo or '(not set)'}")
        for key, label in CHOICES:
            click.echo(f"  {key}  {label}")
        try:
            choice = _ask("Choice", None)
            if choice == "0":
                return 0
            if choice == "1":
                run_command(["disks"])
            elif choice == "6":
                repo = _ask("Repository folder", repo)
            elif choice in ("2", "3", "4", "5"):
                if not repo:
                    repo = _ask("Repository folder", None)
                if choice == "2":
                    run_command(["images", repo])
                elif choice == "5":
                    run_command(["verify", repo])
                elif choice == "3":
                    source = _ask(r"Disk to capture (e.g. \\.\PhysicalDrive0)", settings.target)
                    name = _ask("Image name", settings.image or "image")
                    run_command(["capture", source, repo, "--name", name])
                else:
                    image = _ask("Image (id, name or latest)", settings.image or "latest")
                    target = _ask(r"Disk to overwrite (e.g. \\.\PhysicalDrive0)", settings.target)
                    run_command(["restore", repo, target, "--image", image])
            else:
                click.echo(f"unknown choice {choice!r}")
        except (click.Abort, EOFError):
            click.echo()
            return 0


def main() -> None:
    safe_std_streams()
    try:
        settings = load_settings()
    except RescueError as exc:  # a damaged config.toml: one line, then launch.cmd drops to the prompt
        click.echo(f"rescuekit: error: {_one_line(exc)}", err=True)
        raise SystemExit(exc.exit_code) from None
    raise SystemExit(menu(settings))


if __name__ == "__main__":
    main()

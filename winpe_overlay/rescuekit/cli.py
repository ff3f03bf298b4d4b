"""The ``rescuekit`` command group and its error handling.

Runtime verbs (capture, restore, verify, disks, ...) register here; the host-side
``builder.cli`` adds ``build`` and ``inspect`` to the same group.
"""
from __future__ import annotations

import errno
import importlib
import os
import shutil
import sys

import click

from rescuekit import __version__
from rescuekit.errors import RescueError

# Modules that define runtime commands: each has ``register(group)``.
# A module listed here that is not present (e.g. trimmed from a build) is skipped.
COMMAND_MODULES = [
    "rescuekit.disks_cli",    # disks
    "rescuekit.imaging_cli",  # capture, images, restore, verify, forget, prune
    "rescuekit.winbackup_cli",  # winbackup list|restore|import
    "rescuekit.menu",         # menu (the rescue environment's UI; imports it only when run)
    "rescuekit.files_cli",    # files, extract, find, mount
]


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="rescuekit")
def cli() -> None:
    """Build Windows rescue media and capture, restore and verify disk images."""


def _register_all(group: click.Group, modules: list[str]) -> None:
    for name in modules:
        try:
            mod = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name == name:
                continue
            raise
        mod.register(group)


def _one_line(exc: BaseException) -> str:
    if isinstance(exc, shutil.Error) and exc.args and isinstance(exc.args[0], list) and exc.args[0]:
        # copytree collects every failure as (src, dst, why): name the first and count the rest
        failures = exc.args[0]
        src, _dst, why = failures[0]
        more = f" (and {len(failures) - 1} more)" if len(failures) > 1 else ""
        return f"cannot copy {src}: {why}{more}"
    if isinstance(exc, OSError):
        where = exc.filename
        what = exc.strerror or str(exc)
        if exc.errno == errno.ENOSPC:
            what = "no space left on device"
        return f"{what}: {where}" if where else what
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__


def safe_std_streams() -> None:
    """Output that never fails on a character (image names, labels and paths can be any Unicode).

    Windows writes redirected output (a pipe or a file, not the console) in the ANSI code page, e.g. cp1252: an
    image named "Диск" was captured and then the command died in UnicodeEncodeError, and ``images`` failed for
    that repository from then on. Such output is UTF-8 now; elsewhere an encoding that cannot show a character
    escapes it. The Windows console (WriteConsoleW) is left alone.
    """
    for stream in (sys.stdout, sys.stderr):
        reconfigure = getattr(stream, "reconfigure", None)
        if reconfigure is None:
            continue
        try:
            if sys.platform == "win32" and not stream.isatty():
                reconfigure(encoding="utf-8", errors="backslashreplace")
            elif stream.errors == "strict":
                reconfigure(errors="backslashreplace")
        except (OSError, ValueError):  # closed or detached stream: leave it
            pass


def run(group: click.Group, args: list[str] | None = None) -> None:
    """Run a click group; every failure becomes one line on stderr and an exit code."""
    safe_std_streams()
    debug = bool(os.environ.get("RESCUEKIT_DEBUG"))
    try:
        rv = group.main(args=args, standalone_mode=False)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except click.Abort:
        click.echo("rescuekit: aborted", err=True)
        sys.exit(1)
    except KeyboardInterrupt:
        click.echo("rescuekit: interrupted", err=True)
        sys.exit(130)
    except RescueError as exc:
        if debug:
            raise
        click.echo(f"rescuekit: error: {_one_line(exc)}", err=True)
        sys.exit(exc.exit_code)
    except OSError as exc:
        if debug:
            raise
        click.echo(f"rescuekit: error: {_one_line(exc)}", err=True)
        sys.exit(1)
    except Exception as exc:  # noqa: BLE001 - the last line of defence: never a traceback
        if debug:
            raise
        click.echo(
            f"rescuekit: internal error: {type(exc).__name__}: {_one_line(exc)} "
            "(set RESCUEKIT_DEBUG=1 for a traceback)",
            err=True,
        )
        sys.exit(70)
    sys.exit(rv if isinstance(rv, int) else 0)


def main() -> None:
    """Runtime-only entry point (WinPE: ``python -m rescuekit``)."""
    _register_all(cli, COMMAND_MODULES)
    run(cli)

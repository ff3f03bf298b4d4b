"""The ``rescuekit build`` options of the runtime overlay (issue 3) and the pipeline step they make.

The options store their values in the click context (``expose_value=False``) so ``build_cmd``'s signature stays
as it is; :func:`overlay_factory` (listed in ``build_cli.STEP_FACTORIES``) turns them into a boot.wim step, or
None with ``--no-runtime``. Everything is validated before the build starts.
"""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import click

from builder.config import ACTIONS, COUNTDOWN_MAX, SHELLS, THEN, RuntimeConfig
from builder.drivers import check_output_outside_drivers
from builder.overlay import BACKENDS, OverlayOptions, OverlayResult, apply_overlay
from rescuekit.errors import UsageError
from rescuekit.imaging.units import human

_META = "rescuekit.overlay"


def _store(ctx: click.Context, param: click.Parameter, value: object) -> object:
    ctx.meta.setdefault(_META, {})[param.name] = value
    return value


def _opt(*decls: str, **kw) -> Callable:
    return click.option(*decls, expose_value=False, callback=_store, **kw)


_OPTIONS = [
    _opt("--no-runtime", "no_runtime", is_flag=True, help="Build plain WinPE: no rescuekit runtime in boot.wim."),
    _opt("--python-embed", type=click.Path(path_type=Path), envvar="RESCUEKIT_PYTHON_EMBED",
         help="Official python-X.Y.Z-embed-amd64.zip to bundle (offline); default: download --python-version."),
    _opt("--python-version", default=None, help="CPython to download (default 3.12.10, SHA-256 pinned)."),
    _opt("--python-sha256", default=None, help="SHA-256 of the embeddable zip, for versions without a pin."),
    _opt("--wheelhouse", type=click.Path(path_type=Path), envvar="RESCUEKIT_WHEELHOUSE",
         help="Folder of win_amd64 wheels (offline); default: pip download into the user cache."),
    _opt("--driver", "drivers", multiple=True, type=click.Path(path_type=Path),
         help="Driver folder with .inf files (repeatable): drvload at boot, or DISM /Add-Driver."),
    _opt("--default-action", type=click.Choice(ACTIONS), default="menu", show_default=True,
         help="What the runtime does at boot."),
    _opt("--repository", default=None, help=r"Image repository: D:\Images, \\server\share\images, or "
         r"LABEL:\folder (the volume labelled LABEL, found at boot), e.g. RKREPO:\images."),
    _opt("--image-name", default=None, help="Image name for capture/restore (A-Z a-z 0-9 . _ - space)."),
    _opt("--target", default=None, help=r"Disk for capture/restore: \\.\PhysicalDriveN, or auto (restore: the "
         "only internal disk that can hold the image; an unattended restore through the menu)."),
    _opt("--then", type=click.Choice(THEN), default="menu", show_default=True,
         help="After a successful unattended capture/restore: poweroff, reboot or the menu (WinPE: the prompt)."),
    _opt("--countdown", type=click.IntRange(0, COUNTDOWN_MAX), default=10, show_default=True,
         help="Seconds to cancel an unattended run at the machine (Linux base)."),
    _opt("--locale", default=None, help="WinPE user locale, e.g. en-US (wpeutil SetUserLocale)."),
    _opt("--network", is_flag=True, help="Start networking at boot (wpeutil InitializeNetwork)."),
    _opt("--shell", type=click.Choice(SHELLS), default="startnet", show_default=True,
         help="Boot chain: startnet.cmd (robust default) or a winpeshl.ini [LaunchApps] list."),
    _opt("--wim-backend", type=click.Choice(BACKENDS), default="wimlib", show_default=True,
         help="Inject with wimlib-imagex update, or DISM mount/commit (Windows)."),
]

_RUNTIME_KEYS = ["python_embed", "python_version", "python_sha256", "wheelhouse", "drivers", "repository",
                 "image_name", "target", "locale"]


def overlay_options(f: Callable) -> Callable:
    """Decorator adding the overlay options to a click command."""
    for opt in reversed(_OPTIONS):
        f = opt(f)
    return f


def options_from(values: dict) -> OverlayOptions | None:
    """Validated OverlayOptions from the stored option values; None for --no-runtime."""
    if values.get("no_runtime"):
        explicit = click.get_current_context(silent=True)
        given = [k for k in _RUNTIME_KEYS if values.get(k) and not _from_env(explicit, k)]
        if given:
            raise UsageError(f"--no-runtime cannot be combined with --{given[0].replace('_', '-')}")
        return None
    config = RuntimeConfig(
        default_action=values.get("default_action") or "menu",
        repository=values.get("repository"),
        image=values.get("image_name"),
        target=values.get("target"),
        locale=values.get("locale"),
        shell=values.get("shell") or "startnet",
        network=bool(values.get("network")),
        then=values.get("then") or "menu",
        countdown=values.get("countdown") if values.get("countdown") is not None else 10,
    )
    if config.target and config.target.startswith("/dev/"):
        raise UsageError(f"--target {config.target} is a Linux device path: WinPE needs \\\\.\\PhysicalDriveN "
                         "(or build with --base linux)")
    opts = OverlayOptions(
        config=config,
        python_embed=values.get("python_embed"),
        python_version=values.get("python_version"),
        python_sha256=values.get("python_sha256"),
        wheelhouse=values.get("wheelhouse"),
        drivers=list(values.get("drivers") or ()),
        backend=values.get("wim_backend") or "wimlib",
    )
    try:
        opts.validate()
    except UsageError as exc:
        # the image name option is --image-name on the build command (--image picks the boot.wim index)
        raise UsageError(str(exc).replace("invalid --image ", "invalid --image-name ")) from None
    return opts


def _from_env(ctx: click.Context | None, key: str) -> bool:
    if ctx is None:
        return False
    src = ctx.get_parameter_source(key)
    return src is not None and src.name == "ENVIRONMENT"


def overlay_factory(_build_opts: object) -> Callable[[Path, Path], None] | None:
    """STEP_FACTORIES entry: the overlay step for the current ``rescuekit build`` invocation."""
    ctx = click.get_current_context(silent=True)
    values = dict(ctx.meta.get(_META, {})) if ctx is not None else {}
    opts = options_from(values)
    if opts is None:
        return None
    output = getattr(_build_opts, "output", None)
    if output is not None:
        check_output_outside_drivers(opts.drivers, output)
        # the user's inputs are only read: the finished ISO must not be renamed over one of them
        out = Path(output).resolve()
        for option, given in (("--python-embed", opts.python_embed), ("--wheelhouse", opts.wheelhouse)):
            if given is not None and (out == Path(given).resolve() or Path(given).resolve() in out.parents):
                raise UsageError(f"output {output} would overwrite {option} {given}")

    def step(boot_wim: Path, workdir: Path) -> None:
        res: OverlayResult = apply_overlay(boot_wim, workdir, opts)
        py = res.manifest["python"]
        click.echo(
            f"runtime: Python {py['version'] or py['xy']}, {len(res.manifest['wheels'])} wheels, "
            f"{len(res.manifest['drivers'])} driver folder(s); boot.wim {human(res.size_before)} -> "
            f"{human(res.size_after)}",
            err=True,
        )
        for w in res.warnings:
            click.echo(f"warning: {w}", err=True)

    return step

"""Render the overlay's jinja2 templates (startnet.cmd, winpeshl.ini, launch.cmd, config.toml).

StrictUndefined so a missing value fails the build instead of leaving a hole in a script; no autoescape
(these are not HTML); .cmd and .ini files get CRLF line endings as cmd.exe and winpeshl expect.
"""
from __future__ import annotations


import jinja2

import winpe_overlay
from builder import layout
from builder.config import RuntimeConfig, cmd_quote, toml_key, toml_value

TEMPLATES = winpe_overlay.TEMPLATES_DIR
CRLF_SUFFIXES = (".cmd", ".ini", ".bat")


def _env() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(TEMPLATES)),
        undefined=jinja2.StrictUndefined,
        autoescape=False,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    env.filters["q"] = cmd_quote
    env.filters["toml"] = toml_value
    env.filters["toml_key"] = toml_key
    return env


def render(template: str, **values: object) -> str:
    """Render ``template`` (a path under winpe_overlay/templates without ``.j2``); CRLF for .cmd/.ini."""
    text = _env().get_template(template + ".j2").render(**values)
    if template.endswith(CRLF_SUFFIXES):
        text = text.replace("\r\n", "\n").replace("\n", "\r\n")
    return text


def render_overlay_files(config: RuntimeConfig, driver_infs: list[str]) -> dict[str, str]:
    """All generated files of the overlay: image-relative path -> text.

    ``driver_infs`` are X: paths of .inf files to ``drvload`` at boot (wimlib backend only).
    """
    config.validated()
    common = {"tool_version": config.tool_version}
    python_cmd = " ".join(
        [cmd_quote(layout.X_PYTHON_EXE), "-B", "-m", *map(cmd_quote, config.launcher_args())]
    )
    files = {
        layout.REL_STARTNET: render(
            layout.REL_STARTNET,
            run_wpeinit=config.shell == "startnet",
            network=config.network,
            locale=config.locale,
            driver_infs=driver_infs,
            appdata_dir=layout.X_APPDATA,
            temp_dir=layout.X_TEMP,
            launcher=layout.X_LAUNCHER,
            **common,
        ),
        layout.REL_LAUNCHER: render(layout.REL_LAUNCHER, command_line=python_cmd,
                                      then=config.then if config.default_action != "menu" else "menu", **common),
        layout.REL_CONFIG: render(layout.REL_CONFIG, table=config.as_toml_table()),
    }
    if config.shell == "winpeshl":
        files[layout.REL_WINPESHL] = render(layout.REL_WINPESHL)
    return files

"""The build's choices, read back at boot from ``X:\\rescuekit\\config.toml`` (written by ``rescuekit build``).

Found next to the bundled Python's folder (``X:\\rescuekit\\python\\python.exe`` -> ``X:\\rescuekit\\config.toml``),
or at ``RESCUEKIT_CONFIG``. A missing file gives the defaults (e.g. when the runtime runs on a normal host).
"""
from __future__ import annotations

import os
import sys
import tomllib
from dataclasses import dataclass, fields
from pathlib import Path

from rescuekit.errors import RescueError

ACTIONS = ("menu", "capture", "restore")


@dataclass(frozen=True)
class Settings:
    default_action: str = "menu"
    repository: str | None = None
    image: str | None = None
    target: str | None = None
    locale: str | None = None
    shell: str = "startnet"
    network: bool = False
    then: str | None = None  # after an unattended restore: menu, reboot, shutdown, exit
    tool_version: str | None = None
    build_time: str | None = None


def default_path() -> Path:
    env = os.environ.get("RESCUEKIT_CONFIG")
    if env:
        return Path(env)
    return Path(sys.executable).resolve().parent.parent / "config.toml"


def load_settings(path: Path | None = None) -> Settings:
    """Read ``[rescuekit]`` from config.toml; unknown keys are ignored, wrong types refused."""
    path = Path(path) if path is not None else default_path()
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return Settings()
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise RescueError(f"bad config file {path}: {exc}") from None
    table = data.get("rescuekit", {})
    if not isinstance(table, dict):
        raise RescueError(f"bad config file {path}: [rescuekit] is not a table")
    values = {}
    for f in fields(Settings):
        if f.name not in table:
            continue
        v = table[f.name]
        want = bool if f.name == "network" else str
        if not isinstance(v, want):
            raise RescueError(f"bad config file {path}: {f.name} must be a {want.__name__}")
        values[f.name] = v
    settings = Settings(**values)
    if settings.default_action not in ACTIONS:
        raise RescueError(f"bad config file {path}: default_action {settings.default_action!r} is not one of "
                          f"{', '.join(ACTIONS)}")
    return settings

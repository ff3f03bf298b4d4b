"""Host entry point: the runtime's command group plus ``build`` and ``inspect``."""
from __future__ import annotations

from rescuekit.cli import COMMAND_MODULES, _register_all, cli, run

# Host-only modules with ``register(group)``.
BUILDER_COMMAND_MODULES = [
    "builder.build_cli",    # build
    "builder.inspect_cli",  # inspect
    "builder.usb_cli",      # usb
]


def main() -> None:
    _register_all(cli, COMMAND_MODULES + BUILDER_COMMAND_MODULES)
    run(cli)

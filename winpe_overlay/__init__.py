"""Data package: the jinja2 templates laid into boot.wim (see ``templates/``).

The rescue runtime itself is the ``rescuekit`` package in ``winpe_overlay/rescuekit``.
"""
from pathlib import Path

TEMPLATES_DIR = Path(__file__).resolve().parent / "templates"

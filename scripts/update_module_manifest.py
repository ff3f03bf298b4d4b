#!/usr/bin/env python3
"""Rewrite winpe_overlay/rescuekit/MODULES.txt from the source tree (run after adding or removing a module).

``tests/test_packaging.py`` fails while the manifest and the tree disagree, so the list is never kept by hand.
Usage: ``python3 scripts/update_module_manifest.py [--check]``.
"""
from __future__ import annotations

import sys
from pathlib import Path

PKG = Path(__file__).resolve().parent.parent / "winpe_overlay" / "rescuekit"
sys.path.insert(0, str(PKG.parent))

from rescuekit import modules  # noqa: E402  (the source tree's, whatever is installed)

if __name__ == "__main__":
    want = modules.render(modules.scan(PKG))
    path = PKG / modules.MANIFEST_NAME
    if "--check" in sys.argv[1:]:
        sys.exit(0 if path.is_file() and path.read_text(encoding="utf-8") == want else f"{path} is out of date")
    path.write_text(want, encoding="utf-8", newline="\n")
    print(path)

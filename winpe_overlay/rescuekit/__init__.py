"""rescuekit runtime: capture, restore, verify and browse disk images offline.

This package is laid into boot.wim and runs inside WinPE on the bundled Windows
Python; it runs equally on a Linux or Windows host. It must not import the
host-side ``builder`` package.
"""

__version__ = "0.1.0"

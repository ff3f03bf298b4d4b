"""Progress bars (rich) that stay silent when output is not a terminal or is JSON."""
from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from typing import Protocol

from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)


class Advance(Protocol):
    def __call__(self, nbytes: int) -> None: ...


@contextlib.contextmanager
def byte_progress(description: str, total: int | None, *, enabled: bool | None = None) -> Iterator[Advance]:
    """Yield ``advance(nbytes)``; draws a bar with rate and ETA on a terminal (stderr)."""
    if enabled is None:
        enabled = sys.stderr.isatty()
    if not enabled:
        yield lambda nbytes: None
        return
    progress = Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        DownloadColumn(binary_units=True),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        console=Console(stderr=True),
        transient=False,
    )
    with progress:
        task = progress.add_task(description, total=total)
        yield lambda nbytes: progress.advance(task, nbytes)

"""Progress bars: tqdm with rate and ETA on a terminal, silent everywhere else.

A bar shows only when standard error is a terminal and the `dediffusion` logger shows INFO lines (the
CLI's `--quiet` raises it to WARNING), so CI logs, pipes and quiet runs stay clean. Log lines written
while a bar is on screen go above it when the CLI routes logging through tqdm (`logging_redirect_tqdm`).
"""

from __future__ import annotations

import logging
import sys


def progress_enabled() -> bool:
    """Whether progress bars are shown: stderr is a terminal and INFO messages are not silenced."""
    return sys.stderr.isatty() and logging.getLogger("dediffusion").isEnabledFor(logging.INFO)


def progress_bar(total: int, desc: str, unit: str = "it", initial: int = 0, enabled: bool = True):
    """A tqdm bar over `total` units (disabled unless `progress_enabled()` and `enabled`)."""
    from tqdm.auto import tqdm

    show = enabled and progress_enabled()
    return tqdm(total=total, initial=initial, desc=desc, unit=unit, disable=not show, dynamic_ncols=True)


def progress_range(start: int, stop: int, desc: str, unit: str = "step"):
    """`range(start, stop)` with a progress bar over `stop` units that starts at `start` (a resumed run)."""
    with progress_bar(stop, desc, unit=unit, initial=start) as bar:
        for value in range(start, stop):
            yield value
            bar.update(1)

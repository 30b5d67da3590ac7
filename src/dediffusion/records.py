"""What every trained artifact records beside its weights: the machine it ran on and when."""

from __future__ import annotations

import datetime
import platform


def machine_summary() -> str:
    """One line: processor, OS and torch build."""
    import torch

    return f"{platform.machine()}, {platform.platform()}; torch {torch.__version__}"


def utc_now() -> str:
    """The current time, ISO 8601 in UTC, to the second."""
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")

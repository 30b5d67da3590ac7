"""Where dediffusion keeps what it can rebuild but should not rebuild every run (a converted LLM, shard
indices): one folder, chosen by the environment."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    """The dediffusion cache folder: `$DEDIFFUSION_CACHE` if set, else `$XDG_CACHE_HOME/dediffusion`,
    else `~/.cache/dediffusion`. Not created here."""
    if os.environ.get("DEDIFFUSION_CACHE"):
        return Path(os.environ["DEDIFFUSION_CACHE"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "dediffusion"

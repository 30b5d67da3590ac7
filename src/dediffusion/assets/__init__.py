"""Bundled artifacts (trained on the procedural world), addressed as `bundled:NAME`.

`resolve(path)` maps `bundled:decoder_a` to the folder inside the installed package and returns any
other path unchanged, so configs and saved models can name bundled weights portably.
"""

from __future__ import annotations

from pathlib import Path

ASSETS_DIR = Path(__file__).parent
PREFIX = "bundled:"


def resolve(path: str | Path) -> str:
    """The real location of a `bundled:NAME` path (unchanged for any other path or hub id)."""
    text = str(path)
    if not text.startswith(PREFIX):
        return text
    name = text[len(PREFIX) :]
    folder = ASSETS_DIR / name
    if not folder.is_dir():
        available = sorted(p.name for p in ASSETS_DIR.iterdir() if p.is_dir() and not p.name.startswith("_"))
        raise FileNotFoundError(f"no bundled artifact {name!r} in {ASSETS_DIR}; available: {available}")
    return str(folder)

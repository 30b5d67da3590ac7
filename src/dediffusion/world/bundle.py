"""Copy a trained world artifact into the package, where it loads as `bundled:NAME`.

`bundle_artifact(source, name)` checks the folder is the artifact it claims to be, that the bundle
stays within its size budget, and replaces `dediffusion/assets/NAME` in one rename. An encoder must
name its decoder by a `bundled:` path (the world preset's `decoder.path: bundled:decoder_a`), so the
copy finds its decoder wherever the package is installed.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
from pathlib import Path

from ..assets import ASSETS_DIR
from ..atomic import atomic_folder

logger = logging.getLogger("dediffusion")

BUDGET_BYTES = 25_000_000
# the file each artifact folder must hold
MARKERS = {
    "decoder_a": "model_index.json",
    "decoder_b": "model_index.json",
    "world_encoder": "model.safetensors",
    "perception": "model.safetensors",
}


def bundle_artifact(source: str | Path, name: str, assets_dir: Path = ASSETS_DIR) -> int:
    """Replace the bundled artifact `name` with the folder `source`; returns the bundle's new size in bytes.

    Raises ValueError when `source` is not that kind of artifact, when an encoder names a decoder
    outside the bundle, or when the bundle would exceed BUDGET_BYTES.
    """
    source = Path(source)
    if name not in MARKERS:
        raise ValueError(f"unknown artifact {name!r}; bundle one of {sorted(MARKERS)}")
    if not (source / MARKERS[name]).is_file():
        raise ValueError(f"'{source}' has no {MARKERS[name]}: it is not a {name} folder")
    if name == "world_encoder":
        _check_encoder(source)
    target = assets_dir / name
    size = _size(assets_dir) - (_size(target) if target.exists() else 0) + _size(source)
    if size > BUDGET_BYTES:
        raise ValueError(
            f"bundling '{source}' as {name} makes the bundle {size / 1e6:.1f} MB, over its "
            f"{BUDGET_BYTES / 1e6:g} MB budget; train a smaller model"
        )
    if name == "decoder_a" and target.exists() and _digest(target) != _digest(source):
        logger.warning("decoder A changes: the bundled world_encoder was trained against the old one; retrain it")
    with atomic_folder(target) as tmp:
        for file in sorted(p for p in source.rglob("*") if p.is_file()):
            (tmp / file.relative_to(source)).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(file, tmp / file.relative_to(source))
    return size


def _check_encoder(source: Path) -> None:
    recorded = json.loads((source / "decoder.json").read_text())["path"]
    if not str(recorded).startswith("bundled:"):
        raise ValueError(
            f"the encoder in '{source}' was trained against decoder '{recorded}', which is not bundled; "
            "train it with decoder.path=bundled:decoder_a (the world preset's default)"
        )
    if not (source / "training.json").is_file():
        logger.warning("'%s' has no training.json: the bundle will not say what trained it", source)


def _size(folder: Path) -> int:
    return sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())


def _digest(folder: Path) -> str:
    digest = hashlib.sha256()
    for file in sorted(p for p in folder.rglob("*") if p.is_file()):
        digest.update(str(file.relative_to(folder)).encode())
        digest.update(file.read_bytes())
    return digest.hexdigest()

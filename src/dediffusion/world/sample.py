"""Write rendered scenes to a folder: PNG images plus ``descriptions.jsonl``.

Each line of ``descriptions.jsonl`` describes one image: ``file`` (name relative to the folder),
``index`` (the scene's index in its stream), ``split``, ``seed``, ``description``, ``human_caption``,
``scene`` (the scene graph, ``Scene.to_dict``) and ``questions`` (``Question.to_dict`` each). Every
file is written to a temporary name and moved into place with ``os.replace``, so a reader never sees
a half-written file.
"""

from __future__ import annotations

import io
import json
import logging
import os
from pathlib import Path

import numpy as np
from PIL import Image

from dediffusion.world.questions import questions
from dediffusion.world.render import render
from dediffusion.world.scene import Scene
from dediffusion.world.split import TEST_SEED, test_scenes, train_scenes
from dediffusion.world.text import describe, human_caption

logger = logging.getLogger(__name__)

DESCRIPTIONS_FILE = "descriptions.jsonl"


def write_samples(
    n: int, out_dir: str | os.PathLike, seed: int | None = None, size: int = 32, split: str = "train"
) -> list[Path]:
    """Render ``n`` scenes into ``out_dir`` as PNGs and write their ``descriptions.jsonl``.

    Args:
        n: number of images.
        out_dir: folder to write into; created if missing; files of the same names are replaced.
        seed: training seed (default 0); must be left out for ``split="test"``, whose seed is fixed.
        size: image height and width in pixels.
        split: "train" for ``train_scenes(n, seed)`` or "test" for ``test_scenes(n)``.
    Returns:
        the PNG paths, in scene order.
    Raises:
        ValueError: on an unknown split, a seed given with ``split="test"``, or a bad ``n``/seed.
    """
    scenes, seed = _scenes(n, seed, split)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    width = max(6, len(str(max(n - 1, 0))))
    paths, records = [], []
    for index, scene in enumerate(scenes):
        path = out / f"{index:0{width}d}.png"
        _write_png(path, render(scene, size))
        paths.append(path)
        records.append(_record(path.name, index, split, seed, scene))
    lines = "".join(json.dumps(record) + "\n" for record in records)
    _write_atomic(out / DESCRIPTIONS_FILE, lines.encode())
    logger.info("wrote %d %s scenes (%dx%d) to %s", n, split, size, size, out)
    return paths


def _scenes(n: int, seed: int | None, split: str) -> tuple[list[Scene], int]:
    if split == "train":
        seed = 0 if seed is None else seed
        return train_scenes(n, seed), seed
    if split == "test":
        if seed is not None:
            raise ValueError("the test split has a fixed seed (TEST_SEED); do not pass a seed with it")
        return test_scenes(n), TEST_SEED
    raise ValueError(f"unknown split {split!r}; expected 'train' or 'test'")


def _record(name: str, index: int, split: str, seed: int, scene: Scene) -> dict:
    return {
        "file": name,
        "index": index,
        "split": split,
        "seed": seed,
        "description": describe(scene),
        "human_caption": human_caption(scene),
        "scene": scene.to_dict(),
        "questions": [q.to_dict() for q in questions(scene)],
    }


def _write_png(path: Path, pixels: np.ndarray) -> None:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    _write_atomic(path, buffer.getvalue())


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)

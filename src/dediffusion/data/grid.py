"""Image grids with text: one row per image, columns `image | text | reconstruction(s)`."""

from __future__ import annotations

import io
import textwrap
from collections.abc import Sequence
from pathlib import Path

import torch
from PIL import Image, ImageDraw, ImageFont

from ..atomic import atomic_write_bytes
from ..data.images import to_pil

CELL = 128
TEXT_WIDTH = 320


def _column_x(column: int) -> int:
    return 0 if column == 0 else CELL if column == 1 else CELL + TEXT_WIDTH + CELL * (column - 2)


def _cell(image: torch.Tensor) -> Image.Image:
    pil = to_pil(image.detach().cpu())
    resample = Image.NEAREST if pil.width < CELL else Image.BICUBIC
    return pil.resize((CELL, CELL), resample)


def make_grid(
    originals: torch.Tensor,
    texts: Sequence[str],
    reconstructions: Sequence[torch.Tensor] = (),
    headers: Sequence[str] = (),
) -> Image.Image:
    """originals (B, 3, H, W) in [-1, 1]; texts: B strings; reconstructions: tensors like originals."""
    font = ImageFont.load_default()
    columns = 2 + len(reconstructions)
    top = 16 if headers else 0
    width = CELL * (columns - 1) + TEXT_WIDTH
    grid = Image.new("RGB", (width, top + CELL * len(texts)), "white")
    draw = ImageDraw.Draw(grid)
    for column, header in enumerate(headers):
        draw.text((_column_x(column) + 4, 2), header, fill="black", font=font)
    for row, text in enumerate(texts):
        y = top + row * CELL
        grid.paste(_cell(originals[row]), (_column_x(0), y))
        wrapped = "\n".join(textwrap.wrap(text or "(empty)", width=TEXT_WIDTH // 7)[: CELL // 12])
        draw.multiline_text((CELL + 6, y + 6), wrapped, fill="black", font=font)
        for column, images in enumerate(reconstructions):
            grid.paste(_cell(images[row]), (_column_x(column + 2), y))
        if row:
            draw.line([(0, y), (width, y)], fill="white", width=3)  # keeps neighbouring rows apart
    return grid


def save_grid(path: Path, *args, **kwargs) -> Path:
    """`make_grid(...)` written as PNG atomically."""
    buffer = io.BytesIO()
    make_grid(*args, **kwargs).save(buffer, format="PNG")
    atomic_write_bytes(Path(path), buffer.getvalue())
    return Path(path)

"""A four-colour quadrant world for tests: the caption names each quadrant's colour, so text fully
determines the image and a text-conditioned decoder can be pretrained in seconds."""

from __future__ import annotations

import torch

COLORS = {
    "red": (1.0, -1.0, -1.0),
    "green": (-1.0, 1.0, -1.0),
    "blue": (-1.0, -1.0, 1.0),
    "yellow": (1.0, 1.0, -1.0),
}
WORDS = list(COLORS) + ["dark", "light"]


def quadrant_image(names: list[str], size: int) -> torch.Tensor:
    """(3, size, size) in [-1, 1]: quadrants top-left, top-right, bottom-left, bottom-right."""
    half = size // 2
    image = torch.empty(3, size, size)
    for k, name in enumerate(names):
        row, col = divmod(k, 2)
        image[:, row * half : (row + 1) * half, col * half : (col + 1) * half] = torch.tensor(COLORS[name])[
            :, None, None
        ]
    return image


def sample_quadrants(count: int, size: int, generator: torch.Generator, p_empty: float = 0.1):
    """`count` random quadrant images and their captions ('' with probability p_empty)."""
    names = list(COLORS)
    images, captions = [], []
    for _ in range(count):
        picks = [names[i] for i in torch.randint(0, 4, (4,), generator=generator).tolist()]
        images.append(quadrant_image(picks, size))
        empty = torch.rand((), generator=generator).item() < p_empty
        captions.append("" if empty else " ".join(picks))
    return torch.stack(images), captions

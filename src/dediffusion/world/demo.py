"""The README's first job: world test images -> De-Diffusion text -> images redrawn by decoders A and B.

Everything comes from the package (the bundled encoder, decoder A it was trained against, decoder B
that it never saw, and the fixed test split no training used), so it runs offline on a CPU:

    dediffusion demo --out demo.png -n 8
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import torch

logger = logging.getLogger(__name__)

DEFAULT_MODEL = "bundled:world_encoder"
DEFAULT_DECODER_B = "bundled:decoder_b"


@dataclass(frozen=True)
class DemoResult:
    """What `run_demo` wrote and printed: one entry per test image."""

    grid: Path
    texts: list[str]
    descriptions: list[str]


def run_demo(
    out: str | Path = "demo.png",
    num_images: int = 8,
    model: str | Path = DEFAULT_MODEL,
    decoder_b: str | Path = DEFAULT_DECODER_B,
    guidance_scale: float = 3.0,
    num_inference_steps: int = 25,
    seed: int = 0,
) -> DemoResult:
    """Encode the first `num_images` test scenes, redraw them from the text with both decoders and
    write one grid (image | text | decoder A | decoder B) to `out`.

    Image i is redrawn with seed `seed + i` by both decoders, so reruns give the same grid.
    """
    from dediffusion.data.grid import save_grid
    from dediffusion.models.decoder import TextToImageDecoder
    from dediffusion.models.dediffusion import DeDiffusion, sample_generators
    from dediffusion.world.render import render_batch
    from dediffusion.world.split import test_scenes
    from dediffusion.world.text import describe

    if num_images < 1:
        raise ValueError(f"num_images must be at least 1, got {num_images}")
    encoder = DeDiffusion.from_pretrained(model).eval()
    third_party = TextToImageDecoder.from_pretrained(decoder_b)
    scenes = test_scenes(num_images)
    images = render_batch(scenes, encoder.config.encoder.image_size)
    seeds = range(seed, seed + num_images)
    with torch.no_grad():
        texts, redrawn_a = encoder.reconstruct(images, guidance_scale, num_inference_steps, seeds)
        redrawn_b = third_party.generate(
            texts, None, guidance_scale, num_inference_steps, sample_generators(seeds, third_party.device)
        )
    headers = ["test image", "De-Diffusion text", "decoder A", "decoder B"]
    grid = save_grid(Path(out), images, texts, [redrawn_a, redrawn_b], headers=headers)
    logger.info("wrote %s", grid)
    return DemoResult(grid, texts, [describe(scene) for scene in scenes])

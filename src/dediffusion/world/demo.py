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
    batch_size: int = 8,
) -> DemoResult:
    """Encode the first `num_images` test scenes, redraw them from the text with both decoders and
    write one grid (image | text | decoder A | decoder B) to `out`, `batch_size` images at a time.

    Image i is redrawn with seed `seed + i` by both decoders, so reruns give the same grid.
    """
    from dediffusion.data.grid import save_grid
    from dediffusion.models.decoder import TextToImageDecoder
    from dediffusion.models.dediffusion import DeDiffusion
    from dediffusion.progress import progress_bar
    from dediffusion.world.render import render_batch
    from dediffusion.world.split import test_scenes
    from dediffusion.world.text import describe

    if num_images < 1 or batch_size < 1:
        raise ValueError(f"num_images and batch_size must be at least 1, got {num_images} and {batch_size}")
    encoder = DeDiffusion.from_pretrained(model).eval()
    third_party = TextToImageDecoder.from_pretrained(decoder_b)
    scenes = test_scenes(num_images)
    images = render_batch(scenes, encoder.decoder.resolution)
    texts, redrawn_a, redrawn_b = [], [], []
    with progress_bar(num_images, "demo", unit="image") as bar:
        for start in range(0, num_images, batch_size):
            batch, seeds = (
                images[start : start + batch_size],
                range(seed + start, seed + min(start + batch_size, num_images)),
            )
            words, drawn_a, drawn_b = redraw_both(
                encoder, third_party, batch, seeds, guidance_scale, num_inference_steps
            )
            texts, redrawn_a, redrawn_b = texts + words, redrawn_a + [drawn_a], redrawn_b + [drawn_b]
            bar.update(len(batch))
    headers = ["test image", "De-Diffusion text", "decoder A", "decoder B"]
    grid = save_grid(Path(out), images, texts, [torch.cat(redrawn_a), torch.cat(redrawn_b)], headers=headers)
    return DemoResult(grid, texts, [describe(scene) for scene in scenes])


@torch.no_grad()
def redraw_both(encoder, third_party, images, seeds, guidance_scale: float, num_inference_steps: int):
    """The texts of `images`, and their redraws by the encoder's decoder and by `third_party`."""
    from dediffusion.models.dediffusion import sample_generators

    texts, redrawn_a = encoder.reconstruct(images, guidance_scale, num_inference_steps, seeds)
    generators = sample_generators(seeds, third_party.device)
    return texts, redrawn_a, third_party.generate(texts, None, guidance_scale, num_inference_steps, generators)

"""Refinement: the encoder's text improved per image by a discrete search against the decoder's exact loss.

`refine_tokens(decoder, images, token_ids, allowed, steps)` runs `steps` rounds of gradient-ranked
one-word swaps (`search.search_tokens`, proposal "gradient", accept "best"). Every round scores the
current text and its swaps by the decoder's denoising loss on the same `num_noise` draws per image
(image i's draws come from seed `seed + i`, fixed for the whole refinement), and a swap is kept only
when it lowers that loss, so the loss on those draws never rises. Beyond the paper: the encoder gives a
good starting text in one pass, and a few rounds per image fix words it got wrong, at `num_candidates
+ 1` decoder passes per draw and round (per-image prompt inversion starts from nothing instead).
"""

from __future__ import annotations

import torch

from .decoder import TextToImageDecoder
from .search import search_tokens


@torch.no_grad()
def refine_tokens(
    decoder: TextToImageDecoder,
    images: torch.Tensor,
    token_ids: torch.Tensor,
    allowed: torch.Tensor,
    steps: int,
    num_candidates: int = 8,
    num_noise: int = 4,
    timestep_bias: float = 0.0,
    seed: int = 0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Refined token ids (B, N), and each round's loss of the text it started from (steps, B).

    Args:
        images: (B, 3, H, W) in [-1, 1]; token_ids: (B, N), e.g. `DeDiffusion.encode_tokens(images)`.
        allowed: ids (A,) the text may use (the encoder's vocabulary mask's).
    """
    losses = []
    for _ in range(steps):
        generators = [torch.Generator(decoder.device).manual_seed(seed + i) for i in range(len(images))]
        token_ids, _, current = search_tokens(
            decoder, images, token_ids, allowed, generators, num_candidates, num_noise, timestep_bias, "gradient"
        )
        losses.append(current)
    return token_ids, torch.stack(losses) if losses else torch.zeros(0, len(images))

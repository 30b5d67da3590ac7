"""The sleep phase: the encoder learns to read the frozen decoder's own drawings.

Wake-sleep (Hinton et al., 1995) trains a recognition model on samples of the generative model it
inverts. Here the generative model is the frozen text-to-image decoder and a simple text prior:
`sample_prior_tokens` writes texts in which each position holds, with probability q (drawn per text,
uniform up to `max_density`), a uniformly random allowed token and otherwise the filler token (the
first token of `tokens.init_text`, "a" on the world). The decoder draws each text
(`draw_images`); the encoder learns to write the text back from the drawing
(`matched_cross_entropy`). No caption and no real image is involved: the pairs come from the decoder
alone, so the phase is as self-supervised as the wake phase (the decoder's denoising loss on real
images, `DeDiffusion.forward`) that follows it.

The decoder reads a text's words nearly regardless of their order, so which position holds which
word is arbitrary: the loss matches the encoder's positions one-to-one to the target tokens (the
assignment of least cost, found greedily) before the cross-entropy, as set prediction does. Without
it every position would learn the same mixture of words and the argmax text would repeat one word.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from .decoder import TextToImageDecoder


def sample_prior_tokens(
    count: int, num_tokens: int, allowed: torch.Tensor, filler: int, max_density: float, generator: torch.Generator
) -> torch.Tensor:
    """`count` prior texts (count, num_tokens): random allowed tokens at a random density, filler elsewhere."""
    density = torch.rand(count, 1, generator=generator) * max_density
    words = allowed.cpu()[torch.randint(len(allowed), (count, num_tokens), generator=generator)]
    keep = torch.rand(count, num_tokens, generator=generator) < density
    return torch.where(keep, words, torch.full_like(words, filler))


@torch.no_grad()
def draw_images(
    decoder: TextToImageDecoder,
    tokens: torch.Tensor,
    seeds: Sequence[int],
    guidance_scale: float,
    num_inference_steps: int,
    dtype: torch.dtype = torch.float32,
    timestep_spacing: str | None = None,
) -> torch.Tensor:
    """The decoder's drawings (B, 3, H, W) in [-1, 1], float32, of token texts (B, N); drawing b uses seed
    `seeds[b]`. A `dtype` other than float32 draws under autocast to it (faster where the hardware has
    bfloat16 units). `timestep_spacing`: see `sampling.generate`."""
    generators = [torch.Generator(decoder.device).manual_seed(int(s)) for s in seeds]
    states = decoder.token_states(tokens.to(decoder.device))
    with torch.autocast(decoder.device.type, dtype=dtype, enabled=dtype != torch.float32):
        images = decoder.generate(None, states, guidance_scale, num_inference_steps, generators, timestep_spacing)
    return images.float()


def match_targets(log_probs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Targets (B, N) reordered so that position n gets the target token it is matched to.

    The matching is one-to-one and greedy on the cost -log p(position, token): repeatedly the
    cheapest remaining (position, target) pair. log_probs (B, N, V); targets (B, N).
    """
    batch, num_tokens, _ = log_probs.shape
    index = targets[:, None, :].expand(batch, num_tokens, num_tokens)
    cost = -log_probs.detach().float().gather(2, index)  # (B, position, target)
    matched = torch.empty_like(targets)
    rows = torch.arange(batch, device=targets.device)
    for _ in range(num_tokens):
        flat = cost.flatten(1).argmin(1)
        position, target = flat // num_tokens, flat % num_tokens
        matched[rows, position] = targets[rows, target]
        cost[rows, position, :] = float("inf")
        cost[rows, :, target] = float("inf")
    return matched


def matched_cross_entropy(log_probs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Per-sample cross-entropy (B,) of log_probs (B, N, V) toward targets (B, N) after `match_targets`."""
    matched = match_targets(log_probs, targets)
    return -log_probs.gather(2, matched[..., None]).squeeze(-1).mean(1)

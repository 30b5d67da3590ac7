"""Zero-order token search against a frozen decoder's denoising loss: better texts to learn toward.

`search_tokens` takes each image's current text (token ids (B, N)), tries `num_candidates` single-token
swaps at one randomly chosen position, scores the current text and every swap by the decoder's
denoising loss on the same `num_noise` noise draws (common random numbers, so texts compare on equal
terms), and returns the best text per image. The encoder can learn toward these texts
(`train.estimator: search`) instead of following the loss gradient through relaxed tokens. On the
world's decoder A, with a description-like text around it, the exact loss picks the true colour of an
object for 45% of images on 2 noise draws and 62% on 4, the first-order gradient for 27% on 8 (chance
12.5%; benchmarks/results/estimator_signal.md).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from .decoder import TextToImageDecoder, per_sample_randn, sample_timesteps


@torch.no_grad()
def search_tokens(
    decoder: TextToImageDecoder,
    images: torch.Tensor,
    tokens: torch.Tensor,
    allowed: torch.Tensor,
    generators: Sequence[torch.Generator],
    num_candidates: int = 8,
    num_noise: int = 2,
    timestep_bias: float = 0.0,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The best of each image's text and `num_candidates` one-token variants of it.

    Args:
        images: (B, 3, H, W) in [-1, 1].
        tokens: current token ids (B, N).
        allowed: ids (A,) the texts may use.
        generators: one per image: its position, candidate words, timesteps and noise.
    Returns:
        best token ids (B, N), the position searched in each image (B,), and each image's loss of
        its current text (B,).
    """
    batch, num_tokens = tokens.shape
    candidates = tokens[:, None].repeat(1, num_candidates + 1, 1)  # (B, C + 1, N); index 0: unchanged
    slots = torch.zeros(batch, dtype=torch.long, device=tokens.device)
    for b, generator in enumerate(generators):
        slots[b] = int(torch.randint(num_tokens, (1,), generator=generator, device=generator.device))
        words = allowed[torch.randint(len(allowed), (num_candidates,), generator=generator, device=generator.device)]
        candidates[b, 1:, slots[b]] = words.to(tokens.device)
    losses = _losses(decoder, images, candidates, generators, num_noise, timestep_bias)  # (B, C + 1)
    best = losses.argmin(dim=1)
    return candidates[torch.arange(batch), best], slots, losses[:, 0]


def _losses(decoder, images, candidates, generators, num_noise, timestep_bias) -> torch.Tensor:
    """Mean denoising loss (B, C) of every candidate text over the same `num_noise` draws per image."""
    batch, count, _ = candidates.shape
    states = decoder.token_states(candidates.flatten(0, 1))  # (B * C, T, D)
    latents = decoder.to_latents(images, generators).repeat_interleave(count, dim=0)
    total = torch.zeros(batch * count, device=latents.device)
    for _ in range(num_noise):
        timesteps = sample_timesteps(generators, decoder.scheduler.config.num_train_timesteps, timestep_bias)
        noise = per_sample_randn(latents.shape[1:], generators, decoder.device)
        steps, noise = timesteps.repeat_interleave(count).to(decoder.device), noise.repeat_interleave(count, dim=0)
        total += decoder.latent_loss(latents, states, steps, noise)
    return (total / num_noise).view(batch, count)

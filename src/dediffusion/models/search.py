"""Zero-order token search against a frozen decoder's denoising loss: better texts to learn toward.

`search_tokens` takes each image's current text (token ids (B, N)), tries `num_candidates` single-token
swaps, scores the current text and every swap by the decoder's denoising loss on the same `num_noise`
noise draws (common random numbers, so texts compare on equal terms), and returns the best text per
image. The swaps are proposed either at random ("random": random words at one random position) or by
the loss gradient with respect to the one-hot text ("gradient": the swaps whose first-order estimate
lowers the loss most, at any position, as in greedy coordinate gradient prompt search). The encoder
can learn toward these texts (`train.estimator: search`) instead of following the loss gradient
through relaxed tokens: the exact loss of a swap is a less biased signal than its first-order
estimate, at the cost of one decoder pass per candidate and noise draw.
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
    proposal: str = "random",
    accept: str = "best",
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Each image's text improved by `num_candidates` scored one-token swaps.

    Args:
        images: (B, 3, H, W) in [-1, 1].
        tokens: current token ids (B, N).
        allowed: ids (A,) the texts may use.
        generators: one per image: its proposals, timesteps and noise.
        proposal: "random" or "gradient" (see the module docstring).
        accept: "best": the best of the current text and its swaps; "improving": every swap that
            scores better than the current text, the best one per position (swaps are scored one
            at a time, never together).
    Returns:
        token ids (B, N); the positions searched (B, N) bool: those of the accepted swaps, or where
        no swap wins, the first proposal's (so every image has at least one); each image's loss of
        its current text (B,).
    """
    if proposal == "random":
        slots, words = _random_swaps(tokens, allowed, generators, num_candidates)
    elif proposal == "gradient":
        slots, words = _gradient_swaps(decoder, images, tokens, allowed, generators, num_candidates, timestep_bias)
    else:
        raise ValueError(f"proposal must be 'random' or 'gradient', not {proposal!r}")
    if accept not in ("best", "improving"):
        raise ValueError(f"accept must be 'best' or 'improving', not {accept!r}")
    batch = len(tokens)
    rows = torch.arange(batch, device=tokens.device)[:, None]
    candidates = tokens[:, None].repeat(1, num_candidates + 1, 1)  # (B, C + 1, N); index 0: unchanged
    candidates[rows, torch.arange(1, num_candidates + 1, device=tokens.device), slots] = words
    losses = _losses(decoder, images, candidates, generators, num_noise, timestep_bias)  # (B, C + 1)
    gains = losses[:, :1] - losses[:, 1:]  # (B, C): how much each swap lowers the loss
    if accept == "best":
        gains = torch.where(gains == gains.max(dim=1, keepdim=True).values, gains, -1.0)
    result, searched = tokens.clone(), torch.zeros_like(tokens, dtype=torch.bool)
    for c in gains.argsort(dim=1).T:  # the smallest gain first: at a shared position the largest stays
        take = gains[rows[:, 0], c] > 0
        result[rows[take, 0], slots[rows[:, 0], c][take]] = words[rows[:, 0], c][take]
        searched[rows[take, 0], slots[rows[:, 0], c][take]] = True
    none = ~searched.any(dim=1)
    searched[rows[none, 0], slots[none, 0]] = True
    return result, searched, losses[:, 0]


def _random_swaps(tokens, allowed, generators, count) -> tuple[torch.Tensor, torch.Tensor]:
    """`count` random words at one random position per image: positions and words, each (B, count)."""
    slots, words = [], []
    for generator in generators:
        slot = torch.randint(tokens.shape[1], (1,), generator=generator, device=generator.device)
        slots.append(slot.expand(count))
        words.append(allowed[torch.randint(len(allowed), (count,), generator=generator, device=generator.device)])
    return torch.stack(slots).to(tokens.device), torch.stack(words).to(tokens.device)


def _gradient_swaps(decoder, images, tokens, allowed, generators, count, timestep_bias):
    """The `count` swaps (position, word) per image whose first-order loss change is lowest: the
    gradient of the denoising loss (one draw per image) with respect to the one-hot text."""
    with torch.enable_grad():
        one_hot = torch.nn.functional.one_hot(tokens, decoder.vocab_size).float().requires_grad_()
        loss = decoder.denoising_loss(
            images, decoder.soft_text_embeddings(one_hot), generators, timestep_bias=timestep_bias
        )
        (grad,) = torch.autograd.grad(loss.sum(), one_hot)
    change = grad - grad.gather(-1, tokens[..., None])  # (B, N, V): first-order loss change of each swap
    blocked = torch.ones(decoder.vocab_size, dtype=torch.bool, device=grad.device)
    blocked[allowed.to(grad.device)] = False
    change = change.masked_fill(blocked, float("inf")).scatter(-1, tokens[..., None], float("inf"))
    best = change.flatten(1).topk(count, dim=1, largest=False)  # (B, count)
    slots, words = best.indices // decoder.vocab_size, best.indices % decoder.vocab_size
    # fewer possible swaps than `count` (tiny vocabularies): the rest leave the text as it is
    words = torch.where(torch.isinf(best.values), tokens.gather(1, slots), words)
    return slots, words


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

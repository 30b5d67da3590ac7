"""Per-image prompt optimisation: the baseline De-Diffusion amortises (PEZ, Wen et al. 2023).

`invert_prompts(decoder, images, num_tokens)` searches, for each image separately, the hard prompt of
`num_tokens` tokens that minimises the decoder's own denoising loss on that image. PEZ keeps one
continuous embedding per token position; every step projects them to their nearest allowed token
embeddings, evaluates the loss with those hard tokens, and applies the gradient (taken at the
projection) to the continuous embeddings. The best hard prompt seen, scored on a fixed set of
timesteps and noises, is returned.

It needs no training and no captions, but pays thousands of decoder passes per image: the cost the
De-Diffusion encoder replaces with one forward pass.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from ..models.decoder import TextToImageDecoder, per_sample_randn
from ..models.dediffusion import sample_generators

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Inversion:
    texts: list[str]
    token_ids: torch.Tensor  # (B, N)
    losses: torch.Tensor  # (B,) fixed-noise loss of the returned prompts
    history: list[float]  # mean fixed-noise loss of the best prompts after each scoring


def invert_prompts(
    decoder: TextToImageDecoder,
    images: torch.Tensor,
    num_tokens: int,
    steps: int = 300,
    learning_rate: float = 0.1,
    weight_decay: float = 0.1,
    timestep_bias: float = 0.0,
    vocab_mask: torch.Tensor | None = None,
    score_every: int = 25,
    num_score_draws: int = 4,
    seeds: Sequence[int] | None = None,
) -> Inversion:
    """Optimise one hard prompt per image (B, 3, H, W) in [-1, 1]; see the module docstring.

    `vocab_mask` (V,) limits the tokens (default: `decoder.vocabulary_mask()`, as the encoder).
    Image b's randomness (start tokens, noise, timesteps) comes from `seeds[b]` (default: its index),
    so its result does not depend on the rest of the batch.
    """
    if steps < 1 or num_tokens < 1:
        raise ValueError(f"steps and num_tokens must be at least 1 (got {steps}, {num_tokens})")
    mask = decoder.vocabulary_mask() if vocab_mask is None else vocab_mask.bool()
    allowed = mask.nonzero().squeeze(1).to(decoder.device)
    table = decoder.text_encoder.get_input_embeddings().weight.detach().float()
    candidates = table[allowed]  # (A, D)
    images, batch = images.to(decoder.device), images.shape[0]
    seeds = list(range(batch)) if seeds is None else [int(s) for s in seeds]
    init = torch.stack(
        [torch.randint(len(allowed), (num_tokens,), generator=torch.Generator().manual_seed(s)) for s in seeds]
    )
    embeddings = candidates[init.to(candidates.device)].clone().requires_grad_(True)
    optimizer = torch.optim.AdamW([embeddings], lr=learning_rate, weight_decay=weight_decay)
    scorer = _FixedNoiseScorer(decoder, images, num_score_draws, seeds)
    best_ids = allowed[init.to(allowed.device)]
    best_loss = scorer(best_ids)
    history = [best_loss.mean().item()]
    from ..progress import progress_bar

    bar = progress_bar(steps, "prompt inversion", unit="step")
    for step in range(steps):
        bar.update(1)
        nearest = _nearest(embeddings.detach(), candidates)
        projected = candidates[nearest].clone().requires_grad_(True)
        generators = sample_generators([(s << 24) + step + 1 for s in seeds], decoder.device)
        states = decoder.text_states_from_embeddings(projected)
        loss = decoder.denoising_loss(images, states, generators, timestep_bias=timestep_bias).sum()
        (grad,) = torch.autograd.grad(loss, projected)
        optimizer.zero_grad(set_to_none=True)
        embeddings.grad = grad
        optimizer.step()
        if (step + 1) % score_every == 0 or step + 1 == steps:
            ids = allowed[_nearest(embeddings.detach(), candidates)]
            found = scorer(ids)
            better = found < best_loss
            best_ids = torch.where(better[:, None], ids, best_ids)
            best_loss = torch.minimum(found, best_loss)
            history.append(best_loss.mean().item())
            logger.info("prompt inversion step %d/%d: fixed-noise loss %.4f", step + 1, steps, history[-1])
    bar.close()
    return Inversion(decoder.decode_tokens(best_ids), best_ids, best_loss, history)


def _nearest(embeddings: torch.Tensor, candidates: torch.Tensor) -> torch.Tensor:
    """Index (B, N) of the nearest candidate row (Euclidean) for each embedding (B, N, D)."""
    distances = torch.cdist(embeddings.reshape(-1, embeddings.shape[-1]), candidates)
    return distances.argmin(-1).reshape(embeddings.shape[:-1])


class _FixedNoiseScorer:
    """Mean denoising loss (B,) of hard prompts over fixed per-image timesteps and noises."""

    def __init__(self, decoder: TextToImageDecoder, images: torch.Tensor, draws: int, seeds: list[int]):
        self.decoder, self.images = decoder, images
        batch, total = images.shape[0], decoder.scheduler.config.num_train_timesteps
        self.draws = []
        for draw in range(draws):
            generators = sample_generators([(1 << 60) + (s << 8) + draw for s in seeds], decoder.device)
            # evenly spread noise levels, one per draw, plus per-image noise
            timesteps = torch.full((batch,), int((draw + 0.5) * total / draws), device=decoder.device)
            self.draws.append((timesteps, per_sample_randn(decoder.latent_shape, generators, decoder.device)))

    @torch.no_grad()
    def __call__(self, token_ids: torch.Tensor) -> torch.Tensor:
        onehot = torch.nn.functional.one_hot(token_ids, self.decoder.vocab_size).float()
        states = self.decoder.soft_text_embeddings(onehot)
        losses = [self.decoder.denoising_loss(self.images, states, None, t, n) for t, n in self.draws]
        return torch.stack(losses).mean(0)

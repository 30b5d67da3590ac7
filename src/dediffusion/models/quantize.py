"""The text bottleneck as pure functions: Gumbel-softmax tokens and their temperature schedule.

`gumbel_softmax(logits, temperature, noise)` turns logits (B, L, V) into token probabilities
(B, L, V) that are differentiable in the logits. Noise is an explicit argument (see
`sample_gumbel`) so runs are reproducible per sample and independent of batch layout.
Excluded tokens carry a logit of -inf and therefore probability exactly 0.
"""

from __future__ import annotations

import math

import torch


def temperature_at(step: int, start: float, end: float, steps: int) -> float:
    """Exponential annealing from `start` (step 0) to `end` (step >= `steps`)."""
    if steps <= 0:
        return end
    progress = min(max(step, 0) / steps, 1.0)
    return start * math.exp(progress * math.log(end / start))


def sample_gumbel(shape: tuple[int, ...], generators: list[torch.Generator], device: torch.device) -> torch.Tensor:
    """Standard Gumbel noise (B, *shape), row b drawn from `generators[b]`."""
    rows = []
    for generator in generators:
        uniform = torch.rand(shape, generator=generator, device=device)  # [0, 1)
        rows.append(-torch.log(-torch.log(uniform.clamp_min(torch.finfo(uniform.dtype).tiny))))
    return torch.stack(rows)


def gumbel_softmax(
    logits: torch.Tensor, temperature: float, noise: torch.Tensor | None, straight_through: bool = False
) -> torch.Tensor:
    """Relaxed one-hot tokens (B, L, V). `noise=None` gives the plain tempered softmax.

    With `straight_through`, the forward value is the hard one-hot of the argmax and the gradient is
    that of the soft sample.
    """
    scores = logits if noise is None else logits + noise.to(logits.dtype)
    soft = torch.softmax(scores.float() / temperature, dim=-1)
    if not straight_through:
        return soft
    hard = torch.zeros_like(soft).scatter_(-1, soft.argmax(-1, keepdim=True), 1.0)
    return hard + soft - soft.detach()


def hard_tokens(logits: torch.Tensor) -> torch.Tensor:
    """Inference tokens: argmax ids (B, L)."""
    return logits.argmax(dim=-1)

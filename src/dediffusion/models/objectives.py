"""The training objectives: what the encoder's loss is, given images (and, for sleep, texts).

Each objective is a function `(model, images, ...) -> dict` whose "loss" the training loop
minimises; only `model.encoder` receives gradients. `model` is a `DeDiffusion` (encoder, frozen
decoder, vocabulary mask, config).

- `gumbel_objective` (the paper's): the frozen decoder's own denoising loss, conditioned on
  Gumbel-softmax relaxed tokens predicted from the images; gradients flow through the frozen text
  encoder and UNet into the encoder. Temperature annealed by `model.temperature(step)`.
- `search_objective` (an alternative, `train.estimator: search`): the cross-entropy of the encoder's
  logits toward its own argmax text improved by one-word swaps, each swap scored by the same
  denoising loss (`models/search.py`); a zero-order estimate of the same objective.
- `sleep_objective` (the sleep phase, `models/sleep.py`): the cross-entropy toward the token ids the
  decoder drew the images from, matched position by position; the decoder is not run.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from .quantize import gumbel_softmax, hard_tokens, sample_gumbel
from .search import search_tokens
from .sleep import matched_cross_entropy


def gumbel_objective(model, images: torch.Tensor, generators: Sequence[torch.Generator], step: int) -> dict:
    """The paper's loss: denoising loss of the frozen decoder conditioned on Gumbel-softmax tokens."""
    logits = model.logits(images)  # (B, N, V)
    temperature, tokens = model.temperature(step), model.config.tokens
    noise = tokens.noise_scale * sample_gumbel(tuple(logits.shape[1:]), generators, model.device)
    probs = gumbel_softmax(logits, temperature, noise, tokens.straight_through)  # (B, N, V)
    states = model.decoder.soft_text_embeddings(probs)
    bias = model.config.train.timestep_bias
    per_sample = model.decoder.denoising_loss(images, states, generators, timestep_bias=bias)
    return _result(per_sample, per_sample.detach(), temperature, probs)


def search_objective(model, images: torch.Tensor, generators: Sequence[torch.Generator], step: int) -> dict:
    """Cross-entropy toward the best of `train.search_candidates` one-word swaps of the argmax text, at
    the searched positions only (the only positions that carry news)."""
    logits, train = model.logits(images), model.config.train
    allowed = model.vocab_mask.nonzero().squeeze(1)
    targets, searched, denoising = search_tokens(
        model.decoder, images, hard_tokens(logits.detach()), allowed, generators, train.search_candidates,
        train.search_noise, train.timestep_bias, train.search_proposal, train.search_accept,
    )  # fmt: skip
    cross_entropy = -torch.log_softmax(logits, -1).gather(-1, targets[..., None]).squeeze(-1)  # (B, N)
    per_sample = (cross_entropy * searched).sum(1) / searched.sum(1)
    return _result(per_sample, denoising, model.temperature(step), torch.softmax(logits.detach(), -1))


def sleep_objective(model, images: torch.Tensor, token_ids: torch.Tensor) -> dict:
    """Cross-entropy toward `token_ids` (B, N), the ids the decoder drew `images` from: position by position
    for lines of `sleep.texts` (their word order is part of the text), else after matching positions to
    targets (random prior words have no order)."""
    log_probs = torch.log_softmax(model.logits(images), -1)  # (B, N, V)
    targets = token_ids.to(model.device)
    if model.config.sleep.texts:
        per_sample = -log_probs.gather(2, targets[..., None]).squeeze(-1).mean(1)
    else:
        per_sample = matched_cross_entropy(log_probs, targets)
    return {
        "loss": per_sample.mean(),
        "loss_per_sample": per_sample.detach(),
        "token_confidence": log_probs.detach().max(-1).values.exp().mean(),
    }


OBJECTIVES = {"gumbel": gumbel_objective, "search": search_objective}  # by `train.estimator`


def _result(per_sample: torch.Tensor, denoising: torch.Tensor, temperature: float, probs: torch.Tensor) -> dict:
    return {
        "loss": per_sample.mean(),
        "loss_per_sample": per_sample.detach(),
        "denoising_loss": denoising.mean(),
        "temperature": torch.tensor(temperature),
        "token_confidence": probs.detach().max(-1).values.mean(),
    }

"""Optimiser and learning-rate schedule builders (trainable parameters only)."""

from __future__ import annotations

import math

import torch

from ..config import TrainConfig


def build_optimizer(parameters, config: TrainConfig) -> torch.optim.Optimizer:
    """AdamW (default) or Adafactor over the parameters that require gradients."""
    params = [p for p in parameters if p.requires_grad]
    if not params:
        raise ValueError("nothing to train: every encoder parameter is frozen")
    if config.optimizer == "adafactor":
        from transformers.optimization import Adafactor

        return Adafactor(
            params,
            lr=config.learning_rate,
            weight_decay=config.weight_decay,
            relative_step=False,
            scale_parameter=False,
            warmup_init=False,
        )
    return torch.optim.AdamW(params, lr=config.learning_rate, weight_decay=config.weight_decay)


def build_lr_scheduler(optimizer: torch.optim.Optimizer, config: TrainConfig) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warmup over `warmup_steps`, then cosine decay to zero at `steps`."""
    warmup, total = config.warmup_steps, config.steps

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / (warmup + 1)
        progress = min((step - warmup) / max(total - warmup, 1), 1.0)
        return 0.5 * (1.0 + math.cos(math.pi * progress))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)

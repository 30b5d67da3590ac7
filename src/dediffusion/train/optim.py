"""Optimiser and learning-rate schedule builders (trainable parameters only)."""

from __future__ import annotations

import math

import torch

from ..config import SleepConfig, TrainConfig


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


def build_lr_scheduler(
    optimizer: torch.optim.Optimizer, config: TrainConfig, sleep: SleepConfig | None = None
) -> torch.optim.lr_scheduler.LambdaLR:
    """Per phase, linear warmup over `warmup_steps`, then cosine decay to zero at the phase's end: the
    sleep phase (`sleep.steps` steps at `sleep.learning_rate`), then the wake phase (`steps` steps)."""
    sleep_steps = sleep.steps if sleep is not None else 0
    sleep_scale = sleep.learning_rate / config.learning_rate if sleep_steps else 1.0

    def factor(step: int) -> float:
        if step < sleep_steps:
            return sleep_scale * warmup_cosine(step, config.warmup_steps, sleep_steps)
        return warmup_cosine(step - sleep_steps, config.warmup_steps, config.steps)

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def warmup_cosine(step: int, warmup: int, total: int) -> float:
    if step < warmup:
        return (step + 1) / (warmup + 1)
    progress = min((step - warmup) / max(total - warmup, 1), 1.0)
    return 0.5 * (1.0 + math.cos(math.pi * progress))


def apply_learning_rate(optimizer: torch.optim.Optimizer, lr_scheduler, learning_rate: float) -> None:
    """Make a schedule restored from a checkpoint follow `learning_rate` (a resumed run may change it):
    restoring brings back the base rate the run started with, and the optimizer's current rate."""
    lr_scheduler.base_lrs = [learning_rate] * len(optimizer.param_groups)
    for group, factor in zip(optimizer.param_groups, lr_scheduler.lr_lambdas):
        group["initial_lr"] = learning_rate
        group["lr"] = learning_rate * factor(lr_scheduler.last_epoch)

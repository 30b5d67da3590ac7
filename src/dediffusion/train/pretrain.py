"""Pretrain a micro text-to-image decoder on captioned images (before it is frozen for De-Diffusion).

This is ordinary text-to-image diffusion training: the UNet and the text encoder learn the
decoder's own denoising loss on (image, caption) pairs, with some empty captions so classifier-free
guidance works. An optional VAE is trained first as an autoencoder (`pretrain_vae`). Batches come
from a callable `sample(batch_size, step) -> (images (B, 3, H, W) in [-1, 1], captions)` so any
data source (the bundled world, a folder with caption files) fits; a sampler may add per-pixel loss
weights (B, 1, H, W) as a third element (`TextToImageDecoder.latent_loss`).
"""

from __future__ import annotations

import io
import json
import logging
import math
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from ..atomic import atomic_write_bytes
from ..models.decoder import TextToImageDecoder
from ..models.dediffusion import sample_generators
from ..progress import progress_range

logger = logging.getLogger(__name__)

# sample(batch_size, step) -> (images, captions) or (images, captions, loss weights (B, 1, H, W))
Sampler = Callable[[int, int], tuple]


class StageCheckpoints:
    """Resumable pretraining: each stage's training state in one file of `folder`, written atomically.

    A file holds the stage's weights, optimizer, schedule, EMA, losses and step, plus the run's
    settings (a rerun continues only with the same ones), its wall time so far and the torch RNG
    state. Batches and noise are functions of the step, so a run interrupted and rerun ends with the
    weights of an uninterrupted one. `remove()` deletes the folder once the result is saved.
    """

    def __init__(self, folder: str | Path, settings: dict[str, Any], every: int = 250) -> None:
        self.folder = Path(folder)
        self.settings = json.dumps(settings, sort_keys=True, default=str)
        self.every = every
        self._earlier = 0.0
        self._started = time.perf_counter()

    def seconds(self) -> float:
        """Wall time of the run: the part before the last checkpoint resumed from plus this process's."""
        return self._earlier + time.perf_counter() - self._started

    def load(self, stage: str) -> dict[str, Any] | None:
        path = self.folder / f"{stage}.pt"
        if not path.is_file():
            return None
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as error:
            message = f"cannot read checkpoint '{path}' ({error}); delete {self.folder} to start over"
            raise ValueError(message) from error
        if state.get("settings") != self.settings:
            raise ValueError(
                f"checkpoint '{path}' was written with other settings ({state.get('settings')}); "
                f"rerun with those, or delete {self.folder} to start over"
            )
        torch.set_rng_state(state["rng"])
        self._earlier, self._started = float(state["seconds"]), time.perf_counter()
        logger.info("resuming %s at step %d from %s", stage, state["step"], path)
        return state

    def save(self, stage: str, state: dict[str, Any]) -> None:
        state = {**state, "settings": self.settings, "seconds": self.seconds(), "rng": torch.get_rng_state()}
        buffer = io.BytesIO()
        torch.save(state, buffer)
        atomic_write_bytes(self.folder / f"{stage}.pt", buffer.getvalue())

    def remove(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)


def _resume(checkpoints, stage, modules, optimizer, schedule, ema=None) -> tuple[int, list[float]]:
    """(step to continue from, losses so far): 0 and [] without a checkpoint of `stage`."""
    state = checkpoints.load(stage) if checkpoints is not None else None
    if state is None:
        return 0, []
    for module, weights in zip(modules, state["weights"]):
        module.load_state_dict(weights)
    optimizer.load_state_dict(state["optimizer"])
    schedule.load_state_dict(state["lr_scheduler"])
    if ema is not None:
        torch._foreach_copy_(ema, state["ema"])
    return int(state["step"]), list(state["losses"])


def _checkpoint(checkpoints, stage, step, steps, modules, optimizer, schedule, losses, ema=None) -> None:
    """Save `stage` after `step` steps (every `checkpoints.every` steps and after the last one)."""
    if checkpoints is None or (step % checkpoints.every and step != steps):
        return
    state = {
        "step": step, "losses": losses, "weights": [module.state_dict() for module in modules],
        "optimizer": optimizer.state_dict(), "lr_scheduler": schedule.state_dict(), "ema": ema,
    }  # fmt: skip
    checkpoints.save(stage, state)


def cosine_lr(optimizer: torch.optim.Optimizer, steps: int, warmup: int) -> torch.optim.lr_scheduler.LambdaLR:
    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return 0.5 * (1 + math.cos(math.pi * min((step - warmup) / max(steps - warmup, 1), 1.0)))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def pretrain_text_to_image(
    decoder: TextToImageDecoder,
    sample: Sampler,
    steps: int,
    batch_size: int = 64,
    learning_rate: float = 1e-3,
    seed: int = 0,
    log_every: int = 100,
    ema_decay: float = 0.0,
    train_text_encoder: bool = True,
    timestep_bias: float = 0.0,
    checkpoints: StageCheckpoints | None = None,
) -> list[float]:
    """Train `decoder.unet` and `decoder.text_encoder` in place; return the loss of every step.

    With `checkpoints`, the state is saved as stage "unet" every `checkpoints.every` steps and
    training continues from it if it is there.

    With `ema_decay > 0` the weights left in the decoder are an exponential moving average of the
    trained ones (warmed up as min(ema_decay, (1 + step) / (10 + step))). With
    `train_text_encoder=False` only the UNet learns (a frozen pretrained text encoder, as Stable
    Diffusion's CLIP). The VAE (if any) stays as it is; the decoder is frozen again afterwards.

    `timestep_bias` > 0 draws training timesteps with density proportional to t ** timestep_bias
    (0: uniform). High-noise steps are where the text decides the layout: on the bundled world a
    bias of 3 made a micro decoder place objects where the text says markedly sooner.
    """
    parts = [decoder.unet, decoder.text_encoder] if train_text_encoder else [decoder.unet]
    for part in parts:
        part.requires_grad_(True)
    params = [p for part in parts for p in part.parameters()]
    optimizer = torch.optim.AdamW(params, lr=learning_rate, weight_decay=0.0)
    schedule = cosine_lr(optimizer, steps, warmup=min(100, steps // 10 + 1))
    ema = [p.detach().clone() for p in params] if ema_decay > 0 else None
    start, losses = _resume(checkpoints, "unet", parts, optimizer, schedule, ema)
    try:
        for step in progress_range(start, steps, "pretrain unet"):
            images, captions, *weights = sample(batch_size, step)
            seeds = [(seed << 32) + step * batch_size + i for i in range(len(captions))]
            with torch.set_grad_enabled(train_text_encoder):
                states = decoder.encode_text(captions)
            generators = sample_generators(seeds, decoder.device)
            weights = weights[0] if weights else None
            loss = decoder.denoising_loss(images, states, generators, timestep_bias=timestep_bias, weights=weights)
            loss = loss.mean()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            optimizer.step()
            schedule.step()
            if ema is not None:
                _update_ema(ema, params, min(ema_decay, (1 + step) / (10 + step)))
            losses.append(loss.item())
            if log_every and (step + 1) % log_every == 0:
                logger.info("pretrain step %d/%d loss %.4f", step + 1, steps, sum(losses[-log_every:]) / log_every)
            _checkpoint(checkpoints, "unet", step + 1, steps, parts, optimizer, schedule, losses, ema)
        if ema is not None:
            with torch.no_grad():
                for param, average in zip(params, ema):
                    param.copy_(average)
    finally:
        decoder.requires_grad_(False)
    return losses


@torch.no_grad()
def _update_ema(averages: list[torch.Tensor], params: list[torch.Tensor], decay: float) -> None:
    torch._foreach_lerp_(averages, [p.detach() for p in params], 1.0 - decay)


def pretrain_vae(
    decoder: TextToImageDecoder,
    sample: Sampler,
    steps: int,
    batch_size: int = 64,
    learning_rate: float = 1e-3,
    kl_weight: float = 1e-6,
    log_every: int = 100,
    loss: str = "l1",
    checkpoints: StageCheckpoints | None = None,
    max_grad_norm: float | None = 1.0,
    latent_loss: Callable[[torch.Tensor, int], torch.Tensor] | None = None,
) -> list[float]:
    """Train the decoder's VAE as an autoencoder; set its scaling factor so latents have unit
    variance, as Stable Diffusion does.

    `latent_loss(means, step)`, if given, adds a loss on the posterior means (B, C, h, w) of step's
    batch (for example, to make a fact the data source knows stand out in the latents).

    `loss="l1"`: L1 of a posterior sample + `kl_weight` * KL (Stable Diffusion's recipe).
    `loss="mse"`: 4 * MSE of the posterior mean + 0.1 * mean posterior variance. It learns small
    objects on flat backgrounds several times faster (L1's median favours the background) and keeps
    the posterior noise small, so the latents diffusion trains on are nearly deterministic.
    With `checkpoints`, the state is saved (and resumed) as stage "vae". Gradients are clipped to
    `max_grad_norm` (None: not clipped): unclipped, a VAE at a high learning rate can spike and lose
    small shapes for good.
    """
    if loss not in ("l1", "mse"):
        raise ValueError(f"loss must be 'l1' or 'mse', got {loss!r}")
    vae = decoder.vae
    vae.requires_grad_(True)
    optimizer = torch.optim.AdamW(vae.parameters(), lr=learning_rate, weight_decay=0.0)
    schedule = cosine_lr(optimizer, steps, warmup=min(100, steps // 10 + 1))
    start, losses = _resume(checkpoints, "vae", [vae], optimizer, schedule)
    try:
        for step in progress_range(start, steps, "pretrain vae"):
            images = sample(batch_size, step)[0]
            value, means = _vae_loss(vae, images, loss, kl_weight)
            if latent_loss is not None:
                value = value + latent_loss(means, step)
            optimizer.zero_grad(set_to_none=True)
            value.backward()
            if max_grad_norm is not None:
                torch.nn.utils.clip_grad_norm_(vae.parameters(), max_grad_norm)
            optimizer.step()
            schedule.step()
            losses.append(value.item())
            if log_every and (step + 1) % log_every == 0:
                logger.info("vae step %d/%d loss %.4f", step + 1, steps, sum(losses[-log_every:]) / log_every)
            _checkpoint(checkpoints, "vae", step + 1, steps, [vae], optimizer, schedule, losses)
        with torch.no_grad():
            images = sample(256, steps)[0]
            std = vae.encode(images).latent_dist.mean.std().item()
        vae.register_to_config(scaling_factor=1.0 / std)
    finally:
        decoder.requires_grad_(False)
    return losses


def _vae_loss(vae, images: torch.Tensor, loss: str, kl_weight: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(the autoencoder loss, the posterior means)"""
    dist = vae.encode(images).latent_dist
    if loss == "mse":
        recon = vae.decode(dist.mean).sample
        return 4.0 * (recon - images).pow(2).mean() + 0.1 * dist.var.mean(), dist.mean
    recon = vae.decode(dist.sample()).sample
    return (recon - images).abs().mean() + kl_weight * dist.kl().mean(), dist.mean

"""Decoder A: the world's pretrained micro latent text-to-image model, and how well it draws scenes.

Decoder A is `models.micro.build_micro_decoder` over the world ``VOCABULARY`` (word tokenizer,
``CLIPTextModel``, ``UNet2DConditionModel``, ``AutoencoderKL``, ``DDPMScheduler``: the diffusers
classes with small configs), trained in two stages on freshly rendered ``train_scenes`` (never the
test split): the VAE as an autoencoder, then the UNet and text encoder on ``sample_caption``
captions (random fact subsets, some full descriptions, some empty captions for classifier-free
guidance). It is saved as a diffusers folder that ``StableDiffusionPipeline.from_pretrained`` loads,
with ``training.json`` (command, steps, wall time, machine, date) beside it. The bundled copy lives
in ``dediffusion/assets/decoder_a``; reproduce it with

    dediffusion world pretrain-decoder a --out src/dediffusion/assets/decoder_a

``evaluate_decoder`` generates from prompts of the first test scenes (full description, human caption
or empty) with fixed seeds and scores the images with the world's perception model.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from dediffusion.models.sampling import generate_from_prompts
from dediffusion.progress import progress_range
from dediffusion.records import machine_summary, utc_now
from dediffusion.world.render import render_batch
from dediffusion.world.scene import GRID, SHAPES, Scene
from dediffusion.world.split import train_scenes
from dediffusion.world.text import VOCABULARY, describe, human_caption, sample_caption

logger = logging.getLogger(__name__)

RESOLUTION = 32
# Architecture of decoder A (arguments of build_micro_decoder besides the vocabulary).
DECODER_A_CONFIG: dict[str, Any] = {
    "resolution": RESOLUTION,
    "latent": True,
    "prediction_type": "v_prediction",
    "max_length": 32,
    "text_width": 64,
    "text_layers": 2,
    "unet_channels": (64, 128),
    "cross_attention": (True, True),
    "latent_channels": 8,
    "vae_channels": (16, 32, 64),
}
PROMPT_SOURCES: dict[str, Callable[[Scene], str]] = {
    "description": describe,
    "human": human_caption,
    "empty": lambda scene: "",
}


def default_decoder_path() -> Path:
    """Folder of the bundled decoder A inside the installed package (also `bundled:decoder_a`)."""
    from dediffusion.assets import ASSETS_DIR

    return ASSETS_DIR / "decoder_a"


def checkpoint_folder(out_dir: str | Path) -> Path:
    """Where pretraining for `out_dir` keeps its checkpoints until the result is saved: rerunning the
    same command continues from them."""
    out_dir = Path(out_dir)
    return out_dir.parent / f"{out_dir.name}.checkpoints"


def world_sampler(
    seed: int = 0,
    p_empty: float = 0.1,
    p_full: float = 0.4,
    resolution: int = RESOLUTION,
    p_loose: float = 0.0,
    object_weight: float = 0.0,
):
    """`sample(batch_size, step) -> (images (B, 3, resolution, resolution) in [-1, 1], captions)` over
    fresh training scenes: step k draws scenes k * batch_size ... of the training stream of `seed`;
    the caption probabilities are those of `sample_caption`.

    With `object_weight` > 0 it also returns loss weights (B, 1, resolution, resolution): 1 on the
    background and 1 + `object_weight` on pixels an object touches (`object_mask`)."""

    def sample(batch_size: int, step: int) -> tuple:
        scenes = train_scenes(batch_size, seed=seed, start=step * batch_size)
        rng = np.random.default_rng([seed, step])
        captions = [sample_caption(scene, rng, p_empty, p_full, p_loose) for scene in scenes]
        images = render_batch(scenes, resolution)
        if object_weight <= 0:
            return images, captions
        return images, captions, 1.0 + object_weight * object_mask(scenes, resolution)

    return sample


def object_mask(scenes: Sequence[Scene], resolution: int = RESOLUTION) -> torch.Tensor:
    """(B, 1, resolution, resolution): 1 where an object covers any part of a pixel, else 0."""
    from dediffusion.world.render import object_coverage

    mask = np.zeros((len(scenes), 1, resolution, resolution), np.float32)
    for i, scene in enumerate(scenes):
        for obj in scene.objects:
            top, left, coverage = object_coverage(obj, resolution)
            height, width = coverage.shape
            mask[i, 0, top : top + height, left : left + width] += coverage > 0
    return torch.from_numpy(mask.clip(0, 1))


def shape_latent_loss(seed: int, batch_size: int, weight: float, scale: float = 4.0, margin: float | None = None):
    """`latent_loss(means, step)` for `pretrain_vae` on `world_sampler(seed)` batches: makes each object's
    shape stand out in the VAE latents.

    The denoising loss weighs a latent direction by its share of the latents' variance. A VAE trained
    to reconstruct pixels keeps shapes in directions about three times shorter than colours (a few
    pixels differ between a small circle and a small diamond), so its UNet learns colours and ignores
    shape words. Here the latent means are averaged over each grid cell and projected on five fixed
    orthonormal directions, scaled by `scale` over the batch's latent standard deviation; the
    cross-entropy of those five logits against the cell's shape (cells with objects only) is
    returned, times `weight`. The encoder can only lower it by giving shapes directions about as long
    as the latents' spread.

    The cross-entropy never stops pushing shapes apart, past the colours' separation. With `margin` the loss is a
    multi-class hinge instead: zero once each cell's own shape projects at least `margin` latent
    standard deviations (`scale` ignored) above every other shape, so shapes get a set length.
    """
    from dediffusion.world.perception import scene_targets

    generator = torch.Generator().manual_seed(seed)
    directions: dict[int, torch.Tensor] = {}

    def loss(means: torch.Tensor, step: int) -> torch.Tensor:
        channels = means.shape[1]
        if channels not in directions:  # 5 orthonormal directions in the latent channels
            q, _ = torch.linalg.qr(torch.randn(channels, channels, generator=generator))
            directions[channels] = q[:, : len(SHAPES)]
        scenes = train_scenes(batch_size, seed=seed, start=step * batch_size)
        cells = F.adaptive_avg_pool2d(means, GRID).flatten(2).transpose(1, 2)  # (B, 9, C)
        projections = cells @ directions[channels].to(means) / means.detach().std().clamp_min(1e-6)
        targets = scene_targets(scenes)["shape"].flatten()
        projections = projections.flatten(0, 1)
        if margin is None:
            return weight * F.cross_entropy(scale * projections, targets, ignore_index=-100)
        occupied = targets >= 0
        projections, targets = projections[occupied], targets[occupied]
        own = projections.gather(1, targets[:, None])
        others = projections.masked_fill(F.one_hot(targets, len(SHAPES)).bool(), float("-inf"))
        gap = own.squeeze(1) - others.max(dim=1).values
        return weight * F.relu(margin - gap).mean() if len(gap) else projections.sum() * 0.0

    return loss


def pretrain_decoder_a(
    out_dir: str | Path,
    vae_steps: int = 2500,
    text_steps: int = 800,
    steps: int = 2500,
    batch_size: int = 64,
    seed: int = 0,
    learning_rate: float = 2e-3,
    vae_learning_rate: float = 2e-3,
    vae_batch_size: int = 32,
    vae_max_grad_norm: float | None = 1.0,
    ema_decay: float = 0.995,
    p_full: float = 0.5,
    p_loose: float = 0.5,
    timestep_bias: float = 3.0,
    object_weight: float = 0.0,
    vae_shape_weight: float = 0.1,
    vae_shape_margin: float | None = 0.2,
    config: dict[str, Any] | None = None,
    command: str = "",
    checkpoint_every: int = 250,
) -> Path:
    """Build decoder A and train it in three stages, then save it atomically; return `out_dir`.

    1. the VAE, as an autoencoder of training scenes (`vae_steps`), plus `vae_shape_weight` times
       `shape_latent_loss` (0: none; `vae_shape_margin` makes it a hinge with that margin, None the
       cross-entropy; the bundled model: weight 0.1, margin 0.2);
    2. the text encoder, to state where things are (`pretrain_text_encoder_on_layouts`, `text_steps`);
    3. the UNet and the text encoder together on captioned scenes, the usual text-to-image
       objective (`steps`), with high-noise timesteps favoured (`timestep_bias`) and, with
       `object_weight` > 0, the squared error under objects weighted 1 + `object_weight` times the
       background's (`world_sampler`).

    Args:
        out_dir: the diffusers folder to write (replaced in one rename when training ends).
        vae_steps, text_steps, steps: optimiser steps of the three stages, each on fresh scenes.
        seed: seeds the weights, the training scenes, the captions and the noise.
        p_full, p_loose: caption probabilities of `sample_caption` in stage 3. Loose-word captions
            teach the decoder to read words outside phrases, so an encoder's words need not come in
            phrases; they cost some accuracy from full descriptions (docs/research.md).
        config: overrides of `DECODER_A_CONFIG` (architecture).
        command: recorded in training.json (the command line that made it).

    Checkpoints go to `checkpoint_folder(out_dir)` (each stage, and every `checkpoint_every` UNet or VAE steps);
    rerunning with the same settings continues from them (see `StageCheckpoints`).
    """
    from dediffusion.models.micro import build_micro_decoder
    from dediffusion.train.pretrain import StageCheckpoints, pretrain_text_to_image, pretrain_vae

    architecture = {**DECODER_A_CONFIG, **(config or {})}
    settings = {
        "vae_steps": vae_steps, "text_steps": text_steps, "steps": steps, "batch_size": batch_size,
        "seed": seed, "learning_rate": learning_rate, "vae_learning_rate": vae_learning_rate,
        "vae_batch_size": vae_batch_size, "vae_max_grad_norm": vae_max_grad_norm, "ema_decay": ema_decay,
        "p_full": p_full, "p_loose": p_loose, "timestep_bias": timestep_bias, "object_weight": object_weight,
        "vae_shape_weight": vae_shape_weight,
        **({"vae_shape_margin": vae_shape_margin} if vae_shape_margin is not None else {}),
        "architecture": architecture,
    }  # fmt: skip
    checkpoints = StageCheckpoints(checkpoint_folder(out_dir), settings, checkpoint_every)
    torch.manual_seed(seed)
    decoder = build_micro_decoder(VOCABULARY, **architecture)
    # each stage sees its own slice of the training stream; none ever sees the test split
    resolution = architecture["resolution"]
    vae_sample = world_sampler(seed + 1, resolution=resolution)
    vae_losses = pretrain_vae(
        decoder, vae_sample, vae_steps, vae_batch_size, vae_learning_rate, loss="mse", checkpoints=checkpoints,
        max_grad_norm=vae_max_grad_norm,
        latent_loss=(
            shape_latent_loss(seed + 1, vae_batch_size, vae_shape_weight, margin=vae_shape_margin)
            if vae_shape_weight > 0 else None
        ),
    )  # fmt: skip
    # the perception model reads 32x32 images only; smaller test-size decoders are not scored
    vae_accuracy = vae_reconstruction_accuracy(decoder) if resolution == RESOLUTION else None
    if vae_accuracy is not None:
        logger.info("VAE reconstructions: scene accuracy %.4f on 200 test scenes", vae_accuracy)
    text_state = checkpoints.load("text")
    if text_state is None:
        text_losses = pretrain_text_encoder_on_layouts(decoder, text_steps, batch_size, learning_rate, seed + 2)
        weights = [decoder.text_encoder.state_dict()]
        checkpoints.save("text", {"step": text_steps, "losses": text_losses, "weights": weights})
    else:
        decoder.text_encoder.load_state_dict(text_state["weights"][0])
        text_losses = text_state["losses"]
    losses = pretrain_text_to_image(
        decoder,
        world_sampler(seed, p_full=p_full, resolution=resolution, p_loose=p_loose, object_weight=object_weight),
        steps,
        batch_size,
        learning_rate,
        seed,
        ema_decay=ema_decay,
        timestep_bias=timestep_bias,
        checkpoints=checkpoints,
    )
    record = _training_record(command, settings, checkpoints.seconds(), vae_losses, losses)
    record["vae_reconstruction_scene_accuracy"] = vae_accuracy
    record["final_text_layout_loss"] = float(np.mean(text_losses[-10:])) if text_losses else None
    _save(decoder, Path(out_dir), record)
    checkpoints.remove()
    return Path(out_dir)


class LayoutReadout(torch.nn.Module):
    """Reads the scene graph out of text-encoder states: 9 learned cell queries and one background
    query cross-attend to the states; linear heads give each cell's occupancy, shape, colour and size
    and the background. Used only to pretrain decoder A's text encoder; it is not part of the decoder."""

    def __init__(self, width: int, num_heads: int = 4) -> None:
        from dediffusion.world.perception import CELL_HEADS, VOCABULARIES

        super().__init__()
        self.sizes = {name: len(VOCABULARIES[name]) for name in CELL_HEADS}
        self.queries = torch.nn.Parameter(0.1 * torch.randn(GRID * GRID + 1, width))
        self.attention = torch.nn.MultiheadAttention(width, num_heads, batch_first=True)
        self.cell_head = torch.nn.Linear(width, sum(self.sizes.values()))
        self.background_head = torch.nn.Linear(width, len(VOCABULARIES["background"]))

    def loss(self, states: torch.Tensor, scenes: Sequence[Scene]) -> torch.Tensor:
        from dediffusion.world.perception import scene_targets

        read, _ = self.attention(self.queries.expand(states.shape[0], -1, -1), states, states)
        cells = self.cell_head(read[:, : GRID * GRID]).split(list(self.sizes.values()), dim=-1)
        targets = scene_targets(scenes)
        total = F.cross_entropy(self.background_head(read[:, -1]), targets["background"])
        for name, logits in zip(self.sizes, cells):
            total = total + F.cross_entropy(logits.flatten(0, 1), targets[name].flatten(), ignore_index=-100)
        return total


def pretrain_text_encoder_on_layouts(
    decoder, steps: int, batch_size: int = 64, learning_rate: float = 2e-3, seed: int = 0, log_every: int = 100
) -> list[float]:
    """Teach decoder A's text encoder to say where things are before the UNet learns to draw them.

    Stable Diffusion starts from a pretrained text encoder (CLIP); a micro decoder trained from
    scratch spends most of its budget learning that "red" and "circle" belong to the "top left" of the
    same phrase. Here the text encoder learns, on full descriptions of fresh training scenes, states
    from which `LayoutReadout` recovers every cell's object and the background (cross-entropy), a few
    hundred steps that let the UNet bind words to places several times sooner. Returns the losses.
    """
    from dediffusion.world.split import train_scenes
    from dediffusion.world.text import describe

    text_encoder = decoder.text_encoder
    readout = LayoutReadout(text_encoder.config.hidden_size)
    text_encoder.requires_grad_(True)
    params = [*text_encoder.parameters(), *readout.parameters()]
    optimizer = torch.optim.AdamW(params, lr=learning_rate, weight_decay=0.0)
    losses = []
    try:
        for step in progress_range(0, steps, "text encoder"):
            scenes = train_scenes(batch_size, seed=seed, start=step * batch_size)
            loss = readout.loss(decoder.encode_text([describe(scene) for scene in scenes]), scenes)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
            if log_every and (step + 1) % log_every == 0:
                logger.info("text step %d/%d loss %.4f", step + 1, steps, sum(losses[-log_every:]) / log_every)
    finally:
        text_encoder.requires_grad_(False)
    return losses


def vae_reconstruction_accuracy(decoder, n: int = 200) -> float:
    """Scene accuracy of the VAE's reconstructions of the first `n` test scenes (a report only;
    the test split never trains anything)."""
    from dediffusion.world.scoring import WorldScorer
    from dediffusion.world.split import test_scenes

    scenes = test_scenes(n)
    with torch.no_grad():
        images = decoder.from_latents(decoder.to_latents(render_batch(scenes, RESOLUTION)))
    return WorldScorer().score(images, scenes)["scene_accuracy"]


def _training_record(command: str, settings: dict, seconds: float, vae_losses, losses) -> dict[str, Any]:
    tail = max(len(losses) // 20, 1)
    return {
        "command": command,
        "settings": settings,
        "wall_time_s": round(seconds, 1),
        "torch_threads": torch.get_num_threads(),
        "final_vae_loss": float(np.mean(vae_losses[-tail:])) if vae_losses else None,
        "final_loss": float(np.mean(losses[-tail:])) if losses else None,
        "machine": machine_summary(),
        "date": utc_now(),
    }


def _save(decoder, out_dir: Path, record: dict[str, Any]) -> Path:
    from dediffusion.atomic import atomic_folder

    record = {**record, "stored_dtype": "float16"}
    with atomic_folder(out_dir) as tmp:
        # stored in half precision to keep the bundle small; from_pretrained loads it as float32
        decoder.to(torch.float16).save_pretrained(tmp)
        decoder.to(torch.float32)
        (tmp / "training.json").write_text(json.dumps(record, indent=2) + "\n")
    logger.info("saved decoder A to %s (%.0f s of training)", out_dir, record["wall_time_s"])
    return out_dir


def generate_for_scenes(
    decoder,
    scenes: Sequence[Scene],
    prompts_from: str = "description",
    guidance_scale: float = 3.0,
    num_inference_steps: int = 25,
    batch_size: int = 100,
    seed: int = 0,
) -> torch.Tensor:
    """Images (N, 3, 32, 32) generated from prompts of `scenes`; image i uses seed `seed + i`."""
    if prompts_from not in PROMPT_SOURCES:
        raise ValueError(f"prompts_from must be one of {sorted(PROMPT_SOURCES)}, got {prompts_from!r}")
    prompts = [PROMPT_SOURCES[prompts_from](scene) for scene in scenes]
    return generate_from_prompts(decoder, prompts, guidance_scale, num_inference_steps, batch_size, seed)


def evaluate_decoder(
    decoder_dir: str | Path | None = None,
    prompts_from: str = "description",
    n: int = 200,
    guidance_scale: float = 3.0,
    num_inference_steps: int = 25,
    batch_size: int = 100,
    seed: int = 0,
) -> float:
    """Scene accuracy of images generated from the first `n` test scenes' prompts (fixed seeds).

    Args:
        decoder_dir: a decoder folder; None is the bundled decoder A.
        prompts_from: "description" (full description), "human" (human caption) or "empty".
    Returns:
        mean fact accuracy in [0, 1] of the perception model's reading against the true scenes.
    """
    from dediffusion.models.decoder import TextToImageDecoder
    from dediffusion.world.scoring import WorldScorer
    from dediffusion.world.split import test_scenes

    decoder = TextToImageDecoder.from_pretrained(decoder_dir or default_decoder_path())
    scenes = test_scenes(n)
    images = generate_for_scenes(decoder, scenes, prompts_from, guidance_scale, num_inference_steps, batch_size, seed)
    return WorldScorer().score(images, scenes)["scene_accuracy"]

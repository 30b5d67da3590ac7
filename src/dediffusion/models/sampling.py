"""Drawing images from text with a `TextToImageDecoder`: DDIM sampling with classifier-free guidance.

- `generate(decoder, prompts | text_states, ...)`: one batch, each image from its own generator;
- `generate_from_prompts(decoder, prompts, ..., seed)`: many prompts in batches, image i from seed
  `seed + i`, so every prompt source is drawn with the same noise;
- `resolve_draw_dtype(name)`: float32, or bfloat16 where the hardware computes it natively.

Sampling is apart from the decoder's training loss (`decoder.py`): the loss is what De-Diffusion
trains through; sampling is what reconstructions and the sleep phase's drawings use.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch

from ..records import cpu_bfloat16_units
from .decoder import per_sample_randn

if TYPE_CHECKING:
    from .decoder import TextToImageDecoder


@torch.no_grad()
def generate(
    decoder: TextToImageDecoder,
    prompts: Sequence[str] | None = None,
    text_states: torch.Tensor | None = None,
    guidance_scale: float = 7.5,
    num_inference_steps: int = 50,
    generators: Sequence[torch.Generator] | None = None,
    timestep_spacing: str | None = None,
) -> torch.Tensor:
    """Images (B, 3, H, W) in [-1, 1] from prompts (or precomputed text states) with
    classifier-free guidance (the empty prompt is the unconditional branch) and DDIM sampling.

    `timestep_spacing` (None: the scheduler config's, as in diffusers' pipelines) may be "trailing":
    sampling starts at the last training timestep, where the latent is pure noise (Lin et al., 2023,
    "Common diffusion noise schedules and sample steps are flawed"), while "leading", diffusers'
    default and the world decoders', starts T / num_inference_steps below it. That costs most at few
    steps.
    """
    from diffusers import DDIMScheduler

    cond = decoder.encode_text(prompts) if text_states is None else text_states.to(decoder.device)
    generators = generators or [torch.Generator(decoder.device).manual_seed(i) for i in range(cond.shape[0])]
    spacing = {"timestep_spacing": timestep_spacing} if timestep_spacing else {}
    scheduler = DDIMScheduler.from_config(decoder.scheduler.config, **spacing)
    scheduler.set_timesteps(num_inference_steps, device=decoder.device)
    latents = per_sample_randn(decoder.latent_shape, generators, decoder.device) * scheduler.init_noise_sigma
    return decoder.from_latents(denoise_latents(decoder, latents, cond, scheduler, scheduler.timesteps, guidance_scale))


@torch.no_grad()
def denoise_latents(
    decoder: TextToImageDecoder, latents, text_states, scheduler, timesteps, guidance_scale: float = 7.5
) -> torch.Tensor:
    """Run `scheduler` over `timesteps` from `latents` (B, C, h, w), conditioned on `text_states`
    (B, T, D) with classifier-free guidance (the empty prompt is the unconditional branch); return
    the final latents. `generate` starts from pure noise; starting from a noised image at a lower
    timestep redraws it (SDEdit)."""
    cond = text_states.to(decoder.device)
    guided = guidance_scale != 1.0
    states = torch.cat([decoder.unconditional_states().expand_as(cond), cond]) if guided else cond
    for t in timesteps:
        model_in = torch.cat([latents, latents]) if guided else latents
        model_in = scheduler.scale_model_input(model_in, t).to(decoder.dtype)
        out = decoder.predict(model_in, t, states).float()
        if guided:
            out_uncond, out_cond = out.chunk(2)
            out = out_uncond + guidance_scale * (out_cond - out_uncond)
        latents = scheduler.step(out, t, latents).prev_sample
    return latents


def generate_from_prompts(
    decoder,
    prompts: Sequence[str],
    guidance_scale: float = 3.0,
    num_inference_steps: int = 25,
    batch_size: int = 100,
    seed: int = 0,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Images (N, 3, H, W), float32, generated from `prompts`, `batch_size` at a time; image i uses seed
    `seed + i`. A `dtype` other than float32 samples under autocast to it (bfloat16: faster where the
    hardware computes it natively, see `resolve_draw_dtype`)."""
    chunks = []
    for i in range(0, len(prompts), batch_size):
        batch = list(prompts[i : i + batch_size])
        generators = [torch.Generator(decoder.device).manual_seed(seed + i + k) for k in range(len(batch))]
        with torch.autocast(decoder.device.type, dtype=dtype, enabled=dtype != torch.float32):
            images = decoder.generate(batch, None, guidance_scale, num_inference_steps, generators)
        chunks.append(images.float().cpu())
    return torch.cat(chunks)


def resolve_draw_dtype(name: str, device: str | torch.device = "cpu") -> torch.dtype:
    """torch.float32 or torch.bfloat16 for `name` ("float32", "bfloat16" or "auto"). "auto" takes bfloat16
    only where `device` computes it natively (elsewhere bfloat16 arithmetic is emulated)."""
    if name == "auto":
        return torch.bfloat16 if native_bfloat16(torch.device(device)) else torch.float32
    if name not in ("float32", "bfloat16"):
        raise ValueError(f"draw_dtype must be auto, float32 or bfloat16, not {name!r}")
    return getattr(torch, name)


def native_bfloat16(device: torch.device) -> bool:
    """Whether `device` has bfloat16 arithmetic in hardware: a CUDA GPU that supports it, or a CPU with
    AVX512-BF16 or AMX tiles."""
    if device.type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    if device.type != "cpu":
        return False
    return bool(cpu_bfloat16_units())

"""The sleep phase's data: the frozen decoder's drawings of prior texts, made once per run.

`load_drawn_pairs(model, config, run_dir, accelerator)` returns the `sleep.pairs` prior texts (token
ids (P, N), from `models.sleep.sample_prior_tokens` seeded by `train.seed`) and the decoder's drawing
of each (uint8 images (P, 3, H, W); drawing i uses seed `train.seed * 1_000_003 + i`). They are
written to `run_dir/sleep/part-*.safetensors`, `PART_SIZE` pairs a file, each file atomically, so an
interrupted run keeps the parts it finished and a resumed run reads them back instead of drawing
again. With several processes, each draws every N-th part; all then read all parts.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from ..atomic import atomic_write_bytes
from ..config import Config, ConfigError
from ..data.images import to_pixels
from ..models.dediffusion import DeDiffusion
from ..models.sleep import draw_images, sample_prior_tokens

logger = logging.getLogger(__name__)

PART_SIZE = 512


def load_drawn_pairs(
    model: DeDiffusion, config: Config, run_dir: Path, accelerator
) -> tuple[torch.Tensor, torch.Tensor]:
    """(images uint8 (P, 3, H, W), token ids (P, N)); draws the parts the run folder lacks."""
    tokens = prior_token_ids(model, config)
    folder = run_dir / "sleep"
    folder.mkdir(parents=True, exist_ok=True)
    parts = range(0, len(tokens), PART_SIZE)
    mine = [start for k, start in enumerate(parts) if k % accelerator.num_processes == accelerator.process_index]
    missing = [start for start in mine if not _part_path(folder, start).is_file()]
    for start in missing:
        _draw_part(model, config, tokens[start : start + PART_SIZE], start, _part_path(folder, start))
    accelerator.wait_for_everyone()
    images = [_read_part(_part_path(folder, start), tokens[start : start + PART_SIZE]) for start in parts]
    return torch.cat(images), tokens


def prior_token_ids(model: DeDiffusion, config: Config) -> torch.Tensor:
    """The run's `sleep.pairs` prior texts (P, N); the filler is the first token of `tokens.init_text`."""
    if not config.tokens.init_text:
        raise ConfigError(
            "sleep.steps > 0 needs tokens.init_text: its first token fills the positions of a prior text "
            "that hold no random word (the world preset uses 'a')"
        )
    filler = model.decoder.text_token_ids(config.tokens.init_text)[0]
    allowed = model.vocab_mask.nonzero().squeeze(1)
    generator = torch.Generator().manual_seed(config.train.seed)
    sleep = config.sleep
    return sample_prior_tokens(sleep.pairs, config.encoder.num_tokens, allowed, filler, sleep.density, generator)


def _part_path(folder: Path, start: int) -> Path:
    return folder / f"part-{start:08d}.safetensors"


def _draw_part(model: DeDiffusion, config: Config, tokens: torch.Tensor, start: int, path: Path) -> None:
    from safetensors.torch import save

    sleep = config.sleep
    seeds = [config.train.seed * 1_000_003 + start + i for i in range(len(tokens))]
    dtype = getattr(torch, sleep.draw_dtype)
    images = draw_images(
        model.decoder, tokens, seeds, sleep.guidance_scale, sleep.num_inference_steps, dtype, sleep.timestep_spacing
    )
    atomic_write_bytes(path, save({"images": to_pixels(images).contiguous(), "tokens": tokens.contiguous()}))
    logger.info("sleep phase: drew pairs %d-%d of %d", start, start + len(tokens) - 1, config.sleep.pairs)


def _read_part(path: Path, tokens: torch.Tensor) -> torch.Tensor:
    from safetensors.torch import load_file

    part = load_file(str(path))
    if not torch.equal(part["tokens"], tokens):
        raise ConfigError(
            f"'{path}' holds drawings of other texts than this run's sleep settings give: delete the "
            f"'{path.parent}' folder (it is drawn again) or resume with the config the run was started with"
        )
    return part["images"]

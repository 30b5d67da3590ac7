"""The sleep phase's data: the frozen decoder's drawings of prior texts, made once per run.

`load_drawn_pairs(model, config, run_dir, accelerator)` returns the `sleep.pairs` prior texts (token
ids (P, N), from `models.sleep.sample_prior_tokens` or the lines of `sleep.texts`, seeded by
`train.seed`) and the decoder's drawing of each (uint8 images (P, 3, H, W); drawing i uses seed
`train.seed * 1_000_003 + i`). They are written to `run_dir/sleep/part-*.safetensors`, `PART_SIZE`
pairs a file, each file atomically, so an interrupted run keeps the parts it finished and a resumed
run reads them back instead of drawing again. With several processes, each draws every N-th part;
all then read all parts.
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
    """The run's `sleep.pairs` prior texts (P, N): random words (`models.sleep.sample_prior_tokens`), or
    lines of `sleep.texts` (`text_prior_ids`). The filler is the first token of `tokens.init_text`."""
    generator = torch.Generator().manual_seed(config.train.seed)
    if config.sleep.texts:
        return text_prior_ids(model, config, generator)
    filler = filler_id(model, config)
    allowed = model.vocab_mask.nonzero().squeeze(1)
    sleep = config.sleep
    return sample_prior_tokens(sleep.pairs, config.encoder.num_tokens, allowed, filler, sleep.density, generator)


def filler_id(model: DeDiffusion, config: Config) -> int:
    if not config.tokens.init_text:
        raise ConfigError(
            "sleep.steps > 0 needs tokens.init_text: its first token fills the positions of a prior text "
            "that hold no word (the world preset uses 'a'), unless tokens.allow_end ends sleep.texts' lines"
        )
    return model.decoder.text_token_ids(config.tokens.init_text)[0]


def text_prior_ids(model: DeDiffusion, config: Config, generator: torch.Generator) -> torch.Tensor:
    """`sleep.pairs` lines of the `sleep.texts` file (P, N), drawn in a seeded order that visits every line
    before any repeats; each cut to `encoder.num_tokens` tokens and followed by the end-of-text token
    (`tokens.allow_end`) or the filler."""
    path = Path(config.sleep.texts)
    try:
        lines = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    except (OSError, UnicodeDecodeError) as error:
        message = f"sleep.texts '{path}' cannot be read ({error}): give a UTF-8 file, one text per line"
        raise ConfigError(message) from None
    if not lines:
        raise ConfigError(f"sleep.texts '{path}' holds no text: give a file with one text per line")
    num_tokens, pairs = config.encoder.num_tokens, config.sleep.pairs
    order = torch.cat([torch.randperm(len(lines), generator=generator) for _ in range(-(-pairs // len(lines)))])
    chosen = [lines[i] for i in order[:pairs].tolist()]
    pad = model.decoder.end_id if config.tokens.allow_end else filler_id(model, config)
    ids = torch.full((pairs, num_tokens), pad, dtype=torch.long)
    strings = model.decoder.token_strings()
    for row, (text, tokens) in enumerate(zip(chosen, model.decoder.read_back(chosen))):
        banned = sorted({strings[t] for t in tokens if not model.vocab_mask[t]})
        if banned:
            raise ConfigError(
                f"sleep.texts '{path}': the line '{text}' holds tokens the encoder may not write {banned[:5]}: "
                "remove them or change tokens.allow / tokens.deny"
            )
        tokens = tokens[:num_tokens]
        ids[row, : len(tokens)] = torch.tensor(tokens, dtype=torch.long)
    return ids


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

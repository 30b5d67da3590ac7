"""De-Diffusion: a trainable image encoder writing text for a frozen text-to-image decoder.

`DeDiffusion(config, decoder)` owns its loss: `forward(images, seeds, step)` returns a dict whose
"loss" is the objective's (models/objectives.py: the paper's, the decoder's denoising loss conditioned
on Gumbel-softmax tokens predicted from the images; or a named alternative). Only `encoder` trains.
`encode(images)` writes text (argmax tokens; `unique_words=True`: each word once, the filler dropped,
see `unique_words`). A trained model is a
folder: `config.yaml`, `model.safetensors` (encoder weights and vocabulary mask) and
`decoder.json` (where the decoder was and the fingerprint of its vocabulary).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

from ..config import Config, load_config, save_config
from .decoder import TextToImageDecoder
from .encoder import ImageEncoder
from .objectives import OBJECTIVES, sleep_objective
from .quantize import hard_tokens, temperature_at

logger = logging.getLogger(__name__)

WEIGHTS_NAME = "model.safetensors"
CONFIG_NAME = "config.yaml"
DECODER_NAME = "decoder.json"


class CheckpointMismatchError(ValueError):
    """A saved encoder does not fit the decoder (or the config) it is loaded with."""


class ModelLoadError(ValueError):
    """A De-Diffusion model folder is incomplete, damaged or not one at all."""


def sample_generators(seeds: Sequence[int] | torch.Tensor, device: torch.device | str) -> list[torch.Generator]:
    """One generator per sample, so each sample's randomness depends only on its own seed."""
    return [torch.Generator(device=device).manual_seed(int(seed)) for seed in seeds]


class DeDiffusion(nn.Module):
    def __init__(self, config: Config, decoder: TextToImageDecoder, vocab_mask: torch.Tensor | None = None):
        super().__init__()
        if config.encoder.num_tokens > decoder.max_tokens:
            from ..config import ConfigError

            raise ConfigError(
                f"encoder.num_tokens={config.encoder.num_tokens} exceeds what the decoder's text encoder "
                f"takes ({decoder.max_tokens} tokens); set encoder.num_tokens={decoder.max_tokens} or fewer "
                "(`fit_to_decoder` does this for presets)"
            )
        self.config = config
        self.decoder = decoder
        self.encoder = ImageEncoder(config.encoder, decoder.vocab_size)
        if vocab_mask is None:
            tokens = config.tokens
            vocab_mask = decoder.vocabulary_mask(
                tokens.exclude_punctuation, tokens.allow, tokens.deny, tokens.whole_words
            )
            if tokens.allow_end:
                vocab_mask[decoder.end_id] = True
        self.register_buffer("vocab_mask", vocab_mask.bool(), persistent=False)
        if config.tokens.init_text:
            self.encoder.init_slot_bias(starting_tokens(decoder, config, self.vocab_mask), config.tokens.init_logit)

    @property
    def device(self) -> torch.device:
        return self.vocab_mask.device

    def temperature(self, step: int) -> float:
        tokens = self.config.tokens
        steps = tokens.temperature_steps or self.config.train.steps
        return temperature_at(step, tokens.temperature_start, tokens.temperature_end, steps)

    def logits(self, images: torch.Tensor) -> torch.Tensor:
        """Masked token logits (B, N, V); excluded tokens are -inf."""
        logits = self.encoder(images.to(self.device, torch.float32))
        return logits.masked_fill(~self.vocab_mask, float("-inf"))

    def forward(
        self, images: torch.Tensor, seeds: torch.Tensor, step: int = 0, token_ids: torch.Tensor | None = None
    ) -> dict[str, torch.Tensor]:
        """Training loss for images (B, 3, H, W) in [-1, 1]; `seeds` (B,) fix each sample's noise.

        The objective is `train.estimator`'s (models/objectives.py: "gumbel", the paper's, or
        "search"); given `token_ids` (B, N), the ids the decoder drew `images` from, it is the sleep
        phase's (`sleep_objective`) and the decoder is not run.
        """
        if token_ids is not None:
            return sleep_objective(self, images, token_ids)
        objective = OBJECTIVES[self.config.train.estimator]
        return objective(self, images, sample_generators(seeds, self.device), step)

    @torch.no_grad()
    def encode_tokens(self, images: torch.Tensor) -> torch.Tensor:
        """Argmax token ids (B, N)."""
        return hard_tokens(self.logits(images))

    @torch.no_grad()
    def encode(self, images: torch.Tensor, unique_words: bool = False) -> list[str]:
        """Images (B, 3, H, W) in [-1, 1] -> one text per image: the argmax tokens as the decoder's
        tokenizer spells them, or with `unique_words` their `unique_words` form."""
        return self.texts_of(self.encode_tokens(images), unique_words)

    def texts_of(self, token_ids: torch.Tensor, unique_words: bool = False) -> list[str]:
        """The texts of token ids (B, N) this model wrote (see `encode`); with `tokens.allow_end` each text
        ends at its first end-of-text token."""
        if self.config.tokens.allow_end:
            token_ids = until_end(token_ids, self.decoder.end_id)
        texts = self.decoder.decode_tokens(token_ids)
        if not unique_words:
            return texts
        filler = self.config.tokens.init_text.split()[:1]
        return [unique_words_of(text, filler) for text in texts]

    @torch.no_grad()
    def reconstruct(
        self,
        images: torch.Tensor,
        guidance_scale: float = 3.0,
        num_inference_steps: int = 50,
        seeds: Sequence[int] | None = None,
    ) -> tuple[list[str], torch.Tensor]:
        """Encode images to text and regenerate them with the decoder from that text."""
        texts = self.encode(images)
        seeds = range(len(texts)) if seeds is None else seeds
        generators = sample_generators(seeds, self.decoder.device)
        return texts, self.decoder.generate(texts, None, guidance_scale, num_inference_steps, generators)

    # ---- saving and loading ---------------------------------------------------------------------

    def save_pretrained(self, path: str | Path) -> None:
        """Write the encoder folder (atomically: a temporary folder renamed into place)."""
        from ..atomic import atomic_folder

        with atomic_folder(Path(path)) as tmp:
            save_encoder_files(self, tmp)

    @classmethod
    def from_pretrained(
        cls, path: str | Path, decoder: TextToImageDecoder | None = None, device: str | torch.device = "cpu"
    ) -> DeDiffusion:
        """Load an encoder folder (or `bundled:NAME`); the decoder is loaded from the recorded location
        unless given (lazily: its model components load when first used, see
        `TextToImageDecoder.from_pretrained`).

        Raises CheckpointMismatchError when the decoder's vocabulary differs from the one trained for,
        FileNotFoundError when `path` does not exist and ModelLoadError when a file in it is missing or damaged.
        """
        from ..assets import resolve

        path = Path(resolve(path))
        config, record = read_model_files(path)
        # lazy: encoding needs the tokenizer alone; the rest loads when first used (reconstruct, loss)
        decoder = decoder or TextToImageDecoder.from_pretrained(resolve_decoder_path(path, record["path"]), lazy=True)
        check_decoder(decoder, record, path)
        state = read_weights(path)
        model = cls(config, decoder, vocab_mask=state.pop("vocab_mask"))
        load_encoder_state(model.encoder, state, path)
        model.trained_resolution = record.get("resolution")  # the image size it was trained on, if recorded
        return model.to(device)


def fit_to_decoder(config: Config, max_tokens: int) -> Config:
    """`config` with `encoder.num_tokens` (and the starting text) cut to the `max_tokens` the decoder takes,
    with a logged notice; unchanged when it fits. Presets name a token count for one decoder family."""
    if config.encoder.num_tokens <= max_tokens:
        return config
    logger.warning(
        "encoder.num_tokens=%d is more than this decoder's text encoder takes; using %d tokens "
        "(set encoder.num_tokens to choose fewer)",
        config.encoder.num_tokens,
        max_tokens,
    )
    words = config.tokens.init_text.split()
    tokens = dataclasses.replace(config.tokens, init_text=" ".join(words[:max_tokens]))
    return dataclasses.replace(
        config, encoder=dataclasses.replace(config.encoder, num_tokens=max_tokens), tokens=tokens
    )


def written_before_options(config: Config, file: Path) -> Config:
    """`config` as the encoder in `file` was trained: options added since it was written take the value that
    reproduces the behaviour it was trained with (`encoder.normalize_features`: off)."""
    from ..config import read_preset

    if "normalize_features" in read_preset(str(file)).get("encoder", {}):
        return config
    return dataclasses.replace(config, encoder=dataclasses.replace(config.encoder, normalize_features=False))


def read_model_files(path: Path) -> tuple[Config, dict]:
    """The config and decoder record of a model folder; ModelLoadError (or FileNotFoundError) names what
    is missing or broken."""
    from ..config import ConfigError

    if not path.is_dir():
        raise FileNotFoundError(f"model folder '{path}' does not exist; give a trained model folder or bundled:NAME")
    for name in (WEIGHTS_NAME, CONFIG_NAME, DECODER_NAME):
        if not (path / name).is_file():
            raise ModelLoadError(
                f"'{path}' is not a De-Diffusion model folder (no {name}); give a run's final/ folder, "
                "a checkpoint folder or bundled:world_encoder"
            )
    try:
        config = written_before_options(load_config(str(path / CONFIG_NAME)), path / CONFIG_NAME)
    except ConfigError as error:
        raise ModelLoadError(f"model folder '{path}': {error}") from None
    try:
        record = json.loads((path / DECODER_NAME).read_text())
        if not isinstance(record, dict) or not {"path", "fingerprint", "vocab_size"} <= set(record):
            raise ValueError("it lacks path, fingerprint or vocab_size")
    except (ValueError, UnicodeDecodeError) as error:
        raise ModelLoadError(f"'{path / DECODER_NAME}' is damaged ({error}); copy the model folder again") from None
    return config, record


def read_weights(path: Path) -> dict[str, torch.Tensor]:
    """The tensors of `path/model.safetensors`; ModelLoadError when the file is damaged or foreign."""
    from safetensors.torch import load_file

    file = path / WEIGHTS_NAME
    try:
        state = load_file(str(file))
    except Exception as error:  # SafetensorError (truncated, corrupt header), OSError
        raise ModelLoadError(
            f"'{file}' is damaged or not a safetensors file ({error}); copy the model folder again"
        ) from None
    if "vocab_mask" not in state:
        raise ModelLoadError(
            f"'{file}' holds no De-Diffusion encoder (no vocab_mask tensor): it was written by another program"
        )
    return state


def until_end(token_ids: torch.Tensor, end_id: int) -> list[torch.Tensor]:
    """Each row of token ids (B, N) up to (without) its first `end_id`."""
    rows = []
    for row in token_ids:
        ends = (row == end_id).nonzero()
        rows.append(row[: int(ends[0])] if len(ends) else row)
    return rows


def unique_words_of(text: str, drop: Sequence[str] = ()) -> str:
    """`text` with each word once, where it first occurs, and without the words in `drop`.

    The text form for decoders other than the one the encoder was trained against. An encoder writes
    a fixed number of tokens: its filler (the first word of `tokens.init_text`, what its starting text
    holds where it says nothing) wherever it has nothing to say, and repeats of the words its decoder
    weighs most. Another decoder may read each repeat as one more object; this form says each fact once.
    """
    dropped, seen, words = set(drop), set(), []
    for word in text.split():
        if word not in dropped and word not in seen:
            seen.add(word)
            words.append(word)
    return " ".join(words)


def save_encoder_files(model: DeDiffusion, folder: Path) -> None:
    from safetensors.torch import save_file

    state = {k: v.detach().cpu().contiguous() for k, v in model.encoder.state_dict().items()}
    state["vocab_mask"] = model.vocab_mask.cpu()
    save_file(state, str(folder / WEIGHTS_NAME))
    save_config(model.config, folder / CONFIG_NAME)
    record = {
        "path": recorded_decoder_path(model.config.decoder.path or model.decoder.source, folder),
        "fingerprint": model.decoder.fingerprint(),
        "vocab_size": model.decoder.vocab_size,
        "resolution": model.decoder.resolution,
    }
    (folder / DECODER_NAME).write_text(json.dumps(record, indent=2))


def starting_tokens(decoder: TextToImageDecoder, config: Config, vocab_mask: torch.Tensor) -> list[int]:
    """The ids of `tokens.init_text`, checked against the vocabulary the encoder may write.

    Raises ConfigError when the text holds a token the mask excludes or more than `num_tokens` tokens.
    """
    from ..config import ConfigError

    text, num_tokens = config.tokens.init_text, config.encoder.num_tokens
    ids = decoder.text_token_ids(text)
    excluded = sorted({decoder.token_strings()[i] for i in ids if not vocab_mask[i]})
    if excluded:
        raise ConfigError(f"tokens.init_text holds tokens the encoder may not write: {excluded}")
    if len(ids) > num_tokens:
        raise ConfigError(f"tokens.init_text has {len(ids)} tokens; encoder.num_tokens is {num_tokens}")
    return ids


def recorded_decoder_path(decoder_path: str, folder: Path) -> str:
    """How `folder` names its decoder: a local folder as seen from `folder` (so the model loads from any
    working directory, and still does when both move together); `bundled:` names and hub ids as given."""
    if not (decoder_path and Path(decoder_path).is_dir()):
        return decoder_path
    try:
        return os.path.relpath(Path(decoder_path).resolve(), Path(folder).resolve())
    except ValueError:  # on another drive (Windows): no relative path exists
        return str(Path(decoder_path).resolve())


def resolve_decoder_path(model_path: Path, recorded: str) -> str:
    """A relative decoder path is looked up beside the model folder first (`recorded_decoder_path`),
    then from the working directory (folders written before it recorded paths that way)."""
    beside = model_path / recorded
    return str(beside) if not Path(recorded).is_absolute() and beside.exists() else recorded


def check_decoder(decoder: TextToImageDecoder, record: dict, path: Path) -> None:
    found = decoder.fingerprint()
    if found != record["fingerprint"] or decoder.vocab_size != record["vocab_size"]:
        raise CheckpointMismatchError(
            f"the encoder in '{path}' was trained for decoder '{record['path']}' (vocabulary {record['fingerprint']}, "
            f"{record['vocab_size']} tokens) but the decoder given has vocabulary {found} with "
            f"{decoder.vocab_size} tokens. Load it with the decoder it was trained for, or train a new encoder."
        )


def load_encoder_state(encoder: ImageEncoder, state: dict[str, torch.Tensor], path: Path) -> None:
    expected = encoder.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong = sorted(k for k in set(expected) & set(state) if expected[k].shape != state[k].shape)
    if missing or unexpected or wrong:
        raise CheckpointMismatchError(
            f"weights in '{path}' do not fit the encoder its config describes: missing {missing[:5]}, "
            f"unexpected {unexpected[:5]}, wrong shape {wrong[:5]}. The folder is damaged or was edited."
        )
    encoder.load_state_dict(state)

"""Typed configuration: frozen dataclasses with defaults in code, YAML presets, dotted overrides.

A `Config` says *what* to build and train (encoder, text bottleneck, decoder, training schedule).
*How* to run it (device, output folder, resume) lives in CLI flags and function arguments.
`load_config(preset, overrides)` merges a preset (a YAML file path or the name of a bundled preset)
over the defaults, then dotted `key=value` overrides over that, and validates the result.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

PRESETS_DIR = Path(__file__).parent / "presets"


class ConfigError(ValueError):
    """A configuration value or override a user supplied is invalid."""


@dataclass(frozen=True)
class DecoderConfig:
    """The frozen text-to-image model: a diffusers folder or hub id (tokenizer, text_encoder, unet,
    optional vae, scheduler; SDXL's tokenizer_2 and text_encoder_2 too)."""

    path: str = ""
    dtype: str = "float32"  # frozen weights only; "bfloat16"/"float16" are for GPUs


@dataclass(frozen=True)
class EncoderConfig:
    """Image backbone -> attentional pooler -> linear head over the decoder vocabulary."""

    backbone: str = "efficientnet_lite0"  # or "conv" (small, trained from scratch)
    pretrained_backbone: bool = True
    freeze_backbone: bool = True
    backbone_channels: tuple[int, ...] = (32, 64, 128)  # "conv" backbone only
    backbone_stage: int = -1  # efficientnet_lite0: -1 its conv head (stride 32); 0..6 the output of that stage
    cache_features: bool = True  # a frozen backbone's features are computed once per training image (exact)
    # each location's features scaled to zero mean and unit variance before the projection: a pretrained
    # backbone's raw features are large and would drown the position codes added after it
    normalize_features: bool = True
    image_size: int = 224  # the backbone sees images resized to this
    num_tokens: int = 75
    width: int = 256
    depth: int = 2
    num_heads: int = 4
    mlp_ratio: float = 4.0


@dataclass(frozen=True)
class TokensConfig:
    """The Gumbel-softmax text bottleneck and the vocabulary it may use."""

    temperature_start: float = 2.0
    temperature_end: float = 0.3
    temperature_steps: int = 0  # 0: anneal over the whole run (train.steps)
    straight_through: bool = False  # hard one-hot forward, soft gradient backward
    noise_scale: float = 1.0  # Gumbel noise multiplier: 0 trains on the argmax text itself (with straight_through)
    exclude_punctuation: bool = True
    whole_words: bool = True  # only tokens that are words on their own (text re-tokenizes to the same ids)
    allow: tuple[str, ...] = ()  # if set, only these tokens (as the tokenizer spells them) are allowed
    deny: tuple[str, ...] = ()
    init_text: str = ""  # if set, the encoder starts out writing this text (see DeDiffusion)
    # the encoder may write the decoder's end-of-text token: its text ends there, so it can say nothing at
    # the positions after it instead of filling them
    allow_end: bool = False
    init_logit: float = 5.0  # how strongly: the starting text's logit lead at every position


@dataclass(frozen=True)
class TrainConfig:
    # the training images: a folder, webdataset shards ('shards/{000000..000099}.tar' or a folder of .tar),
    # parquet files or a datasets save_to_disk folder (see data/sources.py)
    data: str = ""
    steps: int = 1000
    batch_size: int = 32  # global batch, split across processes
    optimizer: str = "adamw"  # or "adafactor"
    learning_rate: float = 3e-4
    weight_decay: float = 0.01
    warmup_steps: int = 100
    max_grad_norm: float = 1.0
    timestep_bias: float = 0.0  # diffusion timesteps drawn with density ~ t ** bias (0: uniform)
    estimator: str = "gumbel"  # "gumbel": the paper's loss through relaxed tokens; "search": see models/search.py
    search_candidates: int = 8  # estimator "search": one-token variants tried per image and step
    search_noise: int = 2  # estimator "search": noise draws each variant is scored on
    search_proposal: str = "random"  # estimator "search": "random" words at one position, or "gradient"
    search_accept: str = "best"  # estimator "search": the "best" swap, or every "improving" one
    seed: int = 0
    checkpoint_every: int = 500
    keep_checkpoints: int = 3
    log_every: int = 10
    sample_every: int = 0  # 0: never write sample grids
    num_samples: int = 4
    mixed_precision: str = "no"  # "no", "bf16", "fp16": for GPUs (on a CPU bf16 autocast slows training)
    gradient_checkpointing: bool = False


@dataclass(frozen=True)
class SleepConfig:
    """The sleep phase (models/sleep.py): before the `train.steps` wake steps, `steps` steps in which the
    encoder learns to read the frozen decoder's own drawings of prior texts (random words, or the lines of
    `texts`). 0 steps: none (the paper)."""

    steps: int = 0
    pairs: int = 8192  # texts the decoder draws once, at the start of the run (kept in the run folder)
    density: float = 0.4  # the largest fraction of a prior text's positions that hold a random word
    guidance_scale: float = 3.0
    num_inference_steps: int = 10
    timestep_spacing: str = ""  # DDIM spacing of the drawing; "": the decoder scheduler's ("trailing" starts
    # from pure noise, which matters at few steps)
    draw_dtype: str = "float32"  # "bfloat16": draw under autocast (faster where the hardware has bfloat16 units)
    batch_size: int = 128
    learning_rate: float = 1e-3
    # a text file, one text per line, never paired with the training images: the prior texts are drawn
    # from its lines (in their word order, which the encoder then learns) instead of random words
    texts: str = ""


@dataclass(frozen=True)
class Config:
    decoder: DecoderConfig = field(default_factory=DecoderConfig)
    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    tokens: TokensConfig = field(default_factory=TokensConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    sleep: SleepConfig = field(default_factory=SleepConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def from_dict(data: dict[str, Any], cls: type = Config) -> Any:
    """Build a (nested) config dataclass from a plain dict, rejecting unknown keys."""
    known = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(known))
    if unknown:
        raise ConfigError(f"unknown {cls.__name__} keys {unknown}; valid keys: {sorted(known)}")
    values = {}
    for name, value in data.items():
        default = getattr(cls(), name)
        if dataclasses.is_dataclass(default):
            values[name] = from_dict(value or {}, type(default))
        else:
            values[name] = _coerce(value, default, f"{cls.__name__}.{name}")
    return validate(cls(**values))


def _coerce(value: Any, default: Any, name: str) -> Any:
    if isinstance(default, tuple):
        if isinstance(value, str):
            value = [v for v in value.split(",") if v]
        return tuple(type(default[0])(v) if default else v for v in value)
    if isinstance(default, bool):
        if isinstance(value, str):
            if value.lower() not in ("true", "false", "1", "0", "yes", "no"):
                raise ConfigError(f"{name} must be true or false, got {value!r}")
            return value.lower() in ("true", "1", "yes")
        return bool(value)
    if isinstance(default, str) and isinstance(value, bool):
        value = "yes" if value else "no"  # YAML reads no/off/false as a boolean: mixed_precision=no is a word
    try:
        return type(default)(value)
    except (TypeError, ValueError) as error:
        raise ConfigError(f"{name} must be {type(default).__name__}, got {value!r}") from error


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply dotted `section.key=value` overrides (YAML-parsed values) to a nested dict."""
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or "." not in key:
            raise ConfigError(f"override {item!r} must look like section.key=value, e.g. train.steps=100")
        section, _, name = key.partition(".")
        data.setdefault(section, {})[name] = yaml.safe_load(raw) if raw else ""
    return data


def load_config(preset: str | None = None, overrides: list[str] | None = None) -> Config:
    """Defaults <- preset (bundled name or YAML path) <- dotted overrides."""
    data = read_preset(preset) if preset else {}
    return from_dict(apply_overrides(data, list(overrides or [])))


def read_preset(preset: str) -> dict[str, Any]:
    """The preset's settings; a file this version cannot read is named in the error."""
    path = Path(preset)
    if not path.suffix:
        path = PRESETS_DIR / f"{preset}.yaml"
    if not path.is_file():
        names = sorted(p.stem for p in PRESETS_DIR.glob("*.yaml"))
        raise ConfigError(f"preset {preset!r} not found: give a YAML file or one of {names}")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except (yaml.YAMLError, UnicodeDecodeError) as error:
        raise ConfigError(
            f"'{path}' is not valid YAML ({str(error).splitlines()[0]}); fix or replace the file"
        ) from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path} must hold sections such as 'train:' and 'encoder:', not {type(data).__name__}")
    try:
        from_dict(data)
    except ConfigError as error:
        raise ConfigError(
            f"{path}: {error}. Fix or remove the setting; a file written by another dediffusion version "
            "may hold settings this one does not have"
        ) from None
    return data


def save_config(config: Config, path: Path) -> None:
    path.write_text(yaml.safe_dump(_plain(config.to_dict()), sort_keys=False))


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def validate(config: Any) -> Any:
    """Check ranges a user can get wrong; return the config unchanged."""
    checks = {
        EncoderConfig: [
            (lambda c: c.num_tokens >= 1, "num_tokens must be at least 1"),
            (lambda c: c.width % c.num_heads == 0, "width must be divisible by num_heads"),
            (
                lambda c: c.backbone in ("efficientnet_lite0", "conv"),
                "backbone must be efficientnet_lite0 or conv",
            ),
            (lambda c: -1 <= c.backbone_stage <= 6, "backbone_stage must be -1 (conv head) or 0..6"),
        ],
        TokensConfig: [
            (lambda c: c.temperature_start > 0 and c.temperature_end > 0, "temperatures must be positive"),
        ],
        TrainConfig: [
            (lambda c: c.steps >= 1 and c.batch_size >= 1, "steps and batch_size must be at least 1"),
            (lambda c: c.optimizer in ("adamw", "adafactor"), "optimizer must be adamw or adafactor"),
            (
                lambda c: c.mixed_precision in ("no", "bf16", "fp16"),
                "mixed_precision must be no, bf16 or fp16",
            ),
            (lambda c: c.keep_checkpoints >= 1, "keep_checkpoints must be at least 1"),
            (lambda c: c.timestep_bias >= 0, "timestep_bias must be >= 0 (0: uniform timesteps)"),
            (lambda c: c.estimator in ("gumbel", "search"), "estimator must be gumbel or search"),
            (lambda c: c.search_candidates >= 1 and c.search_noise >= 1, "search_candidates and search_noise >= 1"),
            (lambda c: c.search_proposal in ("random", "gradient"), "search_proposal must be random or gradient"),
            (lambda c: c.search_accept in ("best", "improving"), "search_accept must be best or improving"),
        ],
        SleepConfig: [
            (lambda c: c.steps >= 0, "steps must be >= 0 (0: no sleep phase)"),
            (lambda c: c.pairs >= 1 and c.batch_size >= 1, "pairs and batch_size must be at least 1"),
            (lambda c: 0 < c.density <= 1, "density must be in (0, 1]"),
            (lambda c: c.num_inference_steps >= 1, "num_inference_steps must be at least 1"),
            (lambda c: c.draw_dtype in ("float32", "bfloat16"), "draw_dtype must be float32 or bfloat16"),
            (
                lambda c: c.timestep_spacing in ("", "leading", "trailing", "linspace"),
                "timestep_spacing must be leading, trailing, linspace or empty (the decoder's own)",
            ),
        ],
        DecoderConfig: [
            (
                lambda c: c.dtype in ("float32", "bfloat16", "float16"),
                "dtype must be float32, bfloat16 or float16",
            ),
        ],
    }
    for check, message in checks.get(type(config), []):
        if not check(config):
            raise ConfigError(f"{type(config).__name__}: {message} (got {config})")
    return config
